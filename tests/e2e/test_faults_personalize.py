"""Point 3, Personalize failing under a running API: throttling, 5xx and answers slower than the client
timeout (300 ms) injected by the stand-in. Every request must still be answered within 500 ms, from the
popular items, flagged `source: fallback` with the reason. The 500 ms is the product requirement, so it is
asserted here, per request, measured by the client; the 300 ms timeout with no retries is the mechanism.
"""

from __future__ import annotations

import csv
import io
import time
from concurrent.futures import ThreadPoolExecutor

from . import story
from .apps import ranking, start_api
from .aws import aws_env, bootstrap_personalize, client, unique
from .harness import clean_env, http, wait_until

BUDGET_S = 0.5
USER = "s-2000"  # an A-and-B student the campaign knows
RERANK = "items=elective-01,math-101,physics-101,lab-101"

FAULTS = [
    # (stand-in fault, the reason the API must give)
    ({"kind": "throttle"}, "throttled"),  # 400 ThrottlingException, as Personalize sends it
    ({"kind": "throttle", "status": 429}, "throttled"),
    ({"kind": "server_error"}, "backend_error"),  # 500 InternalFailure
    ({"kind": "server_error", "status": 503}, "backend_error"),  # 503 ServiceUnavailable
    ({"kind": "delay", "delay_ms": 800}, "timeout"),  # answers, but long after the 300 ms deadline
]


def story_csv() -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["USER_ID", "ITEM_ID", "TIMESTAMP", "EVENT_TYPE", "EVENT_VALUE"])
    for e in story.interactions(story.whole_term()):
        writer.writerow([e.detail["studentId"], e.detail["classId"], int(e.time.timestamp()), "enrolled", ""])
    return out.getvalue().encode()


def test_throttling_5xx_and_slowness_are_answered_from_the_fallback_within_500_ms(
    processes, bins, moto, standin, tmp_path
):
    s3 = client("s3", moto.s3)
    bucket = unique("ranking-data")
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="bootstrap/interactions.csv", Body=story_csv())
    deployment = bootstrap_personalize(
        client("personalize", standin.url), f"s3://{bucket}/bootstrap/interactions.csv", unique("ranking")
    )
    env = clean_env(
        **aws_env(moto, tmp_path, PERSONALIZE_RUNTIME=standin.url),
        DATA_DIR=str(tmp_path / "api"),  # seeded with the demo data: the popular items to fall back on
        PERSONALIZE_CAMPAIGN_ARN=deployment.campaign,
        PERSONALIZE_RANKING_CAMPAIGN_ARN=deployment.campaign,
        PERSONALIZE_TIMEOUT_MS="300",
    )
    api = start_api(processes, bins, env)
    # The store's popular items load in the background right after start: wait until the API says
    # its fallback can answer, as a load balancer's readiness check would.
    def fallback_ready():
        health = http("GET", f"{api.url}/health").json()
        return health.get("fallbackReady") is True, health

    wait_until(fallback_ready, timeout=10, what="/health to report fallbackReady")

    def ask(query: str):
        response = ranking(api, USER, query)
        assert response.status == 200, response.body
        return response.seconds, response.json()

    # All well: Personalize answers both kinds of request.
    for query in ("numResults=10", RERANK):
        _, answer = ask(query)
        assert answer["source"] == "personalize", answer

    for fault, reason in FAULTS:
        standin._call("DELETE", "calls")
        standin.fault(operation="*", count=None, **fault)
        queries = ["numResults=10", RERANK] * 10
        sequential = [ask(q) for q in queries]
        with ThreadPoolExecutor(8) as pool:
            concurrent = list(pool.map(ask, queries))
        standin.clear_faults()

        for seconds, answer in sequential + concurrent:
            assert seconds < BUDGET_S, f"{fault}: answered in {seconds * 1000:.0f} ms"
            assert answer["source"] == "fallback", f"{fault}: {answer}"
            assert answer["items"], f"{fault}: the fallback has popular items to give"
        # One at a time, the stand-in answers well within the deadline, so each answer names the fault.
        # Eight at once, the (Python) stand-in itself can take longer than the 300 ms deadline on a busy
        # machine: then the API rightly gives up first and says `timeout`, still within the budget.
        for _, answer in sequential:
            assert answer["fallback"]["reason"] == reason, f"{fault}: {answer['fallback']}"
        for _, answer in concurrent:
            assert answer["fallback"]["reason"] in (reason, "timeout"), f"{fault}: {answer['fallback']}"
        slowest = max(seconds for seconds, _ in sequential + concurrent)
        print(f"[e2e] {fault} -> {reason}: 40 requests, slowest {slowest * 1000:.0f} ms")

        # The API did ask Personalize every time (and gave up on the slow ones). A delayed call is logged
        # once the stand-in's delay is over.
        def logged():
            calls = standin.calls()
            asked = [c for c in calls if c["operation"] in ("GetRecommendations", "GetPersonalizedRanking")]
            return len(asked) >= 40, asked

        if fault["kind"] == "delay":
            # On a loaded machine the 300 ms deadline can pass before a request is even sent: that request
            # is a timeout the stand-in never sees. So: wait until every slow call has been logged (the
            # stand-in logs a call when its delay is over), then every call that arrived was hung up on.
            time.sleep(2 * fault["delay_ms"] / 1000)
            asked = logged()[1]
            assert 0 < len(asked) <= 40 and all(c["fault"] for c in asked), f"{fault}: {len(asked)} calls"
            assert all(c["client_gone"] for c in asked), "the API hung up on every slow answer"
            print(f"[e2e] {fault}: {len(asked)} of 40 requests reached the stand-in before the deadline")
        else:
            # Every answer that names the fault reached the stand-in. An eight-at-once answer that says
            # `timeout` instead may never have been sent (the same loaded-machine case as above).
            timed_out = sum(1 for _, answer in concurrent if answer["fallback"]["reason"] == "timeout")
            reached = 40 - timed_out
            asked = wait_until(
                lambda: (len(logged()[1]) >= reached, logged()[1]),
                timeout=5,
                what=f"{fault}: the stand-in to log {reached} calls",
            )
            assert reached <= len(asked) <= 40 and all(c["fault"] for c in asked), f"{fault}: {len(asked)} calls"

        # The fault cleared, the next request is Personalize's again: nothing was cached or tripped.
        _, answer = ask("numResults=10")
        assert answer["source"] == "personalize", f"after {fault}: {answer}"

    assert standin.violations() == []
