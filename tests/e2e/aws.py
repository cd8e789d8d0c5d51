"""The local AWS: moto endpoints, boto3 clients for setup and inspection, the environment our binaries get,
and the Personalize bootstrap infra would do (a campaign needs a first solution version)."""

from __future__ import annotations

import json
import urllib.request
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import boto3
from botocore.config import Config

from . import story

REGION = "us-east-1"
ACCOUNT = "123456789012"
CREDENTIALS = {"aws_access_key_id": "e2e-test", "aws_secret_access_key": "e2e-test"}
IMPORT_ROLE_ARN = f"arn:aws:iam::{ACCOUNT}:role/personalize-import"


@dataclass(frozen=True)
class Moto:
    """Two moto servers: `general` for DynamoDB, SES v2 (mail at /moto-api/data.json), EventBridge and SQS;
    `s3` for S3, because moto 5.2.5's data.json breaks for good once it has seen a multipart upload part."""

    general: str
    s3: str


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def client(service: str, endpoint: str, *, max_attempts: int = 3):
    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name=REGION,
        config=Config(
            s3={"addressing_style": "path"}, retries={"total_max_attempts": max_attempts, "mode": "standard"}
        ),
        **CREDENTIALS,
    )


def aws_env(moto: Moto, home: Path, **service_endpoints: str) -> dict[str, str]:
    """What a process needs to talk to the local AWS: credentials, region, `AWS_ENDPOINT_URL` (moto) and
    `AWS_ENDPOINT_URL_<SERVICE>` overrides (S3 on its own moto; `PERSONALIZE=...` etc. as given). No
    shared config or credentials file is read, and no instance metadata is asked for."""
    env = {
        "AWS_ACCESS_KEY_ID": CREDENTIALS["aws_access_key_id"],
        "AWS_SECRET_ACCESS_KEY": CREDENTIALS["aws_secret_access_key"],
        "AWS_REGION": REGION,
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": str(home / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(home / "no-aws-credentials"),
        "AWS_ENDPOINT_URL": moto.general,
        "AWS_ENDPOINT_URL_S3": moto.s3,
    }
    for service, endpoint in service_endpoints.items():
        env[f"AWS_ENDPOINT_URL_{service.upper()}"] = endpoint
    return env


def _table(dynamodb, name: str, keys: list[str]) -> str:
    dynamodb.create_table(
        TableName=name,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": k, "AttributeType": "S"} for k in keys],
        KeySchema=[{"AttributeName": k, "KeyType": kind} for k, kind in zip(keys, ["HASH", "RANGE"])],
    )
    return name


def interactions_table(dynamodb) -> str:
    """As `store::dynamodb` expects: `userId` hash, `eventId` range."""
    return _table(dynamodb, unique("interactions"), ["userId", "eventId"])


def ledger_table(dynamodb) -> str:
    """As the event consumer's ledger expects: `effectKey` hash."""
    return _table(dynamodb, unique("ledger"), ["effectKey"])


def students_table(dynamodb) -> str:
    """As the event consumer's roster expects: `classId` hash, `studentId` range."""
    return _table(dynamodb, unique("students"), ["classId", "studentId"])


def runs_table(dynamodb) -> str:
    """As training-export's run store expects: `pk` hash, `sk` range."""
    return _table(dynamodb, unique("runs"), ["pk", "sk"])


def verified_sender(sesv2) -> str:
    sender = f"{unique('no-reply')}@student-system.test"
    sesv2.create_email_identity(EmailIdentity=sender)
    return sender


def sent_emails(moto: Moto, sender: str) -> list[dict]:
    """What moto's SES sent from `sender` (every test has its own sender)."""
    with urllib.request.urlopen(f"{moto.general}/moto-api/data.json", timeout=30) as response:
        data = json.load(response)
    return [m for m in data.get("ses", {}).get("Message", []) if m.get("source") == sender]


def recipients(emails: list[dict]) -> Counter:
    return Counter(address for m in emails for address in m["destinations"]["ToAddresses"])


def bus_to_queue(events, sqs, *, sources: list[str]) -> tuple[str, str]:
    """A bus with a rule sending `sources` to an SQS queue (moto's PutEvents cannot target a Lambda)."""
    bus = unique("student-event-bus")
    events.create_event_bus(Name=bus)
    queue = unique("consumer")
    queue_url = sqs.create_queue(QueueName=queue)["QueueUrl"]
    rule = unique("to-consumer")
    events.put_rule(Name=rule, EventBusName=bus, EventPattern=json.dumps({"source": sources}))
    events.put_targets(
        Rule=rule, EventBusName=bus, Targets=[{"Id": "consumer", "Arn": f"arn:aws:sqs:{REGION}:{ACCOUNT}:{queue}"}]
    )
    return bus, queue_url


def drain(sqs, queue_url: str, expected: int, *, timeout_polls: int = 10) -> list[str]:
    """Receives and deletes messages until `expected` arrived; fails if the queue goes quiet first."""
    bodies: list[str] = []
    quiet = 0
    while len(bodies) < expected:
        messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get(
            "Messages", []
        )
        if not messages:
            quiet += 1
            assert quiet < timeout_polls, f"the queue went quiet after {len(bodies)} of {expected} events"
            continue
        quiet = 0
        bodies.extend(m["Body"] for m in messages)
        sqs.delete_message_batch(
            QueueUrl=queue_url,
            Entries=[{"Id": str(n), "ReceiptHandle": m["ReceiptHandle"]} for n, m in enumerate(messages)],
        )
    assert len(bodies) == expected, f"{len(bodies)} events arrived, {expected} were published"
    return bodies


# ---- Personalize -------------------------------------------------------------------------------------

# The schema our infra registers, from the repository (what `schemas::personalize` embeds).
INTERACTIONS_SCHEMA = (
    Path(__file__).resolve().parents[2] / "schemas" / "personalize" / "interactions.json"
).read_text()


def finish(describe, key: str, *, limit: int = 10) -> dict:
    """Describes until ACTIVE or CREATE FAILED (the stand-in needs no sleeping, just a few Describes)."""
    for _ in range(limit):
        resource = describe()[key]
        if resource["status"] in ("ACTIVE", "CREATE FAILED"):
            assert resource["status"] == "ACTIVE", f"{key}: {resource.get('failureReason')}"
            return resource
    raise AssertionError(f"{key} never finished")


@dataclass(frozen=True)
class Personalize:
    dataset_group: str
    dataset: str
    solution: str
    first_version: str
    campaign: str

    def pipeline_env(self) -> dict[str, str]:
        """The five variables training-export needs to drive this deployment."""
        return {
            "PERSONALIZE_DATASET_GROUP_ARN": self.dataset_group,
            "PERSONALIZE_INTERACTIONS_DATASET_ARN": self.dataset,
            "PERSONALIZE_SOLUTION_ARN": self.solution,
            "PERSONALIZE_CAMPAIGN_ARN": self.campaign,
            "PERSONALIZE_IMPORT_ROLE_ARN": IMPORT_ROLE_ARN,
        }


def bootstrap_personalize(control, csv_location: str, name: str) -> Personalize:
    """Infra's part, as `training-export/tests/standin_e2e.rs` does it: dataset group, schema, dataset,
    solution, an import of a first export, a first solution version, and the campaign serving it."""
    group = control.create_dataset_group(name=name)["datasetGroupArn"]
    finish(lambda: control.describe_dataset_group(datasetGroupArn=group), "datasetGroup")
    schema = control.create_schema(name=name, schema=INTERACTIONS_SCHEMA)["schemaArn"]
    dataset = control.create_dataset(name=name, datasetGroupArn=group, datasetType="Interactions", schemaArn=schema)[
        "datasetArn"
    ]
    finish(lambda: control.describe_dataset(datasetArn=dataset), "dataset")
    solution = control.create_solution(
        name=name, datasetGroupArn=group, recipeArn="arn:aws:personalize:::recipe/aws-user-personalization"
    )["solutionArn"]
    finish(lambda: control.describe_solution(solutionArn=solution), "solution")
    job = control.create_dataset_import_job(
        jobName=f"{name}-bootstrap",
        datasetArn=dataset,
        dataSource={"dataLocation": csv_location},
        roleArn=IMPORT_ROLE_ARN,
    )["datasetImportJobArn"]
    finish(lambda: control.describe_dataset_import_job(datasetImportJobArn=job), "datasetImportJob")
    version = control.create_solution_version(solutionArn=solution, name=f"{name}-bootstrap")["solutionVersionArn"]
    finish(lambda: control.describe_solution_version(solutionVersionArn=version), "solutionVersion")
    campaign = control.create_campaign(name=name, solutionVersionArn=version, minProvisionedTPS=1)["campaignArn"]
    finish(lambda: control.describe_campaign(campaignArn=campaign), "campaign")
    return Personalize(group, dataset, solution, version, campaign)


@dataclass
class StandIn:
    """The Personalize stand-in's admin API (`/_standin/`)."""

    url: str

    def _call(self, method: str, path: str, body=None):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"{self.url}/_standin/{path}", data=data, method=method)
        request.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.load(response)

    def reset(self):
        return self._call("POST", "reset")

    def violations(self) -> list[dict]:
        return self._call("GET", "violations")["violations"]

    def calls(self, operation: str | None = None) -> list[dict]:
        payload = self._call("GET", "calls" + (f"?operation={operation}" if operation else ""))
        assert payload["dropped"] == 0, "the stand-in's call log overflowed; counts would be wrong"
        return payload["calls"]

    def fault(self, **spec):
        return self._call("POST", "faults", spec)

    def clear_faults(self):
        return self._call("DELETE", "faults")

    def state(self):
        return self._call("GET", "state")


def load_interactions(dynamodb, table: str, events: list[story.Event]) -> int:
    """The interactions of `events` put straight into the table, as `store::dynamodb::to_item` writes them
    (BatchWriteItem, 25 a call): history from before a test's own events. Returns how many."""
    event_types = {"student.enrolled": "enrolled", "student.submitAssignment": "submitAssignment"}
    items = [
        {
            "userId": {"S": e.detail["studentId"]},
            "eventId": {"S": e.id},
            "itemId": {"S": e.detail["classId"]},
            "timestamp": {"N": str(int(e.time.timestamp()))},
            "eventType": {"S": event_types[e.detail_type]},
        }
        for e in story.interactions(events)
    ]
    for start in range(0, len(items), 25):
        requests = {table: [{"PutRequest": {"Item": item}} for item in items[start : start + 25]]}
        while requests:
            requests = dynamodb.batch_write_item(RequestItems=requests)["UnprocessedItems"]
    return len(items)
