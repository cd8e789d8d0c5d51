"""The HTTP side: Personalize's wire protocols, request/response validation, faults, and the admin API.

One port serves all three APIs, as the SDKs call them:
- control plane `personalize` (awsJson1_1): `POST /`, `X-Amz-Target: AmazonPersonalize.<Operation>`;
- runtime `personalize-runtime` and `personalize-events` (restJson1): `POST /recommendations`, ...
Everything under `/_standin/` is the admin API for tests (JSON, no signature).
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import botocore

from .models import CONTROL_PLANE, Catalog, StrictValidator, Violation, coral_message
from .state import FAILABLE_KINDS, Personalize, ServiceError

JSON_1_1 = "application/x-amz-json-1.1"
REST_JSON = "application/json"
# AWS SDKs sign with SigV4 and always send this shape of header; the signature itself is not checked.
SIGV4 = re.compile(
    r"^AWS4-HMAC-SHA256 Credential=(?P<key>[^/\s]+)/(?P<date>\d{8})/(?P<region>[a-z0-9-]+)/"
    r"(?P<service>[a-z0-9-]+)/aws4_request,\s*SignedHeaders=(?P<headers>[a-z0-9;-]+),\s*"
    r"Signature=(?P<signature>[0-9a-f]{64})$"
)
AMZ_DATE = re.compile(r"^\d{8}T\d{6}Z$")
# Error codes any operation may answer without declaring them (the SDKs know them generically).
GENERIC_ERRORS = frozenset(
    {
        "ThrottlingException",
        "InternalFailure",
        "ServiceUnavailable",
        "SerializationException",
        "UnknownOperationException",
        "MissingAuthenticationTokenException",
        "IncompleteSignatureException",
        "NotImplemented",
    }
)
FAULT_KINDS = ("throttle", "server_error", "delay")
# The call log keeps this many calls; violations are never dropped.
MAX_CALLS_KEPT = 20000


@dataclass
class Fault:
    operation: str
    kind: str
    delay_ms: int = 0
    count: int | None = None
    status: int | None = None
    retry_after_ms: int | None = None

    @classmethod
    def parse(cls, body: dict, catalog: Catalog) -> Fault:
        if not isinstance(body, dict):
            raise ValueError("the fault must be a JSON object")
        unknown = set(body) - {f for f in cls.__dataclass_fields__}
        if unknown:
            raise ValueError(f"unknown fault fields: {sorted(unknown)}")
        operation = body.get("operation")
        known = {op.name for op in catalog.by_target.values()} | {r.operation.name for r in catalog.by_route.values()}
        if operation != "*" and operation not in known:
            raise ValueError(f"operation must be '*' or a Personalize operation name, not {operation!r}")
        kind = body.get("kind")
        if kind not in FAULT_KINDS:
            raise ValueError(f"kind must be one of {FAULT_KINDS}, not {kind!r}")
        count = body.get("count")
        if count is not None and (not isinstance(count, int) or isinstance(count, bool) or count < 1):
            raise ValueError("count must be a positive integer, or null for 'until cleared'")
        delay_ms = body.get("delay_ms", 0)
        if not isinstance(delay_ms, int) or isinstance(delay_ms, bool) or delay_ms < 0 or delay_ms > 600_000:
            raise ValueError("delay_ms must be an integer between 0 and 600000")
        if kind == "delay" and delay_ms == 0:
            raise ValueError("a delay fault needs delay_ms > 0")
        status = body.get("status")
        if status is not None:
            allowed = range(400, 500) if kind == "throttle" else range(500, 600)
            if not isinstance(status, int) or status not in allowed:
                raise ValueError(f"status for {kind} must be in {allowed.start}..{allowed.stop - 1}")
        retry_after_ms = body.get("retry_after_ms")
        if retry_after_ms is not None and (not isinstance(retry_after_ms, int) or retry_after_ms < 0):
            raise ValueError("retry_after_ms must be a non-negative integer")
        return cls(operation, kind, delay_ms, count, status, retry_after_ms)


class Reply(Exception):
    """Answer now with this error (protocol problems found before the operation runs)."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        violation: Violation | None = None,
        kind: str = "protocol",
        violations: list[Violation] = (),
        headers: dict | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.violations = ([violation] if violation else []) + list(violations)
        self.kind = kind
        self.headers = headers or {}


class StandIn:
    """Everything the server knows; thread-safe."""

    def __init__(self, account: str, pending_describes: int, s3_endpoint: str | None):
        self.catalog = Catalog.load()
        self.input_validator = StrictValidator(check_patterns=True)
        self.output_validator = StrictValidator(check_patterns=False)
        self.initial = {"account": account, "pending_describes": pending_describes, "s3_endpoint": s3_endpoint}
        self.lock = threading.Lock()  # faults, calls and violations; the state has its own lock
        self.reset()

    def reset(self) -> None:
        with self.lock:
            self.state = Personalize(**self.initial)
            self.faults: list[Fault] = []
            self.calls: list[dict] = []
            self.calls_dropped = 0
            self.violations: list[dict] = []
            self.seq = 0

    # ---- faults ----------------------------------------------------------------------------------------

    def take_fault(self, operation: str) -> Fault | None:
        with self.lock:
            for fault in self.faults:
                if fault.operation in ("*", operation):
                    if fault.count is not None:
                        fault.count -= 1
                        if fault.count == 0:
                            self.faults.remove(fault)
                    return fault
        return None

    # ---- call log --------------------------------------------------------------------------------------

    def next_seq(self) -> int:
        with self.lock:
            self.seq += 1
            return self.seq

    def record(self, call: dict) -> None:
        with self.lock:
            for violation in call["violations"]:
                self.violations.append(
                    {"seq": call["seq"], "service": call["service"], "operation": call["operation"], **violation}
                )
            self.calls.append(call)
            if len(self.calls) > MAX_CALLS_KEPT:
                del self.calls[0]
                self.calls_dropped += 1


def make_server(host: str, port: int, standin: StandIn) -> ThreadingHTTPServer:
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise ValueError(f"the stand-in listens on loopback only, not {host}")
    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    server.standin = standin  # type: ignore[attr-defined]
    return server


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the SDKs' connection pools expect
    # Headers and body go out in separate writes; without TCP_NODELAY the client's delayed ACK adds
    # ~40 ms to every call.
    disable_nagle_algorithm = True
    server_version = "personalize-standin"

    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass  # the call log is the record; stderr stays quiet in tests

    @property
    def standin(self) -> StandIn:
        return self.server.standin  # type: ignore[attr-defined]

    # ---- plumbing --------------------------------------------------------------------------------------

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, body: bytes, content_type: str, headers: dict | None = None) -> bool:
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("x-amzn-RequestId", str(uuid.uuid4()))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)
            self.wfile.flush()
            return True
        except (BrokenPipeError, ConnectionResetError):
            # The client gave up (e.g. its timeout fired during a delay fault): nothing to answer.
            self.close_connection = True
            return False

    def _send_json(self, status: int, payload, headers: dict | None = None) -> bool:
        return self._send(status, json.dumps(payload).encode(), REST_JSON, headers)

    def do_GET(self):
        self._dispatch("GET")

    def do_POST(self):
        self._dispatch("POST")

    def do_PUT(self):
        self._dispatch("PUT")

    def do_DELETE(self):
        self._dispatch("DELETE")

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        body = self._read_body()
        if url.path.startswith("/_standin/"):
            self._admin(method, url.path[len("/_standin/") :].rstrip("/"), parse_qs(url.query), body)
        else:
            self._api(method, url.path, body)

    # ---- the Personalize APIs ----------------------------------------------------------------------------

    def _api(self, method: str, path: str, raw: bytes) -> None:
        standin = self.standin
        started = time.monotonic()
        call = {
            "seq": standin.next_seq(),
            "time": time.time(),
            "service": None,
            "operation": None,
            "params": None,
            "status": None,
            "error": None,
            "fault": None,
            "violations": [],
        }
        protocol = "json"
        try:
            service, op = self._identify(method, path, call)
            protocol = standin.catalog.protocol(service)
            call["headers"] = self._logged_headers()
            self._check_signature(call)
            self._check_content_type(protocol, raw)
            params = self._parse(raw)
            call["params"] = params
            fault = standin.take_fault(op.name)
            if fault is not None:
                call["fault"] = asdict(fault)
                self._apply_fault(fault)
            violations = standin.input_validator.violations(params, op.input_shape)
            if violations:
                error = self._input_error(service, op)
                raise Reply(400, error, coral_message(violations), kind="input", violations=violations)
            if op.name not in standin.state.handlers:
                raise Reply(
                    501,
                    "NotImplemented",
                    f"The Personalize stand-in does not implement {op.name}",
                    Violation("", "unsupported operation", f"{op.name} is not implemented by the stand-in"),
                    kind="unsupported",
                )
            try:
                output = standin.state.dispatch(op.name, params, call["region"])
            except ServiceError as err:
                if err.rule_violation:
                    call["violations"].append(
                        {"kind": "rule", **Violation(err.path, "service rule", err.message).as_dict()}
                    )
                self._error(
                    call, service, op, protocol, standin.catalog.error_status(service, err.code), err.code, err.message
                )
            else:
                self._success(call, service, op, protocol, output)
        except Reply as reply:
            call["violations"].extend({"kind": reply.kind, **v.as_dict()} for v in reply.violations)
            service = call["service"] if call["service"] in standin.catalog.models else CONTROL_PLANE
            self._error(
                call, service, call.get("_op"), protocol, reply.status, reply.code, reply.message, reply.headers
            )
        except Exception as err:  # a stand-in bug: say so loudly, never answer as if all was well
            call["violations"].append(
                {"kind": "standin", **Violation("", "stand-in crashed", f"{type(err).__name__}: {err}").as_dict()}
            )
            service = call["service"] if call["service"] in standin.catalog.models else CONTROL_PLANE
            self._error(
                call, service, None, protocol, 500, "InternalFailure", f"stand-in bug: {type(err).__name__}: {err}"
            )
        finally:
            call.pop("_op", None)
            call["duration_ms"] = round((time.monotonic() - started) * 1000, 1)
            call["client_gone"] = False
            # Recorded before the answer leaves, so a test that got its answer also sees the call.
            standin.record(call)
        if not self._send(*self._answer):
            call["client_gone"] = True

    def _identify(self, method: str, path: str, call: dict):
        catalog = self.standin.catalog
        target = self.headers.get("X-Amz-Target")
        if target is not None:
            call["service"] = CONTROL_PLANE
            op = catalog.by_target.get(target)
            call["operation"] = op.name if op else target
            if op is None:
                raise Reply(
                    400,
                    "UnknownOperationException",
                    f"Unknown X-Amz-Target {target!r}",
                    Violation(
                        "X-Amz-Target", "unknown operation", f"{target!r} is not a {catalog.target_prefix()} operation"
                    ),
                )
            call["_op"] = op
            if method != "POST" or path != "/":
                raise Reply(
                    400,
                    "UnknownOperationException",
                    f"awsJson1_1 requests are POST /, not {method} {path}",
                    Violation("", "wrong route", f"awsJson1_1 requests are POST /, not {method} {path}"),
                )
            return CONTROL_PLANE, op
        route = catalog.by_route.get((method, path))
        if route is None:
            call["service"] = "unknown"
            call["operation"] = f"{method} {path}"
            raise Reply(
                404,
                "UnknownOperationException",
                f"No Personalize operation at {method} {path}",
                Violation(
                    "", "unknown operation", f"no Personalize operation at {method} {path} (and no X-Amz-Target)"
                ),
            )
        call["service"] = route.service
        call["operation"] = route.operation.name
        call["_op"] = route.operation
        return route.service, route.operation

    def _logged_headers(self) -> dict:
        """The request's headers for the call log; the signature itself is left out."""
        logged = {}
        for name, value in self.headers.items():
            if name.lower() == "authorization":
                value = value.split("Signature=")[0].rstrip(", ") + ", Signature=..."
            logged[name.lower()] = value
        return logged

    def _check_signature(self, call: dict) -> None:
        authorization = self.headers.get("Authorization")
        if authorization is None:
            raise Reply(
                403,
                "MissingAuthenticationTokenException",
                "Missing Authentication Token",
                Violation("Authorization", "missing signature", "no Authorization header (SigV4) on the request"),
            )
        match = SIGV4.match(authorization)
        if match is None:
            raise Reply(
                403,
                "IncompleteSignatureException",
                "Authorization header is not a SigV4 signature",
                Violation(
                    "Authorization", "malformed signature", f"not a SigV4 Authorization header: {authorization[:80]!r}"
                ),
            )
        if match["service"] != "personalize":
            raise Reply(
                403,
                "IncompleteSignatureException",
                f"Credential should be scoped to correct service: 'personalize', not {match['service']!r}",
                Violation(
                    "Authorization",
                    "wrong signing name",
                    f"signed for {match['service']!r}; Personalize's signing name is 'personalize'",
                ),
            )
        if "x-amz-date" not in match["headers"].split(";") or not AMZ_DATE.match(self.headers.get("X-Amz-Date", "")):
            raise Reply(
                403,
                "IncompleteSignatureException",
                "X-Amz-Date must be present and signed",
                Violation("X-Amz-Date", "malformed signature", "X-Amz-Date missing, malformed or not signed"),
            )
        call["region"] = match["region"]

    def _check_content_type(self, protocol: str, raw: bytes) -> None:
        expected = JSON_1_1 if protocol == "json" else REST_JSON
        given = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if raw and given != expected:
            raise Reply(
                400,
                "SerializationException",
                f"Content-Type must be {expected}, not {given or 'absent'}",
                Violation("Content-Type", "wrong content type", f"expected {expected}, got {given or 'none'}"),
            )

    def _parse(self, raw: bytes) -> dict:
        if not raw.strip():
            return {}
        try:
            params = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise Reply(
                400,
                "SerializationException",
                f"The body is not valid JSON: {err}",
                Violation("", "malformed JSON", str(err)),
            ) from None
        if not isinstance(params, dict):
            raise Reply(
                400,
                "SerializationException",
                "The body must be a JSON object",
                Violation("", "malformed JSON", "body is not an object"),
            )
        return params

    def _apply_fault(self, fault: Fault) -> None:
        if fault.kind == "delay":
            time.sleep(fault.delay_ms / 1000)
            return
        headers = {}
        if fault.retry_after_ms is not None:
            headers["x-amz-retry-after"] = str(fault.retry_after_ms)
        if fault.kind == "throttle":
            raise Reply(fault.status or 400, "ThrottlingException", "Rate exceeded", kind="fault", headers=headers)
        status = fault.status or 500
        code = "ServiceUnavailable" if status == 503 else "InternalFailure"
        raise Reply(status, code, "We encountered an internal error. Please try again.", kind="fault", headers=headers)

    def _input_error(self, service: str, op) -> str:
        # Personalize declares InvalidInputException on every operation; use what the model declares.
        declared = [shape.name for shape in op.error_shapes]
        for code in ("InvalidInputException", "ValidationException"):
            if code in declared:
                return code
        return "ValidationException"

    def _success(self, call: dict, service: str, op, protocol: str, output: dict) -> None:
        violations = self.standin.output_validator.violations(output, op.output_shape)
        if violations:
            # A stand-in bug: answering anyway would let a client look right on a wrong answer.
            call["violations"].extend({"kind": "output", **v.as_dict()} for v in violations)
            self._error(
                call,
                service,
                op,
                protocol,
                500,
                "InternalFailure",
                "stand-in bug: response failed the model: " + coral_message(violations),
            )
            return
        call["status"] = 200
        call["response"] = output
        if op.output_shape is None:
            self._answer = (200, b"", REST_JSON if protocol != "json" else JSON_1_1, {})
        else:
            self._answer = (200, json.dumps(output).encode(), JSON_1_1 if protocol == "json" else REST_JSON, {})

    def _error(
        self,
        call: dict,
        service: str,
        op,
        protocol: str,
        status: int,
        code: str,
        message: str,
        headers: dict | None = None,
    ) -> None:
        catalog = self.standin.catalog
        declared = {shape.name for shape in op.error_shapes} if op is not None else set()
        if op is not None and code not in declared and code not in GENERIC_ERRORS:
            call["violations"].append(
                {"kind": "output", **Violation("", "undeclared error", f"{op.name} does not declare {code}").as_dict()}
            )
        body = {"message": message}
        shape = catalog.error_shape(service, code)
        if shape is not None:
            problems = self.standin.output_validator.violations(body, shape)
            call["violations"].extend({"kind": "output", **v.as_dict()} for v in problems)
        call["status"] = status
        call["error"] = {"code": code, "message": message}
        all_headers = {"x-amzn-ErrorType": code, **(headers or {})}
        if protocol == "json":
            payload = {"__type": code, "message": message}
            self._answer = (status, json.dumps(payload).encode(), JSON_1_1, all_headers)
        else:
            self._answer = (status, json.dumps(body).encode(), REST_JSON, all_headers)

    # ---- admin API ---------------------------------------------------------------------------------------

    def _admin(self, method: str, path: str, query: dict, raw: bytes) -> None:
        try:
            body = json.loads(raw) if raw.strip() else {}
        except json.JSONDecodeError as err:
            self._send_json(400, {"error": f"body is not JSON: {err}"})
            return
        try:
            result = self._admin_route(method, path, query, body)
        except ValueError as err:
            self._send_json(400, {"error": str(err)})
            return
        if result is None:
            self._send_json(404, {"error": f"no admin endpoint {method} /_standin/{path}"})
            return
        self._send_json(200, result)

    def _admin_route(self, method: str, path: str, query: dict, body):
        standin = self.standin
        state = standin.state
        if (method, path) == ("GET", "health"):
            return {"ok": True, "botocore": botocore.__version__, "port": self.server.server_address[1]}
        if (method, path) == ("POST", "faults"):
            fault = Fault.parse(body, standin.catalog)
            with standin.lock:
                standin.faults.append(fault)
            return {"fault": asdict(fault)}
        if (method, path) == ("GET", "faults"):
            with standin.lock:
                return {"faults": [asdict(f) for f in standin.faults]}
        if (method, path) == ("DELETE", "faults"):
            operation = query.get("operation", [None])[0]
            with standin.lock:
                before = len(standin.faults)
                standin.faults = [f for f in standin.faults if operation is not None and f.operation != operation]
                return {"cleared": before - len(standin.faults)}
        if (method, path) == ("GET", "calls"):
            wanted_op = query.get("operation", [None])[0]
            wanted_service = query.get("service", [None])[0]
            with standin.lock:
                calls = [
                    c
                    for c in standin.calls
                    if (wanted_op is None or c["operation"] == wanted_op)
                    and (wanted_service is None or c["service"] == wanted_service)
                ]
                return {"calls": calls, "dropped": standin.calls_dropped}
        if (method, path) == ("DELETE", "calls"):
            with standin.lock:
                standin.calls.clear()
                standin.violations.clear()
            return {"cleared": True}
        if (method, path) == ("GET", "violations"):
            with standin.lock:
                return {"violations": list(standin.violations)}
        if (method, path) == ("POST", "advance"):
            with state.lock:
                return {"finished": state.advance_all()}
        if (method, path) == ("POST", "fail"):
            if (
                not isinstance(body, dict)
                or not isinstance(body.get("failureReason"), str)
                or not body["failureReason"]
            ):
                raise ValueError(
                    f"body needs kind (one of {FAILABLE_KINDS}), failureReason, and optionally name or arn"
                )
            with state.lock:
                return state.plan_failure(body.get("kind"), body["failureReason"], body.get("name"), body.get("arn"))
        if (method, path) == ("GET", "config"):
            return {
                "pending_describes": state.pending_describes,
                "account": state.account,
                "s3_endpoint": state.s3_endpoint,
            }
        if (method, path) == ("POST", "config"):
            value = body.get("pending_describes") if isinstance(body, dict) else None
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError('body must be {"pending_describes": <non-negative integer>}')
            with state.lock:
                state.pending_describes = value
            return {"pending_describes": value}
        if (method, path) == ("POST", "reset"):
            standin.reset()
            return {"reset": True}
        if (method, path) == ("GET", "state"):
            with state.lock:
                return _state_summary(state)
        return None


def _state_summary(state: Personalize) -> dict:
    def status(collection):
        return {arn: r.progress.status for arn, r in collection.items()}

    return {
        "datasetGroups": status(state.groups),
        "datasets": {arn: {"status": d.progress.status, "records": len(d.events)} for arn, d in state.datasets.items()},
        "datasetImportJobs": status(state.import_jobs),
        "solutions": status(state.solutions),
        "solutionVersions": status(state.versions),
        "campaigns": {
            arn: {
                "status": c.progress.status,
                "solutionVersionArn": c.solution_version_arn,
                "latestUpdate": c.latest_update.progress.status if c.latest_update else None,
            }
            for arn, c in state.campaigns.items()
        },
        "filters": status(state.filters),
    }
