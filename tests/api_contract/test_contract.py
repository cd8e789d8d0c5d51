"""The ranking API against its own OpenAPI document, with schemathesis (every check), plus canaries
that prove such a run fails when the server breaks the contract.

The bounded run here is `CONTRACT_MAX_EXAMPLES` cases per operation and phase (default 500, about a
thousand cases); `scripts/bench-contract` runs the full form (10,000+ cases) and prints its figures.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from .contract import (
    Server,
    _answers,
    find_binary,
    free_port,
    run_against_local_api,
    run_schemathesis,
)

HERE = Path(__file__).resolve().parent
MAX_EXAMPLES = int(os.environ.get("CONTRACT_MAX_EXAMPLES", "500"))


@pytest.fixture(scope="module")
def binary() -> Path:
    try:
        return find_binary()
    except FileNotFoundError as e:
        pytest.fail(str(e), pytrace=False)


def test_the_api_keeps_its_contract(binary, tmp_path):
    result, server = run_against_local_api(MAX_EXAMPLES, workdir=tmp_path)
    summary = f"{result.cases} cases, failures {result.failure_codes}, {result.errors} errors"
    assert result.exit_code == 0, f"{summary}\n{result.output}\n--- server log ---\n{server.log()[-4000:]}"
    assert result.failures == 0 and result.errors == 0, summary
    # The run did test something: every operation it selected (/ranking/{userId}, /students, /health),
    # and about as many cases as asked for.
    operations = result.report["operations"]
    assert operations["selected"] == 3 and operations["tested"] == operations["selected"], operations
    # How many cases schemathesis generates varies from run to run: Hypothesis ends an operation's
    # phase early when its input space looks exhausted (seen: 120 to 1,706 cases for 200 to 800 asked).
    # The floor proves a real run; scripts/bench-contract reports the full run's exact count.
    assert result.cases >= min(MAX_EXAMPLES, 100), summary
    print(f"\ncontract: {summary} in {result.duration_s:.1f} s")


@pytest.fixture(scope="module")
def document(binary, tmp_path_factory) -> Path:
    """The document the real API serves, saved for the canary servers."""
    workdir = tmp_path_factory.mktemp("document")
    server = Server(binary, workdir)
    try:
        server.wait_ready()
        with urllib.request.urlopen(f"{server.url}/openapi.json", timeout=5) as response:
            body = response.read()
    finally:
        server.stop()
    path = workdir / "openapi.json"
    path.write_bytes(body)
    return path


def _canary(document: Path, fault: str, tmp_path: Path):
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, str(HERE / "canary_server.py"), "--port", str(port), "--document", str(document), "--fault", fault],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 20
        while not _answers(f"http://127.0.0.1:{port}/health"):
            assert process.poll() is None, f"the canary server exited with {process.returncode}"
            assert time.monotonic() < deadline, "the canary server did not start"
            time.sleep(0.1)
        return run_schemathesis(f"http://127.0.0.1:{port}/openapi.json", tmp_path, max_examples=20, seed=1)
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_a_server_error_fails_the_run(document, tmp_path):
    result = _canary(document, "server-error", tmp_path)
    assert result.exit_code != 0, result.output
    assert any(code.startswith("ST101") or "Server error" in code for code in result.failure_codes), result.failure_codes
    assert "Server error" in result.output


def test_a_body_off_the_schema_fails_the_run(document, tmp_path):
    result = _canary(document, "wrong-schema", tmp_path)
    assert result.exit_code != 0, result.output
    assert any("schema" in code.lower() for code in result.failure_codes), result.failure_codes
