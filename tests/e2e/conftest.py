"""Fixtures: our binaries, moto, the Personalize stand-in, and the processes each test starts (killed at
teardown; their logs shown when the test fails)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from .aws import Moto, StandIn
from .harness import REPO_ROOT, BinariesMissing, Processes, Service, find_binaries

START_TIMEOUT_S = 30

# Long-lived processes shared by the session (moto, the stand-in): their logs go into every failing
# test's report too.
_session_services: list[Service] = []


@pytest.fixture(scope="session")
def bins() -> dict[str, Path]:
    try:
        return find_binaries()
    except BinariesMissing as e:
        pytest.fail(str(e), pytrace=False)


def _answers(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=1).read()
        return True
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


def _start_session_service(name: str, argv: list[str], log_dir: Path, health_url, env=None) -> Service:
    log_path = log_dir / f"{name}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            argv, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    service = Service(name, process, log_path)
    _session_services.append(service)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        url = health_url()
        if url and _answers(url):
            return service
        if not service.alive():
            raise RuntimeError(f"{name} exited with {process.returncode}:\n{service.log()}")
        time.sleep(0.1)
    raise RuntimeError(f"{name} did not answer within {START_TIMEOUT_S}s:\n{service.log()}")


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def moto(tmp_path_factory) -> Moto:
    """The two motos `scripts/test` starts (MOTO_ENDPOINT, MOTO_MULTIPART_ENDPOINT), or two of our own when
    run by hand; never a silent skip."""
    general, s3 = os.environ.get("MOTO_ENDPOINT"), os.environ.get("MOTO_MULTIPART_ENDPOINT")
    if general and s3:
        for url in (general, s3):
            assert _answers(f"{url}/moto-api/"), f"moto does not answer at {url}"
        yield Moto(general, s3)
        return
    moto_server = shutil.which("moto_server", path=str(Path(sys.executable).parent)) or shutil.which("moto_server")
    if moto_server is None:
        pytest.fail(
            "The end-to-end tests need moto: run scripts/test, or export MOTO_ENDPOINT and MOTO_MULTIPART_ENDPOINT "
            "(two moto_server on 127.0.0.1), or install moto[server] from scripts/requirements-test.txt.",
            pytrace=False,
        )
    log_dir = tmp_path_factory.mktemp("moto")
    started = []
    for name in ("moto", "moto-s3"):
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        service = _start_session_service(
            name, [moto_server, "-H", "127.0.0.1", "-p", str(port)], log_dir, lambda url=url: f"{url}/moto-api/"
        )
        started.append((service, url))
    yield Moto(started[0][1], started[1][1])
    for service, _ in started:
        service.stop()


@pytest.fixture(scope="session")
def standin_url(moto, tmp_path_factory) -> str:
    """The stand-in, started the documented way; its import jobs read CSVs from the S3 moto."""
    log_dir = tmp_path_factory.mktemp("standin")
    port_file = log_dir / "port"

    def health():
        if not port_file.exists():
            return None
        return f"http://127.0.0.1:{int(port_file.read_text())}/_standin/health"

    service = _start_session_service(
        "personalize-standin",
        [
            sys.executable,
            "-m",
            "tests.personalize_standin",
            "--port",
            "0",
            "--port-file",
            str(port_file),
            "--pending-describes",
            "1",
            "--s3-endpoint",
            moto.s3,
        ],
        log_dir,
        health,
    )
    yield f"http://127.0.0.1:{int(port_file.read_text())}"
    service.stop()


@pytest.fixture
def standin(standin_url) -> StandIn:
    """A clean stand-in for each test: state, faults, call log and violations reset."""
    standin = StandIn(standin_url)
    standin.reset()
    return standin


@pytest.fixture
def processes(request, tmp_path) -> Processes:
    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    procs = Processes(log_dir)
    request.node._e2e_processes = procs
    yield procs
    procs.stop_all()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if not report.failed:
        return
    procs = getattr(item, "_e2e_processes", None)
    if procs is not None:
        report.sections.append(("processes started by this test", procs.report()))
    for service in _session_services:
        tail = "\n".join(service.log().splitlines()[-60:])
        report.sections.append((f"{service.name} (session, last lines)", tail))
