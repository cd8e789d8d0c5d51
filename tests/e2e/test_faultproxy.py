"""The fault proxy itself: it forwards what it does not fault, names operations, and its errors are parsed
by an AWS SDK as the service's own (checked with boto3, which reads the same wire formats)."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

from .aws import client, unique
from .faultproxy import FaultProxy, operation_of, s3_error, ses_error


def test_operations_are_named_from_method_path_and_query():
    q = {"partNumber": ["2"], "uploadId": ["u"]}
    assert operation_of("PUT", "/b/exports/r/interactions.csv", q) == "UploadPart"
    assert operation_of("POST", "/b/k", {"uploads": [""]}) == "CreateMultipartUpload"
    assert operation_of("POST", "/b/k", {"uploadId": ["u"]}) == "CompleteMultipartUpload"
    assert operation_of("DELETE", "/b/k", {"uploadId": ["u"]}) == "AbortMultipartUpload"
    assert operation_of("PUT", "/b/k", {"x-id": ["PutObject"]}) == "PutObject"
    assert operation_of("GET", "/b", {"uploads": [""]}) == "ListMultipartUploads"
    assert operation_of("POST", "/v2/email/outbound-emails", {}) == "SendEmail"


def test_s3_passes_through_and_a_counted_fault_is_answered_in_s3s_format(moto):
    with FaultProxy(moto.s3) as proxy:
        s3 = client("s3", proxy.url, max_attempts=1)
        bucket = unique("proxy")
        s3.create_bucket(Bucket=bucket)
        proxy.inject(s3_error(500, "InternalError", "injected", operation="PutObject", times=1))
        with pytest.raises(ClientError) as raised:
            s3.put_object(Bucket=bucket, Key="k", Body=b"one")
        assert raised.value.response["Error"]["Code"] == "InternalError"
        assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500
        s3.put_object(Bucket=bucket, Key="k", Body=b"two")
        assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"two"
        assert s3.head_object(Bucket=bucket, Key="k")["ContentLength"] == 3
        assert [(s.status, s.faulted) for s in proxy.calls("PutObject")] == [(500, True), (200, False)]
    # The faulted request never reached moto: only the second body is there.
    assert client("s3", moto.s3).get_object(Bucket=bucket, Key="k")["Body"].read() == b"two"


def test_ses_faults_carry_the_error_type_header_restjson_clients_read(moto):
    with FaultProxy(moto.general) as proxy:
        ses = client("sesv2", proxy.url, max_attempts=1)
        proxy.inject(
            ses_error(429, "TooManyRequestsException", "Maximum sending rate exceeded.", operation="SendEmail")
        )
        with pytest.raises(ClientError) as raised:
            ses.send_email(
                FromEmailAddress="a@example.test",
                Destination={"ToAddresses": ["b@example.test"]},
                Content={"Simple": {"Subject": {"Data": "s"}, "Body": {"Text": {"Data": "t"}}}},
            )
        assert raised.value.response["Error"]["Code"] == "TooManyRequestsException"
        assert proxy.faults, "a fault without a count stays until cleared"
        proxy.clear()
        assert ses.list_email_identities()["ResponseMetadata"]["HTTPStatusCode"] == 200
