"""Every request is checked against the model (and the documented limits); so are our own responses."""

import pytest
from botocore.exceptions import ClientError

from .conftest import raw_request

CAMPAIGN = "arn:aws:personalize:us-east-1:123456789012:campaign/nowhere"
DATASET = "arn:aws:personalize:us-east-1:123456789012:dataset/g/INTERACTIONS"


def rules(admin):
    return [(v["kind"], v["rule"], v["path"]) for v in admin.violations()]


def test_num_results_above_500_is_invalid_input(admin, runtime):
    with pytest.raises(runtime.exceptions.InvalidInputException, match="numResults 501"):
        runtime.get_recommendations(campaignArn=CAMPAIGN, userId="u", numResults=501)
    assert rules(admin) == [("rule", "service rule", "numResults")]


def test_missing_campaign_arn_is_invalid_input(admin, runtime):
    # campaignArn is optional in the model (recommenderArn is the alternative); the service needs one.
    with pytest.raises(runtime.exceptions.InvalidInputException, match="campaignArn"):
        runtime.get_recommendations(userId="u")
    assert rules(admin) == [("rule", "service rule", "campaignArn")]


def test_missing_required_member_is_named(admin):
    response = raw_request(admin.url, "/personalize-ranking", {"campaignArn": CAMPAIGN, "userId": "u"})
    assert response.status == 400
    assert response.headers["x-amzn-errortype"] == "InvalidInputException"
    assert "'inputList' failed to satisfy constraint: Member must not be null" in response.json()["message"]
    assert rules(admin) == [("input", "missing required field", "inputList")]


def test_unknown_member_is_rejected(admin):
    response = raw_request(
        admin.url, "/recommendations", {"campaignArn": CAMPAIGN, "userId": "u", "numberOfResults": 5}
    )
    assert response.status == 400
    assert "numberOfResults" in response.json()["message"]
    assert rules(admin) == [("input", "unknown field", "numberOfResults")]


@pytest.mark.parametrize("value", ["10", 10.5, True, None], ids=["string", "fraction", "boolean", "null"])
def test_wrong_type_is_rejected(admin, value):
    response = raw_request(admin.url, "/recommendations", {"campaignArn": CAMPAIGN, "userId": "u", "numResults": value})
    assert response.status == 400
    assert rules(admin) == [("input", "invalid type", "numResults")]


def test_nested_wrong_type_is_found(admin):
    response = raw_request(
        admin.url, "/recommendations", {"campaignArn": CAMPAIGN, "userId": "u", "context": {"device": 3}}
    )
    assert response.status == 400
    assert rules(admin) == [("input", "invalid type", "context.device")]


def test_too_long_id_is_rejected_although_boto3_sends_it(admin, runtime):
    with pytest.raises(runtime.exceptions.InvalidInputException, match="length less than or equal to 256"):
        runtime.get_recommendations(campaignArn=CAMPAIGN, userId="u" * 257)
    assert rules(admin) == [("input", "too long", "userId")]


def test_enum_is_checked(admin, control):
    with pytest.raises(control.exceptions.InvalidInputException, match="enum value set: \\[FULL, INCREMENTAL\\]"):
        control.create_dataset_import_job(
            jobName="j", datasetArn=DATASET, dataSource={"dataLocation": "s3://b/k"}, importMode="PARTIAL"
        )
    assert rules(admin) == [("input", "not in enum", "importMode")]


def test_pattern_is_checked(admin, control):
    with pytest.raises(control.exceptions.InvalidInputException, match="regular expression pattern"):
        control.create_dataset_import_job(
            jobName="-starts-with-dash", datasetArn=DATASET, dataSource={"dataLocation": "s3://b/k"}
        )
    assert rules(admin) == [("input", "pattern mismatch", "jobName")]


def test_every_violation_of_one_request_is_reported(admin):
    response = raw_request(
        admin.url,
        "/",
        {"jobName": "", "datasetArn": "not-an-arn", "dataSource": {}, "extra": 1},
        target="AmazonPersonalize.CreateDatasetImportJob",
    )
    message = response.json()["message"]
    assert message.startswith("4 validation errors detected")
    assert sorted(r[1:] for r in rules(admin)) == [
        ("invalid length", "jobName"),
        ("pattern mismatch", "datasetArn"),
        ("pattern mismatch", "jobName"),
        ("unknown field", "extra"),
    ]


def test_ranking_input_above_500_is_invalid(admin, runtime):
    with pytest.raises(runtime.exceptions.InvalidInputException, match="inputList has 501"):
        runtime.get_personalized_ranking(campaignArn=CAMPAIGN, userId="u", inputList=[f"i{n}" for n in range(501)])


def test_valid_requests_leave_no_violation(admin, control):
    control.create_dataset_group(name="g")
    control.list_dataset_import_jobs(maxResults=5)
    assert admin.violations() == []


@pytest.fixture
def inprocess():
    """A stand-in in this process, so a test can break it on purpose."""
    from .. import start

    server, url = start()
    yield server, url
    server.shutdown()
    server.server_close()


def test_a_response_that_breaks_the_model_becomes_a_500_not_a_good_answer(inprocess):
    from .conftest import Admin, make_client

    server, url = inprocess
    state = server.standin.state
    state.handlers["DescribeDatasetGroup"] = lambda params, region: {
        "datasetGroup": {"name": "g", "status": 7, "colour": "blue"}
    }
    control = make_client("personalize", url)
    with pytest.raises(Exception) as raised:
        control.describe_dataset_group(datasetGroupArn="arn:aws:personalize:us-east-1:123456789012:dataset-group/g")
    assert raised.value.response["Error"]["Code"] == "InternalFailure"
    assert "stand-in bug" in raised.value.response["Error"]["Message"]
    assert sorted((v["kind"], v["rule"], v["path"]) for v in Admin(url).violations()) == [
        ("output", "invalid type", "datasetGroup.status"),
        ("output", "unknown field", "datasetGroup.colour"),
    ]


def test_an_undeclared_error_code_is_a_stand_in_bug(inprocess):
    from ..state import ServiceError
    from .conftest import Admin, make_client

    server, url = inprocess

    def broken(params, region):
        raise ServiceError("ResourceInUseException", "DescribeSchema does not declare this")

    server.standin.state.handlers["DescribeSchema"] = broken
    with pytest.raises(ClientError, match="ResourceInUseException"):
        make_client("personalize", url).describe_schema(schemaArn="arn:aws:personalize:us-east-1:123456789012:schema/s")
    assert [(v["kind"], v["rule"]) for v in Admin(url).violations()] == [("output", "undeclared error")]


def test_output_patterns_are_not_enforced_but_input_patterns_are():
    import botocore.session

    from ..models import StrictValidator

    model = botocore.session.get_session().get_service_model("personalize")
    job = model.shape_for("DatasetImportJob")
    # The real service answers an IAM role ARN here although the shape's pattern says ":personalize:".
    answer = {"roleArn": "arn:aws:iam::123456789012:role/personalize"}
    assert StrictValidator(check_patterns=False).violations(answer, job) == []
    assert [v.rule for v in StrictValidator(check_patterns=True).violations(answer, job)] == ["pattern mismatch"]
