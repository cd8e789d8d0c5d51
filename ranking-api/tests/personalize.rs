//! The Personalize adapter against the SDK's own mocks (aws-smithy-mocks), and a
//! real socket that never answers for the timeout.

use std::collections::BTreeMap;
use std::time::Duration;

use aws_sdk_personalizeruntime::Client;
use aws_sdk_personalizeruntime::config::retry::RetryConfig;
use aws_sdk_personalizeruntime::error::ErrorMetadata;
use aws_sdk_personalizeruntime::operation::get_personalized_ranking::GetPersonalizedRankingOutput;
use aws_sdk_personalizeruntime::operation::get_recommendations::{
    GetRecommendationsError, GetRecommendationsOutput,
};
use aws_sdk_personalizeruntime::types::PredictedItem;
use aws_sdk_personalizeruntime::types::error::{InvalidInputException, ResourceNotFoundException};
use aws_smithy_mocks::{Rule, RuleMode, mock, mock_client};
use aws_smithy_runtime_api::http::{Response as HttpResponse, StatusCode};
use aws_smithy_types::body::SdkBody;
use ranking_api::backends::personalize::{PersonalizeRecommender, client_config};
use ranking_api::port::{
    BackendError, FallbackReason, RecommendRequest, Recommender, RerankRequest, ResolvedFilter,
};

const CAMPAIGN: &str = "arn:aws:personalize:ap-southeast-1:123456789012:campaign/courses";
const RANKING: &str = "arn:aws:personalize:ap-southeast-1:123456789012:campaign/courses-ranking";
const FILTER: &str = "arn:aws:personalize:ap-southeast-1:123456789012:filter/unseen";

fn adapter(rules: &[&Rule]) -> PersonalizeRecommender {
    let client = mock_client!(aws_sdk_personalizeruntime, RuleMode::Sequential, rules, |b| b
        .retry_config(RetryConfig::disabled()));
    PersonalizeRecommender::new(
        client,
        Some(CAMPAIGN.into()),
        Some(RANKING.into()),
        Duration::from_millis(300),
    )
}

fn request() -> RecommendRequest {
    RecommendRequest {
        user_id: "s-0001".parse().unwrap(),
        num_results: 2,
        filter: Some(ResolvedFilter {
            name: "unseen".into(),
            arn: FILTER.into(),
            values: BTreeMap::from([("SUBJECT".into(), "\"math\"".into())]),
        }),
        context: BTreeMap::from([("DEVICE".into(), "mobile".into())]),
    }
}

fn item(id: &str, score: f64) -> PredictedItem {
    PredictedItem::builder().item_id(id).score(score).build()
}

async fn reason_for(rule: Rule) -> FallbackReason {
    match adapter(&[&rule]).recommend(&request()).await {
        Err(BackendError::Unavailable { reason, .. }) => reason,
        other => panic!("expected the fallback, got {other:?}"),
    }
}

#[tokio::test]
async fn recommends_with_everything_passed_through() {
    let rule = mock!(Client::get_recommendations)
        .match_requests(|r| {
            r.campaign_arn() == Some(CAMPAIGN)
                && r.user_id() == Some("s-0001")
                && r.num_results() == Some(2)
                && r.filter_arn() == Some(FILTER)
                && r.filter_values().and_then(|v| v.get("SUBJECT")).map(String::as_str) == Some("\"math\"")
                && r.context().and_then(|c| c.get("DEVICE")).map(String::as_str) == Some("mobile")
        })
        .then_output(|| {
            GetRecommendationsOutput::builder()
                .item_list(item("math-201", 0.61))
                .item_list(item("cs-101", 0.22))
                .recommendation_id("RID-abc")
                .build()
        });
    let ranked = adapter(&[&rule]).recommend(&request()).await.unwrap();
    let ids: Vec<&str> = ranked.items.iter().map(|i| i.item_id.as_str()).collect();
    assert_eq!(ids, ["math-201", "cs-101"]);
    assert_eq!(ranked.items[0].score, Some(0.61));
    assert_eq!(ranked.recommendation_id.as_deref(), Some("RID-abc"));
    assert_eq!(rule.num_calls(), 1);
}

#[tokio::test]
async fn reranks_on_the_ranking_campaign() {
    let rule = mock!(Client::get_personalized_ranking)
        .match_requests(|r| r.campaign_arn() == Some(RANKING) && r.input_list() == ["a", "b", "c"])
        .then_output(|| {
            GetPersonalizedRankingOutput::builder()
                .personalized_ranking(item("c", 0.5))
                .personalized_ranking(item("a", 0.3))
                .personalized_ranking(item("b", 0.2))
                .recommendation_id("RID-rank")
                .build()
        });
    let request = RerankRequest {
        user_id: "s-0001".parse().unwrap(),
        items: ["a", "b", "c"].iter().map(|s| s.parse().unwrap()).collect(),
        filter: None,
        context: BTreeMap::new(),
    };
    let ranked = adapter(&[&rule]).rerank(&request).await.unwrap();
    let ids: Vec<&str> = ranked.items.iter().map(|i| i.item_id.as_str()).collect();
    assert_eq!(ids, ["c", "a", "b"]);
}

#[tokio::test]
async fn throttling_goes_to_the_fallback() {
    // Throttling is not modelled for the runtime API: it arrives as a bare error code.
    let rule = mock!(Client::get_recommendations).then_error(|| {
        GetRecommendationsError::generic(
            ErrorMetadata::builder().code("ThrottlingException").message("Rate exceeded").build(),
        )
    });
    assert_eq!(reason_for(rule).await, FallbackReason::Throttled);
}

#[tokio::test]
async fn throttling_on_the_wire_goes_to_the_fallback() {
    let rule = mock!(Client::get_recommendations).then_http_response(|| {
        HttpResponse::new(StatusCode::try_from(429).unwrap(), SdkBody::from(r#"{"message":"Rate exceeded"}"#))
    });
    assert_eq!(reason_for(rule).await, FallbackReason::Throttled);
}

#[tokio::test]
async fn server_errors_go_to_the_fallback() {
    let rule = mock!(Client::get_recommendations).then_http_response(|| {
        let mut response = HttpResponse::new(
            StatusCode::try_from(503).unwrap(),
            SdkBody::from(r#"{"message":"Service Unavailable"}"#),
        );
        response.headers_mut().insert("x-amzn-errortype", "ServiceUnavailableException");
        response
    });
    assert_eq!(reason_for(rule).await, FallbackReason::BackendError);
}

#[tokio::test]
async fn a_missing_campaign_goes_to_the_fallback() {
    let rule = mock!(Client::get_recommendations).then_error(|| {
        GetRecommendationsError::ResourceNotFoundException(
            ResourceNotFoundException::builder().message("campaign not found").build(),
        )
    });
    assert_eq!(reason_for(rule).await, FallbackReason::CampaignNotFound);
}

#[tokio::test]
async fn invalid_input_is_the_callers_error() {
    let rule = mock!(Client::get_recommendations).then_error(|| {
        GetRecommendationsError::InvalidInputException(
            InvalidInputException::builder().message("bad filter values").build(),
        )
    });
    match adapter(&[&rule]).recommend(&request()).await {
        Err(BackendError::InvalidInput(message)) => assert_eq!(message, "bad filter values"),
        other => panic!("expected InvalidInput, got {other:?}"),
    }
}

#[tokio::test]
async fn no_ranking_campaign_means_not_configured() {
    let client = mock_client!(aws_sdk_personalizeruntime, RuleMode::Sequential, &[] as &[&Rule]);
    let adapter =
        PersonalizeRecommender::new(client, Some(CAMPAIGN.into()), None, Duration::from_millis(300));
    let request = RerankRequest {
        user_id: "u".parse().unwrap(),
        items: vec!["a".parse().unwrap()],
        filter: None,
        context: BTreeMap::new(),
    };
    assert!(matches!(
        adapter.rerank(&request).await,
        Err(BackendError::Unavailable { reason: FallbackReason::NotConfigured, .. })
    ));
}

/// A server that accepts connections and never answers: the slowest Personalize.
#[tokio::test]
async fn a_silent_personalize_times_out_into_the_fallback() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let base = aws_config::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("ap-southeast-1"))
        .endpoint_url(format!("http://{addr}"))
        .credentials_provider(aws_sdk_personalizeruntime::config::SharedCredentialsProvider::new(
            aws_sdk_personalizeruntime::config::Credentials::for_tests(),
        ))
        .build();
    let timeout = Duration::from_millis(150);
    let client = Client::from_conf(client_config(&base, timeout));
    let adapter = PersonalizeRecommender::new(client, Some(CAMPAIGN.into()), None, timeout);
    match adapter.recommend(&request()).await {
        Err(BackendError::Unavailable { reason: FallbackReason::Timeout, detail }) => {
            assert_eq!(detail, "Personalize did not answer within 150 ms")
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    hold.abort();
}
