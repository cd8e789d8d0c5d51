"""Runs schemathesis against a local ranking-api and reads its JSON report.

The server runs the debug (or `$CONTRACT_BIN`) binary on 127.0.0.1 with a fresh DATA_DIR (the demo
dataset is seeded and the embedded recommender trains on it), an API key (so the 401 path and the
`ignored_auth` check are exercised) and a CORS origin. Every schemathesis check runs.

Used by test_contract.py (a bounded run in `scripts/test`) and by `scripts/bench-contract` (the full run):

    python tests/api_contract/contract.py --max-examples 3400 [--seed N] [--bin PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
CONFIG_FILE = Path(__file__).resolve().parent / "schemathesis.toml"
API_KEY = "contract-test-key"
CORS_ORIGIN = "https://app.example.edu"
START_TIMEOUT_S = 60

# Variables that configure our binaries or the AWS SDK: the run gets exactly the configuration it sets.
_CONFIG_PREFIXES = ("AWS_", "PERSONALIZE_")
_CONFIG_NAMES = {"ADDR", "API_KEY", "CORS_ORIGINS", "DATA_DIR", "DATA_BUCKET", "NO_DEMO_SEED", "REFRESH_SECONDS"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def target_dir() -> Path:
    out = subprocess.run(
        ["cargo", "metadata", "--format-version", "1", "--no-deps"],
        cwd=REPO_ROOT, capture_output=True, text=True, check=True, timeout=120,
    )
    return Path(json.loads(out.stdout)["target_directory"])


def find_binary() -> Path:
    """`$CONTRACT_BIN`, or the debug ranking-api that `cargo build --bins` made; fails loudly when missing."""
    override = os.environ.get("CONTRACT_BIN")
    path = Path(override) if override else target_dir() / "debug" / "ranking-api"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: run `cargo build --workspace --tests` first (or set CONTRACT_BIN)")
    return path


def st_binary() -> str:
    found = shutil.which("st", path=str(Path(sys.executable).parent)) or shutil.which("st")
    if not found:
        raise FileNotFoundError("schemathesis (`st`) is not installed: pip install -r tests/api_contract/requirements.txt")
    return found


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return response.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


class Server:
    """The ranking-api on a free loopback port, killed on exit; its log is kept for failures."""

    def __init__(self, binary: Path, workdir: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / "ranking-api.log"
        data_dir = workdir / "data"
        data_dir.mkdir()
        env = {k: v for k, v in os.environ.items() if k not in _CONFIG_NAMES and not k.startswith(_CONFIG_PREFIXES)}
        env.update(
            ADDR=f"127.0.0.1:{self.port}",
            DATA_DIR=str(data_dir),
            API_KEY=API_KEY,
            CORS_ORIGINS=CORS_ORIGIN,
            RUST_LOG="warn",
            NO_COLOR="1",
            # No AWS anywhere: the SDK must not look for credentials or a region.
            AWS_EC2_METADATA_DISABLED="true",
        )
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [str(binary)], env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self) -> None:
        """Until /health answers and the embedded model answers (not the fallback), or fail loudly."""
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"ranking-api exited with {self.process.returncode}:\n{self.log()}")
            if _answers(f"{self.url}/health") and self._model_answers():
                return
            time.sleep(0.2)
        raise RuntimeError(f"ranking-api was not ready within {START_TIMEOUT_S}s:\n{self.log()}")

    def _model_answers(self) -> bool:
        request = urllib.request.Request(f"{self.url}/ranking/s-0001", headers={"x-api-key": API_KEY})
        try:
            with urllib.request.urlopen(request, timeout=2) as response:
                return json.load(response).get("source") == "embedded"
        except (urllib.error.URLError, ConnectionError, TimeoutError, ValueError):
            return False

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@dataclass
class Result:
    exit_code: int
    output: str
    report: dict
    duration_s: float

    @property
    def cases(self) -> int:
        """Test cases schemathesis generated and sent."""
        return int(self.report["test_cases"]["generated"])

    @property
    def failures(self) -> int:
        """Distinct failures schemathesis found (after deduplication)."""
        return int(self.report["test_cases"]["unique_failures"])

    @property
    def errors(self) -> int:
        """Errors that kept schemathesis from testing (schema or network problems)."""
        return len(self.report["errors"]) + int(self.report["test_cases"]["errored"])

    @property
    def failure_codes(self) -> list[str]:
        return sorted({f"{f['code']} {f['title']}" for f in self.report["failures"]})


def run_schemathesis(
    schema_url: str, workdir: Path, max_examples: int, seed: int | None = None,
    extra: list[str] | None = None, timeout_s: float = 3600,
) -> Result:
    """`st run` with every check and the API key; returns its exit code, output and JSON report."""
    report_path = workdir / "schemathesis.json"
    argv = [
        st_binary(), "--config-file", str(CONFIG_FILE), "run", schema_url,
        "--checks", "all",
        "--header", f"x-api-key: {API_KEY}",
        "--max-examples", str(max_examples),
        "--workers", "2",
        "--request-timeout", "10",
        "--generation-database", "none",
        "--report", "json",
        "--report-json-path", str(report_path),
        "--no-color",
    ]
    if seed is not None:
        argv += ["--seed", str(seed)]
    argv += extra or []
    # hooks.py drops one known false positive of schemathesis (see there).
    env = dict(os.environ, SCHEMATHESIS_HOOKS="hooks", PYTHONPATH=str(Path(__file__).resolve().parent))
    started = time.monotonic()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, cwd=workdir, env=env)
    duration = time.monotonic() - started
    output = done.stdout + done.stderr
    if not report_path.is_file():
        raise RuntimeError(f"schemathesis wrote no report (exit {done.returncode}):\n{output}")
    return Result(done.returncode, output, json.loads(report_path.read_text()), duration)


def run_against_local_api(max_examples: int, seed: int | None = None, workdir: Path | None = None) -> tuple[Result, Server]:
    own = workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="api-contract-")) if own else workdir
    server = Server(find_binary(), workdir)
    try:
        server.wait_ready()
        return run_schemathesis(f"{server.url}/openapi.json", workdir, max_examples, seed), server
    finally:
        server.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-examples", type=int, default=3400, help="schemathesis cases per operation and phase")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--bin", help="the ranking-api binary (default: the debug build)")
    args = parser.parse_args()
    if args.bin:
        os.environ["CONTRACT_BIN"] = args.bin
    workdir = Path(tempfile.mkdtemp(prefix="api-contract-"))
    result, server = run_against_local_api(args.max_examples, args.seed, workdir)
    print(result.output)
    rate = result.cases / result.duration_s if result.duration_s else 0.0
    print("| what | value |")
    print("| --- | --- |")
    print(f"| max examples per operation | {args.max_examples} |")
    print(f"| test cases run | {result.cases} |")
    print(f"| failures | {result.failures} {result.failure_codes} |")
    print(f"| errors | {result.errors} |")
    print(f"| failures dropped by hooks.py (the known false positive) | {result.report.get('filtered', 0)} |")
    print(f"| schemathesis exit code | {result.exit_code} |")
    print(f"| duration | {result.duration_s:.1f} s |")
    print(f"| cases per second | {rate:.0f} |")
    print(f"\nreport and server log: {workdir}")
    if result.exit_code != 0 and "ranking-api" in server.log():
        print(server.log()[-4000:])
    return 0 if result.exit_code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
