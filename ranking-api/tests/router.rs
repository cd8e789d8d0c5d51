//! The HTTP contract, exercised through the Router as a client would see it.

mod common;

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, header};
use common::*;
use ranking_api::port::{BackendError, FallbackReason, Ranked, ScoredItem};
use ranking_api::service::RankingService;
use ranking_api::{AppState, router};
use serde_json::json;

#[tokio::test]
async fn recommends_popular_items_the_student_has_not_taken() {
    let (_data, state) = embedded_state();
    let (status, body) = get(router(state), "/ranking/u3").await;
    assert_eq!(status, 200);
    assert_eq!(body["source"], "embedded");
    assert_eq!(body["userId"], "u3");
    assert_eq!(item_ids(&body), ["B", "C"], "A is excluded: u3 already took it");
    assert!(body["recommendationId"].as_str().unwrap().starts_with("emb-"));
    assert!(body.get("fallback").is_none());
}

#[tokio::test]
async fn num_results_limits_the_answer() {
    let (_data, state) = embedded_state();
    let (status, body) = get(router(state), "/ranking/u3?numResults=1").await;
    assert_eq!(status, 200);
    assert_eq!(item_ids(&body), ["B"]);
}

#[tokio::test]
async fn unknown_students_get_popular_items_and_are_told_why() {
    let (_data, state) = embedded_state();
    let (status, body) = get(router(state), "/ranking/newcomer").await;
    assert_eq!(status, 200);
    assert_eq!(body["source"], "fallback");
    assert_eq!(body["fallback"]["reason"], "unknown_user");
    assert_eq!(item_ids(&body), ["A", "B", "C"]);
}

#[tokio::test]
async fn items_are_reranked_with_unknown_ones_last() {
    let (_data, state) = embedded_state();
    let (status, body) = get(router(state), "/ranking/u1?items=zzz,C,A,C").await;
    assert_eq!(status, 200);
    assert_eq!(body["source"], "embedded");
    assert_eq!(item_ids(&body), ["A", "C", "zzz"]);
    assert_eq!(body["items"][2]["score"], json!(null));
}

#[tokio::test]
async fn bad_user_ids_are_400_with_a_reason() {
    let long = "x".repeat(257);
    for (uri, expected) in [
        (format!("/ranking/{long}"), "257 characters"),
        ("/ranking/a%0Ab".to_owned(), "control character"),
        ("/ranking/%FF%FE".to_owned(), "does not decode"),
    ] {
        let (_data, state) = embedded_state();
        let (status, body) = get(router(state), &uri).await;
        assert_eq!(status, 400, "{uri}");
        assert_eq!(body["error"]["code"], "invalid_user_id", "{uri}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(expected), "{uri}: {message}");
    }
}

#[tokio::test]
async fn bad_parameters_are_400_with_a_reason() {
    for uri in [
        "/ranking/u1?numResults=0",
        "/ranking/u1?numResults=abc",
        "/ranking/u1?colour=red",
        "/ranking/u1?filter=x",
    ] {
        let (_data, state) = embedded_state();
        let (status, body) = get(router(state), uri).await;
        assert_eq!(status, 400, "{uri}");
        assert_eq!(body["error"]["code"], "invalid_parameter", "{uri}");
    }
}

#[tokio::test]
async fn other_routes_and_methods_answer_json() {
    let (_data, state) = embedded_state();
    let (status, body) = get(router(state.clone()), "/recommendations").await;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("not_found")));
    let response = call(router(state), Request::delete("/ranking/u1").body(Body::empty()).unwrap()).await;
    assert_eq!(response.status(), 405);
    assert!(response.headers()[header::ALLOW].to_str().unwrap().contains("GET"));
    assert_eq!(json(response).await["error"]["code"], "method_not_allowed");
}

#[tokio::test]
async fn the_api_key_is_checked_when_configured() {
    let (_data, state) = embedded_state();
    let app = router(state.with_api_key("s3cret-key"));
    let (status, body) = get(app.clone(), "/ranking/u1").await;
    assert_eq!((status, body["error"]["code"].as_str()), (401, Some("unauthorized")));

    let wrong = Request::get("/ranking/u1").header("x-api-key", "s3cret-kez").body(Body::empty()).unwrap();
    assert_eq!(call(app.clone(), wrong).await.status(), 401);
    let right = Request::get("/ranking/u1").header("x-api-key", "s3cret-key").body(Body::empty()).unwrap();
    assert_eq!(call(app.clone(), right).await.status(), 200);
    let (status, _) = get(app, "/health").await;
    assert_eq!(status, 200, "health stays open for load balancers and monitors");
}

fn cors_state() -> (TestData, AppState) {
    let (data, state) = embedded_state();
    (data, state.with_api_key("k").with_cors_origins(vec!["https://app.example.edu".into()]))
}

#[tokio::test]
async fn preflights_from_the_frontend_are_allowed() {
    let (_data, state) = cors_state();
    let preflight = Request::options("/ranking/u1")
        .header(header::ORIGIN, "https://app.example.edu")
        .header(header::ACCESS_CONTROL_REQUEST_METHOD, "GET")
        .header(header::ACCESS_CONTROL_REQUEST_HEADERS, "x-api-key")
        .body(Body::empty())
        .unwrap();
    let response = call(router(state), preflight).await;
    assert!(response.status().is_success(), "{}", response.status());
    let headers = response.headers();
    assert_eq!(headers[header::ACCESS_CONTROL_ALLOW_ORIGIN], "https://app.example.edu");
    assert!(headers[header::ACCESS_CONTROL_ALLOW_HEADERS].to_str().unwrap().contains("x-api-key"));
    assert!(headers[header::ACCESS_CONTROL_ALLOW_METHODS].to_str().unwrap().contains("GET"));
}

#[tokio::test]
async fn other_origins_get_no_cors_headers() {
    let (_data, state) = cors_state();
    let preflight = Request::options("/ranking/u1")
        .header(header::ORIGIN, "https://evil.example.com")
        .header(header::ACCESS_CONTROL_REQUEST_METHOD, "GET")
        .body(Body::empty())
        .unwrap();
    let response = call(router(state), preflight).await;
    assert!(response.headers().get(header::ACCESS_CONTROL_ALLOW_ORIGIN).is_none());
}

#[tokio::test]
async fn errors_carry_cors_headers_so_the_browser_can_read_them() {
    let (_data, state) = cors_state();
    let request = Request::get("/ranking/u1")
        .header(header::ORIGIN, "https://app.example.edu")
        .body(Body::empty())
        .unwrap();
    let response = call(router(state), request).await;
    assert_eq!(response.status(), 401);
    assert_eq!(response.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN], "https://app.example.edu");
}

fn with_backend(answer: Result<Ranked, BackendError>) -> (TestData, AppState) {
    let data = test_data(ROWS);
    let service = RankingService::new(
        Some(ScriptedBackend::new(answer)),
        Arc::new(ranking_api::backends::popularity::PopularFallback::new(data.popularity.clone())),
    );
    (data, AppState::new(service, Default::default()))
}

#[tokio::test]
async fn every_backend_failure_degrades_to_popular_items_and_says_why() {
    for reason in [
        FallbackReason::Throttled,
        FallbackReason::BackendError,
        FallbackReason::Timeout,
        FallbackReason::CampaignNotFound,
    ] {
        let (_data, state) = with_backend(Err(BackendError::unavailable(reason, "scripted")));
        let (status, body) = get(router(state), "/ranking/u3").await;
        assert_eq!(status, 200, "{reason}");
        assert_eq!(body["source"], "fallback");
        assert_eq!(body["fallback"]["reason"], reason.to_string());
        assert_eq!(item_ids(&body), ["B", "C"], "{reason}: the fallback still leaves out what u3 took");
    }
}

#[tokio::test]
async fn backend_answers_pass_through_with_their_ids() {
    let ranked = Ranked {
        items: vec![ScoredItem { item_id: "C".parse().unwrap(), score: Some(0.75) }],
        recommendation_id: Some("RID-1234".into()),
    };
    let (_data, state) = with_backend(Ok(ranked));
    let (status, body) = get(router(state), "/ranking/u1").await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({"userId": "u1", "items": [{"itemId": "C", "score": 0.75}], "recommendationId": "RID-1234", "source": "personalize"})
    );
}

#[tokio::test]
async fn invalid_input_from_personalize_is_the_callers_400() {
    let (_data, state) =
        with_backend(Err(BackendError::InvalidInput("filter values do not match the filter".into())));
    let (status, body) = get(router(state), "/ranking/u1").await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "invalid_input");
}

#[tokio::test]
async fn only_when_nothing_can_answer_is_it_503_with_retry_after() {
    let service = RankingService::new(
        Some(ScriptedBackend::new(Err(BackendError::unavailable(FallbackReason::Timeout, "slow")))),
        Arc::new(EmptyFallback),
    );
    let response = call(
        router(AppState::new(service, Default::default())),
        Request::get("/ranking/u1").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()[header::RETRY_AFTER], "5");
    assert_eq!(json(response).await["error"]["code"], "unavailable");
}

#[tokio::test]
async fn without_a_backend_every_answer_is_a_flagged_fallback() {
    let data = test_data(ROWS);
    let service = RankingService::new(
        None,
        Arc::new(ranking_api::backends::popularity::PopularFallback::new(data.popularity.clone())),
    );
    let (status, body) = get(router(AppState::new(service, Default::default())), "/ranking/u1").await;
    assert_eq!(status, 200);
    assert_eq!(body["fallback"]["reason"], "not_configured");
    let (_, health) = get(
        router(AppState::new(RankingService::new(None, Arc::new(EmptyFallback)), Default::default())),
        "/health",
    )
    .await;
    assert_eq!(health, json!({"status": "ok", "backend": null, "fallbackReady": false, "model": null}));
}

#[tokio::test]
async fn the_openapi_document_describes_the_routes_it_serves() {
    let (_data, state) = embedded_state();
    let (status, doc) = get(router(state.clone()), "/openapi.json").await;
    assert_eq!(status, 200);
    assert_eq!(doc["openapi"], "3.1.0");
    let ranking = &doc["paths"]["/ranking/{userId}"]["get"];
    for code in ["200", "400", "401", "414", "503"] {
        assert!(ranking["responses"].get(code).is_some(), "response {code} documented");
    }
    assert!(ranking["responses"]["503"]["headers"]["Retry-After"].is_object());
    let params: Vec<&str> =
        ranking["parameters"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    // The embedded recommender evaluates no filters, so this deployment offers none.
    assert_eq!(params, ["userId", "numResults", "items", "context"]);
    assert_eq!(ranking["security"], json!([{"api_key": []}]), "the key is required");
    assert!(doc["components"]["schemas"]["RankingResponse"].is_object());
    assert!(doc["components"]["securitySchemes"]["api_key"].is_object());
    // Every documented path is actually served (a path that 404s here has drifted).
    for path in doc["paths"].as_object().unwrap().keys() {
        let concrete = path.replace("{userId}", "u1");
        let (status, _) = get(router(state.clone()), &concrete).await;
        assert_eq!(status, 200, "{path} is documented but not served");
    }
}

#[tokio::test]
async fn the_demo_page_is_served_at_the_root() {
    let (_data, state) = embedded_state();
    let response = call(router(state), Request::get("/").body(Body::empty()).unwrap()).await;
    assert_eq!(response.status(), 200);
    assert!(response.headers()[header::CONTENT_TYPE].to_str().unwrap().starts_with("text/html"));
    let bytes = http_body_util::BodyExt::collect(response.into_body()).await.unwrap().to_bytes();
    let page = String::from_utf8(bytes.to_vec()).unwrap();
    assert!(page.contains("/ranking/${encodeURIComponent(user)}"), "the page calls the API it documents");
}

#[tokio::test]
async fn students_lists_who_the_data_knows_for_the_demo_picker() {
    let (data, state) = embedded_state();
    let state = state.with_students(Arc::new(data.popularity.clone()));
    let (status, body) = get(router(state.clone()), "/students").await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({"total": 4, "students": [
            {"userId": "u1", "classes": 2}, {"userId": "u2", "classes": 2},
            {"userId": "u3", "classes": 1}, {"userId": "u4", "classes": 1}]})
    );
    let (_, body) = get(router(state.clone()), "/students?limit=2").await;
    assert_eq!(body["total"], 4);
    assert_eq!(body["students"].as_array().unwrap().len(), 2);
    for uri in ["/students?limit=0", "/students?limit=1001", "/students?limit=x", "/students?limits=2"] {
        let (status, body) = get(router(state.clone()), uri).await;
        assert_eq!(status, 400, "{uri}");
        assert_eq!(body["error"]["code"], "invalid_parameter", "{uri}");
    }
    let (status, _) = get(router(state.with_api_key("k")), "/students").await;
    assert_eq!(status, 401, "the list of students needs the key like the rankings do");
}

#[tokio::test]
async fn students_is_empty_where_the_api_has_no_store() {
    let (_data, state) = embedded_state();
    let (status, body) = get(router(state), "/students").await;
    assert_eq!(status, 200);
    assert_eq!(body, json!({"total": 0, "students": []}));
}

#[tokio::test]
async fn a_personalize_deployment_documents_its_filters_and_their_values() {
    let backend = ScriptedBackend::new(Ok(Ranked { items: vec![], recommendation_id: None }));
    let service = RankingService::new(Some(backend), Arc::new(EmptyFallback));
    let filters = [
        ("unseen".to_owned(), "arn:aws:personalize:us-east-1:123456789012:filter/unseen".to_owned()),
        ("by_subject".to_owned(), "arn:aws:personalize:us-east-1:123456789012:filter/s".to_owned()),
    ];
    let (_, doc) = get(router(AppState::new(service, filters.into_iter().collect())), "/openapi.json").await;
    let params = doc["paths"]["/ranking/{userId}"]["get"]["parameters"].as_array().unwrap().clone();
    let by_name = |name: &str| params.iter().find(|p| p["name"] == name).unwrap().clone();
    assert_eq!(by_name("filter")["schema"]["enum"], json!(["by_subject", "unseen"]));
    let values = by_name("filterValues");
    assert_eq!((values["style"].as_str(), values["explode"].as_bool()), (Some("form"), Some(true)));
    assert_eq!(values["schema"]["propertyNames"]["pattern"], "^filterValues\\.[A-Za-z0-9_]{1,50}$");
    assert_eq!(values["schema"]["maxProperties"], 25);
}

#[tokio::test]
async fn dot_segments_are_not_user_ids() {
    for uri in ["/ranking/%2E", "/ranking/%2E%2E", "/ranking/.", "/ranking/.."] {
        let (_data, state) = embedded_state();
        let (status, body) = get(router(state), uri).await;
        assert_eq!(status, 400, "{uri}");
        assert_eq!(body["error"]["code"], "invalid_user_id", "{uri}");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains("is a path segment, not an id"), "{uri}: {message}");
    }
}

#[tokio::test]
async fn health_says_whether_the_fallback_can_answer() {
    let (_data, state) = embedded_state();
    let (status, body) = get(router(state), "/health").await;
    assert_eq!(status, 200);
    assert_eq!(body["fallbackReady"], true, "{body}");

    let nothing_to_fall_back_on = RankingService::new(None, Arc::new(EmptyFallback));
    let (status, body) =
        get(router(AppState::new(nothing_to_fall_back_on, Default::default())), "/health").await;
    assert_eq!(status, 200, "the API is up even when it could not answer yet");
    assert_eq!(body["fallbackReady"], false, "{body}");
}
