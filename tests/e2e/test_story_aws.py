"""Point 2, the same story through the AWS adapters: DynamoDB, S3, SES and EventBridge on moto (events read
from the rule's SQS target, as a Lambda target would receive them), Personalize played by the stand-in,
which checks every request against botocore's service models.

Last term (the rest of the school, 1,000 interactions) is already in the interactions table, written in
the store's item format, and infra bootstraps the campaign with its export: through moto, publishing and
handling cost about 75 ms an event, so sending last term the whole way would add over a minute (the local
story sends every one of its events through the consumer). This term's 129 events take the whole path:
our publisher → the bus → the rule's SQS target → `event-consumer handle` with the AWS adapters. The
nightly run (export → import → train → gate → campaign update) then makes the running API, unrestarted,
answer the newcomer with B in the top 10 from Personalize.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

from . import story
from .apps import deliver, handle, item_ids, pipeline_response, ranking, start_api, training_export
from .aws import (
    load_interactions,
    aws_env,
    bootstrap_personalize,
    bus_to_queue,
    client,
    drain,
    interactions_table,
    ledger_table,
    students_table,
    recipients,
    runs_table,
    sent_emails,
    unique,
    verified_sender,
)
from .harness import Phases, clean_env, wait_until
from .story import CLASS_B, NEWCOMER

SOURCES = ["api.student", "api.assignment", "api.teacher", "api.ranking"]
PUBLISHED = re.compile(r"^published (\S+) from (\S+) on (\S+): event id (\S+)$", re.MULTILINE)


def scan(dynamodb, table: str) -> list[dict]:
    items = []
    for page in dynamodb.get_paginator("scan").paginate(TableName=table, ConsistentRead=True):
        items.extend(page["Items"])
    return items


def test_the_story_on_dynamodb_s3_ses_eventbridge_and_the_personalize_standin(processes, bins, moto, standin, tmp_path):
    phase = Phases("aws story")
    dynamodb = client("dynamodb", moto.general)
    sesv2 = client("sesv2", moto.general)
    eventbridge = client("events", moto.general)
    sqs = client("sqs", moto.general)
    s3 = client("s3", moto.s3)
    control = client("personalize", standin.url)

    interactions, ledger, runs = interactions_table(dynamodb), ledger_table(dynamodb), runs_table(dynamodb)
    sender = verified_sender(sesv2)
    bus, queue_url = bus_to_queue(eventbridge, sqs, sources=SOURCES)
    bucket = unique("ranking-data")
    s3.create_bucket(Bucket=bucket)
    aws = aws_env(moto, tmp_path, PERSONALIZE=standin.url, PERSONALIZE_RUNTIME=standin.url)
    consumer_env = clean_env(
        **aws,
        DATA_DIR=str(tmp_path / "consumer"),
        INTERACTIONS_TABLE=interactions,
        IDEMPOTENCY_TABLE=ledger,
        STUDENTS_TABLE=students_table(dynamodb),
        MAIL_TRANSPORT="ses",
        EMAIL_SENDER=sender,
        EVENT_BUS_NAME=bus,
    )
    pipeline_env = clean_env(
        **aws,
        DATA_DIR=str(tmp_path / "pipeline"),
        INTERACTIONS_TABLE=interactions,
        DATA_BUCKET=bucket,
        RUNS_TABLE=runs,
        EVENT_BUS_NAME=bus,
        SCAN_SEGMENTS="2",
    )

    # Last term: the rest of the school's interactions, already in the table.
    last_term = story.rest_of_school()
    load_interactions(dynamodb, interactions, last_term)
    phase("setup and last term")

    # Infra's bootstrap: an export of last term, imported; a first version behind the campaign.
    bootstrap = pipeline_response(training_export(processes, bins, pipeline_env, "export"))["run"]
    assert bootstrap["status"] == "Done" and bootstrap["rows"] == 1000, bootstrap
    csv = f"s3://{bucket}/exports/{bootstrap['runId']}/interactions.csv"
    deployment = bootstrap_personalize(control, csv, unique("ranking"))

    phase("bootstrap")

    # From here on the API runs, asking the campaign.
    api_env = clean_env(**aws, DATA_DIR=str(tmp_path / "api"), PERSONALIZE_CAMPAIGN_ARN=deployment.campaign)
    api = start_api(processes, bins, api_env, "--no-demo-seed")
    api_pid = api.process.pid
    before = ranking(api, NEWCOMER, "numResults=10").json()
    assert before["source"] == "personalize", before
    assert CLASS_B not in item_ids(before), "the bootstrapped campaign has never seen B"

    # This term: our publisher puts each event on the bus; the consumer gets each from the rule's target.
    this_term = story.a_and_b_students() + story.newcomer() + story.announcements()

    def publish(event: story.Event):
        return processes.run(
            "event-consumer publish",
            [
                str(bins["event-consumer"]),
                "publish",
                "--detail-type",
                event.detail_type,
                "--detail",
                json.dumps(event.detail, ensure_ascii=False),
            ],
            consumer_env,
        )

    # EventBridge stamps an event with the second it is published in, and offline metrics hold each
    # student's latest class out: publishing in waves, the clock moving on between them, keeps every
    # student's classes in the story's order (same-second ties would be broken by class id).
    published = []
    waves = story.a_and_b_in_waves()
    waves[0] += story.newcomer() + story.announcements()
    for wave in waves:
        with ThreadPoolExecutor(4) as pool:
            published += pool.map(publish, wave)
        second = int(time.time())
        wait_until(
            lambda second=second: (int(time.time()) > second, None), timeout=2, interval=0.02, what="the next second"
        )
    assert all(p.returncode == 0 for p in published), [p.describe() for p in published if p.returncode][:1]
    published_ids = {PUBLISHED.search(p.stdout).group(4) for p in published}
    delivered = drain(sqs, queue_url, len(this_term))
    envelopes = [json.loads(body) for body in delivered]
    assert {e["id"] for e in envelopes} == published_ids, "what the bus delivered is what we published"
    assert Counter((e["source"], e["detail-type"]) for e in envelopes) == Counter(
        (e.source, e.detail_type) for e in this_term
    )
    phase(f"this term: {len(this_term)} events published")
    deliver(processes, bins, consumer_env, delivered)
    phase("this term delivered")

    # EventBridge delivers at least once: a second delivery of any event writes and sends nothing.
    for body in delivered[:3] + [d for d in delivered if NEWCOMER in d]:
        again = handle(processes, bins, consumer_env, body)
        assert again.returncode == 0 and "duplicate" in again.stdout, again.describe()

    stored = scan(dynamodb, interactions)
    assert len(stored) == 1126, "one item per enrollment and submission of both terms"
    assert {(i["userId"]["S"], i["itemId"]["S"]) for i in stored} >= {
        (e.detail["studentId"], e.detail["classId"]) for e in story.interactions(this_term)
    }
    emails = sent_emails(moto, sender)
    enrollments = story.enrollments(this_term)
    assert len(emails) == len(enrollments) == 76, "exactly one email per enrollment"
    assert recipients(emails) == Counter(e.detail["email"] for e in enrollments)

    # The nightly run: started by the 2 a.m. invoke, carried on by the 10-minute ones until it is done.
    nightly_env = {**pipeline_env, **deployment.pipeline_env()}
    run = pipeline_response(training_export(processes, bins, nightly_env, "run"))["run"]
    for _ in range(20):
        if run["status"] in ("Done", "Failed", "Rejected"):
            break
        run = pipeline_response(training_export(processes, bins, nightly_env, "advance"))["run"]
    phase("nightly run")
    assert run["status"] == "Done", run
    assert run["rows"] == 1126
    assert run["deployed"] != deployment.first_version
    campaign = control.describe_campaign(campaignArn=deployment.campaign)["campaign"]
    assert campaign["solutionVersionArn"] == run["deployed"], "the campaign serves the new version"

    # The same API process now answers the newcomer from the new version: B is in the top 10.
    after = ranking(api, NEWCOMER, "numResults=10").json()
    assert after["source"] == "personalize", after
    assert CLASS_B in item_ids(after), f"students who took A also took B: {after}"
    assert api.alive() and api.process.pid == api_pid, "no restart"

    # Every request the SDKs sent, from the bootstrap to the last recommendation, was well-formed.
    assert standin.violations() == []
    import_jobs = [c for c in standin.calls("CreateDatasetImportJob") if c["status"] == 200]
    versions = [c for c in standin.calls("CreateSolutionVersion") if c["status"] == 200]
    assert len(import_jobs) == len(versions) == 2, "the bootstrap's and the nightly run's"
