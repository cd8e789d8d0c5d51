"""The recording, enforcing proxy every function's AWS requests go through (`AWS_ENDPOINT_URL`).

Each function runs with its own access key id, so the SigV4 `Credential` of a request says which function
sent it. The proxy asks `authz.checks` what IAM would check for the request, asks `iam.evaluate` whether
the function's role (resolved from the template) allows each check, records everything, and then either
answers `AccessDenied` the way the service would (a denied request fails the run: see `Ledger.denials`) or
forwards the request to the backend that plays the service: moto for SES, EventBridge and SQS, the DynamoDB
export stand-in (moto behind it) for DynamoDB, a second moto for S3, the Personalize stand-in, and the
harness's own Lambda Invoke API.

S3 answers a missing object with 404 only when the caller may `s3:ListBucket`; without it AWS answers 403.
The proxy adds that check to a 404 and turns it into the 403 when the role lacks it, as AWS would.
"""

from __future__ import annotations

import http.client
import json
import re
import threading
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from . import authz, iam

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"}


@dataclass
class Caller:
    """Who holds an access key: a function (or a service acting for the stack) and the role it has."""

    name: str
    role: str
    policies: list[dict[str, Any]]


@dataclass
class Record:
    """One request (or one action of a service on a function's behalf) and how each of its checks went."""

    caller: str
    role: str
    operation: str
    checks: list[authz.Check]
    decisions: list[iam.Decision]
    status: int | None = None

    @property
    def denied(self) -> list[tuple[authz.Check, iam.Decision]]:
        return [(c, d) for c, d in zip(self.checks, self.decisions) if not d.allowed]

    def describe_denial(self) -> str:
        lines = []
        for check, decision in self.denied:
            consulted = ", ".join(ref.id for ref in decision.consulted) or "none"
            lines.append(
                f"{self.caller} ({self.role}) was denied {check.action} on {check.resource} "
                f"[{check.operation}; context {check.context}]: {decision.describe()}; statements consulted: {consulted}"
            )
        return "\n".join(lines)


@dataclass
class Ledger:
    """Every request the stack made, thread-safe."""

    records: list[Record] = field(default_factory=list)
    unrecognised: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, record: Record) -> None:
        with self.lock:
            self.records.append(record)

    def denials(self) -> list[Record]:
        with self.lock:
            return [r for r in self.records if r.denied]

    def by_caller(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        with self.lock:
            for r in self.records:
                counts[r.caller] = counts.get(r.caller, 0) + 1
        return counts


@dataclass
class Hold:
    """A request the proxy holds (after checking it, before forwarding it) until the test releases it, then
    drops: the caller never gets an answer it could act on. For killing a function at a chosen point of its
    work: `reached` is set once such a request is held."""

    method: str
    path: str  # a regular expression the whole request path (unquoted, without the query) must match
    reached: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    held: list[str] = field(default_factory=list)

    def matches(self, method: str, path: str) -> bool:
        return method == self.method and re.fullmatch(self.path, urllib.parse.unquote(path)) is not None


def authorize(ledger: Ledger, caller: Caller, operation: str, checks: list[authz.Check]) -> Record:
    """Evaluates `checks` against the caller's role and records the outcome."""
    decisions = [iam.evaluate(caller.policies, c.action, c.resource, c.context) for c in checks]
    record = Record(caller.name, caller.role, operation, checks, decisions)
    ledger.add(record)
    return record


def _access_denied(service: str, message: str) -> tuple[int, dict[str, str], bytes]:
    if service == "s3":
        body = (
            '<?xml version="1.0" encoding="UTF-8"?><Error><Code>AccessDenied</Code>'
            f"<Message>{message}</Message></Error>"
        ).encode()
        return 403, {"Content-Type": "application/xml"}, body
    if service in ("lambda", "ses"):
        return 403, {"Content-Type": "application/json", "x-amzn-ErrorType": "AccessDeniedException"}, json.dumps(
            {"message": message}
        ).encode()
    body = json.dumps({"__type": "AccessDeniedException", "message": message}).encode()
    return 400, {"Content-Type": "application/x-amz-json-1.0", "x-amzn-ErrorType": "AccessDeniedException"}, body


class Proxy:
    """Listens on 127.0.0.1; `url` is what functions get as `AWS_ENDPOINT_URL`."""

    def __init__(
        self,
        *,
        callers: dict[str, Caller],
        backends: Mapping[str, str],
        lambda_api: Callable[[str, Mapping[str, str], bytes], tuple[int, dict[str, str], bytes]],
        ledger: Ledger,
        region: str,
        account: str,
    ) -> None:
        self.callers = callers  # shared: deployments add their functions as they start them
        self.backends = dict(backends)
        self.lambda_api = lambda_api
        self.ledger = ledger
        self.region = region
        self.account = account
        # The SES identities verified in the account (SES checks SendEmail against the one it sends as).
        self.ses_identities: list[str] | None = None
        # The account-level suppression list (moto has no PutSuppressedDestination): address -> reason.
        self.suppressed: dict[str, str] = {}
        self.holds: list[Hold] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet: the ledger is the log
                pass

            def _handle(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    body = _read_chunked(self.rfile)
                status, headers, payload = proxy.handle(self.command, self.path, dict(self.headers.items()), body)
                try:
                    self.send_response(status)
                    for k, v in headers.items():
                        if k.lower() not in HOP_BY_HOP and k.lower() != "content-length":
                            self.send_header(k, v)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    # The caller is gone (a process the test killed while its request was held).
                    self.close_connection = True

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = do_PATCH = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="stack-proxy", daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def handle(self, method: str, target: str, headers: dict[str, str], body: bytes):
        lowered = {k.lower(): v for k, v in headers.items()}
        service = authz.sigv4_service(lowered)
        key = authz.sigv4_access_key(lowered)
        caller = self.callers.get(key or "")
        path, _, query = target.partition("?")
        if caller is None or service is None:
            message = f"unattributed request {method} {target} (access key {key!r}, service {service!r})"
            with self.ledger.lock:
                self.ledger.unrecognised.append(message)
            return _access_denied(service or "", message)
        try:
            checks = authz.checks(
                service, method, path, query, lowered, body, region=self.region, account=self.account,
                ses_identities=self.ses_identities,
            )
        except authz.UnknownRequest as e:
            message = f"{caller.name}: a request the harness cannot check: {method} {target}: {e}"
            with self.ledger.lock:
                self.ledger.unrecognised.append(message)
            return _access_denied(service, message)
        operation = checks[0].operation if checks else f"{service} {method} {path}"
        record = authorize(self.ledger, caller, operation, checks)
        if record.denied:
            record.status = 403
            return _access_denied(service, record.describe_denial())
        hold = next((h for h in list(self.holds) if h.matches(method, path)), None)
        if hold is not None:
            hold.held.append(path)
            hold.reached.set()
            hold.release.wait(120)
            record.status = 503
            return 503, {"Content-Type": "text/plain"}, b"held and dropped by the harness"
        status, out_headers, payload = self._forward(service, method, target, headers, body)
        if service == "s3" and status == 404 and method in ("GET", "HEAD"):
            bucket = urllib.parse.unquote(path.lstrip("/").split("/", 1)[0])
            listing = authz.Check(
                action="s3:ListBucket",
                resource=f"arn:aws:s3:::{bucket}",
                context={},
                operation=f"{operation} (a 404 needs s3:ListBucket, else 403)",
            )
            extra = authorize(self.ledger, caller, listing.operation, [listing])
            if extra.denied:
                extra.status = 403
                return _access_denied(service, extra.describe_denial())
        record.status = status
        return status, out_headers, payload

    def _forward(self, service: str, method: str, target: str, headers: dict[str, str], body: bytes):
        if service == "lambda":
            return self.lambda_api(target, headers, body)
        if service == "ses" and method == "PUT" and target.split("?", 1)[0].rstrip("/") == "/v2/email/suppression/addresses":
            # SES's account-level suppression list, which moto lacks: the request was checked, keep its entry.
            request = json.loads(body or b"{}")
            self.suppressed[str(request.get("EmailAddress", "")).lower()] = str(request.get("Reason", ""))
            return 200, {"Content-Type": "application/json"}, b"{}"
        backend = self.backends.get(service, self.backends["default"])
        parsed = urllib.parse.urlsplit(backend)
        connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=120)
        try:
            forwarded = {k: v for k, v in headers.items() if k.lower() not in HOP_BY_HOP and k.lower() != "host"}
            forwarded["Host"] = parsed.netloc
            forwarded["Content-Length"] = str(len(body))
            forwarded.pop("transfer-encoding", None)
            connection.request(method, target, body=body, headers=forwarded)
            response = connection.getresponse()
            payload = response.read()
            return response.status, dict(response.getheaders()), payload
        finally:
            connection.close()


def _read_chunked(stream) -> bytes:
    out = bytearray()
    while True:
        size_line = stream.readline().strip()
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            stream.readline()
            return bytes(out)
        out += stream.read(size)
        stream.readline()
