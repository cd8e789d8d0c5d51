"""Validation against botocore's model, DynamoDB's errors, transparent forwarding and injected faults."""

from __future__ import annotations

import http.client
import json
import threading
import urllib.parse
from typing import Any

import pytest
from botocore.exceptions import ClientError

from .conftest import admin, table_name

AUTH = (
    "AWS4-HMAC-SHA256 Credential=AKIDRAW/20261206/us-east-1/dynamodb/aws4_request, "
    "SignedHeaders=host;x-amz-date, Signature=" + "0" * 64
)


def raw(
    url: str, operation: str, body: dict[str, Any], connection: http.client.HTTPConnection | None = None
) -> tuple[int, dict[str, str], dict[str, Any]]:
    """One request as the AWS Rust SDK sends it (awsJson1_0)."""
    parsed = urllib.parse.urlsplit(url)
    conn = connection or http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=10)
    headers = {
        "Content-Type": "application/x-amz-json-1.0",
        "X-Amz-Target": f"DynamoDB_20120810.{operation}",
        "Authorization": AUTH,
        "X-Amz-Date": "20261206T000000Z",
    }
    conn.request("POST", "/", body=json.dumps(body).encode(), headers=headers)
    response = conn.getresponse()
    payload = response.read()
    if connection is None:
        conn.close()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, json.loads(payload) if payload else {}


def test_requests_are_validated_against_the_model(standin, make_table, bucket):
    table = make_table()
    cases = {
        "unknown member": ({"TableArn": table, "S3Bucket": bucket, "Bogus": 1}, "Bogus"),
        "wrong type": ({"TableArn": table, "S3Bucket": 7}, "S3Bucket"),
        "missing required": ({"TableArn": table}, "S3Bucket"),
        "enum": ({"TableArn": table, "S3Bucket": bucket, "ExportType": "PARTIAL"}, "FULL_EXPORT"),
        "timestamp as text": ({"TableArn": table, "S3Bucket": bucket, "ExportTime": "yesterday"}, "ExportTime"),
    }
    for case, (body, named) in cases.items():
        status, _, answer = raw(standin, "ExportTableToPointInTime", body)
        assert status == 400, case
        assert answer["__type"] == "com.amazonaws.dynamodb.v20120810#ValidationException", case
        assert named in answer["message"], (case, answer["message"])
    status, _, answer = raw(standin, "DescribeExport", {})
    assert status == 400 and "ExportArn" in answer["message"]
    status, _, answer = raw(standin, "ListExports", {"MaxResults": 26})
    assert status == 400 and "MaxResults" in answer["message"]


def test_unsupported_and_impossible_exports_are_refused(ddb, make_table, bucket):
    table = make_table()

    def code(**kw: Any) -> tuple[str, str]:
        with pytest.raises(ClientError) as raised:
            ddb.export_table_to_point_in_time(S3Bucket=bucket, **kw)
        return raised.value.response["Error"]["Code"], raised.value.response["Error"]["Message"]

    error, message = code(TableArn=table, ExportFormat="ION")
    assert error == "ValidationException" and "stand-in" in message and "ION" in message
    assert code(TableArn=table.replace(table_name(table), "no-such-table"))[0] == "TableNotFoundException"
    assert code(TableArn=table.replace("us-east-1", "eu-west-1"))[0] == "TableNotFoundException"
    assert code(TableArn=make_table(pitr=False))[0] == "PointInTimeRecoveryUnavailableException"
    assert code(TableArn="not-an-arn")[0] == "ValidationException"
    with pytest.raises(ClientError) as raised:
        ddb.describe_export(ExportArn=f"{table}/export/01700000000000-deadbeef")
    assert raised.value.response["Error"]["Code"] == "ExportNotFoundException"


def test_forwarding_is_transparent_and_keeps_the_connection(standin, moto, make_table):
    table = table_name(make_table())
    parsed = urllib.parse.urlsplit(standin)
    connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=10)
    item = {"pk": {"S": "k"}, "n": {"N": "1.50"}, "m": {"M": {"l": {"L": [{"BOOL": True}, {"NULL": True}]}}}}
    for operation, body in (
        ("PutItem", {"TableName": table, "Item": item}),
        ("GetItem", {"TableName": table, "Key": {"pk": {"S": "k"}}}),
        ("DescribeTable", {"TableName": "no-such-table"}),
    ):
        through = raw(standin, operation, body, connection)  # one connection for all three: keep-alive
        direct = raw(moto, operation, body)
        assert (through[0], through[2]) == (direct[0], direct[2]), operation
        assert through[1]["content-type"] == direct[1]["content-type"]
    connection.close()
    assert raw(standin, "GetItem", {"TableName": table, "Key": {"pk": {"S": "k"}}})[2]["Item"] == item


def test_concurrent_writes_all_arrive(ddb, make_table):
    table = table_name(make_table())
    errors: list[Exception] = []

    def write(worker: int) -> None:
        try:
            for i in range(10):
                ddb.put_item(TableName=table, Item={"pk": {"S": f"{worker}-{i}"}})
        except Exception as err:  # noqa: BLE001 - collected and asserted below
            errors.append(err)

    threads = [threading.Thread(target=write, args=(w,)) for w in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert ddb.scan(TableName=table, Select="COUNT")["Count"] == 80


def test_fail_next_injects_throttling_and_server_errors(standin, ddb, make_table, bucket):
    table = make_table()
    arn = ddb.export_table_to_point_in_time(TableArn=table, S3Bucket=bucket)["ExportDescription"]["ExportArn"]
    admin(standin, "POST", "fail-next", {"operation": "DescribeExport", "error": "ThrottlingException", "count": 2})
    for _ in range(2):
        with pytest.raises(ClientError) as raised:
            ddb.describe_export(ExportArn=arn)
        assert raised.value.response["Error"]["Code"] == "ThrottlingException"
        assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert ddb.describe_export(ExportArn=arn)["ExportDescription"]["ExportStatus"] == "IN_PROGRESS"
    admin(standin, "POST", "fail-next", {"operation": "Scan", "error": "InternalServerError"})
    with pytest.raises(ClientError) as raised:
        ddb.scan(TableName=table_name(table))
    assert raised.value.response["Error"]["Code"] == "InternalServerError"
    assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500
    assert ddb.scan(TableName=table_name(table))["Count"] == 0


def test_control_api_refuses_what_it_cannot_do(standin):
    for body in (
        {"operation": "Frobnicate", "error": "ThrottlingException"},
        {"operation": "Scan", "error": "Nope"},
        {"operation": "Scan", "error": "ThrottlingException", "count": 0},
    ):
        with pytest.raises(Exception) as raised:
            admin(standin, "POST", "fail-next", body)
        assert getattr(raised.value, "code", None) == 400, body
