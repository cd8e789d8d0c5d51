"""Recommendations that mean something: trained on interactions imported from S3 (moto)."""

import pytest

from .conftest import cooccurrence_rows, deploy


@pytest.fixture
def deployed(control, s3, bucket):
    return deploy(control, s3, bucket, cooccurrence_rows())


def items(response, key="itemList"):
    return [item["itemId"] for item in response[key]]


def test_students_who_took_a_also_took_b(admin, runtime, deployed):
    response = runtime.get_recommendations(campaignArn=deployed.campaign, userId="only-a", numResults=5)
    assert items(response)[0] == "B"
    assert "A" not in items(response)  # seen items are never recommended
    assert response["recommendationId"].startswith("RID-")
    scores = [item["score"] for item in response["itemList"]]
    assert scores == sorted(scores, reverse=True) and all(0 < s <= 1 for s in scores)
    assert admin.violations() == []


def test_students_who_took_c_get_d(runtime, deployed):
    top = items(runtime.get_recommendations(campaignArn=deployed.campaign, userId="student-200", numResults=3))
    assert "C" not in top and "D" not in top  # student-200 took both already
    response = runtime.get_recommendations(campaignArn=deployed.campaign, userId="student-000", numResults=25)
    assert {"A", "B"}.isdisjoint(items(response))


def test_an_unknown_user_gets_the_popular_items(runtime, deployed):
    response = runtime.get_recommendations(campaignArn=deployed.campaign, userId="never-seen")
    # A: 161 students, B: 160, C and D: 140 each (ties break by item id).
    assert items(response)[:4] == ["A", "B", "C", "D"]
    assert len(response["itemList"]) == 25  # the default numResults


def test_num_results_is_respected(runtime, deployed):
    assert (
        len(runtime.get_recommendations(campaignArn=deployed.campaign, userId="only-a", numResults=3)["itemList"]) == 3
    )


def test_ranking_reorders_and_appends_unknown_items(admin, runtime, deployed):
    response = runtime.get_personalized_ranking(
        campaignArn=deployed.campaign, userId="only-a", inputList=["new-class", "elective-01", "D", "B", "also-new"]
    )
    ranked = items(response, "personalizedRanking")
    assert ranked[0] == "B"
    assert ranked[-2:] == ["new-class", "also-new"]
    assert sorted(ranked) == sorted(["new-class", "elective-01", "D", "B", "also-new"])
    assert admin.violations() == []


def test_live_events_count_as_history(runtime, events, deployed):
    events.put_events(
        trackingId="tracker",
        userId="newcomer",
        sessionId="session-1",
        eventList=[{"eventType": "enroll", "itemId": "C", "sentAt": 1_800_000_000}],
    )
    top = items(runtime.get_recommendations(campaignArn=deployed.campaign, userId="newcomer", numResults=3))
    assert top[0] == "D" and "C" not in top


def test_filters_are_checked(admin, control, runtime, deployed):
    flt = control.create_filter(
        name="not-enrolled",
        datasetGroupArn=deployed.group,
        filterExpression="EXCLUDE ItemID WHERE Interactions.EVENT_TYPE IN ($TYPES)",
    )["filterArn"]
    with pytest.raises(runtime.exceptions.InvalidInputException, match="ACTIVE"):
        runtime.get_recommendations(
            campaignArn=deployed.campaign, userId="only-a", filterArn=flt, filterValues={"TYPES": '"enroll"'}
        )
    admin.advance()
    ok = runtime.get_recommendations(
        campaignArn=deployed.campaign, userId="only-a", filterArn=flt, filterValues={"TYPES": '"enroll"'}
    )
    assert items(ok)[0] == "B"
    with pytest.raises(runtime.exceptions.InvalidInputException, match="placeholders"):
        runtime.get_recommendations(campaignArn=deployed.campaign, userId="only-a", filterArn=flt)
    with pytest.raises(runtime.exceptions.InvalidInputException, match="without a filterArn"):
        runtime.get_recommendations(campaignArn=deployed.campaign, userId="only-a", filterValues={"TYPES": '"x"'})
    with pytest.raises(runtime.exceptions.ResourceNotFoundException):
        runtime.get_recommendations(campaignArn=deployed.campaign, userId="only-a", filterArn=flt + "-gone")
    assert [v["rule"] for v in admin.violations()] == ["service rule", "service rule"]


def test_context_and_metadata_rules(runtime, deployed):
    response = runtime.get_recommendations(campaignArn=deployed.campaign, userId="only-a", context={"DEVICE": "mobile"})
    assert items(response)[0] == "B"
    with pytest.raises(runtime.exceptions.InvalidInputException, match="enableMetadataWithRecommendations"):
        runtime.get_recommendations(
            campaignArn=deployed.campaign, userId="only-a", metadataColumns={"ITEMS": ["TITLE"]}
        )


def test_a_campaign_serves_only_once_active(control, runtime, deployed):
    pending = control.create_campaign(name="later", solutionVersionArn=deployed.version)["campaignArn"]
    with pytest.raises(runtime.exceptions.ResourceNotFoundException, match="CREATE PENDING"):
        runtime.get_recommendations(campaignArn=pending, userId="only-a")


def test_related_items_campaigns_need_an_item(control, runtime, s3, bucket):
    d = deploy(
        control, s3, bucket, cooccurrence_rows(), recipe="arn:aws:personalize:::recipe/aws-similar-items", prefix="sims"
    )
    assert items(runtime.get_recommendations(campaignArn=d.campaign, itemId="C", numResults=1)) == ["D"]
    with pytest.raises(runtime.exceptions.InvalidInputException, match="itemId is required"):
        runtime.get_recommendations(campaignArn=d.campaign, userId="only-a")


def test_ids_with_commas_quotes_and_accents_survive_the_csv(runtime, control, s3, bucket):
    rows = cooccurrence_rows()
    # Written by csv.writer, so these are quoted exactly where needed, as our exporter writes them.
    rows += [(f'fan "{n}", of café', "café-101", 1_800_000_000 + n, "enroll") for n in range(30)]
    rows += [(f'fan "{n}", of café', 'intro, "the" course', 1_800_000_100 + n, "enroll") for n in range(30)]
    rows.append(("newbie", "café-101", 1_900_000_000, "enroll"))
    d = deploy(control, s3, bucket, rows, prefix="utf8")
    assert items(runtime.get_recommendations(campaignArn=d.campaign, userId="newbie", numResults=1)) == [
        'intro, "the" course'
    ]


def test_concurrent_clients_are_all_answered(admin, deployed):
    from concurrent.futures import ThreadPoolExecutor

    from .conftest import make_client

    def user(n):
        client = make_client("personalize-runtime", admin.url)
        return [
            client.get_recommendations(campaignArn=deployed.campaign, userId="only-a", numResults=2)["itemList"][0][
                "itemId"
            ]
            for _ in range(10)
        ]

    with ThreadPoolExecutor(max_workers=6) as pool:
        answers = [item for result in pool.map(user, range(6)) for item in result]
    assert answers == ["B"] * 60
    assert len(admin.calls("GetRecommendations")) == 60
    assert admin.violations() == []
