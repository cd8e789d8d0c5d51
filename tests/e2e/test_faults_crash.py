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
