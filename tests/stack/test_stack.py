"""The story, on the deployed stack offline (see `stack.py` for what plays what).

1. **The Personalize-free deployment** (no campaign parameters). Last term is in the interactions table;
   this term's events go on the bus, the template's rules hand them to the consumer, which stores
   interactions and sends confirmations through SES; bad events end in the dead-letter queue after Lambda's
   retries. A `ranking.requestUpdate` makes the consumer invoke training-export, whose run exports, trains
   the embedded model, gates and publishes it; a new API instance serves it from the bucket.
2. **Personalize.** The operator bootstraps a campaign from that export (with the import role) and updates
   the stack with its ARN. A second `ranking.requestUpdate` runs export → import → train → gate → campaign
   update, carried by the advance schedule; the API answers from Personalize, and from the bucket's model
   when Personalize throttles.
3. **Canaries.** Every statement of every role, taken away alone, must deny a request the story made; every
   payload one part sends another is accepted as sent and refused once broken, visibly.

Every AWS request is checked against its caller's role; one denial fails the story.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import time
import urllib.request
from collections import Counter
from pathlib import Path

import pytest

from tests.e2e import story
from tests.e2e.aws import load_interactions
from tests.e2e.story import CLASS_A, CLASS_B, NEWCOMER

from . import iam
from .proxy import Hold
from . import stack as stack_module
from .stack import Deployment, boto, deploy, update

SUMMARY = Path(os.environ.get("STACK_SUMMARY", Path(__file__).resolve().parents[2] / "target" / "stack" / "summary.json"))
SENDER = "no-reply@school.example.edu"
PARAMETERS = {"EmailSender": SENDER, "SesIdentity": "school.example.edu"}


class Phases:
    def __init__(self):
        self.started = self.lap = time.monotonic()
        self.laps: list[tuple[str, float]] = []

    def __call__(self, what: str) -> None:
        now = time.monotonic()
        self.laps.append((what, now - self.lap))
        print(f"[stack] {what}: {now - self.lap:.1f} s", flush=True)
        self.lap = now


def run_of(answer: bytes) -> dict:
    return json.loads(answer)["run"]


def pipeline_status(dep: Deployment) -> dict:
    result = dep.function("TrainingExportFunction").invoke(b'{"action":"status"}')
    assert result.function_error is None, result.payload
    return json.loads(result.payload)


def finish_run(dep: Deployment, known: set[str], limit: int = 30) -> dict:
    """The advance schedule fires until the newest run not in `known` ends (each tick is one
    asynchronous invoke, as the 10-minute schedule makes it); `known` gains its id."""
    for tick in range(limit):
        dep.settle()
        runs = [r for r in pipeline_status(dep).get("runs", []) if r["runId"] not in known]
        if runs:
            run = max(runs, key=lambda r: (r["createdAt"], r["runId"]))
            if run["status"] in ("Done", "Failed", "Rejected"):
                known.add(run["runId"])
                print(f"[stack] run {run['runId']} {run['status']} after {tick} advance ticks", flush=True)
                return run
        dep.fire("AdvanceSchedule")
    raise AssertionError(f"no new run finished: {pipeline_status(dep)}")


def no_denials(dep: Deployment) -> None:
    """A denied request fails the story here, named, before its consequences do less clearly."""
    denials = dep.ledger.denials()
    assert not denials, "\n".join(r.describe_denial() for r in denials)


def sent_emails(dep: Deployment) -> list[dict]:
    with urllib.request.urlopen(f"{dep.backends.moto}/moto-api/data.json", timeout=30) as response:
        data = json.load(response)
    return [m for m in data.get("ses", {}).get("Message", []) if m.get("source", "").endswith(SENDER)]


def load_last_term(dep: Deployment) -> int:
    """The platform's history, already in the table before this deployment (as the e2e AWS story has it)."""
    return load_interactions(
        boto("dynamodb", dep.backends.moto), dep.name("InteractionsTable"), story.rest_of_school()
    )


def count_items(dep: Deployment, logical_id: str) -> int:
    dynamodb = boto("dynamodb", dep.backends.moto)
    return sum(
        page["Count"]
        for page in dynamodb.get_paginator("scan").paginate(TableName=dep.name(logical_id), Select="COUNT")
    )


def envelope(e: story.Event) -> dict:
    return {"source": e.source, "detail-type": e.detail_type, "detail": e.detail}


def new_instance(dep: Deployment, logical_id: str) -> None:
    """A new instance of the function (Lambda scales out or recycles): the next invoke is a cold start."""
    fn = dep.function(logical_id)
    spec = fn.spec
    fn.stop()
    dep.lambdas.add(spec)


STATE: dict = {}


def test_the_story_on_the_deployed_stack(world, template, binaries, work):
    backends, ledger, proxy, callers = world
    phase = Phases()
    name = f"stk{int(time.time()) % 100000}"
    dep = deploy(template, name, PARAMETERS, backends, binaries, work, ledger, proxy, callers)
    STATE["dep"] = dep
    phase("deployed (Personalize-free)")

    # ---- API Gateway: keys exactly where the template wants them ---------------------------------------
    stage = dep.stack.values["ApiStageName"]
    assert dep.api("GET", f"/{stage}/health", key=False).status == 200
    assert dep.api("GET", f"/{stage}/openapi.json", key=False).status == 200
    refused = dep.api("GET", f"/{stage}/ranking/{NEWCOMER}", key=False)
    assert refused.status == 403 and refused.json() == {"message": "Forbidden"}, refused
    assert dep.api("GET", f"/{stage}/ranking/{NEWCOMER}", headers={"x-api-key": "wrong"}, key=False).status == 403
    assert dep.api("GET", f"/{stage}/nowhere").status == 403, "API Gateway's answer to an unknown route"
    # The keyless routes are throttled at the stage: a burst past KeylessThrottleBurstLimit sees 429s.
    burst = int(dep.stack.values["KeylessThrottleBurstLimit"])
    statuses = Counter(dep.api("GET", f"/{stage}/openapi.json", key=False).status for _ in range(burst + 10))
    assert statuses[429] >= 5 and statuses[200] >= burst - 2, statuses
    before = dep.api("GET", f"/{stage}/ranking/{NEWCOMER}?numResults=5")
    assert before.status in (200, 503), before
    phase("API Gateway checks")

    # ---- this term through the bus --------------------------------------------------------------------
    last_term = load_last_term(dep)
    this_term = story.a_and_b_students() + story.newcomer() + story.announcements()
    dep.publish([envelope(e) for e in this_term])
    no_email = {
        "source": "api.student",
        "detail-type": "student.enrolled",
        "detail": {"studentId": "s-bad-0002", "classId": CLASS_A},
    }
    dep.publish([no_email])
    dep.settle(timeout=300)
    phase(f"{len(this_term) + 1} events delivered")
    no_denials(dep)
    stored = count_items(dep, "InteractionsTable")
    assert stored == last_term + len(story.interactions(this_term)), stored
    emails = sent_emails(dep)
    assert Counter(a for m in emails for a in m["destinations"]["ToAddresses"]) == Counter(
        e.detail["email"] for e in story.enrollments(this_term)
    ), "exactly one confirmation per enrollment"
    dead = dep.messages("EventConsumerDeadLetterQueue")
    assert len(dead) == 1, dead
    assert dead[0]["requestContext"]["condition"] == "RetriesExhausted"
    assert dead[0]["requestContext"]["approximateInvokeCount"] == 3, "two retries, as EventInvokeConfig says"
    assert dead[0]["requestPayload"]["detail"] == no_email["detail"]

    # ---- a retrain asked on the bus: consumer → Invoke → training-export ------------------------------
    runs: set[str] = set()
    dep.publish([{"source": "api.ranking", "detail-type": "ranking.requestUpdate", "detail": {"trigger": "manual"}}])
    run = finish_run(dep, runs)
    phase("first run (embedded)")
    no_denials(dep)
    assert run["status"] == "Done", run
    assert run["rows"] == stored, run
    invoked = [r for r in ledger.records if r.caller.endswith("event-consumer") and r.operation.startswith("Lambda")]
    assert invoked, "the consumer invoked training-export through the Lambda API"
    assert dep.messages("TrainingExportFailedInvocationsQueue") == [], "the consumer's payload was accepted"
    s3 = boto("s3", backends.moto_s3)
    latest = s3.get_object(Bucket=dep.name("DataBucket"), Key="models/LATEST")["Body"].read().decode().strip()
    assert latest, "the run published a model"

    new_instance(dep, "RankingApiFunction")
    answer = dep.api("GET", f"/{stage}/ranking/{NEWCOMER}?numResults=10")
    assert answer.status == 200, answer
    served = answer.json()
    assert served["source"] != "personalize", served
    assert CLASS_B in [i["itemId"] for i in served["items"]], served
    STATE["embedded_source"] = served["source"]
    STATE["first_run"] = run

    # ---- the schedules' payloads are accepted as sent ----------------------------------------------
    dep.fire("NightlyRunSchedule")
    dep.settle()
    nightly = finish_run(dep, runs)
    assert nightly["status"] in ("Done", "Rejected"), nightly
    assert dep.messages("TrainingExportFailedInvocationsQueue") == []
    phase("nightly schedule")
    no_denials(dep)

    # ---- Personalize: the operator's bootstrap, then a stack update with the campaign -----------------
    control = boto("personalize", backends.standin)
    # The operator imports the first export's folder (Personalize lists it, then reads each CSV).
    export = f"s3://{dep.name('DataBucket')}/exports/{run['runId']}/"
    job = control.create_dataset_import_job(
        jobName="bootstrap",
        datasetArn=dep.stack.getatt("InteractionsDataset", "DatasetArn"),
        dataSource={"dataLocation": export},
        roleArn=dep.arn("PersonalizeImportRole"),
    )["datasetImportJobArn"]
    for _ in range(10):
        status = control.describe_dataset_import_job(datasetImportJobArn=job)["datasetImportJob"]
        if status["status"] in ("ACTIVE", "CREATE FAILED"):
            break
    assert status["status"] == "ACTIVE", status
    solution = dep.stack.getatt("Solution", "SolutionArn")
    version = control.create_solution_version(solutionArn=solution, name="bootstrap")["solutionVersionArn"]
    for _ in range(10):
        if control.describe_solution_version(solutionVersionArn=version)["solutionVersion"]["status"] == "ACTIVE":
            break
    campaign = control.create_campaign(name=f"{name}-campaign", solutionVersionArn=version, minProvisionedTPS=1)[
        "campaignArn"
    ]
    for _ in range(10):
        if control.describe_campaign(campaignArn=campaign)["campaign"]["status"] == "ACTIVE":
            break
    update(dep, {"PersonalizeCampaignArn": campaign})
    phase("Personalize bootstrapped, stack updated")

    answer = dep.api("GET", f"/{stage}/ranking/{NEWCOMER}?numResults=10")
    assert answer.status == 200 and answer.json()["source"] == "personalize", answer

    dep.publish([{"source": "api.ranking", "detail-type": "ranking.requestUpdate", "detail": {"trigger": "manual"}}])
    run = finish_run(dep, runs)
    phase("second run (Personalize)")
    no_denials(dep)
    assert run["status"] == "Done", run
    assert run.get("deployed") and run["deployed"] != version, run
    assert control.describe_campaign(campaignArn=campaign)["campaign"]["solutionVersionArn"] == run["deployed"]

    answer = dep.api("GET", f"/{stage}/ranking/{NEWCOMER}?numResults=10")
    assert answer.status == 200 and answer.json()["source"] == "personalize", answer
    # Personalize throttles: the answer comes from the bucket's model, and says so.
    fault = json.dumps({"operation": "GetRecommendations", "kind": "throttle", "count": None}).encode()
    urllib.request.urlopen(urllib.request.Request(f"{backends.standin}/_standin/faults", data=fault, method="POST",
                                                  headers={"Content-Type": "application/json"}), timeout=10)
    try:
        degraded = dep.api("GET", f"/{stage}/ranking/{NEWCOMER}?numResults=10")
    finally:
        urllib.request.urlopen(urllib.request.Request(f"{backends.standin}/_standin/faults", method="DELETE"), timeout=10)
    assert degraded.status == 200, degraded
    body = degraded.json()
    assert body["source"] == "fallback" and body["fallback"]["reason"] == "throttled", body
    assert body["items"], "the fallback has the bucket's model to answer from"
    phase("Personalize answers and its fallback")

    # ---- memory: no invocation went past its MemorySize --------------------------------------------
    for fn in dep.lambdas:
        for inv in fn.invocations():
            assert not (inv.error or {}).get("errorType", "").startswith("Runtime.OutOfMemory"), (fn.spec.name, inv)
    STATE["peak_mb"] = {fn.spec.name: max((i.max_rss_mb for i in fn.invocations()), default=0.0) for fn in dep.lambdas}

    dep.deliver_logs()
    dep.settle()
    assert ledger.unrecognised == [], ledger.unrecognised
    assert dep.errors == [], dep.errors
    denials = ledger.denials()
    assert not denials, "\n".join(r.describe_denial() for r in denials)
    STATE["phases"] = phase.laps
    STATE["seconds"] = time.monotonic() - phase.started


def test_payload_contracts(world):
    """Each payload one part sends another: accepted as sent (the story ran on them), refused once broken,
    and the refusal visible where the template sends it."""
    dep: Deployment = STATE.get("dep") or pytest.fail("the story did not deploy the stack")
    _, ledger, _, _ = world
    caught = []
    fn = dep.function("TrainingExportFunction")

    def refused_visibly(payload: dict, what: str) -> None:
        fn.invoke_async(json.dumps(payload).encode())
        dep.settle()
        failed = dep.messages("TrainingExportFailedInvocationsQueue")
        assert len(failed) == 1 and failed[0]["requestPayload"] == payload, (what, failed)
        caught.append(what)

    # consumer → training-export: the payload the consumer sent in the story, with one field too many.
    sent = [
        json.loads(i_payload)
        for i_payload in _consumer_invoke_payloads(dep)
    ]
    assert sent and all(p["action"] == "run" and p.get("requestId") for p in sent), sent
    refused_visibly({**sent[0], "unexpected": True}, "consumer → training-export (an unknown field refused)")
    # schedules → training-export: each schedule's Input, broken the same way.
    for schedule in ("NightlyRunSchedule", "AdvanceSchedule"):
        payload = json.loads(dep.stack.properties(schedule)["Target"]["Input"])
        refused_visibly({**payload, "unexpected": True}, f"{schedule} → training-export (an unknown field refused)")
    # pipeline events → PipelineFailedRule: what training-export published reached the alarm topic exactly
    # when the run failed or was rejected (moto matched the template's pattern on the bus); a copy of a
    # real one marked Failed alarms, and the same from another source does not.
    published = _pipeline_events(dep)
    assert published, "training-export announced its runs on the bus"
    alarmed = {a["event"]["id"] for a in dep.alarms if a["rule"] == "PipelineFailedRule"}
    for event in published:
        expected = event["detail"]["status"] in ("Failed", "Rejected")
        assert (event["id"] in alarmed) == expected, (event, alarmed)
    real = published[0]
    failed = {"source": real["source"], "detail-type": real["detail-type"], "detail": {**real["detail"], "status": "Failed"}}
    renamed = {**failed, "source": "svc.training_export"}
    before = len(dep.alarms)
    dep.publish([failed])
    dep.settle()
    assert len(dep.alarms) == before + 1 and dep.alarms[-1]["event"]["detail"]["status"] == "Failed", dep.alarms
    dep.publish([renamed])
    dep.settle()
    assert len(dep.alarms) == before + 1, "another source's event does not alarm"
    caught.append("training-export → PipelineFailedRule (a Failed run alarms; another source does not)")
    STATE["contracts"] = caught


def _run_body(dep: Deployment, run_id: str) -> dict:
    """The run as training-export stored it (the runs table's `body`)."""
    item = boto("dynamodb", dep.backends.moto).get_item(
        TableName=dep.name("PipelineRunsTable"), Key={"pk": {"S": "run"}, "sk": {"S": run_id}}, ConsistentRead=True
    )["Item"]
    return json.loads(item["body"]["S"])


def _keys(dep: Deployment, prefix: str) -> list[str]:
    s3 = boto("s3", dep.backends.moto_s3)
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=dep.name("DataBucket"), Prefix=prefix)
    return sorted(o["Key"] for page in pages for o in page.get("Contents", []))


def _csv(dep: Deployment, keys: list[str]) -> tuple[set[str], Counter]:
    """The headers and the multiset of data rows of some CSV objects."""
    s3 = boto("s3", dep.backends.moto_s3)
    headers, rows = set(), Counter()
    for key in keys:
        header, *lines = s3.get_object(Bucket=dep.name("DataBucket"), Key=key)["Body"].read().decode().splitlines()
        headers.add(header)
        rows.update(lines)
    return headers, rows


def _export_csv_keys(dep: Deployment, body: dict) -> list[str]:
    key = body["export"]["csvKey"]
    return _keys(dep, key) if key.endswith("/") else [key]


def _calls(dep: Deployment, ledger, since: int, operation: str, function: str = "TrainingExportFunction") -> list:
    name = dep.name(function)
    return [r for r in ledger.records[since:] if r.caller == name and r.operation == operation]


def test_the_table_export_path(world):
    """TableExportAboveBytes=0: a run exports the table with ExportTableToPointInTime into
    exports/<run>/dynamodb/, waits for it, converts it into CSV parts under exports/<run>/csv/, and Personalize
    imports that folder; its rows are those of a scan of the same table. Every request is checked (the ledger)."""
    dep: Deployment = STATE.get("dep") or pytest.fail("the story did not deploy the stack")
    _, ledger, _, _ = world
    fn_env = lambda: dep.function("TrainingExportFunction").spec.env  # noqa: E731
    known = {r["runId"] for r in pipeline_status(dep).get("runs", [])}
    rows_in_table = count_items(dep, "InteractionsTable")

    # The reference: the scan path over the same table.
    update(dep, {"TableExportAboveBytes": "off"})
    assert fn_env()["TABLE_EXPORT_ABOVE_BYTES"] == "off"
    mark = len(ledger.records)
    dep.fire("NightlyRunSchedule")
    scanned = finish_run(dep, known)
    no_denials(dep)
    assert scanned["status"] in ("Done", "Rejected"), scanned
    assert not _calls(dep, ledger, mark, "DynamoDB ExportTableToPointInTime"), "threshold off: no table export"
    assert _calls(dep, ledger, mark, "DynamoDB Scan")
    reference = _run_body(dep, scanned["runId"])
    assert "tableExport" not in reference, reference

    # The table export path.
    update(dep, {"TableExportAboveBytes": "0"})
    assert fn_env()["TABLE_EXPORT_ABOVE_BYTES"] == "0"
    mark = len(ledger.records)
    dep.fire("NightlyRunSchedule")
    run = finish_run(dep, known)
    no_denials(dep)
    assert run["status"] in ("Done", "Rejected"), run
    run_id = run["runId"]
    body = _run_body(dep, run_id)
    record = body.get("tableExport") or pytest.fail(f"the run did not go through a table export: {body}")
    assert record["s3Prefix"] == f"exports/{run_id}/dynamodb", record
    assert record["dataFiles"] >= 1 and record["converted"] == record["dataFiles"], record
    started = _calls(dep, ledger, mark, "DynamoDB ExportTableToPointInTime")
    assert len(started) == 1 and started[0].status == 200, started
    assert not _calls(dep, ledger, mark, "DynamoDB Scan"), "the table export path scans nothing"
    # The stand-in answers IN_PROGRESS once: at least one DescribeExport waited, one saw COMPLETED.
    assert len(_calls(dep, ledger, mark, "DynamoDB DescribeExport")) >= 2
    assert _keys(dep, f"exports/{run_id}/dynamodb/AWSDynamoDB/"), "DynamoDB wrote the export into the bucket"

    bucket = dep.name("DataBucket")
    folder = f"s3://{bucket}/exports/{run_id}/csv/"
    assert body["export"]["csvKey"] == f"exports/{run_id}/csv/", body["export"]
    assert body["import"]["source"] == folder, body["import"]
    control = boto("personalize", dep.backends.standin)
    job = control.describe_dataset_import_job(datasetImportJobArn=body["import"]["jobArn"])["datasetImportJob"]
    assert job["dataSource"]["dataLocation"] == folder and job["status"] == "ACTIVE", job
    imported = [r for r in ledger.records[mark:] if r.role == "PersonalizeImportRole"]
    assert imported and all(not r.denied for r in imported), "Personalize read the folder with the import role"

    parts = _keys(dep, f"exports/{run_id}/csv/")
    assert len(parts) == record["dataFiles"], parts
    headers, rows = _csv(dep, parts)
    ref_headers, ref_rows = _csv(dep, _export_csv_keys(dep, reference))
    assert headers == ref_headers and len(headers) == 1, (headers, ref_headers)
    assert rows == ref_rows, f"{sum((rows - ref_rows).values())} rows only in the table export, {sum((ref_rows - rows).values())} only in the scan"
    assert sum(rows.values()) == body["export"]["rows"] == reference["export"]["rows"] == rows_in_table
    STATE["table_export_reference"] = (ref_headers, ref_rows)


def _idle(fn) -> bool:
    try:
        fn.wait_idle(0.01)
        return True
    except TimeoutError:
        return False


def _kill_mid_conversion(dep: Deployment, proxy) -> str:
    """Fires the nightly run and kills the training-export process while it converts the first data file: the
    proxy holds the PUT of that part's record (the part's files are written, its record and the run's checkpoint
    are not) until the process is dead, then drops it. Returns the run's id. The release bootstraps have no test
    hooks (TRAINING_EXPORT_CRASH_AFTER), hence the held request and SIGKILL."""
    fn = dep.function("TrainingExportFunction")
    hold = Hold("PUT", rf"/{dep.name('DataBucket')}/exports/[^/]+/parts/part-00000\.json")
    proxy.holds.append(hold)
    killed_before = sum((i.error or {}).get("errorType") == "Runtime.ExitError" for i in fn.invocations())
    try:
        dep.fire("NightlyRunSchedule")
        # The run waits for the export between invocations: the next tick is fired once the function is idle.
        for _ in range(600):
            if hold.reached.wait(0.1):
                break
            if _idle(fn):
                dep.fire("AdvanceSchedule")
        assert hold.reached.is_set(), "no invocation reached the conversion"
        pid = fn.pid
        assert pid, "the invocation holding the request has a process"
        os.kill(pid, signal.SIGKILL)
        for _ in range(100):
            killed = sum((i.error or {}).get("errorType") == "Runtime.ExitError" for i in fn.invocations())
            if killed > killed_before:
                break
            time.sleep(0.1)
        else:
            pytest.fail("the killed invocation did not end with Runtime.ExitError")
    finally:
        hold.release.set()
        proxy.holds.remove(hold)
    # Lambda retries the killed asynchronous invoke; the retry finds the run leased by the dead one.
    dep.settle()
    return hold.held[0].split("/")[3]


def test_a_table_export_killed_mid_conversion_resumes(world):
    """The process dies in the middle of converting a file: once the dead invocation's lease has expired, the next
    tick resumes from the run's checkpoint, converts that file again and ends with exactly the rows of the
    uninterrupted export (the scan's): none lost, none twice. The export is not started twice."""
    dep: Deployment = STATE.get("dep") or pytest.fail("the story did not deploy the stack")
    reference = STATE.get("table_export_reference") or pytest.fail("the table export flow did not run")
    _, ledger, proxy, _ = world
    assert dep.function("TrainingExportFunction").spec.env.get("TABLE_EXPORT_ABOVE_BYTES") == "0"
    known = {r["runId"] for r in pipeline_status(dep).get("runs", [])}
    mark = len(ledger.records)
    run_id = _kill_mid_conversion(dep, proxy)
    body = _run_body(dep, run_id)
    record = body["tableExport"]
    assert record["converted"] == 0 and record.get("dataFiles"), record
    assert body.get("leaseUntil", 0) > time.time(), "the killed invocation's lease is still on the run"
    assert _keys(dep, f"exports/{run_id}/csv/"), "the killed conversion had written its part's files"
    # The lease lasts 16 minutes: age it in the runs table rather than wait.
    runs_table = boto("dynamodb", dep.backends.moto)
    key = {"pk": {"S": "run"}, "sk": {"S": run_id}}
    item = runs_table.get_item(TableName=dep.name("PipelineRunsTable"), Key=key, ConsistentRead=True)["Item"]
    item["body"]["S"] = json.dumps({**body, "leaseUntil": int(time.time()) - 1})
    runs_table.put_item(TableName=dep.name("PipelineRunsTable"), Item=item)

    run = finish_run(dep, known)
    no_denials(dep)
    assert run["runId"] == run_id and run["status"] in ("Done", "Rejected"), run
    body = _run_body(dep, run_id)
    assert body["tableExport"]["converted"] == body["tableExport"]["dataFiles"], body["tableExport"]
    assert len(_calls(dep, ledger, mark, "DynamoDB ExportTableToPointInTime")) == 1, "resumed, not restarted"
    data_reads = Counter(
        c.resource.split(":::", 1)[1]
        for r in _calls(dep, ledger, mark, "S3 GetObject")
        for c in r.checks
        if f"exports/{run_id}/dynamodb/" in c.resource and "/data/" in c.resource
    )
    assert data_reads and max(data_reads.values()) >= 2, f"the file being converted was converted again: {data_reads}"
    headers, rows = _csv(dep, _keys(dep, f"exports/{run_id}/csv/"))
    ref_headers, ref_rows = reference
    assert headers == ref_headers, (headers, ref_headers)
    assert sum(rows.values()) == sum(ref_rows.values()) == body["export"]["rows"], (sum(rows.values()), sum(ref_rows.values()))
    assert rows == ref_rows, "the resumed conversion has the uninterrupted export's rows, none twice"


def test_a_cancel_ends_a_run_held_by_a_dead_invocation(world):
    """An operator cancels a run whose invocation died mid-conversion and whose lease is still on it (the
    situation a stuck run is in): the invoke answers Cancelled, the run ends Failed with the reason, its event
    reaches the failed-run alarm, and the next nightly run starts at once and finishes."""
    dep: Deployment = STATE.get("dep") or pytest.fail("the story did not deploy the stack")
    _, _, proxy, _ = world
    fn = dep.function("TrainingExportFunction")
    known = {r["runId"] for r in pipeline_status(dep).get("runs", [])}
    run_id = _kill_mid_conversion(dep, proxy)
    assert _run_body(dep, run_id).get("leaseUntil", 0) > time.time(), "the dead invocation still holds the lease"
    assert pipeline_status(dep).get("activeRunId") == run_id

    refused = fn.invoke(json.dumps({"action": "cancel", "runId": "not-the-active-run"}).encode())
    assert refused.function_error is not None and "not the active run" in refused.payload.decode(), refused.payload
    answer = fn.invoke(json.dumps({"action": "cancel", "runId": run_id, "reason": "stuck since the kill"}).encode())
    assert answer.function_error is None, answer.payload
    cancelled = json.loads(answer.payload)
    assert cancelled["outcome"] == "cancelled" and cancelled["run"]["runId"] == run_id, cancelled
    assert cancelled["run"]["status"] == "Failed", cancelled
    dep.settle()
    body = _run_body(dep, run_id)
    failed = body["state"]
    assert "stuck since the kill" in json.dumps(failed) and "cancelled by" in json.dumps(failed), failed
    assert body.get("leaseUntil") is None, "the cancel released the lease"
    events = [e for e in _pipeline_events(dep) if e["detail"].get("runId") == run_id]
    assert [e["detail"]["status"] for e in events] == ["Failed"], events
    alarmed = {a["event"]["id"] for a in dep.alarms if a["rule"] == "PipelineFailedRule"}
    assert events[0]["id"] in alarmed, "the cancelled run's event reached the alarm topic"
    assert pipeline_status(dep).get("activeRunId") is None, "no active run after the cancel"

    # The next nightly run is not refused: it starts (the kill flow above saw such a run to its end).
    started = fn.invoke(dep.stack.properties("NightlyRunSchedule")["Target"]["Input"].encode())
    assert started.function_error is None, started.payload
    nightly = json.loads(started.payload)
    assert nightly["outcome"] == "started" and nightly["run"]["runId"] != run_id, nightly
    dep.settle()
    assert dep.messages("TrainingExportFailedInvocationsQueue") == [], "no invoke of this flow ended in failure"
    ended = json.loads(fn.invoke(json.dumps({"action": "cancel", "reason": "the flow is over"}).encode()).payload)
    assert ended["outcome"] == "cancelled" and ended["run"]["runId"] == nightly["run"]["runId"], ended
    no_denials(dep)
    update(dep, {"TableExportAboveBytes": ""})
    assert "TABLE_EXPORT_ABOVE_BYTES" not in dep.function("TrainingExportFunction").spec.env


def _bounce(address: str, feedback_id: str | None = None, bounce_type: str = "Permanent",
            sub_type: str = "General") -> dict:
    return {
        "mail": {"destination": [address]},
        "bounce": {
            "bounceType": bounce_type,
            "bounceSubType": sub_type,
            "bouncedRecipients": [{"emailAddress": address, "action": "failed", "status": "5.1.1"}],
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
            "feedbackId": feedback_id or f"feedback-{address}",
        },
    }


def _complaint(address: str, feedback_id: str) -> dict:
    return {
        "mail": {"destination": [address]},
        "complaint": {
            "complainedRecipients": [{"emailAddress": address}],
            "complaintFeedbackType": "abuse",
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
            "feedbackId": feedback_id,
        },
    }


def test_ses_events_of_another_configuration_set_do_not_reach_the_consumer(world):
    """Other stacks' mail in the account goes to the same default bus: SesFeedbackRule's pattern leaves it."""
    dep: Deployment = STATE.get("dep") or pytest.fail("the story did not deploy the stack")
    before = len(dep.deliveries)
    for event_type in ("Bounce", "Complaint", "Delivery"):
        assert dep.publish_ses(event_type, _bounce("someone@other.example"), configuration_set="other-stack-email")
    dep.settle()
    assert dep.deliveries[before:] == []


def test_ses_events_of_the_stacks_configuration_set_are_delivered_to_the_consumer(world):
    """Through the template's wiring: the configuration set's event destination (default bus), SesFeedbackRule,
    its permission. Asserts the delivery only: what the consumer does with it is the consumer's tests'."""
    dep: Deployment = STATE.get("dep") or pytest.fail("the story did not deploy the stack")
    name = dep.name("EmailConfigurationSet")
    assert name == f"{dep.stack.name}-email"
    assert dep.stack.properties("EventConsumerFunction")["Environment"]["Variables"]["SES_CONFIGURATION_SET"] == name
    before = len(dep.deliveries)
    sent = {
        "Bounce": _bounce("gone@school.example.edu"),
        "Complaint": {"mail": {"destination": ["angry@school.example.edu"]},
                      "complaint": {"complainedRecipients": [{"emailAddress": "angry@school.example.edu"}],
                                    "complaintFeedbackType": "abuse", "feedbackId": "c-1"}},
        "Reject": {"mail": {"destination": ["x@school.example.edu"]}, "reject": {"reason": "Bad content"}},
        "Delivery": {"mail": {"destination": ["ok@school.example.edu"]}, "delivery": {"recipients": ["ok@school.example.edu"]}},
        "DeliveryDelay": {"mail": {"destination": ["slow@school.example.edu"]},
                          "deliveryDelay": {"delayType": "MailboxFull", "delayedRecipients": [{"emailAddress": "slow@school.example.edu"}]}},
    }  # fmt: skip
    for event_type, record in sent.items():
        assert dep.publish_ses(event_type, record)
    # An event type the destination does not publish never reaches a bus.
    assert not dep.publish_ses("Open", {"mail": {"destination": ["ok@school.example.edu"]}, "open": {}})
    dep.settle()
    delivered = dep.deliveries[before:]
    assert {rule for rule, _ in delivered} == {"SesFeedbackRule"}, delivered
    by_type = {event["detail"]["eventType"]: event for _, event in delivered}
    assert sorted(by_type) == sorted(sent), sorted(by_type)
    for event_type, event in by_type.items():
        assert event["source"] == "aws.ses"
        assert event["detail-type"] == stack_module.SES_DETAIL_TYPES[event_type]
        assert event["detail"]["mail"]["tags"]["ses:configuration-set"] == [name]
        key = event_type[0].lower() + event_type[1:]
        assert event["detail"][key] == sent[event_type][key]
    consumer = dep.function("EventConsumerFunction")
    assert consumer is not None
    # The consumer's dead-letter queue keeps what the consumer (possibly older code) could not handle;
    # taken out here so that later checks see only their own.
    STATE["ses_dead_letters"] = dep.messages("EventConsumerDeadLetterQueue")


def _ledger_items(dep: Deployment, prefix: str) -> dict[str, dict]:
    """The consumer's idempotency-table items whose key starts with `prefix`, by key, values unwrapped."""
    dynamodb = boto("dynamodb", dep.backends.moto)
    items = {}
    for page in dynamodb.get_paginator("scan").paginate(TableName=dep.name("IdempotencyTable")):
        for item in page["Items"]:
            key = item["effectKey"]["S"]
            if key.startswith(prefix):
                items[key] = {name: next(iter(value.values())) for name, value in item.items()}
    return items


def _address_key(address: str) -> str:
    return hashlib.sha256(address.lower().encode()).hexdigest()


def _consumer_calls(dep: Deployment, operation: str) -> int:
    return len(_calls(dep, dep.ledger, 0, operation, "EventConsumerFunction"))


SES_FEEDBACK_DELIVERIES = 1000


def test_duplicated_and_reordered_ses_feedback_suppresses_each_address_once(world):
    """Through the template's wiring (configuration set → default bus → SesFeedbackRule → the consumer):
    120 bounce and complaint reports about 100 addresses (20 addresses get both, in either order) and 10
    transient bounces, each published by SES several times (new envelope ids) and some delivered again by
    EventBridge (same envelope), 1,000 deliveries in a shuffled order. Exactly one suppression per address,
    one account-level PutSuppressedDestination per suppressing report, transient bounces counted once each."""
    dep: Deployment = STATE.get("dep") or pytest.fail("the story did not deploy the stack")
    rng = random.Random(14)
    addresses = [f"fb-{n:03d}@school.example.edu" for n in range(100)]
    reports: list[tuple[str, dict]] = []
    for n, address in enumerate(addresses):
        kinds = ["Complaint"] if n % 3 == 2 else ["Bounce"]
        if n % 5 == 0:
            kinds.append("Bounce" if kinds[0] == "Complaint" else "Complaint")
        for kind in kinds:
            feedback_id = f"fb-{kind.lower()}-{n:03d}"
            reports.append((kind, _bounce(address, feedback_id) if kind == "Bounce" else _complaint(address, feedback_id)))
    full = [f"full-{n}@school.example.edu" for n in range(10)]
    reports += [("Bounce", _bounce(a, f"fb-transient-{n}", "Transient", "MailboxFull")) for n, a in enumerate(full)]
    assert len(reports) == 130
    suppressing = len(reports) - len(full)

    # SES publishes each report 2 to 6 times (each a new envelope): 600 publications, shuffled.
    publications = [r for r in reports for _ in range(2)]
    publications += [rng.choice(reports) for _ in range(600 - len(publications))]
    rng.shuffle(publications)
    before = len(dep.deliveries)
    put_suppressed_before = _consumer_calls(dep, "SES PutSuppressedDestination")
    # The story's own mail (the mailbox simulator's bounce address) may have suppressed addresses already.
    suppressions_before = set(_ledger_items(dep, "suppression#"))
    handled_before = set(_ledger_items(dep, "ses-feedback#"))
    ours = {f"suppression#{_address_key(a)}" for a in addresses + full}
    assert not suppressions_before & ours, "the addresses of this test are new to the ledger"
    dead_before = len(dep.messages("EventConsumerDeadLetterQueue"))
    assert dead_before == 0, "the story left nothing in the consumer's dead-letter queue"
    for event_type, record in publications:
        assert dep.publish_ses(event_type, record)
        # EventBridge's at-least-once delivery, interleaved: an envelope delivered already, once more.
        delivered = dep.deliveries[before:]
        if delivered and rng.random() < 0.4:
            dep.redeliver("SesFeedbackRule", rng.choice(delivered)[1])
    dep.settle(timeout=600)
    while len(dep.deliveries) - before < SES_FEEDBACK_DELIVERIES:
        dep.redeliver("SesFeedbackRule", rng.choice(dep.deliveries[before:])[1])
    dep.settle(timeout=600)
    no_denials(dep)

    delivered = dep.deliveries[before:]
    assert len(delivered) == SES_FEEDBACK_DELIVERIES and {rule for rule, _ in delivered} == {"SesFeedbackRule"}
    ids = Counter(event["id"] for _, event in delivered)
    assert len(ids) == len(publications) and max(ids.values()) > 1, "new envelopes and repeated ones"
    assert dep.messages("EventConsumerDeadLetterQueue") == [], "every delivery was handled"

    suppressions = {k: v for k, v in _ledger_items(dep, "suppression#").items() if k not in suppressions_before}
    suppressed = {key.split("#", 1)[1]: item for key, item in suppressions.items() if "reason" in item}
    assert set(suppressed) == {_address_key(a) for a in addresses}, "exactly one suppression per address"
    for n, address in enumerate(addresses):
        reason = suppressed[_address_key(address)]["reason"]
        if n % 5 == 0:
            assert reason in ("bounce", "complaint"), reason  # the first report to arrive stands
        else:
            assert reason == ("complaint" if n % 3 == 2 else "bounce"), (address, reason)
    for address in full:
        item = suppressions[f"suppression#{_address_key(address)}"]
        assert "reason" not in item and int(item["transientBounces"]) == 1, item
    handled = {k: v for k, v in _ledger_items(dep, "ses-feedback#").items() if k not in handled_before}
    assert len(handled) == len(reports) and all(item["state"] == "done" for item in handled.values())
    assert _consumer_calls(dep, "SES PutSuppressedDestination") - put_suppressed_before == suppressing, "once per report"
    listed = {a: dep.proxy.suppressed.get(a) for a in addresses}
    assert all(reason in ("BOUNCE", "COMPLAINT") for reason in listed.values()), listed
    assert not any(a in dep.proxy.suppressed for a in full), "a transient bounce suppresses nothing"
    log = dep.function("EventConsumerFunction").log_path.read_text(encoding="utf-8", errors="replace")
    assert not any(a in log for a in addresses + full), "addresses never appear in the consumer's logs"
    STATE["suppressed_addresses"] = addresses


ANNOUNCED_CLASS = "ses-class-01"


def test_an_enrollment_and_an_announcement_to_a_suppressed_address_send_nothing_and_say_why(world):
    """After the feedback above: students enroll in a class through the bus (one with a suppressed address),
    a teacher announces to the class, EventBridge delivers the announcement twice. The suppressed student gets
    neither email and the ledger says why; the others get one confirmation and one announcement each."""
    dep: Deployment = STATE.get("dep") or pytest.fail("the story did not deploy the stack")
    suppressed = STATE.get("suppressed_addresses") or pytest.fail("the SES feedback test did not run")
    students = {f"s-ses-{n}": f"ses-student-{n}@school.example.edu" for n in range(4)}
    students["s-ses-gone"] = suppressed[1]
    before_mail = len(sent_emails(dep))
    before = len(dep.deliveries)
    dep.publish(
        [
            {
                "source": "api.student",
                "detail-type": "student.enrolled",
                "detail": {"studentId": sid, "classId": ANNOUNCED_CLASS, "email": address},
            }
            for sid, address in students.items()
        ]
    )
    dep.settle()
    dep.publish(
        [
            {
                "source": "api.teacher",
                "detail-type": "teacher.sendAnnouncement",
                "detail": {"teacherId": "t-9", "classId": ANNOUNCED_CLASS, "content": "Kiểm tra <b>thứ Hai</b> & mang máy tính.",
                           "language": "en"},
            }
        ]
    )  # fmt: skip
    dep.settle()
    rule, announcement = next((r, e) for r, e in dep.deliveries[before:] if e["detail-type"] == "teacher.sendAnnouncement")
    assert rule == "TeacherSendAnnouncementRule"
    dep.redeliver(rule, announcement)
    dep.settle()
    no_denials(dep)
    assert dep.messages("EventConsumerDeadLetterQueue") == []

    new_mail = sent_emails(dep)[before_mail:]
    to = Counter(a for m in new_mail for a in m["destinations"]["ToAddresses"])
    healthy = [a for sid, a in students.items() if sid != "s-ses-gone"]
    assert to == Counter({a: 2 for a in healthy}), "one confirmation and one announcement each, none to the suppressed"
    announcements = [m for m in new_mail if f"Announcement: {ANNOUNCED_CLASS}" in json.dumps(m, ensure_ascii=False)]
    assert len(announcements) == len(healthy), announcements

    enrolled_gone = next(
        e for _, e in dep.deliveries[before:]
        if e["detail-type"] == "student.enrolled" and e["detail"]["studentId"] == "s-ses-gone"
    )  # fmt: skip
    receipts = _ledger_items(dep, f"confirmation-email#{enrolled_gone['id']}")
    assert [item["receipt"] for item in receipts.values()] == ["suppressed: bounce (Permanent/General)"], receipts
    per_student = _ledger_items(dep, f"announcement-email#{announcement['id']}#")
    assert len(per_student) == len(students), per_student
    assert per_student[f"announcement-email#{announcement['id']}#s-ses-gone"]["receipt"].startswith("suppressed: ")
    log = dep.function("EventConsumerFunction").log_path.read_text(encoding="utf-8", errors="replace")
    assert "address suppressed; the email is not sent" in log
    assert not any(a in log for a in students.values()), "addresses never appear in the consumer's logs"


def test_every_statement_is_needed(world):
    """Each statement of each role, removed alone, denies at least one request the story made."""
    dep: Deployment = STATE.get("dep") or pytest.fail("the story did not deploy the stack")
    _, ledger, _, _ = world
    caught, unused = [], []
    roles = sorted({r.role for r in ledger.records} | {c.role for c in dep.callers.values()})
    for role in roles:
        if role == "ApiGatewayCloudWatchRole":
            continue
        policies = dep.stack.role_policies(role)
        records = [r for r in ledger.records if r.role == role]
        for statement_id, _ in iam.statements(role, policies):
            reduced = iam.without(policies, statement_id)
            broken = next(
                (
                    (r, c)
                    for r in records
                    for c in r.checks
                    if not iam.evaluate(reduced, c.action, c.resource, c.context).allowed
                ),
                None,
            )
            if broken is None:
                unused.append(statement_id)
            else:
                record, check = broken
                caught.append(f"{statement_id}: breaks {record.caller}'s {check.operation} ({check.action} on {check.resource})")
    for line in caught:
        print(f"[canary] {line}")
    STATE["statements"] = (caught, unused)
    contracts = STATE.get("contracts", [])
    total = len(caught) + len(unused) + 4
    summary = {
        "requests": len(ledger.records),
        "denied": len(ledger.denials()),
        "canaries": len(caught) + len(contracts),
        "canaries_total": total,
        "unused_statements": unused,
        "by_caller": ledger.by_caller(),
        "seconds": STATE.get("seconds"),
        "phases": STATE.get("phases"),
        "peak_mb": STATE.get("peak_mb"),
    }
    SUMMARY.parent.mkdir(parents=True, exist_ok=True)
    SUMMARY.write_text(json.dumps(summary, indent=2))
    assert not unused, f"statements no request of the story needs: {unused}"
    assert len(contracts) == 4, contracts


def _consumer_invoke_payloads(dep: Deployment) -> list[bytes]:
    return [payload for caller, payload in dep.invoke_payloads if caller.endswith("event-consumer")]


def _pipeline_events(dep: Deployment) -> list[dict]:
    return list(dep.observed_events)
