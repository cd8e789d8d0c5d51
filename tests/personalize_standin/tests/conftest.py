"""Fixtures: moto (for S3), the stand-in as a real subprocess, boto3 clients, and dataset helpers."""

from __future__ import annotations

import csv
import io
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
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

REPO_ROOT = Path(__file__).resolve().parents[3]
REGION = "us-east-1"
FAKE_CREDENTIALS = {"aws_access_key_id": "AKIDSTANDINTEST", "aws_secret_access_key": "standin-secret"}
START_TIMEOUT_S = 30


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for(url: str, process: subprocess.Popen | None, what: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode} before answering")
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.1)
    raise RuntimeError(f"{what} did not answer at {url} within {START_TIMEOUT_S}s")


@pytest.fixture(scope="session")
def moto_endpoint():
    """moto from scripts/test ($MOTO_ENDPOINT), or one started here; never a silent skip."""
    endpoint = os.environ.get("MOTO_ENDPOINT")
    if endpoint:
        _wait_for(f"{endpoint}/moto-api/", None, f"moto at MOTO_ENDPOINT={endpoint}")
        yield endpoint
        return
    moto_server = shutil.which("moto_server", path=str(Path(sys.executable).parent)) or shutil.which("moto_server")
    if moto_server is None:
        pytest.fail(
            "These tests need moto for S3: run scripts/test, or set MOTO_ENDPOINT to a running moto_server, "
            "or install moto[server] (scripts/requirements-test.txt) into this interpreter's environment."
        )
    port = _free_port()
    process = subprocess.Popen(
        [moto_server, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        _wait_for(f"{endpoint}/moto-api/", process, "moto_server")
        yield endpoint
    finally:
        process.terminate()
        process.wait(timeout=10)


@dataclass
class Admin:
    """The stand-in's /_standin/ API."""

    url: str

    def _request(self, method: str, path: str, body=None):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"{self.url}/_standin/{path}", data=data, method=method)
        request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, json.load(response)
        except urllib.error.HTTPError as err:
            return err.code, json.load(err)

    def call(self, method: str, path: str, body=None):
        status, payload = self._request(method, path, body)
        assert status == 200, f"{method} /_standin/{path} -> {status}: {payload}"
        return payload

    def reset(self):
        return self.call("POST", "reset")

    def violations(self) -> list[dict]:
        return self.call("GET", "violations")["violations"]

    def calls(self, operation: str | None = None) -> list[dict]:
        suffix = f"?operation={operation}" if operation else ""
        return self.call("GET", f"calls{suffix}")["calls"]

    def fault(self, **spec):
        return self.call("POST", "faults", spec)

    def advance(self):
        return self.call("POST", "advance")["finished"]

    def fail(self, **spec):
        return self.call("POST", "fail", spec)

    def config(self, **values):
        return self.call("POST", "config", values)


@pytest.fixture(scope="session")
def standin_url(moto_endpoint, tmp_path_factory):
    """The stand-in started the documented way: `python -m tests.personalize_standin --port 0 --port-file F`."""
    port_file = tmp_path_factory.mktemp("standin") / "port"
    env = {**os.environ, "MOTO_ENDPOINT": moto_endpoint}
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.personalize_standin", "--port", "0", "--port-file", str(port_file)],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not port_file.exists():
            if process.poll() is not None:
                raise RuntimeError(f"the stand-in exited with {process.returncode}: {process.stderr.read()}")
            if time.monotonic() > deadline:
                raise RuntimeError("the stand-in wrote no port file in time")
            time.sleep(0.05)
        url = f"http://127.0.0.1:{int(port_file.read_text())}"
        _wait_for(f"{url}/_standin/health", process, "the stand-in")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture
def admin(standin_url):
    """A clean stand-in for each test: state, faults, call log and violations reset."""
    admin = Admin(standin_url)
    admin.reset()
    return admin


def make_client(service: str, url: str, **config):
    # One attempt unless a test asks for retries: faults must reach the test as they are.
    retries = config.pop("retries", {"total_max_attempts": 1, "mode": "standard"})
    return boto3.client(
        service,
        endpoint_url=url,
        region_name=REGION,
        config=Config(retries=retries, **config),
        **FAKE_CREDENTIALS,
    )


@pytest.fixture
def control(admin):
    return make_client("personalize", admin.url)


@pytest.fixture
def runtime(admin):
    return make_client("personalize-runtime", admin.url)


@pytest.fixture
def events(admin):
    return make_client("personalize-events", admin.url)


@pytest.fixture(scope="session")
def s3(moto_endpoint):
    return boto3.client(
        "s3",
        endpoint_url=moto_endpoint,
        region_name=REGION,
        config=Config(s3={"addressing_style": "path"}),
        **FAKE_CREDENTIALS,
    )


@pytest.fixture
def bucket(s3):
    name = f"standin-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    return name


HEADER = ["USER_ID", "ITEM_ID", "TIMESTAMP", "EVENT_TYPE"]


def csv_bytes(rows, header=HEADER) -> bytes:
    """Rows written as our exporter writes them: quoting only where needed, \\n line ends."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue().encode("utf-8")


def cooccurrence_rows() -> list[tuple]:
    """160 students took A and B, 140 took C and D, everyone also took two of 40 electives.

    So popularity is A > B > C = D > electives; a student who took only A should get B first, one who
    took only C should get D first. 1,201 rows: enough to import and train.
    """
    import random

    rng = random.Random(7)
    electives = [f"elective-{n:02d}" for n in range(40)]
    rows = []
    ts = 1_700_000_000
    for n in range(300):
        user = f"student-{n:03d}"
        core = ("A", "B") if n < 160 else ("C", "D")
        for item in (*core, *rng.sample(electives, 2)):
            ts += 1
            rows.append((user, item, ts, "enroll"))
    rows.append(("only-a", "A", ts + 1, "enroll"))
    return rows


@dataclass
class Deployment:
    group: str
    dataset: str
    solution: str
    version: str
    campaign: str


INTERACTIONS_SCHEMA = json.dumps(
    {
        "type": "record",
        "name": "Interactions",
        "namespace": "com.amazonaws.personalize.schema",
        "fields": [
            {"name": "USER_ID", "type": "string"},
            {"name": "ITEM_ID", "type": "string"},
            {"name": "TIMESTAMP", "type": "long"},
            {"name": "EVENT_TYPE", "type": "string"},
        ],
        "version": "1.0",
    }
)


def finish(describe, *, key: str, status_key: str = "status", limit: int = 10) -> dict:
    """Poll a Describe call until the resource is ACTIVE or CREATE FAILED (the stand-in needs no sleep)."""
    for _ in range(limit):
        resource = describe()[key]
        if resource[status_key] in ("ACTIVE", "CREATE FAILED"):
            return resource
    raise AssertionError(f"{key} never finished")


def deploy(
    control, s3, bucket, rows, *, recipe="arn:aws:personalize:::recipe/aws-user-personalization", prefix="t"
) -> Deployment:
    """Dataset group → schema → dataset → import → solution → version → campaign, all ACTIVE."""
    s3.put_object(Bucket=bucket, Key=f"{prefix}/interactions.csv", Body=csv_bytes(rows))
    group = control.create_dataset_group(name=f"{prefix}-group")["datasetGroupArn"]
    schema = control.create_schema(name=f"{prefix}-schema", schema=INTERACTIONS_SCHEMA)["schemaArn"]
    dataset = control.create_dataset(
        name=f"{prefix}-interactions", schemaArn=schema, datasetGroupArn=group, datasetType="Interactions"
    )["datasetArn"]
    job = control.create_dataset_import_job(
        jobName=f"{prefix}-import",
        datasetArn=dataset,
        dataSource={"dataLocation": f"s3://{bucket}/{prefix}/interactions.csv"},
        roleArn="arn:aws:iam::123456789012:role/personalize",
    )["datasetImportJobArn"]
    imported = finish(lambda: control.describe_dataset_import_job(datasetImportJobArn=job), key="datasetImportJob")
    assert imported["status"] == "ACTIVE", imported.get("failureReason")
    solution = control.create_solution(name=f"{prefix}-solution", datasetGroupArn=group, recipeArn=recipe)[
        "solutionArn"
    ]
    finish(lambda: control.describe_solution(solutionArn=solution), key="solution")
    version = control.create_solution_version(solutionArn=solution, name=f"{prefix}-v1")["solutionVersionArn"]
    trained = finish(lambda: control.describe_solution_version(solutionVersionArn=version), key="solutionVersion")
    assert trained["status"] == "ACTIVE", trained.get("failureReason")
    campaign = control.create_campaign(name=f"{prefix}-campaign", solutionVersionArn=version, minProvisionedTPS=1)[
        "campaignArn"
    ]
    finish(lambda: control.describe_campaign(campaignArn=campaign), key="campaign")
    return Deployment(group, dataset, solution, version, campaign)


@dataclass
class RawResponse:
    status: int
    headers: dict
    body: bytes

    def json(self):
        return json.loads(self.body) if self.body else None


def raw_request(
    url: str,
    path: str,
    body: bytes | str | dict,
    *,
    target: str | None = None,
    content_type: str | None = None,
    sign_as: str | None = "personalize",
    headers: dict | None = None,
) -> RawResponse:
    """One HTTP request as an SDK would send it (SigV4-signed by botocore), with a body of our choosing.

    boto3 refuses to send unknown members or wrong types, so validation of those is tested this way.
    """
    import http.client

    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    if isinstance(body, dict):
        body = json.dumps(body)
    if isinstance(body, str):
        body = body.encode()
    all_headers = {"Content-Type": content_type or ("application/x-amz-json-1.1" if target else "application/json")}
    if target:
        all_headers["X-Amz-Target"] = target
    all_headers.update(headers or {})
    request = AWSRequest(method="POST", url=f"{url}{path}", data=body, headers=all_headers)
    if sign_as:
        SigV4Auth(Credentials(**{"access_key": "AKIDSTANDINTEST", "secret_key": "s"}), sign_as, REGION).add_auth(
            request
        )
    host = url.split("//", 1)[1]
    connection = http.client.HTTPConnection(host, timeout=10)
    try:
        connection.request("POST", path, body=body, headers=dict(request.headers.items()))
        response = connection.getresponse()
        return RawResponse(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
    finally:
        connection.close()
