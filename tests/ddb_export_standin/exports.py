"""ExportTableToPointInTime, DescribeExport and ListExports, and the S3 layout an export writes.

The layout follows the DynamoDB Developer Guide, "DynamoDB table export output format": under
`<S3Prefix>/AWSDynamoDB/<ExportId>/` an empty `_started`, gzipped JSON-lines files under `data/`,
`manifest-files.json` (one line per data file), `manifest-summary.json` and an MD5 file beside each manifest.
The table's state comes from moto (a paginated consistent Scan) and, for write times and earlier images,
from the stand-in's `WriteLog`.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import re
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from botocore.exceptions import ClientError

from .writes import Image, KeyHistory, WriteLog, key_id, micros

TABLE_ARN = re.compile(
    r"^arn:(?P<partition>aws[a-z-]*):dynamodb:(?P<region>[a-z0-9-]+):(?P<account>\d{12}):"
    r"table/(?P<name>[A-Za-z0-9_.-]{3,255})$"
)
# The incremental export period AWS accepts ("from 15 minutes up to 24 hours", AWS Database Blog,
# "Introducing incremental export from Amazon DynamoDB to Amazon S3").
MIN_INCREMENTAL_S = 15 * 60
MAX_INCREMENTAL_S = 24 * 60 * 60
LIST_EXPORTS_DEFAULT = 25
DEFAULTS = {"ExportFormat": "DYNAMODB_JSON", "ExportType": "FULL_EXPORT", "S3SseAlgorithm": "AES256"}
# IncrementalExportSpecification.ExportViewType's documented default (API reference and the model).
DEFAULT_VIEW_TYPE = "NEW_AND_OLD_IMAGES"


class ServiceError(Exception):
    """An answer DynamoDB would give: `code` is the error shape's name."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


def iso(seconds: float) -> str:
    """The manifests' timestamps: ISO 8601, UTC, milliseconds ("2020-11-04T07:28:34.028Z")."""
    moment = datetime.fromtimestamp(seconds, tz=timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _md5_base64(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode()


@dataclass
class Export:
    arn: str
    export_id: str
    region: str
    table_arn: str
    table_id: str
    client_token: str | None
    params: dict[str, Any]  # the request without ClientToken: what idempotency compares
    s3_bucket: str
    s3_prefix: str | None
    s3_bucket_owner: str | None
    sse_algorithm: str
    kms_key_id: str | None
    export_type: str
    incremental: dict[str, Any] | None
    export_time: float
    start_time: float
    polls_left: int  # DescribeExport calls that still see IN_PROGRESS
    end_time: float | None = None
    outcome: str = "COMPLETED"
    failure_code: str | None = None
    failure_message: str | None = None
    item_count: int = 0
    billed_size_bytes: int = 0
    manifest_key: str | None = None

    @property
    def status(self) -> str:
        return "IN_PROGRESS" if self.polls_left > 0 else self.outcome

    def description(self) -> dict[str, Any]:
        described: dict[str, Any] = {
            "ExportArn": self.arn,
            "ExportStatus": self.status,
            "StartTime": self.start_time,
            "TableArn": self.table_arn,
            "TableId": self.table_id,
            "ExportTime": self.export_time,
            "S3Bucket": self.s3_bucket,
            "S3SseAlgorithm": self.sse_algorithm,
            "ExportFormat": "DYNAMODB_JSON",
            "ExportType": self.export_type,
        }
        optional = {
            "ClientToken": self.client_token,
            "S3Prefix": self.s3_prefix,
            "S3BucketOwner": self.s3_bucket_owner,
            "S3SseKmsKeyId": self.kms_key_id,
            "IncrementalExportSpecification": self.incremental,
        }
        described.update({k: v for k, v in optional.items() if v is not None})
        # What the export produced is announced only once it has finished, as DynamoDB does.
        if self.status == "COMPLETED":
            described.update(
                EndTime=self.end_time,
                ExportManifest=self.manifest_key,
                ItemCount=self.item_count,
                BilledSizeBytes=self.billed_size_bytes,
            )
        elif self.status == "FAILED":
            described.update(EndTime=self.end_time, FailureCode=self.failure_code, FailureMessage=self.failure_message)
        return described


@dataclass
class Exports:
    """Every export the stand-in made; the caller holds the stand-in's lock around each call."""

    dynamodb: Callable[[str], Any]  # region -> boto3 DynamoDB client on moto
    s3: Any  # boto3 S3 client on the S3 endpoint, path-style
    writes: WriteLog
    now: Callable[[], float]
    polls_in_progress: int
    items_per_file: int
    started_at: float
    by_arn: dict[str, Export] = field(default_factory=dict)
    by_token: dict[tuple[str, str], Export] = field(default_factory=dict)

    # ---- ExportTableToPointInTime ------------------------------------------------------------------

    def create(self, params: dict[str, Any], region: str) -> dict[str, Any]:
        token = params.get("ClientToken")
        request = {k: v for k, v in params.items() if k != "ClientToken"}
        if token is not None:
            earlier = self.by_token.get((region, token))
            if earlier is not None:
                if earlier.params != request:
                    # The model's documentation of ClientToken names this error for a reused token.
                    raise ServiceError(
                        "ExportConflictException",
                        f"The ClientToken {token!r} was already used by export {earlier.arn} with other parameters",
                    )
                return {"ExportDescription": earlier.description()}
        self._check_supported(request)
        table_arn = request["TableArn"]
        table = self._table(table_arn, region)
        name = table["TableName"]
        recovery = self._recovery_window(name, region)
        export_type = request.get("ExportType", DEFAULTS["ExportType"])
        now = self.now()
        incremental = None
        if export_type == "INCREMENTAL_EXPORT":
            incremental = self._incremental_window(request, recovery, now)
            export_time = incremental["ExportToTime"]
        else:
            if "IncrementalExportSpecification" in request:
                raise ServiceError(
                    "ValidationException",
                    "IncrementalExportSpecification is only valid with ExportType INCREMENTAL_EXPORT",
                )
            export_time = float(request.get("ExportTime", now))
            if not recovery <= export_time <= now:
                raise ServiceError(
                    "InvalidExportTimeException",
                    f"ExportTime {iso(export_time)} is outside the point in time recovery window "
                    f"[{iso(recovery)}, {iso(now)}] of table {name}",
                )
        export_id = f"{int(now * 1000):013d}-{secrets.token_hex(4)}"
        export = Export(
            arn=f"{table_arn}/export/{export_id}",
            export_id=export_id,
            region=region,
            table_arn=table_arn,
            table_id=table.get("TableId")
            or str(uuid.uuid5(uuid.NAMESPACE_URL, f"{table_arn}@{table['CreationDateTime']}")),
            client_token=token,
            params=request,
            s3_bucket=request["S3Bucket"],
            s3_prefix=request.get("S3Prefix"),
            s3_bucket_owner=request.get("S3BucketOwner"),
            sse_algorithm=request.get("S3SseAlgorithm", DEFAULTS["S3SseAlgorithm"]),
            kms_key_id=request.get("S3SseKmsKeyId"),
            export_type=export_type,
            incremental=incremental,
            export_time=export_time,
            start_time=now,
            polls_left=self.polls_in_progress,
        )
        self._run(export, name)
        self.by_arn[export.arn] = export
        if token is not None:
            self.by_token[(region, token)] = export
        return {"ExportDescription": export.description()}

    def _check_supported(self, request: dict[str, Any]) -> None:
        if request.get("ExportFormat", DEFAULTS["ExportFormat"]) != "DYNAMODB_JSON":
            raise ServiceError(
                "ValidationException",
                "ExportFormat ION is valid in DynamoDB but the export stand-in only writes DYNAMODB_JSON",
            )
        if "FilterSpecification" in request:
            raise ServiceError(
                "ValidationException",
                "FilterSpecification is valid in DynamoDB but the export stand-in does not support it",
            )
        if request.get("ExportType") == "INCREMENTAL_EXPORT" and "ExportTime" in request:
            raise ServiceError(
                "ValidationException",
                "ExportTime cannot be given for an INCREMENTAL_EXPORT; use IncrementalExportSpecification",
            )

    def _table(self, table_arn: str, region: str) -> dict[str, Any]:
        match = TABLE_ARN.match(table_arn)
        if match is None:
            raise ServiceError(
                "ValidationException",
                f"Invalid TableArn {table_arn!r}: expected arn:aws:dynamodb:REGION:ACCOUNT:table/NAME",
            )
        missing = ServiceError("TableNotFoundException", f"Table not found: {table_arn}")
        if match["region"] != region:
            raise missing  # DynamoDB looks in the region the request went to
        try:
            table = self.dynamodb(region).describe_table(TableName=match["name"])["Table"]
        except ClientError as err:
            if err.response["Error"]["Code"] in ("ResourceNotFoundException", "TableNotFoundException"):
                raise missing from None
            raise
        if table["TableArn"] != table_arn:  # another account
            raise missing
        return table

    def _recovery_window(self, name: str, region: str) -> float:
        """The earliest restorable time; raises when point-in-time recovery is off. moto's
        EarliestRestorableDateTime is always the time of the call, and the stand-in knows nothing of the
        table before it started, so the window begins when the stand-in started."""
        backups = self.dynamodb(region).describe_continuous_backups(TableName=name)["ContinuousBackupsDescription"]
        if backups.get("PointInTimeRecoveryDescription", {}).get("PointInTimeRecoveryStatus") != "ENABLED":
            raise ServiceError(
                "PointInTimeRecoveryUnavailableException", f"Point in time recovery is not enabled for table '{name}'"
            )
        return self.started_at

    def _incremental_window(self, request: dict[str, Any], recovery: float, now: float) -> dict[str, Any]:
        spec = request.get("IncrementalExportSpecification")
        if spec is None or "ExportFromTime" not in spec:
            raise ServiceError(
                "ValidationException", "An INCREMENTAL_EXPORT needs IncrementalExportSpecification.ExportFromTime"
            )
        start = float(spec["ExportFromTime"])
        end = float(spec.get("ExportToTime", now))
        if start < recovery or end > now:
            raise ServiceError(
                "InvalidExportTimeException",
                f"The export period [{iso(start)}, {iso(end)}) is outside the point in time recovery window "
                f"[{iso(recovery)}, {iso(now)}]",
            )
        if not MIN_INCREMENTAL_S <= end - start <= MAX_INCREMENTAL_S:
            raise ServiceError(
                "ValidationException",
                f"The incremental export period must be between 15 minutes and 24 hours, not {end - start:.3f} s",
            )
        return {
            "ExportFromTime": start,
            "ExportToTime": end,
            "ExportViewType": spec.get("ExportViewType", DEFAULT_VIEW_TYPE),
        }

    # ---- the export itself ----------------------------------------------------------------------------

    def _run(self, export: Export, table: str) -> None:
        """Writes every file now (the table as it is at this call) and fixes the outcome that DescribeExport
        reveals once its IN_PROGRESS polls are used up."""
        try:
            self.s3.head_bucket(Bucket=export.s3_bucket)
        except ClientError as err:
            if err.response["Error"]["Code"] not in ("404", "NoSuchBucket"):
                raise
            export.outcome, export.end_time = "FAILED", self.now()
            export.failure_code = "S3NoSuchBucket"
            export.failure_message = f"The specified bucket does not exist: {export.s3_bucket}"
            return
        base = f"{export.s3_prefix}/" if export.s3_prefix is not None else ""
        base += f"AWSDynamoDB/{export.export_id}/"
        self._put(export, base + "_started", b"")
        lines = self._lines(export, table)
        manifest_lines = []
        for first in range(0, len(lines), self.items_per_file):
            chunk = lines[first : first + self.items_per_file]
            body = gzip.compress("".join(line + "\n" for line in chunk).encode())
            key = f"{base}data/{base64.b32encode(secrets.token_bytes(16)).decode().lower().rstrip('=')}.json.gz"
            etag = self._put(export, key, body)
            manifest_lines.append(
                json.dumps(
                    {"itemCount": len(chunk), "md5Checksum": _md5_base64(body), "etag": etag, "dataFileS3Key": key}
                )
            )
        export.item_count = len(lines)
        export.billed_size_bytes = sum(len(line.encode()) + 1 for line in lines)
        files = "".join(line + "\n" for line in manifest_lines).encode()
        self._put(export, base + "manifest-files.json", files)
        self._put(export, base + "manifest-files.md5", _md5_base64(files).encode())
        export.end_time = self.now()
        export.manifest_key = base + "manifest-summary.json"
        summary = json.dumps(
            {
                "version": "2020-06-30",
                "exportArn": export.arn,
                "startTime": iso(export.start_time),
                "endTime": iso(export.end_time),
                "tableArn": export.table_arn,
                "tableId": export.table_id,
                "exportTime": iso(export.export_time),
                "s3Bucket": export.s3_bucket,
                "s3Prefix": export.s3_prefix,
                "s3SseAlgorithm": export.sse_algorithm,
                "s3SseKmsKeyId": export.kms_key_id,
                "manifestFilesS3Key": base + "manifest-files.json",
                "billedSizeBytes": export.billed_size_bytes,
                "itemCount": export.item_count,
                "outputFormat": "DYNAMODB_JSON",
                "exportType": export.export_type,
            }
        ).encode()
        self._put(export, export.manifest_key, summary)
        self._put(export, base + "manifest-summary.md5", _md5_base64(summary).encode())

    def _put(self, export: Export, key: str, body: bytes) -> str:
        """One object, encrypted as the export asks; returns its ETag without the quotes."""
        extra: dict[str, str] = {"ServerSideEncryption": "AES256"}
        if export.sse_algorithm == "KMS":
            extra = {"ServerSideEncryption": "aws:kms"}
            if export.kms_key_id:
                extra["SSEKMSKeyId"] = export.kms_key_id
        answer = self.s3.put_object(Bucket=export.s3_bucket, Key=key, Body=body, **extra)
        return answer["ETag"].strip('"')

    def _histories(self, export: Export, table: str) -> list[KeyHistory]:
        """Every key the table has or had: its tracked history, or (untracked) its current image as
        written when the stand-in started."""
        client = self.dynamodb(export.region)
        key_names = [k["AttributeName"] for k in client.describe_table(TableName=table)["Table"]["KeySchema"]]
        tracked = dict(self.writes.histories(export.region, table))
        out: list[KeyHistory] = []
        for page in client.get_paginator("scan").paginate(TableName=table, ConsistentRead=True):
            for item in page["Items"]:
                key = {name: item[name] for name in key_names}
                history = tracked.pop(key_id(key), None)
                out.append(history or KeyHistory(key, [(self.writes.start_micros, item)]))
        out.extend(tracked.values())  # deleted since (tracked, no longer in moto)
        return out

    def _lines(self, export: Export, table: str) -> list[str]:
        histories = self._histories(export, table)
        if export.incremental is None:
            at = micros(export.export_time)
            items = [h.image_at(at) for h in histories]
            return [json.dumps({"Item": item}) for item in items if item is not None]
        start = micros(export.incremental["ExportFromTime"])
        end = micros(export.incremental["ExportToTime"])
        with_old = export.incremental["ExportViewType"] == "NEW_AND_OLD_IMAGES"
        lines = []
        for history in histories:
            written = history.writes_in(start, end)
            if not written:
                continue
            line: dict[str, Image] = {
                "Metadata": {"WriteTimestampMicros": {"N": str(written[-1])}},
                "Keys": history.key,
            }
            new = history.image_before(end)
            if new is not None:
                line["NewImage"] = new
            old = history.image_before(start)
            if with_old and old is not None:
                line["OldImage"] = old
            lines.append(json.dumps(line))
        return lines

    # ---- DescribeExport, ListExports --------------------------------------------------------------------

    def describe(self, params: dict[str, Any], region: str) -> dict[str, Any]:
        export = self.by_arn.get(params["ExportArn"])
        if export is None or export.region != region:
            raise ServiceError("ExportNotFoundException", f"Export not found: {params['ExportArn']}")
        described = export.description()  # before this poll is counted: the N-th poll still sees IN_PROGRESS
        export.polls_left = max(0, export.polls_left - 1)
        return {"ExportDescription": described}

    def list(self, params: dict[str, Any], region: str) -> dict[str, Any]:
        table = params.get("TableArn")
        # "in reverse alphanumeric order of ExportArn" (the model's documentation of ListExports)
        arns = sorted(
            (e.arn for e in self.by_arn.values() if e.region == region and (table is None or e.table_arn == table)),
            reverse=True,
        )
        token = params.get("NextToken")
        if token is not None:
            try:
                after = base64.urlsafe_b64decode(token.encode()).decode()
            except (ValueError, UnicodeDecodeError):
                raise ServiceError("ValidationException", "Invalid NextToken") from None
            if after not in arns:
                raise ServiceError("ValidationException", "Invalid NextToken")
            arns = arns[arns.index(after) + 1 :]
        limit = params.get("MaxResults", LIST_EXPORTS_DEFAULT)
        page = arns[:limit]
        answer: dict[str, Any] = {
            "ExportSummaries": [
                {"ExportArn": arn, "ExportStatus": self.by_arn[arn].status, "ExportType": self.by_arn[arn].export_type}
                for arn in page
            ]
        }
        if len(arns) > limit:
            answer["NextToken"] = base64.urlsafe_b64encode(page[-1].encode()).decode()
        return answer
