"""The IAM checks `authz.checks` reads from requests shaped as our functions' Rust SDK clients send them,
and, at the end, those checks against the roles infra/template.yaml gives the three functions.

Requests are built by hand after the SDKs' wire protocols (awsJson1_0/1_1 with X-Amz-Target, restJson1,
S3's REST with its `x-id` query parameter); one test also sends a few calls through botocore, whose
requests are an independent second opinion on paths, queries and encodings.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.stack import authz, iam
from tests.stack.authz import Check, UnknownRequest, checks, sigv4_access_key, sigv4_service

REGION, ACCOUNT = "us-east-1", "123456789012"
P = f"arn:aws:personalize:{REGION}:{ACCOUNT}"
DDB = f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table"


def signed(service: str, key: str = "AKIDEVENTCONSUMER", **headers: str) -> dict[str, str]:
    auth = (
        f"AWS4-HMAC-SHA256 Credential={key}/20261204/{REGION}/{service}/aws4_request, "
        "SignedHeaders=content-type;host;x-amz-date, Signature=" + "0" * 64
    )
    return {"authorization": auth, "x-amz-date": "20261204T180000Z", "host": "127.0.0.1:4566", **headers}


def json_call(service: str, target: str, body: dict[str, Any], version: str = "1.1", **kw: Any) -> list[Check]:
    headers = signed(service, **{"content-type": f"application/x-amz-json-{version}", "x-amz-target": target})
    return checks(service, "POST", "/", "", headers, json.dumps(body).encode(), region=REGION, account=ACCOUNT, **kw)


def rest_call(service: str, method: str, path: str, query: str = "", body: bytes | dict = b"", headers=None, **kw) -> list[Check]:
    if isinstance(body, dict):
        body = json.dumps(body).encode()
    return checks(service, method, path, query, signed(service, **(headers or {})), body, region=REGION, account=ACCOUNT, **kw)


def dynamodb(operation: str, body: dict[str, Any]) -> list[Check]:
    return json_call("dynamodb", f"DynamoDB_20120810.{operation}", body, version="1.0")


def pairs(result: list[Check]) -> list[tuple[str, str]]:
    return [(c.action, c.resource) for c in result]


# --- SigV4 -----------------------------------------------------------------------------------------


def test_sigv4_service_and_access_key():
    headers = signed("dynamodb", key="AKIDTRAININGEXPORT")
    assert sigv4_service(headers) == "dynamodb" and sigv4_access_key(headers) == "AKIDTRAININGEXPORT"
    # Header names are case-insensitive.
    capitalised = {"Authorization": headers["authorization"]}
    assert sigv4_service(capitalised) == "dynamodb" and sigv4_access_key(capitalised) == "AKIDTRAININGEXPORT"
    assert sigv4_service({}) is None and sigv4_access_key({"Authorization": "Bearer x"}) is None


# --- DynamoDB --------------------------------------------------------------------------------------


def test_dynamodb_single_item_operations_act_on_the_table():
    for operation in ("GetItem", "PutItem", "UpdateItem", "DeleteItem", "Scan", "Query", "DescribeTable"):
        result = dynamodb(operation, {"TableName": "stack-ledger", "Key": {"pk": {"S": "e1"}}})
        assert pairs(result) == [(f"dynamodb:{operation}", f"{DDB}/stack-ledger")]
        assert result[0].operation == f"DynamoDB {operation}" and result[0].context == {}


def test_dynamodb_scan_and_query_on_an_index_act_on_the_index():
    for operation in ("Query", "Scan"):
        result = dynamodb(operation, {"TableName": "t", "IndexName": "by-user", "Segment": 0, "TotalSegments": 4})
        assert pairs(result) == [(f"dynamodb:{operation}", f"{DDB}/t/index/by-user")]


def test_dynamodb_table_name_may_be_an_arn():
    assert pairs(dynamodb("GetItem", {"TableName": f"{DDB}/runs", "Key": {}})) == [("dynamodb:GetItem", f"{DDB}/runs")]


def test_dynamodb_batches_check_every_table():
    body = {"RequestItems": {"a": [{"PutRequest": {"Item": {}}}], "b": [{"DeleteRequest": {"Key": {}}}]}}
    assert pairs(dynamodb("BatchWriteItem", body)) == [("dynamodb:BatchWriteItem", f"{DDB}/a"), ("dynamodb:BatchWriteItem", f"{DDB}/b")]
    assert pairs(dynamodb("BatchGetItem", {"RequestItems": {"a": {"Keys": [{}]}}})) == [("dynamodb:BatchGetItem", f"{DDB}/a")]


def test_dynamodb_transactions_check_each_item_as_its_single_item_action():
    # training-export's run store: a guard Put and a run Put (create), a Put and a guard Delete (save).
    body = {
        "TransactItems": [
            {"Put": {"TableName": "runs", "Item": {"pk": {"S": "guard"}}, "ConditionExpression": "attribute_not_exists(pk)"}},
            {"Put": {"TableName": "runs", "Item": {"pk": {"S": "run"}}}},
            {"Delete": {"TableName": "runs", "Key": {"pk": {"S": "guard"}}}},
            {"ConditionCheck": {"TableName": "other", "Key": {}, "ConditionExpression": "attribute_exists(pk)"}},
            {"Update": {"TableName": "runs", "Key": {}, "UpdateExpression": "SET a = :a"}},
        ]
    }
    assert pairs(dynamodb("TransactWriteItems", body)) == [
        ("dynamodb:PutItem", f"{DDB}/runs"),
        ("dynamodb:DeleteItem", f"{DDB}/runs"),
        ("dynamodb:ConditionCheckItem", f"{DDB}/other"),
        ("dynamodb:UpdateItem", f"{DDB}/runs"),
    ]
    gets = {"TransactItems": [{"Get": {"TableName": "runs", "Key": {}}}]}
    assert pairs(dynamodb("TransactGetItems", gets)) == [("dynamodb:GetItem", f"{DDB}/runs")]
    with pytest.raises(UnknownRequest):
        dynamodb("TransactWriteItems", {"TransactItems": [{"Frobnicate": {"TableName": "runs"}}]})


def test_dynamodb_exports():
    # The export writes with the caller's permissions: every object under <S3Prefix>/AWSDynamoDB/.
    result = dynamodb("ExportTableToPointInTime", {"TableArn": f"{DDB}/interactions", "S3Bucket": "b", "S3Prefix": "exports/ddb"})
    writes = "arn:aws:s3:::b/exports/ddb/AWSDynamoDB/*"
    assert pairs(result) == [
        ("dynamodb:ExportTableToPointInTime", f"{DDB}/interactions"),
        ("s3:AbortMultipartUpload", writes),
        ("s3:PutObject", writes),
        ("s3:PutObjectAcl", writes),
    ]
    without_prefix = dynamodb("ExportTableToPointInTime", {"TableArn": f"{DDB}/interactions", "S3Bucket": "b"})
    assert {c.resource for c in without_prefix[1:]} == {"arn:aws:s3:::b/AWSDynamoDB/*"}
    with pytest.raises(UnknownRequest):
        dynamodb("ExportTableToPointInTime", {"TableArn": f"{DDB}/interactions"})  # no bucket
    export = f"{DDB}/interactions/export/01733333333333-abcdef12"
    assert pairs(dynamodb("DescribeExport", {"ExportArn": export})) == [("dynamodb:DescribeExport", export)]
    # ListExports is authorized on "*" even when it names a table.
    listed = dynamodb("ListExports", {"TableArn": f"{DDB}/interactions", "MaxResults": 5})
    assert pairs(listed) == [("dynamodb:ListExports", "*")]


def test_dynamodb_export_grants_the_developer_guide_names():
    """The Developer Guide's example policy for exports allows the request; a grant on the bucket's other
    prefixes, or without s3:PutObjectAcl, does not."""
    request = {"TableArn": f"{DDB}/interactions", "S3Bucket": "b", "S3Prefix": "exports/ddb"}
    guide = [
        {"Effect": "Allow", "Action": "dynamodb:ExportTableToPointInTime", "Resource": f"{DDB}/interactions"},
        {
            "Effect": "Allow",
            "Action": ["s3:AbortMultipartUpload", "s3:PutObject", "s3:PutObjectAcl"],
            "Resource": "arn:aws:s3:::b/exports/*",
        },
    ]

    def allowed(statements: list[dict[str, Any]]) -> bool:
        policy = [{"Version": "2012-10-17", "Statement": statements}]
        return all(iam.evaluate(policy, c.action, c.resource, c.context).allowed for c in dynamodb("ExportTableToPointInTime", request))

    assert allowed(guide)
    assert not allowed([guide[0], {**guide[1], "Resource": "arn:aws:s3:::b/models/*"}])
    assert not allowed([guide[0], {**guide[1], "Action": ["s3:AbortMultipartUpload", "s3:PutObject"]}])


def test_dynamodb_unknown_and_malformed_requests_are_refused():
    with pytest.raises(UnknownRequest):
        dynamodb("RestoreTableFromBackup", {"TargetTableName": "t"})
    with pytest.raises(UnknownRequest):
        dynamodb("GetItem", {"Key": {}})  # no table
    with pytest.raises(UnknownRequest):
        checks("dynamodb", "POST", "/", "", signed("dynamodb"), b"{}", region=REGION, account=ACCOUNT)  # no target
    with pytest.raises(UnknownRequest):
        json_call("dynamodb", "AWSEvents.PutEvents", {}, version="1.0")


# --- S3 --------------------------------------------------------------------------------------------


def s3(method: str, path: str, query: str = "", body: bytes = b"", **headers: str) -> list[Check]:
    return rest_call("s3", method, path, query, body, headers)


def test_s3_reads():
    assert pairs(s3("GET", "/stack-data/models/current.json", "x-id=GetObject")) == [
        ("s3:GetObject", "arn:aws:s3:::stack-data/models/current.json")
    ]
    assert pairs(s3("HEAD", "/stack-data/models/m.json")) == [("s3:GetObject", "arn:aws:s3:::stack-data/models/m.json")]
    # Keys arrive percent-encoded; the ARN has the key itself.
    assert pairs(s3("GET", "/stack-data/exports/a%20b%2Bc.csv", "x-id=GetObject")) == [
        ("s3:GetObject", "arn:aws:s3:::stack-data/exports/a b+c.csv")
    ]
    assert pairs(s3("GET", "/b/k", "versionId=v1&x-id=GetObject")) == [("s3:GetObjectVersion", "arn:aws:s3:::b/k")]


def test_s3_list_objects_v2_is_list_bucket_with_the_prefix():
    result = s3("GET", "/stack-data", "list-type=2&prefix=models%2F")
    assert pairs(result) == [("s3:ListBucket", "arn:aws:s3:::stack-data")]
    assert result[0].context == {"s3:prefix": "models/"} and result[0].operation == "S3 ListObjectsV2"
    paged = s3("GET", "/stack-data/", "continuation-token=abc&delimiter=%2F&list-type=2&max-keys=10&prefix=")
    assert paged[0].context == {"s3:prefix": "", "s3:delimiter": "/", "s3:max-keys": "10"}
    assert s3("GET", "/stack-data", "list-type=2")[0].context == {}  # no prefix: no s3:prefix key


def test_s3_writes_and_multipart_uploads_are_put_object():
    key = "/stack-data/exports/run-1/interactions.csv"
    arn = "arn:aws:s3:::stack-data/exports/run-1/interactions.csv"
    for method, query, operation in [
        ("PUT", "x-id=PutObject", "PutObject"),
        ("POST", "uploads", "CreateMultipartUpload"),
        ("PUT", "x-id=UploadPart&partNumber=2&uploadId=u-1", "UploadPart"),
        ("POST", "uploadId=u-1", "CompleteMultipartUpload"),
    ]:
        result = s3(method, key, query)
        assert pairs(result) == [("s3:PutObject", arn)] and result[0].operation == f"S3 {operation}"
    assert pairs(s3("DELETE", key, "x-id=AbortMultipartUpload&uploadId=u-1")) == [("s3:AbortMultipartUpload", arn)]
    assert pairs(s3("DELETE", key, "x-id=DeleteObject")) == [("s3:DeleteObject", arn)]
    acl = s3("PUT", key, "x-id=PutObject", **{"x-amz-acl": "private", "x-amz-server-side-encryption": "AES256"})
    assert acl[0].context == {"s3:x-amz-acl": "private", "s3:x-amz-server-side-encryption": "AES256"}


def test_s3_copy_writes_the_target_and_reads_the_source():
    result = s3("PUT", "/b/models/current.json", "x-id=CopyObject", **{"x-amz-copy-source": "b/model-candidates/c%201.json"})
    assert pairs(result) == [("s3:PutObject", "arn:aws:s3:::b/models/current.json"), ("s3:GetObject", "arn:aws:s3:::b/model-candidates/c 1.json")]
    versioned = s3("PUT", "/b/k", "", **{"x-amz-copy-source": "/src/key?versionId=v2"})
    assert pairs(versioned)[1] == ("s3:GetObjectVersion", "arn:aws:s3:::src/key")
    part = s3("PUT", "/b/k", "partNumber=1&uploadId=u", **{"x-amz-copy-source": "src/big"})
    assert [c.operation for c in part] == ["S3 UploadPartCopy", "S3 UploadPartCopy (source)"]


def test_s3_delete_objects_checks_every_key():
    body = (
        b'<?xml version="1.0" encoding="UTF-8"?><Delete xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
        b"<Object><Key>exports/a.csv</Key></Object><Object><Key>exports/b.csv</Key><VersionId>v</VersionId></Object>"
        b"<Quiet>true</Quiet></Delete>"
    )
    assert pairs(s3("POST", "/b", "delete", body)) == [
        ("s3:DeleteObject", "arn:aws:s3:::b/exports/a.csv"),
        ("s3:DeleteObjectVersion", "arn:aws:s3:::b/exports/b.csv"),
    ]
    with pytest.raises(UnknownRequest):
        s3("POST", "/b", "delete", b"not xml")


def test_s3_unknown_subresources_and_disagreeing_x_id_are_refused():
    with pytest.raises(UnknownRequest):
        s3("PUT", "/b/k", "acl")  # PutObjectAcl is not PutObject
    with pytest.raises(UnknownRequest):
        s3("GET", "/b/k", "tagging")
    with pytest.raises(UnknownRequest):
        s3("GET", "/b", "policy")
    with pytest.raises(UnknownRequest):
        s3("GET", "/b/k", "x-id=PutObject")  # the SDK says PutObject; we read GetObject
    assert pairs(s3("GET", "/")) == [("s3:ListAllMyBuckets", "*")]


# --- SES v2 ----------------------------------------------------------------------------------------

SEND = "/v2/email/outbound-emails"


def email(**fields: Any) -> dict[str, Any]:
    body = {
        "FromEmailAddress": "noreply@example.org",
        "Destination": {"ToAddresses": ["student@school.example"]},
        "Content": {"Simple": {"Subject": {"Data": "Welcome"}, "Body": {"Text": {"Data": "hi"}}}},
        "EmailTags": [{"Name": "eventId", "Value": "e-1"}],
    }
    body.update(fields)
    return body


def test_ses_send_email_on_the_address_identity_with_from_address():
    result = rest_call("ses", "POST", SEND, body=email())
    assert pairs(result) == [("ses:SendEmail", f"arn:aws:ses:{REGION}:{ACCOUNT}:identity/noreply@example.org")]
    assert result[0].context["ses:FromAddress"] == "noreply@example.org"
    assert result[0].context["ses:Recipients"] == ["student@school.example"]


def test_ses_display_name_and_configuration_set():
    body = email(FromEmailAddress='"Course Office" <noreply@example.org>', ConfigurationSetName="stack-mail")
    result = rest_call("ses", "POST", SEND, body=body)
    assert pairs(result) == [
        ("ses:SendEmail", f"arn:aws:ses:{REGION}:{ACCOUNT}:identity/noreply@example.org"),
        ("ses:SendEmail", f"arn:aws:ses:{REGION}:{ACCOUNT}:configuration-set/stack-mail"),
    ]
    assert all(c.context["ses:FromAddress"] == "noreply@example.org" for c in result)
    assert result[0].context["ses:FromDisplayName"] == "Course Office"


def test_ses_identity_follows_the_verified_identities():
    def identity(identities):
        return rest_call("ses", "POST", SEND, body=email(FromEmailAddress="noreply@mail.example.org"), ses_identities=identities)[0].resource

    base = f"arn:aws:ses:{REGION}:{ACCOUNT}:identity/"
    assert identity(["example.org"]) == base + "example.org"  # a parent domain covers its subdomains
    assert identity(["example.org", "mail.example.org"]) == base + "mail.example.org"
    assert identity(["NoReply@mail.example.org", "example.org"]) == base + "NoReply@mail.example.org"
    with pytest.raises(UnknownRequest):
        identity(["other.org"])
    explicit = rest_call("ses", "POST", SEND, body=email(FromEmailAddressIdentityArn=base + "example.org"))
    assert explicit[0].resource == base + "example.org"


def test_ses_put_suppressed_destination_acts_on_star():
    body = {"EmailAddress": "gone@school.example", "Reason": "COMPLAINT"}
    assert pairs(rest_call("ses", "PUT", "/v2/email/suppression/addresses", body=body)) == [("ses:PutSuppressedDestination", "*")]
    with pytest.raises(UnknownRequest):
        rest_call("ses", "PUT", "/v2/email/suppression/addresses", body={"EmailAddress": "x@y.z", "Reason": "OTHER"})


def test_ses_unknown_requests():
    with pytest.raises(UnknownRequest):
        rest_call("ses", "POST", "/v2/email/identities", body={"EmailIdentity": "x.org"})
    with pytest.raises(UnknownRequest):
        rest_call("ses", "POST", SEND, body={"Content": {"Raw": {"Data": "RnJvbTog"}}})  # sender inside MIME


# --- EventBridge -----------------------------------------------------------------------------------


def test_eventbridge_put_events_per_entry_with_source_and_detail_type():
    bus = f"arn:aws:events:{REGION}:{ACCOUNT}:event-bus/stack-bus"
    entries = [
        {"EventBusName": "stack-bus", "Source": "api.ranking", "DetailType": "ranking.pipeline", "Detail": "{}"},
        {"EventBusName": bus, "Source": "api.student", "DetailType": "student.enrolled", "Detail": "{}"},
        {"Source": "api.ranking", "DetailType": "ranking.pipeline", "Detail": "{}"},
    ]
    result = json_call("events", "AWSEvents.PutEvents", {"Entries": entries})
    assert pairs(result) == [
        ("events:PutEvents", bus),
        ("events:PutEvents", bus),
        ("events:PutEvents", f"arn:aws:events:{REGION}:{ACCOUNT}:event-bus/default"),
    ]
    assert result[1].context == {"events:source": "api.student", "events:detail-type": "student.enrolled"}
    with pytest.raises(UnknownRequest):
        json_call("events", "AWSEvents.PutRule", {"Name": "r"})


# --- Lambda ----------------------------------------------------------------------------------------

FUNCTION = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:stack-training-export"


def invoke(name: str, query: str = "") -> list[tuple[str, str]]:
    headers = {"x-amz-invocation-type": "Event", "content-type": "application/octet-stream"}
    return pairs(rest_call("lambda", "POST", f"/2015-03-31/functions/{name}/invocations", query, b"{}", headers))


def test_lambda_invoke_by_name_arn_or_qualified():
    assert invoke("stack-training-export") == [("lambda:InvokeFunction", FUNCTION)]
    assert invoke(FUNCTION.replace(":", "%3A")) == [("lambda:InvokeFunction", FUNCTION)]
    assert invoke(f"{ACCOUNT}%3Afunction%3Astack-training-export") == [("lambda:InvokeFunction", FUNCTION)]
    # A version or alias is a different resource: the unqualified ARN does not cover it.
    assert invoke("stack-training-export", "Qualifier=live") == [("lambda:InvokeFunction", FUNCTION + ":live")]
    assert invoke("stack-training-export%3A3") == [("lambda:InvokeFunction", FUNCTION + ":3")]
    with pytest.raises(UnknownRequest):
        invoke("stack-training-export%3A3", "Qualifier=4")
    with pytest.raises(UnknownRequest):
        rest_call("lambda", "GET", "/2015-03-31/functions/stack-training-export")


# --- Personalize -----------------------------------------------------------------------------------


def personalize(operation: str, body: dict[str, Any]) -> list[Check]:
    return json_call("personalize", f"AmazonPersonalize.{operation}", body)


def test_personalize_import_creates_the_job_from_the_dataset_and_passes_the_role():
    role = f"arn:aws:iam::{ACCOUNT}:role/stack-PersonalizeImportRole-ABC"
    body = {
        "jobName": "stack-import-run-1",
        "datasetArn": f"{P}:dataset/stack-group/INTERACTIONS",
        "dataSource": {"dataLocation": "s3://stack-data/exports/run-1/"},
        "roleArn": role,
        "importMode": "FULL",
    }
    result = personalize("CreateDatasetImportJob", body)
    assert pairs(result) == [
        ("personalize:CreateDatasetImportJob", f"{P}:dataset-import-job/stack-import-run-1"),
        ("personalize:CreateDatasetImportJob", f"{P}:dataset/stack-group/INTERACTIONS"),
        ("iam:PassRole", role),
    ]
    assert result[2].context == {"iam:PassedToService": "personalize.amazonaws.com"}


def test_personalize_operations_on_existing_resources():
    solution, version, campaign = f"{P}:solution/stack-solution", f"{P}:solution/stack-solution/1a2b3c4d", f"{P}:campaign/stack"
    job = f"{P}:dataset-import-job/stack-import-run-1"
    cases = [
        ("DescribeDatasetImportJob", {"datasetImportJobArn": job}, job),
        ("CreateSolutionVersion", {"name": "stack-run-1", "solutionArn": solution, "trainingMode": "FULL"}, solution),
        ("DescribeSolutionVersion", {"solutionVersionArn": version}, version),
        ("GetSolutionMetrics", {"solutionVersionArn": version}, version),
        ("ListSolutionVersions", {"solutionArn": solution}, solution),
        ("ListSolutionVersions", {}, "*"),
        ("ListDatasetGroups", {"maxResults": 10}, "*"),
        ("DescribeCampaign", {"campaignArn": campaign}, campaign),
        ("UpdateCampaign", {"campaignArn": campaign, "solutionVersionArn": version}, campaign),
        ("CreateCampaign", {"name": "stack", "solutionVersionArn": version}, campaign),
    ]
    for operation, body, resource in cases:
        assert pairs(personalize(operation, body)) == [(f"personalize:{operation}", resource)], operation


def test_personalize_unknown_and_malformed_requests():
    with pytest.raises(UnknownRequest):
        personalize("TagResource", {"resourceArn": "x", "tags": []})
    with pytest.raises(UnknownRequest):
        personalize("DescribeCampaign", {})  # no campaignArn
    with pytest.raises(UnknownRequest):
        json_call("personalize", "AmazonPersonalizeRuntime.GetRecommendations", {})


def test_personalize_runtime_on_the_campaign_and_filter():
    campaign, filter_ = f"{P}:campaign/stack", f"{P}:filter/stack-unseen"
    body = {"campaignArn": campaign, "userId": "u1", "numResults": 10, "filterArn": filter_, "filterValues": {"X": '"a"'}}
    assert pairs(rest_call("personalize", "POST", "/recommendations", body=body)) == [
        ("personalize:GetRecommendations", campaign),
        ("personalize:GetRecommendations", filter_),
    ]
    ranking = {"campaignArn": f"{P}:campaign/stack-ranking", "userId": "u1", "inputList": ["c1", "c2"]}
    assert pairs(rest_call("personalize", "POST", "/personalize-ranking", body=ranking)) == [
        ("personalize:GetPersonalizedRanking", f"{P}:campaign/stack-ranking")
    ]
    recommender = f"{P}:recommender/r"
    assert pairs(rest_call("personalize", "POST", "/recommendations", body={"recommenderArn": recommender, "userId": "u"})) == [
        ("personalize:GetRecommendations", recommender)
    ]
    with pytest.raises(UnknownRequest):
        rest_call("personalize", "POST", "/recommendations", body={"userId": "u"})
    with pytest.raises(UnknownRequest):
        rest_call("personalize", "POST", "/events", body={"trackingId": "t", "eventList": []})  # Personalize Events


def test_unknown_services_are_refused():
    with pytest.raises(UnknownRequest):
        rest_call("sqs", "POST", "/", body=b"Action=SendMessage")
    with pytest.raises(UnknownRequest):
        checks("logs", "POST", "/", "", {}, b"", region=REGION, account=ACCOUNT)
    assert issubclass(UnknownRequest, ValueError)


# --- botocore as a second opinion on the wire shapes -----------------------------------------------


def test_botocore_requests_read_the_same():
    botocore = pytest.importorskip("botocore")
    import botocore.session
    from urllib.parse import urlsplit

    session = botocore.session.get_session()
    seen: list[list[Check]] = []

    def capture(service: str):
        client = session.create_client(
            service, region_name=REGION, endpoint_url="http://127.0.0.1:9", aws_access_key_id="AKIDX",
            aws_secret_access_key="x", config=botocore.config.Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
        )  # fmt: skip

        def send(request, **_):
            url, body = urlsplit(request.url), request.body or b""
            body = body.read() if hasattr(body, "read") else body
            headers = {k: v.decode() if isinstance(v, bytes) else v for k, v in request.headers.items()}
            seen.append(checks(sigv4_service(headers), request.method, url.path, url.query, headers,
                               body.encode() if isinstance(body, str) else body, region=REGION, account=ACCOUNT))  # fmt: skip
            raise _Captured

        client.meta.events.register("before-send", send)
        return client

    def call(service, operation, **params):
        with pytest.raises(_Captured):
            getattr(capture(service), operation)(**params)
        return pairs(seen[-1])

    assert call("s3", "get_object", Bucket="b", Key="models/a b+c.json") == [("s3:GetObject", "arn:aws:s3:::b/models/a b+c.json")]
    assert call("s3", "list_objects_v2", Bucket="b", Prefix="models/") == [("s3:ListBucket", "arn:aws:s3:::b")]
    assert seen[-1][0].context == {"s3:prefix": "models/"}
    assert call("s3", "upload_part", Bucket="b", Key="k", PartNumber=1, UploadId="u", Body=b"1") == [("s3:PutObject", "arn:aws:s3:::b/k")]
    assert call("s3", "abort_multipart_upload", Bucket="b", Key="k", UploadId="u") == [("s3:AbortMultipartUpload", "arn:aws:s3:::b/k")]
    assert call("lambda", "invoke", FunctionName=FUNCTION, InvocationType="Event", Payload=b"{}") == [("lambda:InvokeFunction", FUNCTION)]
    assert call("sesv2", "send_email", FromEmailAddress="a@example.org", Destination={"ToAddresses": ["b@x.org"]},
                Content={"Simple": {"Subject": {"Data": "s"}, "Body": {"Text": {"Data": "t"}}}}) == [
        ("ses:SendEmail", f"arn:aws:ses:{REGION}:{ACCOUNT}:identity/a@example.org")
    ]  # fmt: skip
    assert call("dynamodb", "query", TableName="runs", KeyConditionExpression="pk = :p",
                ExpressionAttributeValues={":p": {"S": "run"}}) == [("dynamodb:Query", f"{DDB}/runs")]  # fmt: skip
    assert call("personalize-runtime", "get_personalized_ranking", campaignArn=f"{P}:campaign/r", userId="u", inputList=["a"]) == [
        ("personalize:GetPersonalizedRanking", f"{P}:campaign/r")
    ]
    assert call("personalize", "describe_campaign", campaignArn=f"{P}:campaign/c") == [("personalize:DescribeCampaign", f"{P}:campaign/c")]


class _Captured(Exception):
    pass


# --- every call the functions make, against the roles in infra/template.yaml -----------------------

TEMPLATE = Path(__file__).resolve().parents[2] / "infra" / "template.yaml"
STACK = "stack"
PARAMETERS = {
    "EmailSender": "noreply@example.org",
    "SesIdentity": "example.org",
    "PersonalizeNamePrefix": "stack",
    "PersonalizeCampaignArn": f"{P}:campaign/stack",
    "PersonalizeRankingCampaignArn": f"{P}:campaign/stack-ranking",
}
# The physical ids and ARNs the resources the roles name would have; only what the roles use.
NAMES = {
    "InteractionsTable": "stack-interactions",
    "IdempotencyTable": "stack-ledger",
    "StudentsTable": "stack-students",
    "PipelineRunsTable": "stack-runs",
    "DataBucket": "stack-data",
    "EventBus": "stack-bus",
    "TrainingExportFunction": "stack-training-export",
    "EmailConfigurationSet": "stack-email",
}
ARNS = {
    "InteractionsTable.Arn": f"{DDB}/stack-interactions",
    "IdempotencyTable.Arn": f"{DDB}/stack-ledger",
    "StudentsTable.Arn": f"{DDB}/stack-students",
    "PipelineRunsTable.Arn": f"{DDB}/stack-runs",
    "DataBucket.Arn": "arn:aws:s3:::stack-data",
    "EventBus.Arn": f"arn:aws:events:{REGION}:{ACCOUNT}:event-bus/stack-bus",
    "TrainingExportFunction.Arn": FUNCTION,
    "InteractionsDataset.DatasetArn": f"{P}:dataset/stack-group/INTERACTIONS",
    "Solution.SolutionArn": f"{P}:solution/stack-solution",
    "PersonalizeImportRole.Arn": f"arn:aws:iam::{ACCOUNT}:role/stack-PersonalizeImportRole-ABC",
}
NO_VALUE = object()


def _template() -> dict[str, Any]:
    yaml = pytest.importorskip("yaml")

    class Loader(yaml.SafeLoader):
        pass

    def tag(loader, suffix, node):
        value = (
            loader.construct_scalar(node) if isinstance(node, yaml.ScalarNode)
            else loader.construct_sequence(node, deep=True) if isinstance(node, yaml.SequenceNode)
            else loader.construct_mapping(node, deep=True)
        )  # fmt: skip
        return {"Ref" if suffix == "Ref" else f"Fn::{suffix}": value}

    Loader.add_multi_constructor("!", tag)
    return yaml.load(TEMPLATE.read_text(), Loader=Loader)


def _resolve(node: Any, template: dict[str, Any]) -> Any:
    """Just enough of CloudFormation for the roles' policies: Ref, GetAtt, Sub, If, Not, Equals."""
    pseudo = {"AWS::Region": REGION, "AWS::AccountId": ACCOUNT, "AWS::Partition": "aws", "AWS::StackName": STACK}

    def ref(name: str) -> Any:
        if name == "AWS::NoValue":
            return NO_VALUE
        if name in pseudo:
            return pseudo[name]
        if name in template["Parameters"]:
            return PARAMETERS.get(name, template["Parameters"][name].get("Default", ""))
        return NAMES[name]

    def attribute(name: str) -> str:
        # Resources no request here touches (log groups, queues) get a stand-in ARN of their own.
        return ARNS.get(name, f"arn:aws:test:{REGION}:{ACCOUNT}:{name}")

    if isinstance(node, list):
        return [v for v in (_resolve(i, template) for i in node) if v is not NO_VALUE]
    if not isinstance(node, dict):
        return node
    if len(node) == 1:
        (key, value), = node.items()
        if key == "Ref":
            return ref(value)
        if key == "Fn::GetAtt":
            return attribute(value if isinstance(value, str) else ".".join(value))
        if key == "Fn::Sub":
            import re

            return re.sub(r"\$\{([^}]+)\}", lambda m: attribute(m[1]) if "." in m[1] else ref(m[1]), value)
        if key == "Fn::If":
            condition, yes, no = value
            return _resolve(yes if _resolve(template["Conditions"][condition], template) else no, template)
        if key == "Fn::Not":
            return not _resolve(value[0], template)
        if key == "Fn::Equals":
            a, b = (_resolve(v, template) for v in value)
            return a == b
    return {k: v for k, v in ((k, _resolve(v, template)) for k, v in node.items()) if v is not NO_VALUE}


@pytest.fixture(scope="module")
def roles() -> dict[str, list[dict[str, Any]]]:
    template = _template()
    return {
        logical: _resolve(template["Resources"][logical]["Properties"]["Policies"], template)
        for logical in ("RankingApiRole", "EventConsumerRole", "TrainingExportRole")
    }


def refused(policies, result: list[Check]) -> list[str]:
    """The checks of a request the role does not allow, described; empty when the request is allowed."""
    out = []
    for check in result:
        decision = iam.evaluate(policies, check.action, check.resource, check.context)
        if not decision.allowed:
            out.append(f"{check.operation}: {check.action} on {check.resource}: {decision.describe()}")
    return out


def event_consumer_calls() -> list[list[Check]]:
    """What event-consumer sends: interactions, its idempotency ledger, the rosters, the email, the retrain invoke."""
    return [
        dynamodb("PutItem", {"TableName": "stack-interactions", "Item": {}}),
        *(dynamodb(op, {"TableName": "stack-ledger", "Key": {}}) for op in ("GetItem", "PutItem", "UpdateItem", "DeleteItem")),
        # Class rosters: an enrollment puts the student on it, an announcement reads it.
        dynamodb("PutItem", {"TableName": "stack-students", "Item": {}}),
        dynamodb("Query", {"TableName": "stack-students", "KeyConditionExpression": "#class = :class"}),
        rest_call("ses", "POST", SEND, body=email(ConfigurationSetName="stack-email"), ses_identities=["example.org"]),
        rest_call("ses", "PUT", "/v2/email/suppression/addresses", body={"EmailAddress": "gone@school.example", "Reason": "BOUNCE"}),
        rest_call("lambda", "POST", "/2015-03-31/functions/stack-training-export/invocations", body=b"{}",
                  headers={"x-amz-invocation-type": "Event"}),  # fmt: skip
    ]


def test_event_consumer_calls_are_allowed_by_its_role(roles):
    policies = roles["EventConsumerRole"]
    for result in event_consumer_calls():
        assert refused(policies, result) == []
    # The condition on the sender holds even though the identity is the whole domain.
    other_sender = rest_call("ses", "POST", SEND, body=email(FromEmailAddress="ceo@example.org"), ses_identities=["example.org"])
    assert refused(policies, other_sender) != []
    assert refused(policies, dynamodb("Scan", {"TableName": "stack-interactions"})) != []
    # A send through another configuration set is refused: only the stack's own is granted.
    other_set = rest_call("ses", "POST", SEND, body=email(ConfigurationSetName="other-email"), ses_identities=["example.org"])
    assert refused(policies, other_set) != []


def training_export_calls() -> list[list[Check]]:
    """What training-export sends: the scan or the table export, its run store, exports and models, events,
    Personalize."""
    version = f"{P}:solution/stack-solution/1a2b3c4d"
    transact = {"TransactItems": [{"Put": {"TableName": "stack-runs", "Item": {}}}, {"Delete": {"TableName": "stack-runs", "Key": {}}}]}
    # The table export (above TABLE_EXPORT_ABOVE_BYTES): DynamoDB writes under exports/<run>/dynamodb/AWSDynamoDB/
    # with the role's permissions, the pipeline reads the export's manifests and data files, then writes the parts.
    export = f"{ARNS['InteractionsTable.Arn']}/export/01733333333333-abcdef12"
    dump = "/stack-data/exports/run-1/dynamodb/AWSDynamoDB/01733333333333-abcdef12"
    return [
        dynamodb("Scan", {"TableName": "stack-interactions", "Segment": 0, "TotalSegments": 4}),
        dynamodb("DescribeTable", {"TableName": "stack-interactions"}),
        dynamodb("ExportTableToPointInTime", {"TableArn": ARNS["InteractionsTable.Arn"], "S3Bucket": "stack-data",
                                              "S3Prefix": "exports/run-1/dynamodb", "ClientToken": "run-1",
                                              "ExportFormat": "DYNAMODB_JSON", "ExportType": "FULL_EXPORT"}),
        dynamodb("DescribeExport", {"ExportArn": export}),
        s3("GET", f"{dump}/manifest-summary.json", "x-id=GetObject"),
        s3("GET", f"{dump}/manifest-files.json", "x-id=GetObject"),
        s3("GET", f"{dump}/data/abcdefghij0123456789.json.gz", "x-id=GetObject"),
        *(s3("PUT", f"/stack-data/exports/run-1/{key}", "x-id=PutObject")
          for key in ("csv/part-00000.csv", "parquet/part-00000.parquet", "parts/part-00000.ids", "parts/part-00000.json", "manifest.json")),
        s3("GET", "/stack-data/exports/run-1/parts/part-00000.json", "x-id=GetObject"),
        # The incremental table export (since the last imported one): the same action, under exports/<run>/incremental/.
        dynamodb("ExportTableToPointInTime", {"TableArn": ARNS["InteractionsTable.Arn"], "S3Bucket": "stack-data",
                                              "S3Prefix": "exports/run-1/incremental/dynamodb", "ClientToken": "run-1",
                                              "ExportFormat": "DYNAMODB_JSON", "ExportType": "INCREMENTAL_EXPORT",
                                              "IncrementalExportSpecification": {"ExportFromTime": 1796000000, "ExportToTime": 1796086400,
                                                                                 "ExportViewType": "NEW_IMAGE"}}),
        s3("GET", f"/stack-data/exports/run-1/incremental/dynamodb/AWSDynamoDB/01733333333333-abcdef12/manifest-summary.json", "x-id=GetObject"),
        *(s3("PUT", f"/stack-data/exports/run-1/incremental/{key}", "x-id=PutObject")
          for key in ("csv/part-00000.csv", "parquet/part-00000.parquet", "parts/part-00000.ids", "parts/part-00000.json", "manifest.json")),
        # Its fallback, a full export in the same run: the run's usual prefix, another client token.
        dynamodb("ExportTableToPointInTime", {"TableArn": ARNS["InteractionsTable.Arn"], "S3Bucket": "stack-data",
                                              "S3Prefix": "exports/run-1/dynamodb", "ClientToken": "run-1-full",
                                              "ExportFormat": "DYNAMODB_JSON", "ExportType": "FULL_EXPORT"}),
        dynamodb("TransactWriteItems", transact),
        *(dynamodb(op, {"TableName": "stack-runs", "Key": {}}) for op in ("GetItem", "PutItem", "Query")),
        s3("PUT", "/stack-data/exports/run-1/part-0.csv", "x-id=PutObject"),
        s3("POST", "/stack-data/exports/run-1/interactions.csv", "uploads"),
        s3("PUT", "/stack-data/exports/run-1/interactions.csv", "x-id=UploadPart&partNumber=1&uploadId=u"),
        s3("POST", "/stack-data/exports/run-1/interactions.csv", "uploadId=u"),
        s3("DELETE", "/stack-data/exports/run-1/interactions.csv", "x-id=AbortMultipartUpload&uploadId=u"),
        s3("PUT", "/stack-data/model-candidates/run-1.json", "x-id=PutObject"),
        s3("GET", "/stack-data/models/current.json", "x-id=GetObject"),
        s3("GET", "/stack-data", "list-type=2&prefix=models%2F"),
        json_call("events", "AWSEvents.PutEvents", {"Entries": [{"EventBusName": "stack-bus", "Source": "api.ranking", "DetailType": "ranking.pipeline", "Detail": "{}"}]}),
        personalize("CreateDatasetImportJob", {"jobName": "stack-import-run-1", "datasetArn": ARNS["InteractionsDataset.DatasetArn"],
                                               "dataSource": {"dataLocation": "s3://stack-data/exports/run-1/"}, "roleArn": ARNS["PersonalizeImportRole.Arn"]}),
        personalize("CreateDatasetImportJob", {"jobName": "stack-import-run-1", "datasetArn": ARNS["InteractionsDataset.DatasetArn"],
                                               "dataSource": {"dataLocation": "s3://stack-data/exports/run-1/csv/"}, "roleArn": ARNS["PersonalizeImportRole.Arn"]}),
        personalize("CreateDatasetImportJob", {"jobName": "stack-import-run-1", "datasetArn": ARNS["InteractionsDataset.DatasetArn"],
                                               "dataSource": {"dataLocation": "s3://stack-data/exports/run-1/incremental/csv/"},
                                               "roleArn": ARNS["PersonalizeImportRole.Arn"], "importMode": "INCREMENTAL"}),
        personalize("DescribeDatasetImportJob", {"datasetImportJobArn": f"{P}:dataset-import-job/stack-import-run-1"}),
        personalize("CreateSolutionVersion", {"name": "run-1", "solutionArn": ARNS["Solution.SolutionArn"], "trainingMode": "FULL"}),
        personalize("ListSolutionVersions", {"solutionArn": ARNS["Solution.SolutionArn"]}),
        personalize("DescribeSolutionVersion", {"solutionVersionArn": version}),
        personalize("GetSolutionMetrics", {"solutionVersionArn": version}),
        personalize("DescribeCampaign", {"campaignArn": f"{P}:campaign/stack"}),
        personalize("UpdateCampaign", {"campaignArn": f"{P}:campaign/stack", "solutionVersionArn": version}),
    ]  # fmt: skip


def test_training_export_calls_are_allowed_by_its_role(roles):
    policies = roles["TrainingExportRole"]
    for result in training_export_calls():
        assert refused(policies, result) == []
    assert refused(policies, s3("DELETE", "/stack-data/models/current.json", "x-id=DeleteObject")) != []
    assert refused(policies, s3("PUT", "/stack-data/secrets/x", "x-id=PutObject")) != []
    # The table export: only into exports/, only the stack's table, only its exports.
    elsewhere = {"TableArn": ARNS["InteractionsTable.Arn"], "S3Bucket": "stack-data", "S3Prefix": "models/dynamodb"}
    assert refused(policies, dynamodb("ExportTableToPointInTime", elsewhere)) != []
    other_table = {"TableArn": f"{DDB}/stack-runs", "S3Bucket": "stack-data", "S3Prefix": "exports/run-1/dynamodb"}
    assert refused(policies, dynamodb("ExportTableToPointInTime", other_table)) != []
    assert refused(policies, dynamodb("DescribeExport", {"ExportArn": f"{DDB}/stack-runs/export/01733333333333-abcdef12"})) != []
    assert refused(policies, dynamodb("DescribeTable", {"TableName": "stack-runs"})) != []
    # An import job named outside the prefix is not ours to create.
    foreign = personalize("CreateDatasetImportJob", {"jobName": "other-import", "datasetArn": ARNS["InteractionsDataset.DatasetArn"],
                                                     "dataSource": {"dataLocation": "s3://x/"}, "roleArn": ARNS["PersonalizeImportRole.Arn"]})  # fmt: skip
    assert refused(policies, foreign) != []


def ranking_api_calls() -> list[list[Check]]:
    """What ranking-api sends: Personalize Runtime (with a filter) and the bucket's models."""
    return [
        rest_call("personalize", "POST", "/recommendations",
                  body={"campaignArn": f"{P}:campaign/stack", "userId": "u", "numResults": 10, "filterArn": f"{P}:filter/stack-unseen"}),
        rest_call("personalize", "POST", "/personalize-ranking", body={"campaignArn": f"{P}:campaign/stack-ranking", "userId": "u", "inputList": ["a"]}),
        s3("GET", "/stack-data/models/current.json", "x-id=GetObject"),
        s3("GET", "/stack-data", "list-type=2&prefix=models%2F"),
    ]  # fmt: skip


def test_ranking_api_calls_are_allowed_by_its_role(roles):
    policies = roles["RankingApiRole"]
    for result in ranking_api_calls():
        assert refused(policies, result) == []
    assert refused(policies, s3("PUT", "/stack-data/models/current.json", "x-id=PutObject")) != []
    foreign_filter = rest_call("personalize", "POST", "/recommendations",
                               body={"campaignArn": f"{P}:campaign/stack", "userId": "u", "filterArn": f"{P}:filter/other"})  # fmt: skip
    assert refused(policies, foreign_filter) != []


# Statements for what Lambda itself does with the function's role (logs, failure destinations), which no
# SDK call of the function needs.
NOT_SDK = {"Logs", "FailedEvents", "FailedInvocations"}


@pytest.mark.parametrize(
    "role, calls",
    [("EventConsumerRole", event_consumer_calls), ("TrainingExportRole", training_export_calls), ("RankingApiRole", ranking_api_calls)],
)
def test_every_sdk_grant_is_needed_by_some_call(roles, role, calls):
    """The canary the harness runs, in small: take one statement away and some call is refused."""
    requests = calls()
    for statement_id, _ in iam.statements(role, roles[role]):
        if statement_id.rsplit("/", 1)[-1] in NOT_SDK:
            continue
        reduced = iam.without(roles[role], statement_id)
        assert any(refused(reduced, result) for result in requests), f"nothing needs {statement_id}"


def test_checks_compare_and_hash_by_value():
    a = Check("ses:SendEmail", "arn:x", {"ses:Recipients": ["a", "b"], "ses:FromAddress": "f"}, "SES SendEmail")
    b = Check("ses:SendEmail", "arn:x", {"ses:FromAddress": "f", "ses:Recipients": ["a", "b"]}, "SES SendEmail")
    assert a == b and len({a, b}) == 1


def test_module_is_stdlib_only():
    imported = {line.split()[1].split(".")[0] for line in Path(authz.__file__).read_text().splitlines() if line.startswith(("import ", "from "))}
    assert imported <= {"__future__", "json", "re", "xml", "collections", "dataclasses", "email", "typing", "urllib"}
