"""What the stack story needs: two moto servers, the DynamoDB export stand-in in front of the first (moto
has no real table exports) writing exports into the second, the recording proxy, the Personalize stand-in
(reading S3 through the proxy, as Personalize reads it with the import role), the transformed template and
the Lambda bootstraps. `scripts/test-stack` builds the last two; run that, not pytest alone."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from .proxy import Ledger, Proxy
from .stack import Backends

ROOT = Path(__file__).resolve().parents[2]
BINARIES = ("ranking-api", "event-consumer", "training-export-lambda")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(url: str, process: subprocess.Popen, log: Path) -> None:
    for _ in range(200):
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except Exception:  # noqa: BLE001 - not up yet
            if process.poll() is not None:
                raise RuntimeError(f"{url} exited: {log.read_text()[-2000:]}")
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer: {log.read_text()[-2000:]}")


@pytest.fixture(scope="session")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("stack")


@pytest.fixture(scope="session")
def template() -> Path:
    path = os.environ.get("STACK_TEMPLATE")
    if not path or not Path(path).is_file():
        pytest.fail("STACK_TEMPLATE is not set to the SAM-transformed template: run scripts/test-stack")
    return Path(path)


@pytest.fixture(scope="session")
def binaries() -> dict[str, Path]:
    root = Path(os.environ.get("STACK_BOOTSTRAPS", ROOT / "target" / "lambda"))
    found = {name: root / name / "bootstrap" for name in BINARIES}
    missing = [str(p) for p in found.values() if not p.is_file()]
    if missing:
        pytest.fail(f"Lambda bootstraps missing ({', '.join(missing)}): run scripts/test-stack, which builds them")
    return found


@pytest.fixture(scope="session")
def world(work):
    """moto ×2, the DynamoDB export stand-in, the proxy and the Personalize stand-in; yields (backends,
    ledger, proxy, callers)."""
    processes = []
    bindir = Path(sys.executable).parent

    def start(name: str, argv: list[str], probe: str) -> str:
        log = work / f"{name}.log"
        process = subprocess.Popen(argv, stdout=log.open("w"), stderr=subprocess.STDOUT, cwd=ROOT)
        processes.append(process)
        _wait(probe, process, log)
        return probe

    try:
        urls = []
        for name in ("moto", "moto-s3"):
            port = _free_port()
            start(name, [str(bindir / "moto_server"), "-H", "127.0.0.1", "-p", str(port)], f"http://127.0.0.1:{port}/moto-api/")
            urls.append(f"http://127.0.0.1:{port}")
        # The functions' DynamoDB: every request goes on to moto, exports are made here. It writes to S3
        # directly: DynamoDB checks the caller's S3 grants at ExportTableToPointInTime (see authz.py).
        port = _free_port()
        dynamodb = start(
            "ddb-export-standin",
            [sys.executable, "-m", "tests.ddb_export_standin", "--port", str(port), "--dynamodb-endpoint", urls[0],
             "--s3-endpoint", urls[1]],
            f"http://127.0.0.1:{port}/_standin/health",
        ).removesuffix("/_standin/health")
        ledger = Ledger()
        callers: dict = {}
        proxy = Proxy(callers=callers, backends={}, lambda_api=None, ledger=ledger, region="us-east-1", account="123456789012")
        port = _free_port()
        start(
            "standin",
            [sys.executable, "-m", "tests.personalize_standin", "--port", str(port), "--pending-describes", "1",
             "--s3-endpoint", proxy.url],
            f"http://127.0.0.1:{port}/_standin/state",
        )
        standin = f"http://127.0.0.1:{port}"
        backends = Backends(moto=urls[0], moto_s3=urls[1], standin=standin, dynamodb=dynamodb)
        proxy.backends.update({"default": urls[0], "dynamodb": dynamodb, "s3": urls[1], "personalize": standin})
        yield backends, ledger, proxy, callers
        proxy.stop()
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
