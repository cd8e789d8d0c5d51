"""Injected faults: throttling, 5xx and slowness, per operation, for a count or until cleared."""

import time

import pytest
from botocore.exceptions import ClientError, ReadTimeoutError

from .conftest import make_client

CAMPAIGN = "arn:aws:personalize:us-east-1:123456789012:campaign/nowhere"


def error_of(call):
    with pytest.raises(ClientError) as raised:
        call()
    return raised.value.response["Error"]["Code"], raised.value.response["ResponseMetadata"]["HTTPStatusCode"]


def test_throttling_is_seen_by_boto3_as_throttling_exception(admin, runtime):
    admin.fault(operation="GetRecommendations", kind="throttle", count=2)
    call = lambda: runtime.get_recommendations(campaignArn=CAMPAIGN, userId="u")  # noqa: E731
    assert error_of(call) == ("ThrottlingException", 400)
    assert error_of(call) == ("ThrottlingException", 400)
    # The count is used up: the request reaches the (empty) stand-in again.
    assert error_of(call) == ("ResourceNotFoundException", 404)
    assert admin.call("GET", "faults")["faults"] == []
    assert [c["fault"]["kind"] if c["fault"] else None for c in admin.calls()] == ["throttle", "throttle", None]
    assert admin.violations() == []


def test_an_sdk_retries_throttling_by_itself(admin):
    admin.fault(operation="CreateDatasetGroup", kind="throttle", count=2)
    control = make_client("personalize", admin.url, retries={"total_max_attempts": 3, "mode": "standard"})
    response = control.create_dataset_group(name="patient")
    assert response["ResponseMetadata"]["RetryAttempts"] == 2
    assert [c["status"] for c in admin.calls()] == [400, 400, 200]


def test_server_errors_are_5xx_with_aws_codes(admin, control):
    admin.fault(operation="DescribeDatasetGroup", kind="server_error", count=1)
    admin.fault(operation="DescribeDatasetGroup", kind="server_error", status=503, count=1)

    def call():
        return control.describe_dataset_group(
            datasetGroupArn="arn:aws:personalize:us-east-1:123456789012:dataset-group/g"
        )

    assert error_of(call) == ("InternalFailure", 500)
    assert error_of(call) == ("ServiceUnavailable", 503)
    assert error_of(call) == ("ResourceNotFoundException", 400)


def test_a_delay_past_the_client_timeout_times_the_client_out(admin):
    admin.fault(operation="GetRecommendations", kind="delay", delay_ms=800, count=1)
    runtime = make_client("personalize-runtime", admin.url, read_timeout=0.2, connect_timeout=1)
    started = time.monotonic()
    with pytest.raises(ReadTimeoutError):
        runtime.get_recommendations(campaignArn=CAMPAIGN, userId="u")
    assert time.monotonic() - started < 0.8
    # The next call is not delayed.
    with pytest.raises(runtime.exceptions.ResourceNotFoundException):
        runtime.get_recommendations(campaignArn=CAMPAIGN, userId="u")


def test_a_delay_only_delays(admin, runtime):
    admin.fault(operation="GetRecommendations", kind="delay", delay_ms=150, count=1)
    started = time.monotonic()
    with pytest.raises(runtime.exceptions.ResourceNotFoundException):
        runtime.get_recommendations(campaignArn=CAMPAIGN, userId="u")
    assert time.monotonic() - started >= 0.15


def test_a_fault_without_count_lasts_until_cleared_and_star_matches_all(admin, control, runtime):
    admin.fault(operation="*", kind="throttle", count=None)
    for _ in range(3):
        assert error_of(lambda: control.create_dataset_group(name="g"))[0] == "ThrottlingException"
        assert (
            error_of(lambda: runtime.get_recommendations(campaignArn=CAMPAIGN, userId="u"))[0] == "ThrottlingException"
        )
    assert admin.call("DELETE", "faults") == {"cleared": 1}
    control.create_dataset_group(name="g")


def test_faults_only_hit_their_operation(admin, control, runtime):
    admin.fault(operation="GetRecommendations", kind="server_error", count=None)
    # The faulted operation fails, every time (no count)...
    for _ in range(2):
        assert error_of(lambda: runtime.get_recommendations(campaignArn=CAMPAIGN, userId="u")) == (
            "InternalFailure",
            500,
        )
    # ...while other operations, on either endpoint, reach the stand-in as usual.
    control.create_dataset_group(name="g")
    with pytest.raises(runtime.exceptions.ResourceNotFoundException):
        runtime.get_personalized_ranking(campaignArn=CAMPAIGN, userId="u", inputList=["i"])
    faulted = [c["fault"]["kind"] if c["fault"] else None for c in admin.calls()]
    assert faulted == ["server_error", "server_error", None, None]


def test_retry_after_is_sent_when_asked(admin, control):
    admin.fault(operation="CreateDatasetGroup", kind="throttle", count=1, retry_after_ms=250)
    with pytest.raises(ClientError) as raised:
        control.create_dataset_group(name="g")
    assert raised.value.response["ResponseMetadata"]["HTTPHeaders"]["x-amz-retry-after"] == "250"


@pytest.mark.parametrize(
    "spec",
    [
        {"operation": "GetRecommendation", "kind": "throttle"},
        {"operation": "GetRecommendations", "kind": "explode"},
        {"operation": "GetRecommendations", "kind": "delay"},
        {"operation": "GetRecommendations", "kind": "throttle", "count": 0},
        {"operation": "GetRecommendations", "kind": "server_error", "status": 404},
        {"operation": "GetRecommendations", "kind": "throttle", "colour": "red"},
    ],
    ids=[
        "unknown operation",
        "unknown kind",
        "delay without delay_ms",
        "zero count",
        "non-5xx server error",
        "unknown field",
    ],
)
def test_bad_fault_specs_are_refused(admin, spec):
    status, payload = admin._request("POST", "faults", spec)
    assert status == 400 and payload["error"]
    assert admin.call("GET", "faults")["faults"] == []
