//! The embedded backend through the Router: a trained model answers, a newer model is
//! picked up without a restart, a broken one is refused while the old one keeps serving.

mod common;

use std::sync::Arc;

use common::*;
use ranking_api::backends::embedded::{EmbeddedRecommender, ModelSlot};
use ranking_api::backends::popularity::PopularFallback;
use ranking_api::service::RankingService;
use ranking_api::{AppState, router};

/// 30 students took A then B; 10 took C then D; the newcomer has only taken A.
fn a_then_b() -> Vec<(String, String)> {
    let mut rows = Vec::new();
    for s in 0..30 {
        rows.push((format!("ab-{s}"), "A".to_owned()));
        rows.push((format!("ab-{s}"), "B".to_owned()));
    }
    for s in 0..10 {
        rows.push((format!("cd-{s}"), "C".to_owned()));
        rows.push((format!("cd-{s}"), "D".to_owned()));
    }
    rows.push(("newcomer".to_owned(), "A".to_owned()));
    rows
}

fn state_over(rows: &[(String, String)]) -> (TestData, Arc<ModelSlot>, AppState) {
    let pairs: Vec<(&str, &str)> = rows.iter().map(|(u, i)| (u.as_str(), i.as_str())).collect();
    let data = test_data(&pairs);
    let slot = published_model(&data);
    // With the answer cache, as the server runs.
    let service = RankingService::new(
        Some(Arc::new(EmbeddedRecommender::new(slot.clone()).with_answer_cache(1 << 20))),
        Arc::new(PopularFallback::new(data.popularity.clone())),
    );
    (data, slot, AppState::new(service, Default::default()))
}

fn publish(data: &TestData, rows: &[(String, String)]) {
    let pairs: Vec<(&str, &str)> = rows.iter().map(|(u, i)| (u.as_str(), i.as_str())).collect();
    let newer = test_data(&pairs);
    let rows: Vec<recommender::InteractionRow> = newer.interactions.iter().map(Into::into).collect();
    let model = recommender::train(rows, &recommender::TrainConfig::default()).unwrap();
    block_on(recommender::ModelRegistry::in_dir(data.dir.path().join("models")).publish(&model)).unwrap();
}

#[tokio::test]
async fn a_kept_answer_is_served_again_until_a_newer_model_arrives() {
    let (data, slot, state) = state_over(&a_then_b());
    let app = router(state);
    let (_, first) = get(app.clone(), "/ranking/newcomer?numResults=2").await;
    let (_, again) = get(app.clone(), "/ranking/newcomer?numResults=2").await;
    assert_eq!(first["items"], again["items"], "scores included");
    assert_eq!(item_ids(&first)[0], "B", "{first}");

    // The newcomer took B since; the next model knows it, and the kept answer must go with the old model.
    let mut rows = a_then_b();
    rows.push(("newcomer".to_owned(), "B".to_owned()));
    publish(&data, &rows);
    assert!(slot.refresh().await.unwrap().is_some());
    let (status, after) = get(app, "/ranking/newcomer?numResults=2").await;
    assert_eq!(status, 200);
    assert_eq!(after["source"], "embedded");
    assert!(!item_ids(&after).contains(&"B".to_owned()), "B is taken now: {after}");
}

#[tokio::test]
async fn a_student_who_took_a_gets_b_first() {
    let (_data, _slot, state) = state_over(&a_then_b());
    let (status, body) = get(router(state), "/ranking/newcomer?numResults=3").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["source"], "embedded");
    assert_eq!(item_ids(&body)[0], "B", "{body}");
    assert!(!item_ids(&body).contains(&"A".to_owned()), "A is already taken");
}

#[tokio::test]
async fn no_model_yet_means_popular_items_and_says_so() {
    let data = test_data(ROWS);
    let slot = Arc::new(ModelSlot::local(&data.dir.path().join("models")).await);
    let service = RankingService::new(
        Some(Arc::new(EmbeddedRecommender::new(slot))),
        Arc::new(PopularFallback::new(data.popularity.clone())),
    );
    let (status, body) = get(router(AppState::new(service, Default::default())), "/ranking/u3").await;
    assert_eq!(status, 200);
    assert_eq!(body["source"], "fallback");
    assert_eq!(body["fallback"]["reason"], "no_model");
    assert_eq!(item_ids(&body), ["B", "C"], "popular items minus what u3 took");
}

#[tokio::test]
async fn a_newer_model_is_served_without_a_restart() {
    let (data, slot, state) = state_over(&a_then_b());
    let app = router(state);
    let (_, before) = get(app.clone(), "/ranking/late-joiner").await;
    assert_eq!(before["fallback"]["reason"], "unknown_user");

    // The pipeline publishes a model that knows the late joiner.
    let mut rows = a_then_b();
    rows.push(("late-joiner".to_owned(), "C".to_owned()));
    publish(&data, &rows);

    assert!(slot.refresh().await.unwrap().is_some(), "the refresh saw the new version");
    let (status, after) = get(app, "/ranking/late-joiner?numResults=1").await;
    assert_eq!(status, 200);
    assert_eq!(after["source"], "embedded");
    assert_eq!(item_ids(&after), ["D"], "{after}");
}

#[tokio::test]
async fn a_corrupted_version_is_refused_while_the_old_one_keeps_serving() {
    let (data, slot, state) = state_over(&a_then_b());
    let models = data.dir.path().join("models");
    let registry = recommender::ModelRegistry::in_dir(&models);
    // A newer version whose file was cut short, pointed at by LATEST.
    let good = registry.latest().await.unwrap().unwrap();
    let bad = recommender::Version::parse("29991231T000000Z-000000000000").unwrap();
    std::fs::create_dir_all(models.join(bad.as_str())).unwrap();
    let bytes = std::fs::read(models.join(good.as_str()).join("model.bin")).unwrap();
    std::fs::write(models.join(bad.as_str()).join("model.bin"), &bytes[..bytes.len() / 2]).unwrap();
    registry.point_latest_to(&bad).await.unwrap();

    let refused = slot.refresh().await.unwrap_err().to_string();
    assert!(refused.contains(bad.as_str()) || refused.to_lowercase().contains("truncat"), "{refused}");
    let (status, body) = get(router(state), "/ranking/newcomer?numResults=1").await;
    assert_eq!(status, 200);
    assert_eq!((body["source"].as_str(), item_ids(&body)), (Some("embedded"), vec!["B".to_owned()]));
}

#[tokio::test]
async fn inside_lambda_the_fallback_comes_from_the_model() {
    use ranking_api::backends::embedded::ModelFallback;
    use ranking_api::port::{BackendError, FallbackReason};
    let (_data, slot, _) = state_over(&a_then_b());
    // Personalize throttles; there is no local store, only the model from the bucket.
    let service = RankingService::new(
        Some(ScriptedBackend::new(Err(BackendError::unavailable(
            FallbackReason::Throttled,
            "rate exceeded",
        )))),
        Arc::new(ModelFallback::new(slot)),
    );
    let app = router(AppState::new(service, Default::default()));
    let (status, body) = get(app.clone(), "/ranking/newcomer?numResults=2").await;
    assert_eq!(status, 200);
    assert_eq!(body["fallback"]["reason"], "throttled");
    let ids = item_ids(&body);
    assert_eq!(ids[0], "B", "{body}");
    assert!(!ids.contains(&"A".to_owned()), "A is left out: the newcomer took it");
    let scores: Vec<f64> =
        body["items"].as_array().unwrap().iter().map(|i| i["score"].as_f64().unwrap()).collect();
    assert!(scores[0] < 1.0 && scores[0] > scores[1], "shares of the most popular item (A): {scores:?}");
    let (_, reranked) = get(app, "/ranking/newcomer?items=zzz,D,B").await;
    assert_eq!(item_ids(&reranked), ["B", "D", "zzz"]);
}
