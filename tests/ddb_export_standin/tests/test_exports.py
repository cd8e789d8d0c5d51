"""Full exports: the answers of ExportTableToPointInTime/DescribeExport/ListExports and the S3 layout."""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import re
from typing import Any

import pytest
from botocore.exceptions import ClientError

from .conftest import ACCOUNT, ITEMS_PER_FILE, REGION, admin, table_name

EXPORT_ARN = re.compile(rf"^arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/[^/]+/export/(\d{{13}}-[0-9a-f]{{8}})$")


def put(ddb: Any, table_arn: str, *keys: str) -> None:
    for key in keys:
        ddb.put_item(
            TableName=table_name(table_arn), Item={"pk": {"S": key}, "n": {"N": "1"}, "tags": {"SS": ["a", "b"]}}
        )


def wait_done(ddb: Any, arn: str) -> dict[str, Any]:
    for _ in range(10):
        description = ddb.describe_export(ExportArn=arn)["ExportDescription"]
        if description["ExportStatus"] != "IN_PROGRESS":
            return description
    raise AssertionError(f"{arn} never finished")


def read_layout(
    s3: Any, bucket: str, summary_key: str
) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    """(manifest summary, manifest-files lines, every data line), checking the checksums on the way."""
    summary_body = s3.get_object(Bucket=bucket, Key=summary_key)["Body"].read()
    summary = json.loads(summary_body)
    md5 = s3.get_object(Bucket=bucket, Key=summary_key.replace(".json", ".md5"))["Body"].read().decode()
    assert md5 == base64.b64encode(hashlib.md5(summary_body).digest()).decode()
    files_body = s3.get_object(Bucket=bucket, Key=summary["manifestFilesS3Key"])["Body"].read()
    files = [json.loads(line) for line in files_body.decode().splitlines()]
    lines = []
    for entry in files:
        obj = s3.get_object(Bucket=bucket, Key=entry["dataFileS3Key"])
        body = obj["Body"].read()
        assert entry["md5Checksum"] == base64.b64encode(hashlib.md5(body).digest()).decode()
        assert entry["etag"] == obj["ETag"].strip('"')
        data = [json.loads(line) for line in gzip.decompress(body).decode().splitlines()]
        assert len(data) == entry["itemCount"] <= ITEMS_PER_FILE
        lines.extend(data)
    return summary, files, lines


def test_full_export_writes_the_documented_layout(ddb, s3, make_table, bucket):
    table = make_table()
    put(ddb, table, "a", "b", "c", "d", "e")
    started = ddb.export_table_to_point_in_time(
        TableArn=table, S3Bucket=bucket, S3Prefix="exports/run-1", ClientToken="tok-1"
    )
    first = started["ExportDescription"]
    export_id = EXPORT_ARN.match(first["ExportArn"])[1]
    assert first["ExportStatus"] == "IN_PROGRESS" and "ItemCount" not in first and "ExportManifest" not in first
    # DDB_EXPORT_STANDIN_POLLS_IN_PROGRESS=1: the first poll still sees it running, the second sees it done.
    assert ddb.describe_export(ExportArn=first["ExportArn"])["ExportDescription"]["ExportStatus"] == "IN_PROGRESS"
    done = ddb.describe_export(ExportArn=first["ExportArn"])["ExportDescription"]
    base = f"exports/run-1/AWSDynamoDB/{export_id}/"
    assert done["ExportStatus"] == "COMPLETED"
    assert done["ExportManifest"] == base + "manifest-summary.json"
    assert (done["ItemCount"], done["ExportType"], done["ExportFormat"]) == (5, "FULL_EXPORT", "DYNAMODB_JSON")
    assert (done["S3Bucket"], done["S3Prefix"], done["ClientToken"], done["S3SseAlgorithm"]) == (
        bucket,
        "exports/run-1",
        "tok-1",
        "AES256",
    )
    assert done["EndTime"] >= done["StartTime"] and done["TableArn"] == table
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", done["TableId"])

    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"])
    assert base + "_started" in keys
    assert s3.get_object(Bucket=bucket, Key=base + "_started")["Body"].read() == b""
    assert {k for k in keys if not k.startswith(base + "data/")} == {
        base + name
        for name in (
            "_started",
            "manifest-files.json",
            "manifest-files.md5",
            "manifest-summary.json",
            "manifest-summary.md5",
        )
    }
    assert all(re.fullmatch(re.escape(base) + r"data/[a-z2-7]{26}\.json\.gz", k) for k in keys if "/data/" in k)

    summary, files, lines = read_layout(s3, bucket, done["ExportManifest"])
    assert len(files) == 3  # 5 items, 2 a file
    assert sorted(line["Item"]["pk"]["S"] for line in lines) == ["a", "b", "c", "d", "e"]
    assert lines[0]["Item"]["tags"] == {"SS": ["a", "b"]} and lines[0]["Item"]["n"] == {"N": "1"}
    assert summary == {
        "version": "2020-06-30",
        "exportArn": first["ExportArn"],
        "startTime": summary["startTime"],
        "endTime": summary["endTime"],
        "tableArn": table,
        "tableId": done["TableId"],
        "exportTime": summary["exportTime"],
        "s3Bucket": bucket,
        "s3Prefix": "exports/run-1",
        "s3SseAlgorithm": "AES256",
        "s3SseKmsKeyId": None,
        "manifestFilesS3Key": base + "manifest-files.json",
        "billedSizeBytes": done["BilledSizeBytes"],
        "itemCount": 5,
        "outputFormat": "DYNAMODB_JSON",
        "exportType": "FULL_EXPORT",
    }
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", summary["startTime"])
    assert done["BilledSizeBytes"] > 0


def test_empty_table_without_prefix_has_no_data_files(ddb, s3, make_table, bucket):
    table = make_table()
    arn = ddb.export_table_to_point_in_time(TableArn=table, S3Bucket=bucket)["ExportDescription"]["ExportArn"]
    done = wait_done(ddb, arn)
    export_id = EXPORT_ARN.match(arn)[1]
    assert done["ItemCount"] == 0 and "S3Prefix" not in done
    assert done["ExportManifest"] == f"AWSDynamoDB/{export_id}/manifest-summary.json"
    summary, files, lines = read_layout(s3, bucket, done["ExportManifest"])
    assert (files, lines, summary["itemCount"], summary["s3Prefix"]) == ([], [], 0, None)
    assert not [o for o in s3.list_objects_v2(Bucket=bucket)["Contents"] if "/data/" in o["Key"]]


def test_export_time_in_the_past_exports_the_table_as_it_was(ddb, s3, make_table, bucket, standin):
    table = make_table()
    ddb.put_item(TableName=table_name(table), Item={"pk": {"S": "x"}, "v": {"S": "old"}})
    ddb.put_item(TableName=table_name(table), Item={"pk": {"S": "gone"}})
    # A second either side: SDKs send timestamps in milliseconds, the writes are dated in microseconds.
    admin(standin, "POST", "clock", {"advance_seconds": 1})
    between = admin(standin, "GET", "clock")["now"]
    admin(standin, "POST", "clock", {"advance_seconds": 1})
    ddb.put_item(TableName=table_name(table), Item={"pk": {"S": "x"}, "v": {"S": "new"}})
    ddb.delete_item(TableName=table_name(table), Key={"pk": {"S": "gone"}})
    ddb.put_item(TableName=table_name(table), Item={"pk": {"S": "later"}})
    arn = ddb.export_table_to_point_in_time(TableArn=table, S3Bucket=bucket, ExportTime=between)["ExportDescription"][
        "ExportArn"
    ]
    done = wait_done(ddb, arn)
    assert done["ExportTime"].timestamp() == pytest.approx(between, abs=0.001)
    _, _, lines = read_layout(s3, bucket, done["ExportManifest"])
    assert sorted((line["Item"]["pk"]["S"], line["Item"].get("v", {}).get("S")) for line in lines) == [
        ("gone", None),
        ("x", "old"),
    ]


def test_client_token_is_idempotent(ddb, make_table, bucket):
    table = make_table()
    first = ddb.export_table_to_point_in_time(TableArn=table, S3Bucket=bucket, ClientToken="same")["ExportDescription"]
    again = ddb.export_table_to_point_in_time(TableArn=table, S3Bucket=bucket, ClientToken="same")["ExportDescription"]
    assert again["ExportArn"] == first["ExportArn"]
    assert [s["ExportArn"] for s in ddb.list_exports(TableArn=table)["ExportSummaries"]] == [first["ExportArn"]]
    with pytest.raises(ClientError) as raised:
        ddb.export_table_to_point_in_time(TableArn=table, S3Bucket=bucket, ClientToken="same", S3Prefix="other")
    assert raised.value.response["Error"]["Code"] == "ExportConflictException"
    assert len(ddb.list_exports(TableArn=table)["ExportSummaries"]) == 1


def test_missing_bucket_fails_the_export(ddb, make_table):
    table = make_table()
    arn = ddb.export_table_to_point_in_time(TableArn=table, S3Bucket="no-such-bucket-here")["ExportDescription"][
        "ExportArn"
    ]
    assert ddb.describe_export(ExportArn=arn)["ExportDescription"]["ExportStatus"] == "IN_PROGRESS"
    failed = ddb.describe_export(ExportArn=arn)["ExportDescription"]
    assert (failed["ExportStatus"], failed["FailureCode"]) == ("FAILED", "S3NoSuchBucket")
    assert "no-such-bucket-here" in failed["FailureMessage"] and "ExportManifest" not in failed


def test_list_exports_pages_in_reverse_arn_order(ddb, make_table, bucket):
    table, other = make_table(), make_table()
    arns = [
        ddb.export_table_to_point_in_time(TableArn=table, S3Bucket=bucket)["ExportDescription"]["ExportArn"]
        for _ in range(3)
    ]
    ddb.export_table_to_point_in_time(TableArn=other, S3Bucket=bucket)
    page = ddb.list_exports(TableArn=table, MaxResults=2)
    rest = ddb.list_exports(TableArn=table, MaxResults=2, NextToken=page["NextToken"])
    listed = [s["ExportArn"] for s in page["ExportSummaries"] + rest["ExportSummaries"]]
    assert listed == sorted(arns, reverse=True) and "NextToken" not in rest
    assert {(s["ExportStatus"], s["ExportType"]) for s in page["ExportSummaries"]} == {("IN_PROGRESS", "FULL_EXPORT")}
    everything = [s["ExportArn"] for s in ddb.list_exports()["ExportSummaries"]]
    assert set(arns) <= set(everything) and len(everything) > 3
