"""Tests of the Lambda Runtime API emulation (lambda_rt) with the real binaries and a fake runtime.

The real binaries (target/debug) show the protocol works with the Rust runtime client
(lambda_runtime / lambda_http); a tiny Python runtime client covers what the real ones cannot be
made to do on demand: hang past the timeout, exit mid-invoke, blow the memory limit, post
/init/error.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from .lambda_rt import (
    FunctionSpec,
    InvokeError,
    LambdaFunction,
    Lambdas,
    function_arn,
)

ROOT = Path(__file__).resolve().parents[2]
DEBUG = ROOT / "target" / "debug"


def binary(name: str) -> Path:
    """A debug binary, built once if missing (the workspace is not rebuilt otherwise)."""
    path = DEBUG / name
    if not path.exists():
        subprocess.run(["cargo", "build", "--bin", name], cwd=ROOT, check=True)
    return path


# ------------------------------------------------------------------------ fake runtime

FAKE_RUNTIME = textwrap.dedent('''\
    """A minimal Lambda runtime client; the payload says what to do."""
    import json, os, sys, time, urllib.request
    api = "http://" + os.environ["AWS_LAMBDA_RUNTIME_API"] + "/2018-06-01/runtime"

    def post(path, body, headers=None):
        req = urllib.request.Request(api + path, data=json.dumps(body).encode(),
                                     headers=headers or {}, method="POST")
        return urllib.request.urlopen(req).read()

    if os.environ.get("FAKE_INIT_SLEEP"):
        time.sleep(float(os.environ["FAKE_INIT_SLEEP"]))
    if os.environ.get("FAKE_INIT_ERROR"):
        post("/init/error", {"errorType": "Fake.Init", "errorMessage": "no config"},
             {"Lambda-Runtime-Function-Error-Type": "Fake.Init"})
        sys.exit(1)
    if os.environ.get("FAKE_INIT_EXIT"):
        sys.exit(int(os.environ["FAKE_INIT_EXIT"]))
    print("init pid", os.getpid(), flush=True)
    keep = []
    while True:
        r = urllib.request.urlopen(api + "/invocation/next")
        rid = r.headers["Lambda-Runtime-Aws-Request-Id"]
        ev = json.loads(r.read() or b"{}")
        if "sleep" in ev:
            time.sleep(ev["sleep"])
        if "exit" in ev:
            os._exit(ev["exit"])
        if "alloc_mb" in ev:
            keep.append(b"\\x01" * (ev["alloc_mb"] << 20))
        if "fail" in ev:
            post(f"/invocation/{rid}/error", {"errorType": ev["fail"], "errorMessage": "failed"},
                 {"Lambda-Runtime-Function-Error-Type": ev["fail"]})
            continue
        out = {"event": ev, "pid": os.getpid(), "env": dict(os.environ),
               "headers": {k: v for k, v in r.headers.items() if k.startswith("Lambda-")}}
        post(f"/invocation/{rid}/response", out)
''')


@pytest.fixture
def fake_bootstrap(tmp_path: Path) -> Path:
    path = tmp_path / "task" / "bootstrap"
    path.parent.mkdir()
    path.write_text(f"#!{sys.executable}\n" + FAKE_RUNTIME)
    path.chmod(0o755)
    return path


@pytest.fixture
def make(tmp_path: Path):
    """Builds LambdaFunctions and stops them all at the end of the test."""
    made: list[LambdaFunction] = []

    def _make(name: str, bin_: Path, env: dict[str, str] | None = None, *, timeout_s=10.0,
              memory_mb=512, **kw) -> LambdaFunction:
        fn = LambdaFunction(FunctionSpec(name, bin_, dict(env or {}), timeout_s, memory_mb,
                                         log_dir=tmp_path / "logs", **kw))
        made.append(fn)
        return fn

    yield _make
    for fn in made:
        fn.stop()


# ------------------------------------------------------------------------ fake runtime tests


def test_environment_headers_and_warm_reuse(make, fake_bootstrap, tmp_path):
    fn = make("fake-fn", fake_bootstrap, {"FOO": "bar"}, timeout_s=7, memory_mb=256)
    os.environ["HOST_ONLY_VAR"] = "leak?"
    try:
        first = fn.invoke(b'{"hello": 1}')
    finally:
        del os.environ["HOST_ONLY_VAR"]
    assert first.function_error is None, first.payload
    out = json.loads(first.payload)
    assert out["event"] == {"hello": 1}
    env = out["env"]
    assert env["FOO"] == "bar"
    assert "HOST_ONLY_VAR" not in env
    assert env["AWS_LAMBDA_RUNTIME_API"] == fn.runtime_api
    assert env["AWS_LAMBDA_FUNCTION_NAME"] == "fake-fn"
    assert env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] == "256"
    assert env["AWS_LAMBDA_FUNCTION_VERSION"] == "$LATEST"
    assert env["AWS_LAMBDA_LOG_GROUP_NAME"] == "/aws/lambda/fake-fn"
    assert env["AWS_LAMBDA_LOG_STREAM_NAME"]
    assert env["_HANDLER"] == "bootstrap"
    assert env["LAMBDA_TASK_ROOT"] == str(fake_bootstrap.parent)
    assert env["AWS_EXECUTION_ENV"] == "AWS_Lambda_provided.al2023"
    assert env["TZ"] == ":UTC"
    h = out["headers"]
    assert h["Lambda-Runtime-Aws-Request-Id"] == first.request_id
    assert h["Lambda-Runtime-Invoked-Function-Arn"] == function_arn("fake-fn")
    assert h["Lambda-Runtime-Trace-Id"].startswith("Root=1-")
    deadline = int(h["Lambda-Runtime-Deadline-Ms"])
    assert 0 < deadline - time.time() * 1000 <= 7000
    assert first.cold_start and first.init_duration_s is not None
    assert first.max_rss_mb > 1

    second = fn.invoke(b"{}")
    assert not second.cold_start
    assert json.loads(second.payload)["pid"] == out["pid"]
    assert [r.request_id for r in fn.invocations()] == [first.request_id, second.request_id]
    log = (tmp_path / "logs" / "fake-fn.log").read_text()
    assert "init pid" in log
    assert f"REPORT RequestId: {first.request_id}" in log and "Init Duration" in log


def test_function_error_is_unhandled_with_posted_body(make, fake_bootstrap):
    fn = make("fake-err", fake_bootstrap)
    r = fn.invoke(b'{"fail": "Custom.Boom"}')
    assert r.function_error == "Unhandled"
    assert r.error == {"errorType": "Custom.Boom", "errorMessage": "failed"}
    assert json.loads(r.payload) == r.error
    # an /error does not kill the process
    assert not fn.invoke(b"{}").cold_start


def test_timeout_kills_and_next_invoke_is_cold(make, fake_bootstrap):
    fn = make("fake-slow", fake_bootstrap, timeout_s=0.5)
    assert fn.invoke(b"{}").cold_start
    pid = fn.pid
    t0 = time.monotonic()
    r = fn.invoke(b'{"sleep": 30}')
    assert time.monotonic() - t0 < 5
    assert r.function_error == "Unhandled"
    assert r.error["errorType"] == "Sandbox.Timedout"
    assert "Task timed out after 0.50 seconds" in r.error["errorMessage"]
    assert not os.path.exists(f"/proc/{pid}") or "zombie" in open(f"/proc/{pid}/status").read()
    again = fn.invoke(b"{}")
    assert again.cold_start and again.function_error is None
    assert json.loads(again.payload)["pid"] != pid


def test_exit_mid_invoke_is_exit_error_then_restart(make, fake_bootstrap):
    fn = make("fake-exit", fake_bootstrap)
    r = fn.invoke(b'{"exit": 3}')
    assert r.error["errorType"] == "Runtime.ExitError"
    assert "exit status 3" in r.error["errorMessage"]
    assert r.function_error == "Unhandled"
    again = fn.invoke(b"{}")
    assert again.cold_start and again.function_error is None


def test_exit_during_init_is_exit_error(make, fake_bootstrap):
    fn = make("fake-init-exit", fake_bootstrap, {"FAKE_INIT_EXIT": "2"})
    r = fn.invoke(b"{}")
    assert r.error["errorType"] == "Runtime.ExitError"
    assert "exit status 2" in r.error["errorMessage"]


def test_init_error_and_restart(make, fake_bootstrap):
    fn = make("fake-init", fake_bootstrap, {"FAKE_INIT_ERROR": "1"})
    r1 = fn.invoke(b"{}")
    assert r1.error["errorType"] == "Runtime.InitError"
    assert "Fake.Init" in r1.error["errorMessage"]
    r2 = fn.invoke(b"{}")
    assert r2.cold_start and r2.error["errorType"] == "Runtime.InitError"


def test_init_timeout(make, fake_bootstrap):
    fn = make("fake-init-slow", fake_bootstrap, {"FAKE_INIT_SLEEP": "30"}, init_timeout_s=0.5)
    t0 = time.monotonic()
    r = fn.invoke(b"{}")
    assert time.monotonic() - t0 < 5
    assert r.error["errorType"] == "Sandbox.Timedout"


def test_out_of_memory_fails_and_restarts(make, fake_bootstrap):
    fn = make("fake-mem", fake_bootstrap, memory_mb=128)
    ok = fn.invoke(b"{}")
    assert ok.function_error is None and ok.max_rss_mb < 128
    r = fn.invoke(b'{"alloc_mb": 200}')
    assert r.error["errorType"] == "Runtime.OutOfMemory", r
    assert r.max_rss_mb > 128
    assert fn.invoke(b"{}").cold_start


def test_concurrent_invokes_queue_one_at_a_time(make, fake_bootstrap):
    fn = make("fake-conc", fake_bootstrap)
    fn.invoke(b"{}")  # warm
    results = []
    threads = [threading.Thread(target=lambda: results.append(fn.invoke(b'{"sleep": 0.3}')))
               for _ in range(3)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert time.monotonic() - t0 >= 0.85
    assert all(r.function_error is None for r in results)
    assert len({json.loads(r.payload)["pid"] for r in results}) == 1


def test_async_success_runs_once(make, fake_bootstrap):
    records = []
    fn = make("fake-async-ok", fake_bootstrap, on_failure=records.append)
    rid = fn.invoke_async(b'{"a": 1}')
    fn.wait_idle(10)
    assert [r.request_id for r in fn.invocations()] == [rid]
    assert records == []


def test_async_event_age_exceeded(make, fake_bootstrap):
    records = []
    fn = make("fake-async-age", fake_bootstrap, on_failure=records.append, max_event_age_s=0,
              retry_delays=(0.2,))
    fn.invoke_async(b'{"fail": "X"}')
    fn.wait_idle(10)
    assert len(fn.invocations()) == 1
    assert records[0]["requestContext"]["condition"] == "EventAgeExceeded"


def test_wait_idle_times_out(make, fake_bootstrap):
    fn = make("fake-async-slow", fake_bootstrap)
    fn.invoke_async(b'{"sleep": 2}')
    with pytest.raises(TimeoutError):
        fn.wait_idle(0.2)
    fn.wait_idle(20)


def test_stop_drops_queued_async_invokes(make, fake_bootstrap):
    fn = make("fake-async-stop", fake_bootstrap)
    for _ in range(3):
        fn.invoke_async(b'{"sleep": 0.5}')
    time.sleep(0.3)
    fn.stop()
    fn.wait_idle(5)
    assert len(fn.invocations()) <= 1


def test_stopped_function_refuses(make, fake_bootstrap):
    fn = make("fake-stop", fake_bootstrap)
    fn.invoke(b"{}")
    fn.stop()
    with pytest.raises(InvokeError):
        fn.invoke(b"{}")


# ------------------------------------------------------------------------ real binaries


def training_export_env(tmp_path: Path) -> dict[str, str]:
    """What the template gives training-export, pointed at an endpoint that refuses connections.

    In Lambda the binary insists on its AWS resources (INTERACTIONS_TABLE, DATA_BUCKET,
    RUNS_TABLE, EVENT_BUS_NAME): the embedded defaults would not persist there.
    """
    return {
        "DATA_DIR": str(tmp_path / "data"),
        "INTERACTIONS_TABLE": "interactions",
        "DATA_BUCKET": "bucket",
        "RUNS_TABLE": "runs",
        "EVENT_BUS_NAME": "student-event-bus",
        "AWS_ACCESS_KEY_ID": "AKIDEXAMPLE",
        "AWS_SECRET_ACCESS_KEY": "secret",
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
    }


def test_training_export_without_aws_config_fails_init(make, tmp_path):
    fn = make("te-noconf", binary("training-export-lambda"), {"DATA_DIR": str(tmp_path / "d")})
    r = fn.invoke(b'{"action": "status"}')
    # main() returns the configuration error: the process exits before /next, no /init/error
    assert r.error["errorType"] == "Runtime.ExitError", r
    assert "exit status 1" in r.error["errorMessage"]
    log = (tmp_path / "logs" / "te-noconf.log").read_text()
    assert "INTERACTIONS_TABLE" in log
    assert fn.invoke(b"{}").cold_start  # restarted, and fails again


def test_training_export_bad_payload_is_function_error(make, tmp_path):
    fn = make("te", binary("training-export-lambda"), training_export_env(tmp_path))
    r = fn.invoke(b'{"action": "bogus"}')
    assert r.cold_start
    assert r.function_error == "Unhandled"
    assert r.error["errorType"] == "NonRetryable.BadPayload"
    assert "bogus" in r.error["errorMessage"]
    assert json.loads(r.payload) == r.error
    assert 1 < r.max_rss_mb < 512
    # the process survives a function error
    assert not fn.invoke(b'"not an object"').cold_start


def test_training_export_async_bad_payload_retries_then_on_failure(make, tmp_path):
    records: list[dict] = []
    fn = make("te-async", binary("training-export-lambda"), training_export_env(tmp_path),
              on_failure=records.append, retry_delays=(0.2, 0.3))
    rid = fn.invoke_async(b'{"action": "bogus"}')
    fn.wait_idle(60)
    attempts = fn.invocations()
    assert [a.request_id for a in attempts] == [rid] * 3
    assert [a.attempt for a in attempts] == [1, 2, 3]
    assert all(a.error["errorType"] == "NonRetryable.BadPayload" for a in attempts)
    assert len(records) == 1
    rec = records[0]
    assert rec["version"] == "1.0" and rec["timestamp"].endswith("Z")
    assert rec["requestContext"] == {
        "requestId": rid,
        "functionArn": function_arn("te-async") + ":$LATEST",
        "condition": "RetriesExhausted",
        "approximateInvokeCount": 3,
    }
    assert rec["requestPayload"] == {"action": "bogus"}
    assert rec["responseContext"] == {"statusCode": 200, "executedVersion": "$LATEST",
                                      "functionError": "Unhandled"}
    assert rec["responsePayload"]["errorType"] == "NonRetryable.BadPayload"


def test_ranking_api_health_through_api_gateway_event(make, tmp_path):
    fn = make("api", binary("ranking-api"), {"DATA_DIR": str(tmp_path / "d")})
    event = {
        "resource": "/health", "path": "/health", "httpMethod": "GET", "headers": {},
        "multiValueHeaders": {}, "queryStringParameters": None,
        "multiValueQueryStringParameters": None, "pathParameters": None, "stageVariables": None,
        "requestContext": {"resourcePath": "/health", "httpMethod": "GET", "path": "/v1/health",
                           "stage": "v1", "requestId": "r", "accountId": "123456789012",
                           "apiId": "a", "identity": {"sourceIp": "192.0.2.1"}},
        "body": None, "isBase64Encoded": False,
    }
    r = fn.invoke(json.dumps(event).encode())
    assert r.function_error is None, r.payload
    resp = json.loads(r.payload)
    assert resp["statusCode"] == 200
    assert json.loads(resp["body"])["status"] == "ok"


def test_event_consumer_needs_aws_config_in_lambda(make, tmp_path):
    fn = make("consumer-noconf", binary("event-consumer"), {"DATA_DIR": str(tmp_path / "d")})
    r = fn.invoke(json.dumps(consumer_fixture("student_enrolled.json")).encode())
    assert r.error["errorType"] == "Runtime.ExitError", r
    assert "IDEMPOTENCY_TABLE" in (tmp_path / "logs" / "consumer-noconf.log").read_text()


def consumer_fixture(name: str) -> dict:
    return json.loads((ROOT / "event-consumer" / "tests" / "fixtures" / name).read_text())


def test_event_consumer_bad_event_is_non_retryable(make, tmp_path):
    env = {
        "DATA_DIR": str(tmp_path / "d"),
        "INTERACTIONS_TABLE": "interactions",
        "IDEMPOTENCY_TABLE": "ledger",
        "STUDENTS_TABLE": "students",
        "MAIL_TRANSPORT": "ses",
        "EMAIL_SENDER": "no-reply@student-system.test",
        "AWS_ACCESS_KEY_ID": "AKIDEXAMPLE",
        "AWS_SECRET_ACCESS_KEY": "secret",
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
    }
    fn = make("consumer", binary("event-consumer"), env)
    r = fn.invoke(json.dumps(consumer_fixture("bad_invalid_email.json")).encode())
    assert r.cold_start
    assert r.function_error == "Unhandled", r
    assert r.error["errorType"].startswith("NonRetryable."), r.error


# ------------------------------------------------------------------------ Invoke REST API


def test_handle_invoke(make, tmp_path, fake_bootstrap):
    records: list[dict] = []
    te = make("te-api", binary("training-export-lambda"), training_export_env(tmp_path),
              on_failure=records.append, retry_delays=(0.1, 0.1))
    fake = make("fake-api", fake_bootstrap)
    lambdas = Lambdas([te, fake])

    # RequestResponse (the default), by name
    status, headers, body = lambdas.handle_invoke(
        "/2015-03-31/functions/fake-api/invocations", {}, b'{"x": 1}')
    assert status == 200
    assert headers["X-Amz-Executed-Version"] == "$LATEST"
    assert "X-Amz-Function-Error" not in headers
    assert json.loads(body)["event"] == {"x": 1}

    # by (URL-encoded) ARN, function error
    arn = function_arn("te-api").replace(":", "%3A")
    status, headers, body = lambdas.handle_invoke(
        f"/2015-03-31/functions/{arn}/invocations",
        {"x-amz-invocation-type": "RequestResponse"}, b'{"action": "bogus"}')
    assert status == 200
    assert headers["X-Amz-Function-Error"] == "Unhandled"
    assert json.loads(body)["errorType"] == "NonRetryable.BadPayload"

    # Event: 202 at once, retried in the background, then the destination record
    status, headers, body = lambdas.handle_invoke(
        "/2015-03-31/functions/te-api/invocations", {"X-Amz-Invocation-Type": "Event"},
        b'{"action": "bogus"}')
    assert status == 202 and body == b""
    rid = headers["x-amzn-RequestId"]
    te.wait_idle(60)
    assert records and records[0]["requestContext"]["requestId"] == rid

    # DryRun
    status, _, body = lambdas.handle_invoke(
        "/2015-03-31/functions/fake-api/invocations", {"X-Amz-Invocation-Type": "DryRun"}, b"")
    assert status == 204 and body == b""

    # unknown function
    status, headers, body = lambdas.handle_invoke(
        "/2015-03-31/functions/nope/invocations", {}, b"{}")
    assert status == 404
    assert headers["x-amzn-ErrorType"] == "ResourceNotFoundException"
    err = json.loads(body)
    assert err["Type"] == "User" and "nope" in err["message"]

    # a payload that is not JSON is refused before the function runs
    status, headers, _ = lambdas.handle_invoke(
        "/2015-03-31/functions/fake-api/invocations", {}, b"not json")
    assert status == 400 and headers["x-amzn-ErrorType"] == "InvalidRequestContentException"

    assert "te-api" in lambdas and lambdas["fake-api"] is fake
    assert lambdas.resolve(function_arn("fake-api") + ":$LATEST") is fake
