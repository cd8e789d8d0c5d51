"""Point 3, S3 failing in the middle of an export: the fault proxy sits between training-export and moto for
S3 only (`AWS_ENDPOINT_URL_S3`) and fails the second `UploadPart` of the CSV, after the first part went up.

The fault is persistent on purpose: the SDK retries 5xx by itself, so a one-off 500 would be absorbed and
prove nothing about our code. Two kinds:
* `500 InternalError` on every attempt: transient by S3's own definition. The SDK retries it, gives up, the
  export aborts everything; the run stays in Exporting with the error recorded, and the next invocation
  (`advance`, the 10-minute tick) completes it once S3 is back.
* `403 AccessDenied`: the SDK does not retry it; the run ends Failed{Export} with the reason, and a new run
  completes once the permission is fixed.
Either way no object of the run is visible (there is no manifest, and nothing without one), and no
multipart upload is left open.
"""

from __future__ import annotations

from .apps import pipeline_response, training_export
from .aws import aws_env, client, unique
from .faultproxy import FaultProxy, s3_error
from .harness import clean_env

# 12,000 demo students: about 160,000 interactions, a CSV of about 6.6 MB, two 5 MiB parts.
STUDENTS = "12000"


def second_part(request) -> bool:
    return request.query.get("partNumber") == ["2"] and request.path.endswith("/interactions.csv")


def visible(s3, bucket: str, run_id: str) -> list[str]:
    listing = s3.list_objects_v2(Bucket=bucket, Prefix=f"exports/{run_id}/")
    return sorted(o["Key"] for o in listing.get("Contents", []))


def open_uploads(s3, bucket: str) -> list[str]:
    return [u["Key"] for u in s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])]


def test_an_upload_failing_mid_export_leaves_nothing_and_a_rerun_completes(processes, bins, moto, tmp_path):
    s3 = client("s3", moto.s3)
    bucket = unique("ranking-data")
    s3.create_bucket(Bucket=bucket)
    data = tmp_path / "data"
    seeded = processes.run(
        "ranking-api seed-demo",
        [str(bins["ranking-api"]), "seed-demo", "--students", STUDENTS],
        clean_env(DATA_DIR=str(data)),
    )
    assert seeded.returncode == 0, seeded.describe()

    with FaultProxy(moto.s3) as proxy:
        env = clean_env(
            **aws_env(moto, tmp_path, S3=proxy.url), DATA_DIR=str(data), DATA_BUCKET=bucket, PART_SIZE_MIB="5"
        )

        # 1. A persistent 500 on part 2: retried by the SDK, then the export gives up and aborts.
        proxy.inject(
            s3_error(
                500, "InternalError", "We encountered an internal error.", operation="UploadPart", when=second_part
            )
        )
        run = pipeline_response(training_export(processes, bins, env, "export"))["run"]
        assert run["status"] == "Exporting", run
        assert "S3 UploadPart on s3://" in run["lastError"], run["lastError"]
        assert run["lastError"].endswith("InternalError: We encountered an internal error. (HTTP 500)"), run[
            "lastError"
        ]
        parts = [(s.request.query["partNumber"][0], s.status) for s in proxy.calls("UploadPart")]
        print(f"[e2e] S3 500 on part 2: parts {parts}; lastError: {run['lastError']}")
        assert parts[0] == ("1", 200), parts
        assert len([p for p in parts if p == ("2", 500)]) >= 2, f"the SDK retried the 500 itself: {parts}"
        assert [s.status for s in proxy.calls("AbortMultipartUpload")] == [204]
        assert visible(s3, bucket, run["runId"]) == [], "no manifest, so nothing of the run may be visible"
        assert open_uploads(s3, bucket) == []

        # S3 is back: the next invocation exports again and completes the same run.
        proxy.clear()
        resumed = pipeline_response(training_export(processes, bins, env, "advance"))["run"]
        assert (resumed["runId"], resumed["status"]) == (run["runId"], "Done"), resumed
        keys = visible(s3, bucket, run["runId"])
        assert [k.rsplit("/", 1)[1] for k in keys] == ["interactions.csv", "interactions.parquet", "manifest.json"]
        csv = s3.head_object(Bucket=bucket, Key=f"exports/{run['runId']}/interactions.csv")
        assert csv["ETag"].strip('"').endswith("-2"), "the CSV went up in two parts"
        assert open_uploads(s3, bucket) == []

        # 2. A 403 on part 2: not retried; the run fails for good, with the reason.
        proxy.inject(s3_error(403, "AccessDenied", "Access Denied", operation="UploadPart", when=second_part))
        before = len(proxy.calls("UploadPart"))
        failed_run = training_export(processes, bins, env, "export", expect=1)
        failed = pipeline_response(failed_run)["run"]
        assert (failed["status"], failed["step"]) == ("Failed", "Export"), failed
        assert "S3 UploadPart on s3://" in failed["reason"], failed["reason"]
        assert failed["reason"].endswith("AccessDenied: Access Denied (HTTP 403)"), failed["reason"]
        parts = [(s.request.query["partNumber"][0], s.status) for s in proxy.calls("UploadPart")[before:]]
        print(f"[e2e] S3 403 on part 2: parts {parts}; reason: {failed['reason']}")
        assert parts == [("1", 200), ("2", 403)], f"a 403 is not retried: {parts}"
        assert visible(s3, bucket, failed["runId"]) == []
        assert open_uploads(s3, bucket) == []

        # The permission fixed, a new run completes.
        proxy.clear()
        rerun = pipeline_response(training_export(processes, bins, env, "export"))["run"]
        assert rerun["status"] == "Done" and rerun["runId"] != failed["runId"], rerun
        assert len(visible(s3, bucket, rerun["runId"])) == 3
