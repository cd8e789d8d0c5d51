"""Incremental exports: what changed in [ExportFromTime, ExportToTime), from the write times the stand-in saw."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.ddb_export_standin.launch import start

from .conftest import admin, client, table_name
from .test_exports import read_layout, wait_done

TWENTY_MINUTES = 1200


def changes(
    ddb: Any, s3: Any, table: str, bucket: str, start: float, end: float, view: str | None = None
) -> dict[str, dict]:
    spec: dict[str, Any] = {"ExportFromTime": start, "ExportToTime": end}
    if view is not None:
        spec["ExportViewType"] = view
    arn = ddb.export_table_to_point_in_time(
        TableArn=table, S3Bucket=bucket, ExportType="INCREMENTAL_EXPORT", IncrementalExportSpecification=spec
    )["ExportDescription"]["ExportArn"]
    done = wait_done(ddb, arn)
    summary, _, lines = read_layout(s3, bucket, done["ExportManifest"])
    assert summary["exportType"] == done["ExportType"] == "INCREMENTAL_EXPORT"
    assert summary["itemCount"] == done["ItemCount"] == len(lines)
    assert done["IncrementalExportSpecification"]["ExportViewType"] == (view or "NEW_AND_OLD_IMAGES")
    return {line["Keys"]["pk"]["S"]: line for line in lines}


def test_incremental_export_has_the_window_s_inserts_updates_and_deletes(ddb, s3, make_table, bucket, standin):
    table = make_table()
    name = table_name(table)
    for key in ("a", "b", "c"):
        ddb.put_item(TableName=name, Item={"pk": {"S": key}, "v": {"N": "1"}})
    admin(standin, "POST", "clock", {"advance_seconds": TWENTY_MINUTES})
    window_start = admin(standin, "GET", "clock")["now"]
    ddb.update_item(
        TableName=name,
        Key={"pk": {"S": "a"}},
        UpdateExpression="SET v = :v",
        ExpressionAttributeValues={":v": {"N": "2"}},
    )
    ddb.delete_item(TableName=name, Key={"pk": {"S": "b"}})
    ddb.batch_write_item(RequestItems={name: [{"PutRequest": {"Item": {"pk": {"S": "d"}, "v": {"N": "4"}}}}]})
    admin(standin, "POST", "clock", {"advance_seconds": TWENTY_MINUTES})
    window_end = admin(standin, "GET", "clock")["now"]
    # Written after the window: not in it, and the window's images are as they were at its end.
    ddb.put_item(TableName=name, Item={"pk": {"S": "a"}, "v": {"N": "3"}})

    both = changes(ddb, s3, table, bucket, window_start, window_end)
    assert set(both) == {"a", "b", "d"}
    assert (both["a"]["OldImage"]["v"], both["a"]["NewImage"]["v"]) == ({"N": "1"}, {"N": "2"})
    assert "NewImage" not in both["b"] and both["b"]["OldImage"]["pk"] == {"S": "b"}
    assert "OldImage" not in both["d"] and both["d"]["NewImage"]["v"] == {"N": "4"}
    for line in both.values():
        micros = int(line["Metadata"]["WriteTimestampMicros"]["N"])
        assert window_start * 1e6 <= micros < window_end * 1e6

    new_only = changes(ddb, s3, table, bucket, window_start, window_end, view="NEW_IMAGE")
    assert set(new_only) == {"a", "b", "d"}
    assert all("OldImage" not in line for line in new_only.values())
    assert set(new_only["b"]) == {"Metadata", "Keys"}  # a delete: keys only


def test_incremental_window_rules(ddb, make_table, bucket, standin):
    table = make_table()
    now = admin(standin, "GET", "clock")["now"]

    def refused(spec: dict[str, Any], **extra: Any) -> str:
        with pytest.raises(ClientError) as raised:
            ddb.export_table_to_point_in_time(
                TableArn=table,
                S3Bucket=bucket,
                ExportType="INCREMENTAL_EXPORT",
                IncrementalExportSpecification=spec,
                **extra,
            )
        return raised.value.response["Error"]["Code"]

    assert refused({"ExportToTime": now}) == "ValidationException"  # no ExportFromTime
    assert refused({"ExportFromTime": now - 3600, "ExportToTime": now}) == "InvalidExportTimeException"  # before PITR
    admin(standin, "POST", "clock", {"advance_seconds": 2 * TWENTY_MINUTES})
    assert refused({"ExportFromTime": now, "ExportToTime": now + 60}) == "ValidationException"  # under 15 minutes
    assert (
        refused({"ExportFromTime": now, "ExportToTime": now + 10 * TWENTY_MINUTES}) == "InvalidExportTimeException"
    )  # future
    assert refused({"ExportFromTime": now, "ExportToTime": now + 1000}, ExportTime=now) == "ValidationException"


def test_items_written_before_the_stand_in_started_count_as_written_at_its_start(
    moto, moto_ddb, s3, make_table, bucket
):
    table = make_table()
    moto_ddb.put_item(TableName=table_name(table), Item={"pk": {"S": "old"}})
    url, process = start(moto, moto, env={"DDB_EXPORT_STANDIN_POLLS_IN_PROGRESS": "0"})
    try:
        ddb = client("dynamodb", url)
        started = admin(url, "GET", "health")["started_at"]
        admin(url, "POST", "clock", {"advance_seconds": TWENTY_MINUTES})
        lines = changes(ddb, s3, table, bucket, started, started + TWENTY_MINUTES)
        assert set(lines) == {"old"}
        assert int(lines["old"]["Metadata"]["WriteTimestampMicros"]["N"]) == int(started * 1_000_000)
    finally:
        process.terminate()
        process.wait(timeout=10)
