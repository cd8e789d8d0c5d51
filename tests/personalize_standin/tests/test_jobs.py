"""Jobs: status progression, name uniqueness, failures with reasons, metrics, campaign updates."""

import pytest

from .conftest import INTERACTIONS_SCHEMA, cooccurrence_rows, csv_bytes, deploy, finish

ROLE = "arn:aws:iam::123456789012:role/personalize"


@pytest.fixture
def dataset(control):
    group = control.create_dataset_group(name="jobs")["datasetGroupArn"]
    schema = control.create_schema(name="jobs", schema=INTERACTIONS_SCHEMA)["schemaArn"]
    return control.create_dataset(name="i", schemaArn=schema, datasetGroupArn=group, datasetType="Interactions")[
        "datasetArn"
    ]


def import_job(control, dataset, location, name="nightly-import-run1", **extra):
    return control.create_dataset_import_job(
        jobName=name, datasetArn=dataset, dataSource={"dataLocation": location}, roleArn=ROLE, **extra
    )["datasetImportJobArn"]


def statuses(describe, key, count):
    return [describe()[key]["status"] for _ in range(count)]


def test_import_job_goes_pending_in_progress_active_by_describe_calls(admin, control, s3, bucket, dataset):
    s3.put_object(Bucket=bucket, Key="export/interactions.csv", Body=csv_bytes(cooccurrence_rows()))
    arn = import_job(control, dataset, f"s3://{bucket}/export/interactions.csv")
    assert arn == "arn:aws:personalize:us-east-1:123456789012:dataset-import-job/nightly-import-run1"
    describe = lambda: control.describe_dataset_import_job(datasetImportJobArn=arn)  # noqa: E731
    assert statuses(describe, "datasetImportJob", 4) == ["CREATE PENDING", "CREATE IN_PROGRESS", "ACTIVE", "ACTIVE"]
    job = describe()["datasetImportJob"]
    assert job["roleArn"] == ROLE and job["importMode"] == "FULL" and "failureReason" not in job
    assert admin.violations() == []


def test_pending_describes_is_configurable(admin, control, s3, bucket, dataset):
    admin.config(pending_describes=0)
    s3.put_object(Bucket=bucket, Key="k.csv", Body=csv_bytes(cooccurrence_rows()))
    arn = import_job(control, dataset, f"s3://{bucket}/k.csv")
    assert control.describe_dataset_import_job(datasetImportJobArn=arn)["datasetImportJob"]["status"] == "ACTIVE"


def test_advance_finishes_everything_without_describes(admin, control, s3, bucket, dataset):
    s3.put_object(Bucket=bucket, Key="k.csv", Body=csv_bytes(cooccurrence_rows()))
    arn = import_job(control, dataset, f"s3://{bucket}/k.csv")
    assert arn in admin.advance()
    summaries = control.list_dataset_import_jobs(datasetArn=dataset)["datasetImportJobs"]
    assert [(s["datasetImportJobArn"], s["status"]) for s in summaries] == [(arn, "ACTIVE")]


def test_same_import_job_name_twice_is_resource_already_exists(admin, control, s3, bucket, dataset):
    s3.put_object(Bucket=bucket, Key="k.csv", Body=csv_bytes(cooccurrence_rows()))
    arn = import_job(control, dataset, f"s3://{bucket}/k.csv")
    # A pipeline resumed after a crash creates again, learns the job exists, and derives its ARN.
    with pytest.raises(control.exceptions.ResourceAlreadyExistsException, match="nightly-import-run1"):
        import_job(control, dataset, f"s3://{bucket}/k.csv")
    assert [j["datasetImportJobArn"] for j in control.list_dataset_import_jobs()["datasetImportJobs"]] == [arn]
    # Not a client mistake, the protocol for resuming: no violation.
    assert admin.violations() == []


def test_a_second_import_while_one_runs_is_resource_in_use(control, s3, bucket, dataset):
    s3.put_object(Bucket=bucket, Key="k.csv", Body=csv_bytes(cooccurrence_rows()))
    import_job(control, dataset, f"s3://{bucket}/k.csv", name="first")
    with pytest.raises(control.exceptions.ResourceInUseException):
        import_job(control, dataset, f"s3://{bucket}/k.csv", name="second")


def header_rows(n):
    return [(f"u{i % 50}", f"i{i % 30}", 1_700_000_000 + i, "enroll") for i in range(n)]


BAD_IMPORTS = {
    "wrong header": (
        csv_bytes(header_rows(1200), header=["USER_ID", "ITEM_ID", "EVENT_TYPE", "TIMESTAMP"]),
        "does not match the dataset schema",
    ),
    "too few rows": (csv_bytes(header_rows(999)), "999 interaction records; a dataset import job needs at least 1000"),
    "millisecond timestamps": (
        csv_bytes(header_rows(1199) + [("u1", "i1", 1_700_000_000_000, "enroll")]),
        "line 1201: TIMESTAMP 1700000000000 is not in seconds",
    ),
    "missing field": (csv_bytes(header_rows(1200)) + b"u1,i1,1700000000\n", "line 1202: 3 fields, the header has 4"),
    "empty user": (csv_bytes(header_rows(1200) + [("", "i1", 1_700_000_000, "enroll")]), "line 1202: USER_ID is empty"),
    "id over 256": (
        csv_bytes(header_rows(1200) + [("u" * 257, "i1", 1_700_000_000, "enroll")]),
        "USER_ID is 257 characters long",
    ),
    "not utf-8": (csv_bytes(header_rows(1200)) + "é,i,1,e\n".encode("latin-1"), "is not valid UTF-8"),
    "broken quoting": (csv_bytes(header_rows(1200)) + b'"u1,i1,1700000000,enroll\n', "malformed CSV"),
    "empty file": (b"", "is empty"),
}


@pytest.mark.parametrize("case", BAD_IMPORTS, ids=list(BAD_IMPORTS))
def test_bad_csv_fails_the_import_with_a_reason(admin, control, s3, bucket, dataset, case):
    body, reason = BAD_IMPORTS[case]
    s3.put_object(Bucket=bucket, Key="bad.csv", Body=body)
    arn = import_job(control, dataset, f"s3://{bucket}/bad.csv")
    job = finish(lambda: control.describe_dataset_import_job(datasetImportJobArn=arn), key="datasetImportJob")
    assert job["status"] == "CREATE FAILED"
    assert reason in job["failureReason"]
    assert admin.violations() == []


def test_missing_data_fails_the_import(control, bucket, dataset):
    arn = import_job(control, dataset, f"s3://{bucket}/nothing-here.csv")
    job = finish(lambda: control.describe_dataset_import_job(datasetImportJobArn=arn), key="datasetImportJob")
    assert (job["status"], "Input data not found" in job["failureReason"]) == ("CREATE FAILED", True)


def test_a_prefix_imports_every_csv_under_it(control, s3, bucket, dataset):
    rows = cooccurrence_rows()
    s3.put_object(Bucket=bucket, Key="run/part-0.csv", Body=csv_bytes(rows[:600]))
    s3.put_object(Bucket=bucket, Key="run/part-1.csv", Body=csv_bytes(rows[600:]))
    s3.put_object(Bucket=bucket, Key="run/manifest.json", Body=b"{}")
    arn = import_job(control, dataset, f"s3://{bucket}/run/")
    job = finish(lambda: control.describe_dataset_import_job(datasetImportJobArn=arn), key="datasetImportJob")
    assert job["status"] == "ACTIVE"


def test_an_injected_failure_ends_the_job_in_create_failed(admin, control, s3, bucket, dataset):
    s3.put_object(Bucket=bucket, Key="k.csv", Body=csv_bytes(cooccurrence_rows()))
    admin.fail(kind="DatasetImportJob", name="doomed", failureReason="Access Denied to the S3 location")
    ok = import_job(control, dataset, f"s3://{bucket}/k.csv", name="fine")
    finish(lambda: control.describe_dataset_import_job(datasetImportJobArn=ok), key="datasetImportJob")
    doomed = import_job(control, dataset, f"s3://{bucket}/k.csv", name="doomed")
    job = finish(lambda: control.describe_dataset_import_job(datasetImportJobArn=doomed), key="datasetImportJob")
    assert (job["status"], job["failureReason"]) == ("CREATE FAILED", "Access Denied to the S3 location")


def test_solution_versions_progress_fail_and_keep_names_unique(admin, control, s3, bucket):
    d = deploy(control, s3, bucket, cooccurrence_rows())
    with pytest.raises(control.exceptions.ResourceAlreadyExistsException):
        control.create_solution_version(solutionArn=d.solution, name="t-v1")
    admin.fail(kind="SolutionVersion", failureReason="AlgorithmError: training diverged")
    failed = control.create_solution_version(solutionArn=d.solution, name="t-v2", trainingMode="UPDATE")[
        "solutionVersionArn"
    ]
    describe = lambda: control.describe_solution_version(solutionVersionArn=failed)  # noqa: E731
    assert statuses(describe, "solutionVersion", 3) == ["CREATE PENDING", "CREATE IN_PROGRESS", "CREATE FAILED"]
    version = describe()["solutionVersion"]
    assert (version["name"], version["trainingMode"], version["failureReason"]) == (
        "t-v2",
        "UPDATE",
        "AlgorithmError: training diverged",
    )
    listed = control.list_solution_versions(solutionArn=d.solution)["solutionVersions"]
    assert [(v["solutionVersionArn"], v["status"]) for v in listed] == [
        (failed, "CREATE FAILED"),
        (d.version, "ACTIVE"),
    ]
    with pytest.raises(control.exceptions.ResourceInUseException):
        control.get_solution_metrics(solutionVersionArn=failed)
    assert admin.violations() == []


def test_training_on_too_little_data_fails_with_a_reason(control, s3, bucket):
    # 1,000 rows pass the import, but only 20 users have two or more interactions.
    rows = [(f"u{i}", f"i{i % 7}", 1_700_000_000 + i, "enroll") for i in range(980)]
    rows += [(f"u{i}", "extra", 1_700_100_000 + i, "enroll") for i in range(20)]
    with pytest.raises(AssertionError, match="Insufficient data for training"):
        deploy(control, s3, bucket, rows)


def test_update_training_needs_a_user_personalization_solution(control, s3, bucket):
    d = deploy(control, s3, bucket, cooccurrence_rows(), recipe="arn:aws:personalize:::recipe/aws-similar-items")
    with pytest.raises(control.exceptions.InvalidInputException, match="UPDATE"):
        control.create_solution_version(solutionArn=d.solution, trainingMode="UPDATE")


def test_metrics_are_plausible_and_deterministic(control, s3, bucket):
    d = deploy(control, s3, bucket, cooccurrence_rows())
    again = control.create_solution_version(solutionArn=d.solution, name="t-v1-again")["solutionVersionArn"]
    finish(lambda: control.describe_solution_version(solutionVersionArn=again), key="solutionVersion")
    first = control.get_solution_metrics(solutionVersionArn=d.version)["metrics"]
    assert first == control.get_solution_metrics(solutionVersionArn=again)["metrics"]
    assert {
        "coverage",
        "mean_reciprocal_rank_at_25",
        "normalized_discounted_cumulative_gain_at_10",
        "precision_at_10",
    } <= set(first)
    assert all(0.0 <= value <= 1.0 for value in first.values())
    # Each student's last elective is held out; co-occurrence finds some, so the metrics are not zero.
    assert first["normalized_discounted_cumulative_gain_at_10"] > 0.0


def test_campaign_update_switches_version_only_when_active(admin, control, s3, bucket):
    d = deploy(control, s3, bucket, cooccurrence_rows())
    new = control.create_solution_version(solutionArn=d.solution, name="t-v2")["solutionVersionArn"]
    finish(lambda: control.describe_solution_version(solutionVersionArn=new), key="solutionVersion")
    control.update_campaign(campaignArn=d.campaign, solutionVersionArn=new, minProvisionedTPS=2)
    with pytest.raises(control.exceptions.ResourceInUseException):
        control.update_campaign(campaignArn=d.campaign, solutionVersionArn=new)
    seen = []
    for _ in range(3):
        campaign = control.describe_campaign(campaignArn=d.campaign)["campaign"]
        seen.append((campaign["latestCampaignUpdate"]["status"], campaign["solutionVersionArn"], campaign["status"]))
    assert seen == [
        ("CREATE PENDING", d.version, "ACTIVE"),
        ("CREATE IN_PROGRESS", d.version, "ACTIVE"),
        ("ACTIVE", new, "ACTIVE"),
    ]
    assert campaign["minProvisionedTPS"] == 2
    assert admin.violations() == []


def test_a_failed_campaign_update_keeps_the_old_version(admin, control, s3, bucket):
    d = deploy(control, s3, bucket, cooccurrence_rows())
    new = control.create_solution_version(solutionArn=d.solution, name="t-v2")["solutionVersionArn"]
    admin.advance()
    admin.fail(kind="CampaignUpdate", failureReason="Internal error deploying the solution version")
    control.update_campaign(campaignArn=d.campaign, solutionVersionArn=new)
    campaign = finish(lambda: control.describe_campaign(campaignArn=d.campaign), key="campaign")
    campaign = finish(lambda: control.describe_campaign(campaignArn=d.campaign), key="campaign", status_key="status")
    for _ in range(3):
        campaign = control.describe_campaign(campaignArn=d.campaign)["campaign"]
    assert campaign["latestCampaignUpdate"]["status"] == "CREATE FAILED"
    assert campaign["latestCampaignUpdate"]["failureReason"] == "Internal error deploying the solution version"
    assert campaign["solutionVersionArn"] == d.version


def test_campaigns_need_an_active_version(control, s3, bucket):
    d = deploy(control, s3, bucket, cooccurrence_rows())
    pending = control.create_solution_version(solutionArn=d.solution, name="t-v2")["solutionVersionArn"]
    with pytest.raises(control.exceptions.ResourceInUseException, match="CREATE PENDING"):
        control.update_campaign(campaignArn=d.campaign, solutionVersionArn=pending)
    with pytest.raises(control.exceptions.ResourceNotFoundException):
        control.update_campaign(campaignArn=d.campaign, solutionVersionArn=d.solution + "/00000000")


def test_a_pipeline_resumed_after_each_crash_ends_with_one_job_and_one_version(admin, control, s3, bucket, dataset):
    """The retrain pipeline's contract: names derive from the run id, so a retried step finds its job."""
    s3.put_object(Bucket=bucket, Key="run-7/interactions.csv", Body=csv_bytes(cooccurrence_rows()))
    solution = control.create_solution(
        name="nightly", datasetGroupArn=control.describe_dataset(datasetArn=dataset)["dataset"]["datasetGroupArn"]
    )["solutionArn"]
    admin.advance()

    def import_step():
        try:
            return import_job(control, dataset, f"s3://{bucket}/run-7/interactions.csv", name="nightly-import-run-7")
        except control.exceptions.ResourceAlreadyExistsException:
            return "arn:aws:personalize:us-east-1:123456789012:dataset-import-job/nightly-import-run-7"

    def training_step():
        try:
            return control.create_solution_version(solutionArn=solution, name="nightly-run-7")["solutionVersionArn"]
        except control.exceptions.ResourceAlreadyExistsException:
            for summary in control.list_solution_versions(solutionArn=solution)["solutionVersions"]:
                arn = summary["solutionVersionArn"]
                if (
                    control.describe_solution_version(solutionVersionArn=arn)["solutionVersion"].get("name")
                    == "nightly-run-7"
                ):
                    return arn
            raise

    job = import_step()
    assert import_step() == job  # crashed after Importing, resumed
    finish(lambda: control.describe_dataset_import_job(datasetImportJobArn=job), key="datasetImportJob")
    assert import_step() == job  # crashed after Imported, resumed
    version = training_step()
    assert training_step() == version  # crashed after Training, resumed
    finish(lambda: control.describe_solution_version(solutionVersionArn=version), key="solutionVersion")
    assert training_step() == version  # crashed after Trained, resumed
    state = admin.call("GET", "state")
    assert list(state["datasetImportJobs"]) == [job]
    assert list(state["solutionVersions"]) == [version]
    assert admin.violations() == []
