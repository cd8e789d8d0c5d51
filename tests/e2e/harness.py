"""Processes, binaries, HTTP and polling for the end-to-end suite.

Every process a test starts goes through `Processes`: it listens on 127.0.0.1, writes its output to a log
file in the test's temporary directory, is killed at teardown, and its log is attached to the report of
a failing test (see conftest.py).
"""

from __future__ import annotations

import http.client as http_client
import json
import os
import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

REPO_ROOT = Path(__file__).resolve().parents[2]
BINARIES = ("ranking-api", "event-consumer", "training-export")

# Variables that select adapters or endpoints in our binaries or the SDKs: a developer's shell may have
# some set, and a test must get exactly the configuration it asks for.
_CONFIG_PREFIXES = ("AWS_", "PERSONALIZE_")
_CONFIG_NAMES = {
    "ADDR",
    "API_KEY",
    "CORS_ORIGINS",
    "DATA_DIR",
    "DATA_BUCKET",
    "EMAIL_LANGUAGE",
    "EMAIL_SENDER",
    "EVENT_BUS_NAME",
    "IDEMPOTENCY_TABLE",
    "INTERACTIONS_TABLE",
    "MAIL_TRANSPORT",
    "NO_DEMO_SEED",
    "REFRESH_SECONDS",
    "RUNS_TABLE",
    "SES_CONFIGURATION_SET",
    "TRAINING_EXPORT_BIN",
    "TRAINING_EXPORT_CRASH_AFTER",
    "TRAINING_EXPORT_FUNCTION",
}

ANSI = re.compile(r"\x1b\[[0-9;]*m")


class BinariesMissing(Exception):
    pass


def target_debug_dir() -> Path:
    """`$E2E_BIN_DIR`, or the workspace's target directory (as cargo resolves it) + `/debug`."""
    override = os.environ.get("E2E_BIN_DIR")
    if override:
        return Path(override)
    cargo = shutil.which("cargo")
    if cargo:
        out = subprocess.run(
            [cargo, "metadata", "--format-version", "1", "--no-deps"],
            check=False,
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if out.returncode == 0:
            return Path(json.loads(out.stdout)["target_directory"]) / "debug"
    return Path(os.environ.get("CARGO_TARGET_DIR", REPO_ROOT / "target")) / "debug"


def find_binaries() -> dict[str, Path]:
    """The debug binaries `cargo build --bins` made, checked to exist and to be newer than their crate's
    sources."""
    directory = target_debug_dir()
    found = {name: directory / name for name in BINARIES}
    missing = [str(p) for p in found.values() if not os.access(p, os.X_OK)]
    if missing:
        raise BinariesMissing(
            f"missing {', '.join(missing)}: run `cargo build --workspace --tests` first (scripts/test does), "
            "or point E2E_BIN_DIR at a directory holding ranking-api, event-consumer and training-export"
        )
    # A crate's own sources always relink its binary, so a binary older than them was not rebuilt since
    # they changed. (Changes in the crates it depends on are not caught here; `cargo build --bins` is.)
    stale = [
        name
        for name, path in found.items()
        if max(p.stat().st_mtime for p in (REPO_ROOT / name / "src").rglob("*.rs")) > path.stat().st_mtime
    ]
    if stale and not os.environ.get("E2E_BIN_DIR"):
        raise BinariesMissing(
            f"{', '.join(stale)} in {directory} are older than their sources: run `cargo build --workspace --tests` first"
        )
    return found


def require_crash_hook(bins: dict[str, Path]) -> None:
    """The crash tests need training-export built with its `test-hooks` feature: without it the binary does
    not read TRAINING_EXPORT_CRASH_AFTER at all (release builds have no way to abort themselves), and a test
    waiting for a crash would only see runs finish. The hook's variable name is in the binary exactly when
    the feature is."""
    if b"TRAINING_EXPORT_CRASH_AFTER" not in bins["training-export"].read_bytes():
        raise BinariesMissing(
            f"{bins['training-export']} has no crash hook: run "
            "`cargo build --workspace --tests` first (scripts/test does)"
        )


def clean_env(**extra: str) -> dict[str, str]:
    """The parent's environment without any adapter or AWS setting, plus plain logs and `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_CONFIG_PREFIXES) and k not in _CONFIG_NAMES}
    env.update({"NO_COLOR": "1", "RUST_LOG": "info", "RUST_BACKTRACE": "1"})
    env.update(extra)
    return env


# ---- processes ---------------------------------------------------------------------------------------


@dataclass
class Service:
    """A long-running process (the API): output in `log_path`, stopped at teardown."""

    name: str
    process: subprocess.Popen
    log_path: Path
    url: str = ""

    def log(self) -> str:
        return ANSI.sub("", self.log_path.read_text(errors="replace")) if self.log_path.exists() else ""

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


@dataclass
class CliRun:
    name: str
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    def json(self):
        return json.loads(self.stdout)

    def describe(self) -> str:
        return (
            f"$ {' '.join(self.argv)}  -> exit {self.returncode} in {self.seconds:.2f}s\n"
            f"--- stdout\n{self.stdout.rstrip()}\n--- stderr\n{self.stderr.rstrip()}"
        )


@dataclass
class Processes:
    """Everything one test started. `report()` is what a failing test shows."""

    log_dir: Path
    services: list[Service] = field(default_factory=list)
    runs: list[CliRun] = field(default_factory=list)

    def start(
        self, name: str, argv: list[str], env: dict[str, str], ready: re.Pattern | None = None, timeout=30
    ) -> tuple[Service, re.Match | None]:
        """Starts `argv`; with `ready`, waits (bounded) until its log matches and returns the match."""
        log_path = self.log_dir / f"{name}.log"
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                argv, env=env, cwd=self.log_dir, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        service = Service(name, process, log_path)
        self.services.append(service)
        if ready is None:
            return service, None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = ready.search(service.log())
            if match:
                return service, match
            if not service.alive():
                raise AssertionError(f"{name} exited with {process.returncode} before it was ready:\n{service.log()}")
            time.sleep(0.05)
        raise AssertionError(f"{name} was not ready within {timeout}s:\n{service.log()}")

    def run(
        self, name: str, argv: list[str], env: dict[str, str], *, input: str | None = None, timeout: float = 120
    ) -> CliRun:
        started = time.monotonic()
        done = subprocess.run(
            argv, check=False, env=env, cwd=self.log_dir, input=input, capture_output=True, text=True, timeout=timeout
        )
        run = CliRun(
            name,
            [str(a) for a in argv],
            done.returncode,
            ANSI.sub("", done.stdout),
            ANSI.sub("", done.stderr),
            time.monotonic() - started,
        )
        self.runs.append(run)
        return run

    def stop_all(self) -> None:
        for service in reversed(self.services):
            service.stop()

    def report(self, tail_lines: int = 200, last_runs: int = 15) -> str:
        parts = []
        for service in self.services:
            lines = service.log().splitlines()[-tail_lines:]
            parts.append(
                f"===== {service.name} (pid {service.process.pid}, last {len(lines)} lines)\n" + "\n".join(lines)
            )
        failed = [r for r in self.runs if r.returncode != 0]
        shown = failed[-last_runs:] + [r for r in self.runs[-last_runs:] if r.returncode == 0]
        if shown:
            parts.append(
                f"===== command runs: {len(self.runs)} in all, {len(failed)} with a non-zero exit; showing {len(shown)}"
            )
            parts.extend(r.describe() for r in shown)
        return "\n".join(parts)


# ---- HTTP --------------------------------------------------------------------------------------------


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes
    seconds: float

    def json(self):
        return json.loads(self.body)


def http(method: str, url: str, *, headers: dict | None = None, body: bytes | None = None, timeout=10) -> Response:
    """One request on a fresh connection, timed from connect to the last byte of the body."""
    parts = urlsplit(url)
    started = time.monotonic()
    connection = http_client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        connection.request(method, path or "/", body=body, headers=headers or {})
        response = connection.getresponse()
        data = response.read()
        return Response(
            response.status, {k.lower(): v for k, v in response.getheaders()}, data, time.monotonic() - started
        )
    finally:
        connection.close()


def get_json(url: str, **kwargs):
    response = http("GET", url, **kwargs)
    assert response.status == 200, f"GET {url} -> {response.status}: {response.body[:500]!r}"
    return response.json()


def wait_until(probe, *, timeout: float, interval: float = 0.1, what: str):
    """Polls `probe() -> (done, value)` until done (returns the value), or fails after `timeout` seconds
    showing the last value seen."""
    deadline = time.monotonic() + timeout
    while True:
        done, value = probe()
        if done:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout}s; last seen: {value!r}")
        time.sleep(interval)


class Phases:
    """Wall time of a test's phases, printed (pytest shows it with -s, or in a failing test's output)."""

    def __init__(self, test: str):
        self.test = test
        self.started = self.last = time.monotonic()

    def __call__(self, finished: str) -> None:
        now = time.monotonic()
        print(f"[e2e] {self.test}: {finished} in {now - self.last:.1f}s (total {now - self.started:.1f}s)", flush=True)
        self.last = now
