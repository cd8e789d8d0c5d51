//! Real-shaped API Gateway events (REST and HTTP API) through `lambda_http`'s own
//! conversion and the same Router the Lambda runs.

mod common;

use common::*;
use http_body_util::BodyExt;
use ranking_api::routes::strip_stage;
use tower::ServiceExt;

async fn invoke(fixture: &str) -> (u16, serde_json::Value) {
    let (_data, state) = embedded_state();
    let request = lambda_http::request::from_str(fixture).expect("the fixture is an API Gateway event");
    let app = ranking_api::router(state).map_request(strip_stage);
    let response = app.oneshot(request).await.unwrap();
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap())
}

#[tokio::test]
async fn rest_api_event_with_a_stage_in_the_path() {
    let (status, body) = invoke(include_str!("fixtures/apigw_rest_ranking.json")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["userId"], "s-0001");
    assert_eq!(body["source"], "fallback", "s-0001 is not in the test data");
    assert_eq!(item_ids(&body).len(), 3, "numResults=3 came through the query string");
}

#[tokio::test]
async fn http_api_event_reranks_the_given_items() {
    let (status, body) = invoke(include_str!("fixtures/apigw_http_ranking_rerank.json")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["userId"], "s-0001");
    assert_eq!(
        item_ids(&body),
        ["math-101", "cs-101", "unheard-of"],
        "unknown items keep the caller's order"
    );
}

#[tokio::test]
async fn rest_api_event_with_a_control_character_in_the_id_is_refused() {
    let (status, body) = invoke(include_str!("fixtures/apigw_rest_bad_user.json")).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "invalid_user_id");
}
