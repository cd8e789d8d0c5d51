"""Fixtures: one moto (DynamoDB and S3), the stand-in in front of it as a real subprocess, boto3 clients."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

from tests.ddb_export_standin.launch import start

REGION = "us-east-1"
ACCOUNT = "123456789012"
CREDENTIALS = {"aws_access_key_id": "AKIDEXPORTTEST", "aws_secret_access_key": "export-secret"}
# Small files, so a handful of items already spans several data files.
ITEMS_PER_FILE = 2


def _wait_for(url: str, process: subprocess.Popen[bytes] | None) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{url}: the server exited with {process.returncode}")
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.1)
    raise RuntimeError(f"nothing answered at {url}")


@pytest.fixture(scope="session")
def moto() -> Iterator[str]:
    """scripts/test's moto ($MOTO_ENDPOINT), or one started here; tables and buckets get unique names."""
    endpoint = os.environ.get("MOTO_ENDPOINT")
    if endpoint:
        _wait_for(f"{endpoint}/moto-api/", None)
        yield endpoint
        return
    moto_server = shutil.which("moto_server", path=str(Path(sys.executable).parent))
    if moto_server is None:
        pytest.fail("moto_server is not installed in this interpreter's environment (scripts/requirements-test.txt)")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen(
        [moto_server, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        _wait_for(f"http://127.0.0.1:{port}/moto-api/", process)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture(scope="session")
def standin(moto: str) -> Iterator[str]:
    url, process = start(
        moto,
        moto,
        env={"DDB_EXPORT_STANDIN_POLLS_IN_PROGRESS": "1", "DDB_EXPORT_STANDIN_ITEMS_PER_FILE": str(ITEMS_PER_FILE)},
    )
    try:
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


def client(service: str, endpoint: str) -> Any:
    # One attempt: the tests look at every answer, retries would hide the injected faults.
    config = Config(s3={"addressing_style": "path"}, retries={"total_max_attempts": 1})
    return boto3.client(service, endpoint_url=endpoint, region_name=REGION, config=config, **CREDENTIALS)


@pytest.fixture()
def ddb(standin: str) -> Any:
    return client("dynamodb", standin)


@pytest.fixture()
def moto_ddb(moto: str) -> Any:
    return client("dynamodb", moto)


@pytest.fixture()
def s3(moto: str) -> Any:
    return client("s3", moto)


def admin(url: str, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"{url}/_standin/{path}", data=data, method=method)
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


@pytest.fixture()
def make_table(moto_ddb: Any) -> Callable[..., str]:
    """A fresh table (pk string hash key), PITR on unless told otherwise; returns its ARN."""

    def make(pitr: bool = True) -> str:
        name = f"t-{uuid.uuid4().hex[:12]}"
        arn = moto_ddb.create_table(
            TableName=name,
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )["TableDescription"]["TableArn"]
        if pitr:
            moto_ddb.update_continuous_backups(
                TableName=name, PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True}
            )
        return arn

    return make


@pytest.fixture()
def bucket(s3: Any) -> str:
    name = f"exports-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    return name


def table_name(arn: str) -> str:
    return arn.rsplit("/", 1)[1]
