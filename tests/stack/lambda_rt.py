"""Run a function's real Lambda binary behind a Lambda Runtime API, the way Lambda runs it.

Why: the stack tests should exercise the exact artefact SAM deploys (the ``bootstrap`` binary
of a ``provided.al2023`` function) through the exact protocol Lambda speaks to it, instead of
calling handler code in-process. That catches what in-process tests cannot: start-up (init)
failures, the environment Lambda sets, how errors are reported (``/error`` bodies and
error types), timeouts, crashes, memory use, and the async invoke retry/destination contract
the template configures (``EventInvokeConfig``).

What is emulated (stdlib only, threads + ``http.server``):

* One *sandbox* per function at a time: a process started lazily on the first invoke (a cold
  start) with its own Runtime API server on ``127.0.0.1:<free port>``. Every new process gets a
  new server (and port), so a stale ``/next`` left over from a killed process can never steal
  the next invocation - as in Lambda, where each execution environment has its own API.
* ``GET /2018-06-01/runtime/invocation/next`` blocks until an invocation is offered;
  ``POST .../invocation/{id}/response``, ``.../invocation/{id}/error`` and
  ``.../runtime/init/error`` answer ``202 {"status":"OK"}`` like Lambda.
* Timeout (``spec.timeout_s``, counted from the hand-off on ``/next``): the process is killed,
  the invoke fails with ``Sandbox.Timedout`` and the next invoke is a cold start. Init has its
  own limit (``spec.init_timeout_s``, Lambda's is 10 s).
* Process exits mid-invoke or during init: ``Runtime.ExitError`` with the exit status.
* ``/init/error``: ``Runtime.InitError``; the process is killed and restarted on the next invoke.
* Memory: after each invocation the process's peak RSS (``VmHWM``) is read; above
  ``spec.memory_mb`` the invocation fails with ``Runtime.OutOfMemory`` and the process is
  killed (Lambda would have killed it).
* Concurrency: ONE invocation at a time per function (one execution environment). Concurrent
  ``invoke`` calls - and the async worker - queue behind each other on a lock. Lambda would
  scale out instead; for tests, serialising is simpler and deterministic.
* Async (``Event``) invokes: queued, run by one worker thread with up to ``max_retries`` retries
  (the same request id on every attempt, as in Lambda), ``retry_delays`` between attempts
  instead of Lambda's ~1 min / ~2 min, and a Lambda destination record passed to
  ``on_failure`` after the last failure (``RetriesExhausted``) or when the event is too old to
  retry (``EventAgeExceeded``).

Not emulated: response size limits, ``X-Amz-Log-Type: Tail``, client context / Cognito
headers, response streaming, extensions, SnapStart, reserved concurrency/throttling.

The process environment is built from scratch (Lambda does not inherit anything from the
host): ``spec.env`` plus the variables Lambda itself sets. So host ``AWS_*`` variables, ``HOME``
etc. never leak into a function; ``PATH`` defaults to Lambda's unless ``spec.env`` sets it.
"""

from __future__ import annotations

import base64
import json
import os
import queue
import re
import secrets
import signal
import subprocess
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import KW_ONLY, dataclass
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

REGION = "us-east-1"
ACCOUNT_ID = "123456789012"
EXECUTION_ENV = "AWS_Lambda_provided.al2023"
LAMBDA_PATH = "/usr/local/bin:/usr/bin:/bin:/opt/bin"
RUNTIME_PREFIX = "/2018-06-01/runtime"


def function_arn(name: str) -> str:
    """The ARN Lambda passes in ``Lambda-Runtime-Invoked-Function-Arn`` (unqualified)."""
    return f"arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:{name}"


@dataclass
class FunctionSpec:
    """How one function is deployed: what the template says, resolved for the harness.

    ``name``, ``binary``, ``env``, ``timeout_s`` and ``memory_mb`` may be given positionally;
    everything after them is keyword-only (``log_dir`` is required) so the defaults can stay
    next to the fields they belong to.
    """

    name: str  # function name (as deployed)
    binary: Path  # the bootstrap binary
    env: dict[str, str]  # the template's Environment, resolved, plus harness additions
    timeout_s: float  # template Timeout
    memory_mb: int  # template MemorySize
    _: KW_ONLY
    max_retries: int = 2  # EventInvokeConfig MaximumRetryAttempts (async only)
    max_event_age_s: int = 21600  # EventInvokeConfig MaximumEventAgeInSeconds
    # Receives the Lambda destination record of an async invoke that failed all attempts.
    on_failure: Callable[[dict], None] | None = None
    log_dir: Path
    # Delays before retry 1, 2, ... (the last one repeats). Lambda waits ~60 s then ~120 s.
    retry_delays: tuple[float, ...] = (0.5, 1.0)
    # Lambda's init phase limit (10 s for on-demand functions).
    init_timeout_s: float = 10.0


@dataclass
class InvokeResult:
    """One attempt of one invocation, as the invoker (and CloudWatch's REPORT line) sees it."""

    request_id: str
    payload: bytes  # the function's response body, or the error JSON
    function_error: str | None  # None | "Unhandled" (as X-Amz-Function-Error)
    error: dict | None  # {"errorType":..., "errorMessage":...}
    duration_s: float  # from the hand-off on /next (or the start of the wait) to the outcome
    max_rss_mb: float  # peak resident memory of the process (VmHWM from /proc/<pid>/status)
    cold_start: bool
    init_duration_s: float | None = None  # cold starts: process start to its first /next
    attempt: int = 1  # async invokes: 1, 2, 3 ...; synchronous invokes are always 1


class InvokeError(RuntimeError):
    """The harness itself could not run an invocation (not a function error)."""


# --------------------------------------------------------------------------- sandbox


class _Invocation:
    """An invocation offered to the runtime; the Runtime API handlers fill in the outcome."""

    def __init__(self, request_id: str, payload: bytes, timeout_s: float):
        self.request_id = request_id
        self.payload = payload
        self.timeout_s = timeout_s
        self.taken_at: float | None = None  # monotonic time of the hand-off on /next
        self.deadline_ms: int | None = None
        self.done = threading.Event()
        self.response: bytes | None = None
        self.error_body: bytes | None = None
        self.error_type_header: str | None = None


class _Sandbox:
    """One execution environment: a process plus the Runtime API server only it talks to."""

    def __init__(self, spec: FunctionSpec, log_path: Path, report: Callable[[str], None]):
        self.spec = spec
        self.cond = threading.Condition()
        self.pending: _Invocation | None = None  # offered and not yet taken, or in flight
        self.closed = False
        self.init_error: dict | None = None
        self.first_next_at: float | None = None
        self.returncode: int | None = None
        self.rusage_maxrss_kb: int | None = None
        self._report = report

        self.server = _RuntimeApiServer(("127.0.0.1", 0), _RuntimeApiHandler)
        self.server.daemon_threads = True
        self.server.sandbox = self  # type: ignore[attr-defined]
        self.port = self.server.server_address[1]
        self._server_thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
            name=f"lambda-rt-{spec.name}-{self.port}", daemon=True)
        self._server_thread.start()

        self.started_at = time.monotonic()
        stream = f"{time.strftime('%Y/%m/%d', time.gmtime())}/[$LATEST]{secrets.token_hex(16)}"
        task_root = str(Path(spec.binary).resolve().parent)
        env = {"PATH": LAMBDA_PATH, "LANG": "en_US.UTF-8",
               "AWS_REGION": REGION, "AWS_DEFAULT_REGION": REGION}
        env.update(spec.env)
        env.update({
            "AWS_LAMBDA_RUNTIME_API": f"127.0.0.1:{self.port}",
            "AWS_LAMBDA_FUNCTION_NAME": spec.name,
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(spec.memory_mb),
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{spec.name}",
            "AWS_LAMBDA_LOG_STREAM_NAME": stream,
            "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
            "_HANDLER": "bootstrap",
            "LAMBDA_TASK_ROOT": task_root,
            "LAMBDA_RUNTIME_DIR": task_root,
            "AWS_EXECUTION_ENV": EXECUTION_ENV,
            "TZ": ":UTC",
        })
        log = open(log_path, "ab", buffering=0)
        try:
            self.proc = subprocess.Popen(
                [str(Path(spec.binary).resolve())], env=env, cwd=task_root, stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        except OSError:
            self.close_server()
            raise
        finally:
            log.close()

    # -- process ---------------------------------------------------------------------------

    def poll(self) -> int | None:
        """Exit status if the process has exited (reaped with wait4 to keep its rusage)."""
        if self.returncode is None:
            try:
                pid, status, ru = os.wait4(self.proc.pid, os.WNOHANG)
            except ChildProcessError:
                return self.returncode
            if pid:
                self._reaped(status, ru)
        return self.returncode

    def _reaped(self, status: int, ru) -> None:
        self.returncode = os.waitstatus_to_exitcode(status)
        self.proc.returncode = self.returncode  # keep Popen from waiting on a reaped pid
        self.rusage_maxrss_kb = ru.ru_maxrss  # kB on Linux

    def alive(self) -> bool:
        return self.poll() is None and not self.closed

    def peak_rss_mb(self) -> float:
        """VmHWM of the live process, else the reaped process's ru_maxrss (same quantity)."""
        if self.returncode is None:
            try:
                with open(f"/proc/{self.proc.pid}/status") as f:
                    for line in f:
                        if line.startswith("VmHWM:"):
                            return int(line.split()[1]) / 1024.0
            except (OSError, ValueError, IndexError):
                pass
        if self.rusage_maxrss_kb is not None:
            return self.rusage_maxrss_kb / 1024.0
        return 0.0

    def kill(self) -> None:
        """SIGKILL the process group (like Lambda freezing/killing the environment) and reap."""
        with self.cond:
            self.closed = True
            self.cond.notify_all()
        if self.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                _, status, ru = os.wait4(self.proc.pid, 0)
                self._reaped(status, ru)
            except ChildProcessError:
                pass
        self.close_server()

    def close_server(self) -> None:
        self.closed = True
        try:
            self.server.shutdown()
        finally:
            self.server.server_close()

    # -- invocations -----------------------------------------------------------------------

    def offer(self, inv: _Invocation) -> None:
        with self.cond:
            self.pending = inv
            self.cond.notify_all()

    def take(self) -> _Invocation | None:
        """Called by /next: block until an invocation is offered, or the sandbox is closed."""
        with self.cond:
            if self.first_next_at is None:
                self.first_next_at = time.monotonic()
                self.cond.notify_all()
            while not self.closed:
                inv = self.pending
                if inv is not None and inv.taken_at is None:
                    inv.taken_at = time.monotonic()
                    inv.deadline_ms = int(time.time() * 1000 + inv.timeout_s * 1000)
                    return inv
                self.cond.wait(0.25)
            return None

    def current(self, request_id: str) -> _Invocation | None:
        with self.cond:
            inv = self.pending
            if inv is not None and inv.request_id == request_id and inv.taken_at is not None:
                return inv
            return None


class _RuntimeApiServer(ThreadingHTTPServer):
    """Quiet about connections the killed process left half-open (that is the point of kill)."""

    def handle_error(self, request, client_address):
        import sys

        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


class _RuntimeApiHandler(BaseHTTPRequestHandler):
    """The Lambda Runtime API of one sandbox (HTTP/1.1 keep-alive, as the runtime clients expect)."""

    protocol_version = "HTTP/1.1"
    server_version = "lambda-rt"

    def log_message(self, format, *args):  # noqa: A002 - keep test output quiet
        pass

    @property
    def sandbox(self) -> _Sandbox:
        return self.server.sandbox  # type: ignore[attr-defined]

    def _body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _send(self, status: int, body: bytes, headers: Mapping[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _accepted(self) -> None:
        self._send(202, b'{"status":"OK"}')

    def do_GET(self):
        if self.path.split("?")[0] != f"{RUNTIME_PREFIX}/invocation/next":
            return self._send(404, b'{"errorType":"NotFound","errorMessage":"unknown path"}')
        inv = self.sandbox.take()
        if inv is None:  # sandbox killed while the runtime waited
            self.close_connection = True
            return self._send(500, b'{"errorType":"Sandbox.Closed","errorMessage":"closed"}')
        trace = (f"Root=1-{int(time.time()):08x}-{secrets.token_hex(12)};"
                 f"Parent={secrets.token_hex(8)};Sampled=0")
        self._send(200, inv.payload, {
            "Lambda-Runtime-Aws-Request-Id": inv.request_id,
            "Lambda-Runtime-Deadline-Ms": str(inv.deadline_ms),
            "Lambda-Runtime-Invoked-Function-Arn": function_arn(self.sandbox.spec.name),
            "Lambda-Runtime-Trace-Id": trace,
        })

    def do_POST(self):
        body = self._body()
        path = self.path.split("?")[0]
        if path == f"{RUNTIME_PREFIX}/init/error":
            self.sandbox.init_error = _error_dict(
                body, self.headers.get("Lambda-Runtime-Function-Error-Type"))
            with self.sandbox.cond:
                self.sandbox.cond.notify_all()
            return self._accepted()
        m = re.fullmatch(rf"{RUNTIME_PREFIX}/invocation/([^/]+)/(response|error)", path)
        if not m:
            return self._send(404, b'{"errorType":"NotFound","errorMessage":"unknown path"}')
        inv = self.sandbox.current(urllib.parse.unquote(m.group(1)))
        if inv is None or inv.done.is_set():
            return self._send(400, json.dumps({
                "errorType": "InvalidRequestID",
                "errorMessage": f"Invalid request ID: {m.group(1)}"}).encode())
        if m.group(2) == "response":
            inv.response = body
        else:
            inv.error_body = body
            inv.error_type_header = self.headers.get("Lambda-Runtime-Function-Error-Type")
        self._accepted()
        inv.done.set()


def _error_dict(body: bytes, header_type: str | None) -> dict:
    """The error JSON a runtime posted, or one built from its text and error-type header."""
    try:
        parsed = json.loads(body) if body else None
    except ValueError:
        parsed = None
    if isinstance(parsed, dict) and ("errorType" in parsed or "errorMessage" in parsed):
        return parsed
    return {"errorType": header_type or "Unhandled",
            "errorMessage": body.decode("utf-8", "replace")}


# --------------------------------------------------------------------------- function


class LambdaFunction:
    """One deployed function: lazily started sandbox, sync and async invokes, history.

    Thread-safe; invocations run one at a time (see the module docstring).
    """

    def __init__(self, spec: FunctionSpec):
        self.spec = spec
        self.arn = function_arn(spec.name)
        self.log_path = Path(spec.log_dir) / f"{spec.name}.log"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._invoke_lock = threading.Lock()  # one invocation at a time
        self._state_lock = threading.Lock()
        self._sandbox: _Sandbox | None = None
        self._history: list[InvokeResult] = []
        self._queue: queue.Queue = queue.Queue()
        self._outstanding = 0
        self._idle = threading.Condition(self._state_lock)
        self._worker: threading.Thread | None = None
        self._stopped = False
        self.failure_records: list[dict] = []  # every destination record, also without on_failure
        self.on_failure_errors: list[BaseException] = []  # exceptions raised by on_failure

    # -- public API --------------------------------------------------------------------------

    def invoke(self, payload: bytes) -> InvokeResult:
        """RequestResponse invoke: run it now (after any invocation in flight) and return."""
        return self._invoke(_request_id(), _as_bytes(payload), attempt=1)

    def invoke_async(self, payload: bytes) -> str:
        """Event invoke: queue it and return its request id at once (Lambda answers 202)."""
        if self._stopped:
            raise InvokeError(f"{self.spec.name} is stopped")
        rid = _request_id()
        with self._state_lock:
            self._outstanding += 1
            if self._worker is None:
                self._worker = threading.Thread(target=self._work, daemon=True,
                                                name=f"lambda-async-{self.spec.name}")
                self._worker.start()
        self._queue.put((rid, _as_bytes(payload), time.time()))
        return rid

    def wait_idle(self, timeout: float) -> None:
        """Block until every async invoke has finished (all attempts, on_failure called)."""
        end = time.monotonic() + timeout
        with self._idle:
            while self._outstanding:
                left = end - time.monotonic()
                if left <= 0:
                    raise TimeoutError(
                        f"{self.spec.name}: {self._outstanding} async invoke(s) still pending "
                        f"after {timeout} s")
                self._idle.wait(left)

    def invocations(self) -> list[InvokeResult]:
        """Every attempt so far (sync and async), in the order they finished."""
        with self._state_lock:
            return list(self._history)

    def stop(self) -> None:
        """Kill the process and the async worker; queued async invokes are dropped.

        An async invoke in flight ends with its current attempt (not retried, no on_failure).
        """
        self._stopped = True
        dropped = 0
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            dropped += item is not None
        self._queue.put(None)
        with self._idle:
            self._outstanding -= dropped
            self._idle.notify_all()
        with self._state_lock:
            sb, self._sandbox = self._sandbox, None
        if sb is not None:
            sb.kill()

    @property
    def runtime_api(self) -> str | None:
        """host:port of the current sandbox's Runtime API (None before the first invoke)."""
        sb = self._sandbox
        return f"127.0.0.1:{sb.port}" if sb is not None and not sb.closed else None

    @property
    def pid(self) -> int | None:
        sb = self._sandbox
        return sb.proc.pid if sb is not None and sb.alive() else None

    # -- internals ---------------------------------------------------------------------------

    def _log(self, line: str) -> None:
        """Lambda's own START/END/REPORT lines, in the function's log like CloudWatch has them."""
        with open(self.log_path, "a", encoding="utf-8") as f:
            f.write(line + "\n")

    def _invoke(self, request_id: str, payload: bytes, attempt: int) -> InvokeResult:
        if self._stopped:
            raise InvokeError(f"{self.spec.name} is stopped")
        with self._invoke_lock:
            result = self._run(request_id, payload, attempt)
        with self._state_lock:
            self._history.append(result)
        return result

    def _run(self, request_id: str, payload: bytes, attempt: int) -> InvokeResult:
        spec = self.spec
        cold = False
        sb = self._sandbox
        if sb is None or not sb.alive():
            if sb is not None:
                sb.kill()
            sb = _Sandbox(spec, self.log_path, self._log)
            with self._state_lock:
                self._sandbox = sb
            cold = True
        inv = _Invocation(request_id, payload, spec.timeout_s)
        self._log(f"START RequestId: {request_id} Version: $LATEST")
        waited_from = time.monotonic()
        sb.offer(inv)

        error: dict | None = None
        kill = False
        while True:
            if inv.done.wait(0.01):
                break
            rc = sb.poll()
            if sb.init_error is not None and inv.taken_at is None:
                ie = sb.init_error
                error = {"errorType": "Runtime.InitError",
                         "errorMessage": f"RequestId: {request_id} Error: init failed: "
                                         f"{ie.get('errorType')}: {ie.get('errorMessage')}",
                         "initError": ie}
                kill = True
                break
            if rc is not None:
                if inv.done.is_set():
                    break
                error = {"errorType": "Runtime.ExitError",
                         "errorMessage": f"RequestId: {request_id} Error: Runtime exited with "
                                         f"error: {_exit_text(rc)}"}
                break
            now = time.monotonic()
            if inv.taken_at is not None:
                if now - inv.taken_at > spec.timeout_s:
                    error = {"errorType": "Sandbox.Timedout",
                             "errorMessage": f"RequestId: {request_id} Error: Task timed out "
                                             f"after {spec.timeout_s:.2f} seconds"}
                    kill = True
                    break
            elif cold and now - sb.started_at > spec.init_timeout_s and sb.first_next_at is None:
                error = {"errorType": "Sandbox.Timedout",
                         "errorMessage": f"RequestId: {request_id} Error: init did not finish "
                                         f"within {spec.init_timeout_s:.2f} seconds"}
                kill = True
                break
        ended = time.monotonic()
        started = inv.taken_at if inv.taken_at is not None else waited_from
        duration = max(0.0, ended - started)
        init_duration = None
        if cold:
            init_duration = ((sb.first_next_at or ended) - sb.started_at)

        rss = sb.peak_rss_mb()
        function_error = None
        if error is None and rss > spec.memory_mb:
            error = {"errorType": "Runtime.OutOfMemory",
                     "errorMessage": f"RequestId: {request_id} Error: Runtime exited with error: "
                                     f"signal: killed (max memory used {rss:.0f} MB > "
                                     f"{spec.memory_mb} MB)"}
            kill = True
        if error is not None:
            out = json.dumps(error, separators=(",", ":")).encode()
            function_error = "Unhandled"
        elif inv.error_body is not None:
            error = _error_dict(inv.error_body, inv.error_type_header)
            out = inv.error_body if _is_json(inv.error_body) else json.dumps(error).encode()
            function_error = "Unhandled"
        else:
            out = inv.response or b""

        with sb.cond:
            sb.pending = None
        if kill or sb.poll() is not None:
            sb.kill()
            with self._state_lock:
                if self._sandbox is sb:
                    self._sandbox = None

        if error is not None and error["errorType"] in ("Sandbox.Timedout", "Runtime.ExitError",
                                                        "Runtime.OutOfMemory",
                                                        "Runtime.InitError"):
            self._log(f"{datetime.now(timezone.utc).isoformat()} {request_id} "
                      f"{error['errorMessage']}")
        self._log(f"END RequestId: {request_id}")
        report = (f"REPORT RequestId: {request_id}\tDuration: {duration * 1000:.2f} ms\t"
                  f"Billed Duration: {int(duration * 1000) + 1} ms\tMemory Size: "
                  f"{spec.memory_mb} MB\tMax Memory Used: {int(rss)} MB")
        if init_duration is not None:
            report += f"\tInit Duration: {init_duration * 1000:.2f} ms"
        self._log(report)
        return InvokeResult(request_id=request_id, payload=out, function_error=function_error,
                            error=error, duration_s=duration, max_rss_mb=rss, cold_start=cold,
                            init_duration_s=init_duration, attempt=attempt)

    def _work(self) -> None:
        """The async worker: runs queued events with Lambda's retry and destination rules."""
        while True:
            item = self._queue.get()
            if item is None:
                return
            rid, payload, enqueued = item
            try:
                self._run_event(rid, payload, enqueued)
            except Exception as e:  # noqa: BLE001 - a harness bug must not wedge wait_idle
                self.on_failure_errors.append(e)
            finally:
                with self._idle:
                    self._outstanding -= 1
                    self._idle.notify_all()

    def _run_event(self, rid: str, payload: bytes, enqueued: float) -> None:
        spec = self.spec
        attempt = 0
        while True:
            if self._stopped:
                return
            attempt += 1
            result = self._invoke(rid, payload, attempt)
            if result.function_error is None:
                return
            if attempt > spec.max_retries:
                condition = "RetriesExhausted"
                break
            delays = spec.retry_delays or (0.0,)
            delay = delays[min(attempt - 1, len(delays) - 1)]
            if time.time() + delay - enqueued > spec.max_event_age_s:
                condition = "EventAgeExceeded"
                break
            time.sleep(delay)
        record = self.destination_record(rid, payload, result, condition, attempt)
        self.failure_records.append(record)
        if spec.on_failure is not None:
            try:
                spec.on_failure(record)
            except Exception as e:  # noqa: BLE001 - recorded for the test to assert on
                self.on_failure_errors.append(e)

    def destination_record(self, request_id: str, payload: bytes, last: InvokeResult,
                           condition: str, attempts: int) -> dict:
        """The record Lambda sends to an OnFailure destination (SQS/SNS/EventBridge/Lambda)."""
        try:
            request_payload = json.loads(payload)
        except ValueError:
            request_payload = payload.decode("utf-8", "replace")
        try:
            response_payload = json.loads(last.payload)
        except ValueError:
            response_payload = last.payload.decode("utf-8", "replace")
        return {
            "version": "1.0",
            "timestamp": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
            "requestContext": {
                "requestId": request_id,
                "functionArn": f"{self.arn}:$LATEST",
                "condition": condition,
                "approximateInvokeCount": attempts,
            },
            "requestPayload": request_payload,
            "responseContext": {
                "statusCode": 200,
                "executedVersion": "$LATEST",
                "functionError": last.function_error or "Unhandled",
            },
            "responsePayload": response_payload,
        }


def _request_id() -> str:
    return str(uuid.uuid4())


def _as_bytes(payload) -> bytes:
    if isinstance(payload, (bytes, bytearray)):
        return bytes(payload)
    if isinstance(payload, str):
        return payload.encode()
    return json.dumps(payload).encode()


def _is_json(body: bytes) -> bool:
    try:
        json.loads(body)
        return True
    except ValueError:
        return False


def _exit_text(rc: int) -> str:
    """Go-style exit text, as Lambda prints it ("exit status 1", "signal: killed")."""
    if rc < 0:
        names = {signal.SIGKILL: "killed", signal.SIGSEGV: "segmentation fault",
                 signal.SIGABRT: "aborted", signal.SIGTERM: "terminated"}
        sig = -rc
        return f"signal: {names.get(sig, signal.Signals(sig).name if sig in signal.valid_signals() else sig)}"
    return f"exit status {rc}"


# --------------------------------------------------------------------------- registry


class Lambdas:
    """Functions by name, and the Lambda Invoke REST API (what the SDKs call) on top of them."""

    _INVOKE_PATH = re.compile(r"^/2015-03-31/functions/(?P<fn>[^/]+)/invocations$")

    def __init__(self, functions: Iterable[LambdaFunction] = ()):
        self._functions: dict[str, LambdaFunction] = {}
        for fn in functions:
            self.add(fn)

    def add(self, fn: LambdaFunction | FunctionSpec) -> LambdaFunction:
        if isinstance(fn, FunctionSpec):
            fn = LambdaFunction(fn)
        self._functions[fn.spec.name] = fn
        return fn

    def __getitem__(self, name: str) -> LambdaFunction:
        fn = self.resolve(name)
        if fn is None:
            raise KeyError(name)
        return fn

    def __contains__(self, name: str) -> bool:
        return self.resolve(name) is not None

    def __iter__(self):
        return iter(list(self._functions.values()))

    def names(self) -> list[str]:
        return list(self._functions)

    def resolve(self, ref: str) -> LambdaFunction | None:
        """A function by name, name:qualifier, full/partial ARN (qualifier $LATEST or none)."""
        name, _ = _parse_function_ref(ref)
        return self._functions.get(name)

    def stop(self) -> None:
        for fn in self:
            fn.stop()

    def wait_idle(self, timeout: float) -> None:
        """Every function's async queue drained, within one overall timeout."""
        end = time.monotonic() + timeout
        for fn in self:
            fn.wait_idle(max(0.0, end - time.monotonic()))

    def handle_invoke(self, path: str, headers: Mapping[str, str],
                      body: bytes) -> tuple[int, dict[str, str], bytes]:
        """POST /2015-03-31/functions/{name or ARN}/invocations, answered the way Lambda does."""
        h = {k.lower(): v for k, v in headers.items()}
        parsed = urllib.parse.urlsplit(path)
        m = self._INVOKE_PATH.match(parsed.path)
        if not m:
            return _api_error(404, "UnknownOperationException", f"Unknown operation {path}")
        ref = urllib.parse.unquote(m.group("fn"))
        name, qualifier = _parse_function_ref(ref)
        qualifier = urllib.parse.parse_qs(parsed.query).get("Qualifier", [qualifier])[0]
        fn = self._functions.get(name)
        if fn is None or qualifier not in (None, "", "$LATEST"):
            arn = function_arn(name) + (f":{qualifier}" if qualifier else "")
            return _api_error(404, "ResourceNotFoundException", f"Function not found: {arn}")
        kind = h.get("x-amz-invocation-type", "RequestResponse")
        if kind not in ("RequestResponse", "Event", "DryRun"):
            return _api_error(400, "InvalidParameterValueException",
                              f"1 validation error detected: Value '{kind}' at 'invocationType' "
                              "failed to satisfy constraint: Member must satisfy enum value set: "
                              "[Event, RequestResponse, DryRun]")
        body = body or b""
        if body.strip() and not _is_json(body):
            return _api_error(400, "InvalidRequestContentException",
                              "Could not parse request body into json: Could not parse payload "
                              "into json")
        if kind == "DryRun":
            return 204, {"x-amzn-RequestId": _request_id()}, b""
        if kind == "Event":
            rid = fn.invoke_async(body)
            return 202, {"x-amzn-RequestId": rid, "Content-Length": "0"}, b""
        result = fn.invoke(body)
        out = {"Content-Type": "application/json", "x-amzn-RequestId": result.request_id,
               "X-Amz-Executed-Version": "$LATEST"}
        if result.function_error:
            out["X-Amz-Function-Error"] = result.function_error
        if h.get("x-amz-log-type") == "Tail":
            out["X-Amz-Log-Result"] = base64.b64encode(_tail(fn.log_path, 4096)).decode()
        return 200, out, result.payload


def _parse_function_ref(ref: str) -> tuple[str, str | None]:
    """(name, qualifier) from name, name:qual, account:function:name[:qual] or a full ARN."""
    parts = ref.split(":")
    if ref.startswith("arn:") and len(parts) >= 7:
        return parts[6], (parts[7] if len(parts) > 7 else None)
    if len(parts) >= 3 and parts[1] == "function":
        return parts[2], (parts[3] if len(parts) > 3 else None)
    if len(parts) == 2:
        return parts[0], parts[1]
    return ref, None


def _api_error(status: int, error_type: str, message: str) -> tuple[int, dict[str, str], bytes]:
    body = json.dumps({"Type": "User", "message": message}).encode()
    return status, {"Content-Type": "application/json", "x-amzn-ErrorType": error_type,
                    "x-amzn-RequestId": _request_id()}, body


def _tail(path: Path, n: int) -> bytes:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - n))
            return f.read()
    except OSError:
        return b""


__all__ = ["ACCOUNT_ID", "REGION", "FunctionSpec", "InvokeError", "InvokeResult",
           "LambdaFunction", "Lambdas", "function_arn"]
