"""The command line: `python -m tests.personalize_standin` (the session fixture starts it the happy way)."""

import subprocess
import sys

from .conftest import REPO_ROOT


def run(*args):
    return subprocess.run(
        [sys.executable, "-m", "tests.personalize_standin", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_it_refuses_to_listen_beyond_loopback():
    result = run("--host", "0.0.0.0", "--port", "0")
    assert result.returncode == 2
    assert "loopback only" in result.stderr


def test_bad_arguments_are_explained():
    result = run("--pending-describes", "-1")
    assert result.returncode == 2
    assert "--pending-describes must be >= 0" in result.stderr


def test_health_reports_the_port_and_botocore(admin):
    health = admin.call("GET", "health")
    assert health["ok"] is True
    assert admin.url.endswith(f":{health['port']}")
    import botocore

    assert health["botocore"] == botocore.__version__
