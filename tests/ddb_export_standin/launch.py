"""Start the stand-in as a subprocess from any test: `url, process = start(dynamodb_endpoint, s3_endpoint)`."""

from __future__ import annotations

import os
import selectors
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
PREFIX = "listening on "


def start(
    dynamodb_endpoint: str,
    s3_endpoint: str,
    *,
    env: Mapping[str, str] | None = None,
    stderr: int | None = None,
    timeout: float = 30,
) -> tuple[str, subprocess.Popen[str]]:
    """Runs `python -m tests.ddb_export_standin` on a free port and waits for its "listening on" line.

    `env` adds variables (e.g. DDB_EXPORT_STANDIN_POLLS_IN_PROGRESS) to this process's environment;
    `stderr` is passed to Popen (default: inherited). Stop it with `process.terminate()`."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.ddb_export_standin",
            "--port",
            "0",
            "--dynamodb-endpoint",
            dynamodb_endpoint,
            "--s3-endpoint",
            s3_endpoint,
        ],
        cwd=REPO_ROOT,
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
    )
    assert process.stdout is not None
    # Read with a deadline: a stand-in that dies or hangs before listening must not hang the caller.
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if selector.select(timeout=0.1):
                line = process.stdout.readline()
                if line.startswith(PREFIX):
                    return line[len(PREFIX) :].strip(), process
                if not line:
                    break
            if process.poll() is not None:
                break
    process.kill()
    process.wait()
    raise RuntimeError(f"ddb-export-standin did not start (exit code {process.returncode})")
