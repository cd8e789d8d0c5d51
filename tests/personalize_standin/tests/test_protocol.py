"""The wire protocols as the SDKs speak them: routes, content types, error shapes, signatures."""

import botocore.session
import pytest
from botocore.exceptions import ClientError

from .conftest import make_client, raw_request

CAMPAIGN = "arn:aws:personalize:us-east-1:123456789012:campaign/nowhere"


def test_every_modeled_operation_is_routed_from_the_installed_models():
    from ..models import Catalog

    catalog = Catalog.load()
    session = botocore.session.get_session()
    control = session.get_service_model("personalize")
    assert set(catalog.by_target) == {f"AmazonPersonalize.{name}" for name in control.operation_names}
    routes = {(m, uri): r.operation.name for (m, uri), r in catalog.by_route.items()}
    assert routes[("POST", "/recommendations")] == "GetRecommendations"
    assert routes[("POST", "/personalize-ranking")] == "GetPersonalizedRanking"
    assert routes[("POST", "/events")] == "PutEvents"


def test_control_plane_round_trip_is_aws_json_1_1(admin):
    response = raw_request(admin.url, "/", {"name": "g"}, target="AmazonPersonalize.CreateDatasetGroup")
    assert response.status == 200
    assert response.headers["content-type"] == "application/x-amz-json-1.1"
    assert response.json() == {"datasetGroupArn": "arn:aws:personalize:us-east-1:123456789012:dataset-group/g"}
    described = raw_request(
        admin.url,
        "/",
        {"datasetGroupArn": response.json()["datasetGroupArn"]},
        target="AmazonPersonalize.DescribeDatasetGroup",
    ).json()["datasetGroup"]
    # awsJson1_1 timestamps are epoch seconds as JSON numbers.
    assert isinstance(described["creationDateTime"], float)
    assert admin.violations() == []


def test_control_plane_errors_carry_type_in_body_and_parse_in_boto3(admin, control):
    response = raw_request(
        admin.url,
        "/",
        {"datasetGroupArn": "arn:aws:personalize:us-east-1:123456789012:dataset-group/none"},
        target="AmazonPersonalize.DescribeDatasetGroup",
    )
    assert response.status == 400
    assert response.json()["__type"] == "ResourceNotFoundException"
    assert "dataset-group/none" in response.json()["message"]
    with pytest.raises(control.exceptions.ResourceNotFoundException):
        control.describe_dataset_group(datasetGroupArn="arn:aws:personalize:us-east-1:123456789012:dataset-group/none")


def test_runtime_errors_are_rest_json_with_error_type_header(admin, runtime):
    response = raw_request(admin.url, "/recommendations", {"campaignArn": CAMPAIGN, "userId": "u"})
    assert response.status == 404  # the runtime model gives ResourceNotFoundException httpStatusCode 404
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-amzn-errortype"] == "ResourceNotFoundException"
    assert "campaign/nowhere" in response.json()["message"]
    with pytest.raises(runtime.exceptions.ResourceNotFoundException):
        runtime.get_recommendations(campaignArn=CAMPAIGN, userId="u")


def test_a_request_without_sigv4_is_refused_and_recorded(admin):
    response = raw_request(admin.url, "/recommendations", {"campaignArn": CAMPAIGN, "userId": "u"}, sign_as=None)
    assert response.status == 403
    assert response.headers["x-amzn-errortype"] == "MissingAuthenticationTokenException"
    [violation] = admin.violations()
    assert (violation["kind"], violation["rule"]) == ("protocol", "missing signature")


def test_a_request_signed_for_another_service_is_refused(admin):
    response = raw_request(admin.url, "/recommendations", {"campaignArn": CAMPAIGN, "userId": "u"}, sign_as="s3")
    assert response.status == 403
    assert [v["rule"] for v in admin.violations()] == ["wrong signing name"]


def test_wrong_content_type_is_a_serialization_error(admin):
    response = raw_request(
        admin.url, "/", {"name": "g"}, target="AmazonPersonalize.CreateDatasetGroup", content_type="application/json"
    )
    assert response.status == 400
    assert response.json()["__type"] == "SerializationException"
    assert [v["rule"] for v in admin.violations()] == ["wrong content type"]


def test_malformed_json_is_a_serialization_error(admin):
    response = raw_request(admin.url, "/recommendations", b"{not json")
    assert response.status == 400
    assert response.headers["x-amzn-errortype"] == "SerializationException"
    assert [v["rule"] for v in admin.violations()] == ["malformed JSON"]


def test_unknown_target_and_unknown_route_are_recorded(admin):
    assert (
        raw_request(admin.url, "/", {}, target="AmazonPersonalize.MakeCoffee").json()["__type"]
        == "UnknownOperationException"
    )
    assert raw_request(admin.url, "/coffee", {}).status == 404
    assert [v["rule"] for v in admin.violations()] == ["unknown operation", "unknown operation"]


def test_a_modeled_operation_the_stand_in_lacks_fails_loudly(admin, control):
    with pytest.raises(ClientError) as raised:
        control.list_recipes()
    assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 501
    assert [v["kind"] for v in admin.violations()] == ["unsupported"]


def test_one_port_serves_all_three_apis(admin):
    control = make_client("personalize", admin.url)
    runtime = make_client("personalize-runtime", admin.url)
    events = make_client("personalize-events", admin.url)
    control.create_dataset_group(name="g")
    with pytest.raises(runtime.exceptions.ResourceNotFoundException):
        runtime.get_personalized_ranking(campaignArn=CAMPAIGN, userId="u", inputList=["a"])
    events.put_events(
        trackingId="tracking-1",
        userId="u",
        sessionId="s",
        eventList=[{"eventType": "enroll", "itemId": "A", "sentAt": 1_700_000_000}],
    )
    assert [(c["service"], c["operation"], c["status"]) for c in admin.calls()] == [
        ("personalize", "CreateDatasetGroup", 200),
        ("personalize-runtime", "GetPersonalizedRanking", 404),
        ("personalize-events", "PutEvents", 200),
    ]
    assert admin.violations() == []
