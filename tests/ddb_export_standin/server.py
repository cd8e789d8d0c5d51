"""The HTTP side: DynamoDB's JSON protocol in front of moto.

Every request goes to moto unchanged (body, headers but the hop-by-hop ones, and moto's status, headers and
body back), except the three export operations, which the stand-in answers itself after validating the
request against botocore's DynamoDB model. Writes are forwarded too, but bracketed by reads of the written
keys so that `WriteLog` knows when each item changed (see writes.py). `/_standin/` is the control API.
"""

from __future__ import annotations

import http.client
import json
import math
import os
import re
import threading
import time
import urllib.parse
import uuid
import zlib
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import boto3
import botocore
from botocore.config import Config
from botocore.exceptions import ClientError
from botocore.loaders import Loader
from botocore.model import ServiceModel

from tests.personalize_standin.models import StrictValidator, coral_message

from .exports import Exports, ServiceError
from .writes import Image, WriteLog, key_id, micros

TARGET_PREFIX = "DynamoDB_20120810."
JSON_1_0 = "application/x-amz-json-1.0"
ERROR_NAMESPACE = "com.amazonaws.dynamodb.v20120810#"
OWN_OPERATIONS = ("ExportTableToPointInTime", "DescribeExport", "ListExports")
WRITE_OPERATIONS = ("PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems")
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection", "expect"}
SIGV4_REGION = re.compile(r"Credential=[^/\s,]+/\d{8}/(?P<region>[a-z0-9-]+)/")
# What `POST /_standin/fail-next` can inject: (HTTP status, __type, message), as DynamoDB answers them.
FAULTS = {
    "ThrottlingException": (
        400,
        "com.amazon.coral.availability#ThrottlingException",
        "Rate of requests exceeds the allowed throughput.",
    ),
    "InternalServerError": (500, ERROR_NAMESPACE + "InternalServerError", "Internal server error"),
}
CREDENTIALS = {"aws_access_key_id": "ddb-export-standin", "aws_secret_access_key": "ddb-export-standin"}


def _positive_env(name: str, default: int, minimum: int) -> int:
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name} must be an integer, not {raw!r}") from None
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, not {value}")
    return value


def _table_name(table: str) -> str:
    """TableName may be a name or the table's ARN."""
    return table.split(":table/", 1)[1] if table.startswith("arn:") else table


class StandIn:
    """The stand-in's state; `lock` serialises writes and exports so an export sees a consistent table."""

    def __init__(self, dynamodb_endpoint: str, s3_endpoint: str) -> None:
        self.dynamodb_endpoint = dynamodb_endpoint.rstrip("/")
        self.model = ServiceModel(Loader().load_service_model("dynamodb", "service-2"), "dynamodb")
        self.input_validator = StrictValidator(check_patterns=True)
        # Output patterns are not checked: the model's are not always what the service sends (see the
        # Personalize stand-in's models.py); types, required members and enums are.
        self.output_validator = StrictValidator(check_patterns=False)
        self.lock = threading.RLock()
        self.clock_offset = 0.0
        # Whole milliseconds: SDKs send timestamps with millisecond precision, so a window can start
        # exactly here (where the items the stand-in found already written are dated).
        self.started_at = math.floor(time.time() * 1000) / 1000
        self.faults: dict[str, list[list[Any]]] = {}  # operation -> [[error, remaining count], ...]
        self._clients: dict[str, Any] = {}
        self._key_names: dict[tuple[str, str], list[str]] = {}
        config = Config(s3={"addressing_style": "path"}, retries={"mode": "standard", "total_max_attempts": 3})
        self.writes = WriteLog(micros(self.started_at))
        self.exports = Exports(
            dynamodb=self.dynamodb,
            s3=boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1", config=config, **CREDENTIALS),
            writes=self.writes,
            now=self.now,
            polls_in_progress=_positive_env("DDB_EXPORT_STANDIN_POLLS_IN_PROGRESS", 1, 0),
            items_per_file=_positive_env("DDB_EXPORT_STANDIN_ITEMS_PER_FILE", 1000, 1),
            started_at=self.started_at,
        )

    def now(self) -> float:
        """The stand-in's clock: real time plus what `POST /_standin/clock` advanced it by."""
        return time.time() + self.clock_offset

    def dynamodb(self, region: str) -> Any:
        with self.lock:
            client = self._clients.get(region)
            if client is None:
                client = self._clients[region] = boto3.client(
                    "dynamodb", endpoint_url=self.dynamodb_endpoint, region_name=region, **CREDENTIALS
                )
            return client

    def take_fault(self, operation: str) -> str | None:
        with self.lock:
            queue = self.faults.get(operation)
            if not queue:
                return None
            error = queue[0][0]
            queue[0][1] -= 1
            if queue[0][1] == 0:
                queue.pop(0)
            return error

    # ---- write tracking --------------------------------------------------------------------------------

    def key_names(self, region: str, table: str) -> list[str] | None:
        cached = self._key_names.get((region, table))
        if cached is None:
            try:
                schema = self.dynamodb(region).describe_table(TableName=table)["Table"]["KeySchema"]
            except ClientError:
                return None  # no such table: moto will refuse the write itself
            cached = self._key_names[(region, table)] = [k["AttributeName"] for k in schema]
        return cached

    def written_keys(self, operation: str, params: dict[str, Any], region: str) -> list[tuple[str, Image]]:
        """(table, primary key) of every item the write request may change."""
        requests: list[tuple[str, Image]] = []  # (table, item or key)
        if operation in ("PutItem", "UpdateItem", "DeleteItem"):
            requests.append((params.get("TableName", ""), params.get("Item") or params.get("Key") or {}))
        elif operation == "BatchWriteItem":
            for table, writes in (params.get("RequestItems") or {}).items():
                for write in writes:
                    if "PutRequest" in write:
                        requests.append((table, write["PutRequest"].get("Item", {})))
                    elif "DeleteRequest" in write:
                        requests.append((table, write["DeleteRequest"].get("Key", {})))
        elif operation == "TransactWriteItems":
            for entry in params.get("TransactItems") or []:
                for kind in ("Put", "Update", "Delete"):
                    if kind in entry:
                        detail = entry[kind]
                        requests.append((detail.get("TableName", ""), detail.get("Item") or detail.get("Key") or {}))
        out = []
        for table, item in requests:
            name = _table_name(table)
            names = self.key_names(region, name) if name else None
            if names and all(n in item for n in names):
                out.append((name, {n: item[n] for n in names}))
        return out

    def forget_table(self, region: str, table: str) -> None:
        """A table created or deleted through the stand-in: its key schema and history start over."""
        self.writes.forget_table(region, table)
        self._key_names.pop((region, table), None)

    def current_image(self, region: str, table: str, key: Image) -> Image | None:
        return self.dynamodb(region).get_item(TableName=table, Key=key, ConsistentRead=True).get("Item")


def _unprocessed(body: bytes, key_names: Callable[[str], list[str] | None]) -> set[tuple[str, str]]:
    """(table, key id) of the writes a BatchWriteItem answer hands back as not done."""
    try:
        answer = json.loads(body)
    except ValueError:
        return set()
    out = set()
    for table, writes in (answer.get("UnprocessedItems") or {}).items():
        name = _table_name(table)
        names = key_names(name) or []
        for write in writes:
            item = (write.get("PutRequest") or {}).get("Item") or (write.get("DeleteRequest") or {}).get("Key") or {}
            out.add((name, key_id({n: item[n] for n in names if n in item})))
    return out


def make_server(port: int, standin: StandIn) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    server.standin = standin  # type: ignore[attr-defined]
    return server


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the SDKs' connection pools expect
    disable_nagle_algorithm = True  # headers and body are separate writes; see the Personalize stand-in
    server_version = "ddb-export-standin"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass  # stdout carries only the "listening on" line a harness reads

    @property
    def standin(self) -> StandIn:
        return self.server.standin  # type: ignore[attr-defined]

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

    def _send(self, status: int, headers: Iterable[tuple[str, str]], body: bytes) -> None:
        try:
            self.send_response(status)
            for name, value in headers:
                if name.lower() not in HOP_BY_HOP and name.lower() != "content-length":
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _send_json(self, status: int, payload: Any) -> None:
        body = json.dumps(payload).encode()
        self._send(
            status,
            [
                ("Content-Type", JSON_1_0),
                ("x-amzn-RequestId", str(uuid.uuid4())),
                ("x-amz-crc32", str(zlib.crc32(body))),
            ],
            body,
        )

    def _error(self, status: int, code: str, message: str) -> None:
        error_type = code if "#" in code else ERROR_NAMESPACE + code
        self._send_json(status, {"__type": error_type, "message": message})

    def _handle(self) -> None:
        body = self._read_body()
        path = urllib.parse.urlsplit(self.path).path
        if path.startswith("/_standin/"):
            self._admin(path.removeprefix("/_standin/").rstrip("/"), body)
            return
        target = self.headers.get("X-Amz-Target", "")
        operation = target.removeprefix(TARGET_PREFIX) if target.startswith(TARGET_PREFIX) else None
        if operation is None:
            self._send(*self._forward(body))  # not DynamoDB's JSON protocol: moto answers as it will
            return
        fault = self.standin.take_fault(operation)
        if fault is not None:
            self._error(*FAULTS[fault][:2], FAULTS[fault][2])
            return
        match = SIGV4_REGION.search(self.headers.get("Authorization", ""))
        region = match["region"] if match else "us-east-1"
        try:
            if operation in OWN_OPERATIONS:
                self._own(operation, body, region)
            elif operation in WRITE_OPERATIONS:
                self._send(*self._tracked_write(operation, body, region))
            elif operation in ("CreateTable", "DeleteTable"):
                self._send(*self._table_lifecycle(body, region))
            else:
                self._send(*self._forward(body))
        except Exception as err:  # a stand-in bug: say so, never answer as if all was well
            self._error(500, "InternalServerError", f"ddb-export-standin bug: {type(err).__name__}: {err}")

    do_POST = do_GET = do_PUT = do_DELETE = do_HEAD = _handle

    # ---- forwarding -------------------------------------------------------------------------------------

    def _forward(self, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        backend = urllib.parse.urlsplit(self.standin.dynamodb_endpoint)
        connection = http.client.HTTPConnection(backend.hostname, backend.port, timeout=120)
        try:
            # The request's own Host and headers, as sent: moto sees what the client sent.
            connection.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            for name, value in self.headers.items():
                if name.lower() not in HOP_BY_HOP and name.lower() != "content-length":
                    connection.putheader(name, value)
            connection.putheader("Content-Length", str(len(body)))
            connection.endheaders(body)
            response = connection.getresponse()
            return response.status, response.getheaders(), response.read()
        finally:
            connection.close()

    def _tracked_write(self, operation: str, body: bytes, region: str) -> tuple[int, list[tuple[str, str]], bytes]:
        standin = self.standin
        try:
            params = json.loads(body)
        except ValueError:
            return self._forward(body)  # moto answers the malformed request
        with standin.lock:
            keys = standin.written_keys(operation, params, region)
            for table, key in keys:
                if not standin.writes.tracked(region, table, key):
                    before = standin.current_image(region, table, key)
                    if before is not None:  # it was there before anything we saw: "written at start"
                        standin.writes.record(region, table, key, standin.writes.start_micros, before)
            answer = self._forward(body)
            if answer[0] != 200:
                return answer
            undone = set()
            if operation == "BatchWriteItem":
                undone = _unprocessed(answer[2], lambda table: standin.key_names(region, table))
            written = standin.writes.stamp(micros(standin.now()))
            for table, key in keys:
                if (table, key_id(key)) in undone:
                    continue
                standin.writes.record(region, table, key, written, standin.current_image(region, table, key))
            return answer

    def _table_lifecycle(self, body: bytes, region: str) -> tuple[int, list[tuple[str, str]], bytes]:
        with self.standin.lock:
            answer = self._forward(body)
            if answer[0] == 200:
                self.standin.forget_table(region, _table_name(json.loads(body).get("TableName", "")))
            return answer

    # ---- the export operations ----------------------------------------------------------------------------

    def _own(self, operation: str, body: bytes, region: str) -> None:
        standin = self.standin
        op = standin.model.operation_model(operation)
        try:
            params = json.loads(body) if body.strip() else {}
        except ValueError as err:
            self._error(400, "SerializationException", f"The body is not valid JSON: {err}")
            return
        if not isinstance(params, dict):
            self._error(400, "SerializationException", "The body must be a JSON object")
            return
        problems = standin.input_validator.violations(params, op.input_shape)
        if problems:
            self._error(400, "ValidationException", coral_message(problems))
            return
        handlers = {
            "ExportTableToPointInTime": standin.exports.create,
            "DescribeExport": standin.exports.describe,
            "ListExports": standin.exports.list,
        }
        try:
            with standin.lock:
                output = handlers[operation](params, region)
        except ServiceError as err:
            self._error(err.status, err.code, err.message)
            return
        problems = standin.output_validator.violations(output, op.output_shape)
        if problems:
            self._error(
                500, "InternalServerError", "ddb-export-standin bug: answer fails the model: " + coral_message(problems)
            )
            return
        self._send_json(200, output)

    # ---- control API --------------------------------------------------------------------------------------

    def _admin(self, path: str, body: bytes) -> None:
        try:
            request = json.loads(body) if body.strip() else {}
            answer = self._admin_route(path, request)
        except (ValueError, TypeError) as err:
            self._send(400, [("Content-Type", "application/json")], json.dumps({"error": str(err)}).encode())
            return
        if answer is None:
            self._send(
                404,
                [("Content-Type", "application/json")],
                json.dumps({"error": f"no {self.command} /_standin/{path}"}).encode(),
            )
            return
        self._send(200, [("Content-Type", "application/json")], json.dumps(answer).encode())

    def _admin_route(self, path: str, request: Any) -> dict[str, Any] | None:
        standin = self.standin
        route = (self.command, path)
        if route == ("GET", "health"):
            return {
                "ok": True,
                "botocore": botocore.__version__,
                "dynamodb": standin.dynamodb_endpoint,
                "started_at": standin.started_at,
            }
        if route == ("POST", "fail-next"):
            if not isinstance(request, dict) or set(request) - {"operation", "error", "count"}:
                raise ValueError('body must be {"operation": ..., "error": ..., "count": N}')
            operation, error, count = request.get("operation"), request.get("error"), request.get("count", 1)
            if operation not in standin.model.operation_names:
                raise ValueError(f"operation must be a DynamoDB operation name, not {operation!r}")
            if error not in FAULTS:
                raise ValueError(f"error must be one of {sorted(FAULTS)}, not {error!r}")
            if not isinstance(count, int) or isinstance(count, bool) or count < 1:
                raise ValueError("count must be a positive integer")
            with standin.lock:
                standin.faults.setdefault(operation, []).append([error, count])
            return {"operation": operation, "error": error, "count": count}
        if route == ("DELETE", "faults"):
            with standin.lock:
                standin.faults.clear()
            return {"cleared": True}
        if route == ("GET", "clock"):
            return {"now": standin.now(), "offset_seconds": standin.clock_offset}
        if route == ("POST", "clock"):
            advance = request.get("advance_seconds") if isinstance(request, dict) else None
            if isinstance(advance, bool) or not isinstance(advance, (int, float)) or advance < 0:
                raise ValueError('body must be {"advance_seconds": <non-negative number>}')
            with standin.lock:
                standin.clock_offset += advance
            return {"now": standin.now(), "offset_seconds": standin.clock_offset}
        return None
