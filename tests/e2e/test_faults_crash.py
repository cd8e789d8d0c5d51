"""Point 3, the pipeline crashing after each state: the process really dies (SIGABRT), through training-export's
test hook `TRAINING_EXPORT_CRASH_AFTER=<state>`, right after the run was saved in that state. The next
invocations (`advance`, the 10-minute tick) must carry the run to Done with exactly one import job and one
solution version for it, as the stand-in's call log counts them.

Runs, exports and the pipeline bus are on moto (DynamoDB, S3, EventBridge), Personalize is the stand-in;
the interactions are the demo data training-export seeds into an empty embedded store (where they come
from does not matter here).

A crashed invocation keeps its lease on the run (16 minutes, longer than a Lambda lives), so a tick right
after the crash must leave the run alone; the test then moves the lease into the past, standing in for
the wait, and the next tick resumes.
"""

from __future__ import annotations

import hashlib
import json
import signal
import time

from .apps import pipeline_response, training_export
from .aws import aws_env, bootstrap_personalize, client, runs_table, unique
from .harness import Phases, clean_env, require_crash_hook

STATES = ["Exporting", "Exported", "Importing", "Imported", "Training", "Trained", "Deploying", "Done"]
TERMINAL = ("Done", "Failed", "Rejected")


def newest_run(dynamodb, table: str) -> dict:
    items = dynamodb.query(
        TableName=table,
        KeyConditionExpression="pk = :run",
        ExpressionAttributeValues={":run": {"S": "run"}},
        ScanIndexForward=False,
        Limit=1,
        ConsistentRead=True,
    )["Items"]
    return json.loads(items[0]["body"]["S"])


def let_the_lease_expire(dynamodb, table: str, run: dict) -> None:
    """What 16 minutes would do: the dead invocation's lease is in the past (nothing else changes)."""
    run = {**run, "leaseUntil": int(time.time()) - 1}
    dynamodb.update_item(
        TableName=table,
        Key={"pk": {"S": "run"}, "sk": {"S": run["runId"]}},
        UpdateExpression="SET body = :body",
        ExpressionAttributeValues={":body": {"S": json.dumps(run)}},
    )


def test_a_crash_after_each_state_resumes_with_one_import_job_and_one_solution_version(
    processes, bins, moto, standin, tmp_path
):
    require_crash_hook(bins)
    phase = Phases("crash after each state")
    dynamodb = client("dynamodb", moto.general)
    s3 = client("s3", moto.s3)
    runs = runs_table(dynamodb)
    bucket = unique("ranking-data")
    s3.create_bucket(Bucket=bucket)
    bus = unique("pipeline-bus")
    client("events", moto.general).create_event_bus(Name=bus)
    env = clean_env(
        **aws_env(moto, tmp_path, PERSONALIZE=standin.url),
        DATA_DIR=str(tmp_path / "data"),
        DATA_BUCKET=bucket,
        RUNS_TABLE=runs,
        EVENT_BUS_NAME=bus,
    )
    bootstrap = pipeline_response(training_export(processes, bins, env, "export"))["run"]
    deployment = bootstrap_personalize(
        client("personalize", standin.url),
        f"s3://{bucket}/exports/{bootstrap['runId']}/interactions.csv",
        unique("ranking"),
    )
    env.update(deployment.pipeline_env())
    phase("bootstrap")

    for state in STATES:
        crashing = {**env, "TRAINING_EXPORT_CRASH_AFTER": state}
        # The schedule's invocations, until one dies in the state's aftermath.
        attempt = training_export(processes, bins, crashing, "run", expect=None)
        for _ in range(12):
            if attempt.returncode != 0:
                break
            attempt = training_export(processes, bins, crashing, "advance", expect=None)
        assert attempt.returncode == -signal.SIGABRT, f"{state}: {attempt.describe()}"
        assert "aborting the process right after saving this state" in attempt.stderr, attempt.stderr
        assert attempt.stdout == "", "a crashed invocation answers nothing"
        crashed = newest_run(dynamodb, runs)
        run_id = crashed["runId"]
        assert crashed["state"]["status"] == state, f"saved before the crash: {crashed['state']}"

        if state == "Exporting":
            assert crashed.get("leaseUntil") is None, "created, and dead before taking the lease"
        else:
            assert crashed["leaseUntil"] > time.time(), "a dead invocation does not release its lease"
        if state not in ("Exporting", *TERMINAL):
            # Right after the crash the lease still holds: the tick leaves the run where it is.
            held = training_export(processes, bins, env, "advance")
            assert "another invocation is advancing this run" in held.stderr, held.describe()
            assert newest_run(dynamodb, runs)["state"]["status"] == state
            let_the_lease_expire(dynamodb, runs, newest_run(dynamodb, runs))

        # Later ticks carry the run to its end.
        run = None
        for _ in range(12):
            response = pipeline_response(training_export(processes, bins, env, "advance", expect=None))
            if response["outcome"] == "idle":
                break
            run = response["run"]
            if run["status"] in TERMINAL:
                break
        final = newest_run(dynamodb, runs)
        assert final["runId"] == run_id and final["state"]["status"] == "Done", f"{state}: {final['state']}"
        if state != "Done":
            assert run is not None and run["status"] == "Done", f"{state}: {run}"

        imports = [c for c in standin.calls("CreateDatasetImportJob") if run_id in c["params"]["jobName"]]
        versions = [c for c in standin.calls("CreateSolutionVersion") if run_id in c["params"]["name"]]
        assert [c["status"] for c in imports] == [200], f"crash after {state}: one import job, created once"
        assert [c["status"] for c in versions] == [200], f"crash after {state}: one solution version, created once"
        campaign = client("personalize", standin.url).describe_campaign(campaignArn=deployment.campaign)["campaign"]
        assert campaign["solutionVersionArn"] == final["training"]["version"], f"{state}: the run's version is live"
        phase(f"crash after {state}, resumed to Done")

    assert standin.violations() == []


def _csv_rows(s3, bucket: str, keys: list[str]) -> tuple[set[str], list[str]]:
    """The headers and the sorted data rows of some CSV objects."""
    headers, rows = set(), []
    for key in keys:
        header, *lines = s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode().splitlines()
        headers.add(header)
        rows.extend(lines)
    return headers, sorted(rows)


def _keys(s3, bucket: str, prefix: str) -> list[str]:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return sorted(o["Key"] for page in pages for o in page.get("Contents", []))


def test_a_crash_in_the_middle_of_converting_a_file_resumes_with_the_rows_of_an_uninterrupted_export(
    processes, bins, moto, tmp_path
):
    """The table-export path (TABLE_EXPORT_ABOVE_BYTES=0) dies in the middle of converting a data file (the
    `Converting` hook: the part's CSV and Parquet are written, its record and the run's checkpoint are not).
    After the lease, `advance` converts that file again and the run's CSV has exactly the rows of an
    uninterrupted export of the same table: the same count and the same checksum of the sorted rows."""
    require_crash_hook(bins)
    dynamodb = client("dynamodb", moto.general)
    s3 = client("s3", moto.s3)
    runs = runs_table(dynamodb)
    bucket = unique("ranking-data")
    s3.create_bucket(Bucket=bucket)
    env = clean_env(**aws_env(moto, tmp_path), DATA_DIR=str(tmp_path / "data"), DATA_BUCKET=bucket, RUNS_TABLE=runs)

    # The uninterrupted reference: the scan path over the same embedded table.
    scanned = pipeline_response(training_export(processes, bins, {**env, "TABLE_EXPORT_ABOVE_BYTES": "off"}, "export"))
    reference = newest_run(dynamodb, runs)
    assert reference["runId"] == scanned["run"]["runId"] and "tableExport" not in reference, reference
    ref_headers, ref_rows = _csv_rows(s3, bucket, [reference["export"]["csvKey"]])
    assert len(ref_rows) > 1_000, "enough rows for several data files"

    table_export = {**env, "TABLE_EXPORT_ABOVE_BYTES": "0"}
    crashed = training_export(processes, bins, {**table_export, "TRAINING_EXPORT_CRASH_AFTER": "Converting"}, "export", expect=None)
    assert crashed.returncode == -signal.SIGABRT, crashed.describe()
    assert "TRAINING_EXPORT_CRASH_AFTER: aborting the process here" in crashed.stderr, crashed.stderr
    run = newest_run(dynamodb, runs)
    run_id = run["runId"]
    record = run["tableExport"]
    assert record["dataFiles"] >= 3 and record["converted"] == 0, record
    # The dead conversion had written its part's files, not its record.
    assert _keys(s3, bucket, f"exports/{run_id}/csv/") == [f"exports/{run_id}/csv/part-00000.csv"]
    assert _keys(s3, bucket, f"exports/{run_id}/parts/") == []

    held = training_export(processes, bins, table_export, "advance")
    assert "another invocation is advancing this run" in held.stderr, held.describe()
    let_the_lease_expire(dynamodb, runs, newest_run(dynamodb, runs))
    resumed = pipeline_response(training_export(processes, bins, table_export, "advance"))
    assert resumed["run"]["runId"] == run_id and resumed["run"]["status"] == "Done", resumed

    final = newest_run(dynamodb, runs)
    assert final["tableExport"]["converted"] == record["dataFiles"], final["tableExport"]
    parts = _keys(s3, bucket, f"exports/{run_id}/csv/")
    assert len(parts) == record["dataFiles"], parts
    headers, rows = _csv_rows(s3, bucket, parts)
    assert headers == ref_headers and len(headers) == 1, (headers, ref_headers)
    assert len(rows) == len(ref_rows) == final["export"]["rows"], (len(rows), len(ref_rows))
    digest = lambda lines: hashlib.sha256("\n".join(lines).encode()).hexdigest()  # noqa: E731
    assert digest(rows) == digest(ref_rows), "the resumed export has the uninterrupted export's rows"
