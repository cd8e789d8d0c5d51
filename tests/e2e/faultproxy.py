"""A small fault-injecting HTTP proxy for one AWS service, in front of moto.

A process under test is pointed at it with `AWS_ENDPOINT_URL_<SERVICE>` (S3 or SESv2 here), so only that
service's calls pass through it. Each request is named by its S3 or SES v2 operation, recorded, and either
forwarded to moto unchanged or answered with an injected error in the service's own error format, before
it reaches moto (so a failed call has no effect there, as when AWS refuses a request).

Listens on 127.0.0.1 only; runs in a thread of the test process; `with FaultProxy(upstream) as proxy:`.
"""

from __future__ import annotations

import http.client
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self
from urllib.parse import parse_qs, urlsplit

HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "expect",
    "content-length",
    "host",
}


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    operation: str


def operation_of(method: str, path: str, query: dict[str, list[str]]) -> str:
    """The S3 (path-style) or SES v2 operation a request is, as far as these tests need to tell."""
    if path == "/v2/email/outbound-emails" and method == "POST":
        return "SendEmail"
    has_key = path.strip("/").count("/") >= 1
    if method == "PUT" and "partNumber" in query and "uploadId" in query:
        return "UploadPart"
    if method == "PUT":
        return "PutObject" if has_key else "CreateBucket"
    if method == "POST" and "uploads" in query:
        return "CreateMultipartUpload"
    if method == "POST" and "uploadId" in query:
        return "CompleteMultipartUpload"
    if method == "DELETE" and "uploadId" in query:
        return "AbortMultipartUpload"
    if method == "GET" and "uploads" in query:
        return "ListMultipartUploads"
    if method == "GET" and not has_key:
        return "ListObjects"
    if method == "GET":
        return "GetObject"
    if method == "HEAD":
        return "HeadObject"
    return f"{method} {path}"


@dataclass
class Fault:
    """Answer `status`/`body`/`headers` to requests of `operation` that `when` accepts, `times` times
    (None: until cleared)."""

    operation: str
    status: int
    body: bytes
    headers: dict[str, str]
    when: object = None  # Callable[[Request], bool] | None
    times: int | None = None

    def matches(self, request: Request) -> bool:
        return request.operation == self.operation and (self.when is None or self.when(request))


def s3_error(status: int, code: str, message: str, **kwargs) -> Fault:
    body = (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}</Message>'
        "<RequestId>FAULTPROXY</RequestId></Error>"
    ).encode()
    return Fault(body=body, status=status, headers={"Content-Type": "application/xml"}, **kwargs)


def ses_error(status: int, code: str, message: str, **kwargs) -> Fault:
    """SES v2 is restJson1: the error code travels in `x-amzn-ErrorType`."""
    body = f'{{"message": "{message}"}}'.encode()
    return Fault(
        body=body,
        status=status,
        headers={"Content-Type": "application/json", "x-amzn-ErrorType": code},
        **kwargs,
    )


@dataclass
class Seen:
    request: Request
    status: int
    faulted: bool


@dataclass
class FaultProxy:
    upstream: str
    faults: list[Fault] = field(default_factory=list)
    seen: list[Seen] = field(default_factory=list)

    def __post_init__(self):
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    # ---- test side ----

    def __enter__(self) -> Self:
        proxy = self

        class Handler(_Handler):
            owner = proxy

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="fault-proxy", daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def inject(self, fault: Fault) -> None:
        with self._lock:
            self.faults.append(fault)

    def clear(self) -> None:
        with self._lock:
            self.faults.clear()

    def calls(self, operation: str) -> list[Seen]:
        with self._lock:
            return [s for s in self.seen if s.request.operation == operation]

    # ---- proxy side ----

    def _take_fault(self, request: Request) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.matches(request):
                    if fault.times is not None:
                        fault.times -= 1
                        if fault.times <= 0:
                            self.faults.remove(fault)
                    return fault
        return None

    def _record(self, request: Request, status: int, faulted: bool) -> None:
        with self._lock:
            self.seen.append(Seen(request, status, faulted))


class _Handler(BaseHTTPRequestHandler):
    owner: FaultProxy
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, format, *args):  # the tests inspect `seen`; no console noise
        pass

    def _body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _handle(self) -> None:
        url = urlsplit(self.path)
        query = parse_qs(url.query, keep_blank_values=True)
        request = Request(self.command, url.path, query, operation_of(self.command, url.path, query))
        body = self._body()
        fault = self.owner._take_fault(request)
        if fault is not None:
            self.owner._record(request, fault.status, True)
            self._reply(fault.status, list(fault.headers.items()), fault.body)
            return
        upstream = urlsplit(self.owner.upstream)
        connection = http.client.HTTPConnection(upstream.hostname, upstream.port, timeout=60)
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
            headers["Host"] = upstream.netloc
            if body or self.command in ("PUT", "POST"):
                headers["Content-Length"] = str(len(body))
            connection.request(self.command, self.path, body=body, headers=headers)
            response = connection.getresponse()
            data = response.read()
            self.owner._record(request, response.status, False)
            kept = [(k, v) for k, v in response.getheaders() if k.lower() not in HOP_BY_HOP]
            length = response.getheader("Content-Length") if self.command == "HEAD" else None
            self._reply(response.status, kept, data, head_length=length)
        finally:
            connection.close()

    def _reply(self, status: int, headers: list[tuple[str, str]], body: bytes, head_length=None) -> None:
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        # A HEAD answer carries the length of the body it would have had.
        self.send_header("Content-Length", head_length or str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle
