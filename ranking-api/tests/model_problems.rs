//! Bad model data never takes the API down: a corrupt model file, a bad `LATEST` or a bucket that
//! does not answer leaves it serving (Personalize, popular items, or a 503 that says why), `/health`
//! names the object and what was wrong, and the next refresh after a good publish serves the model.

mod common;

use std::sync::Arc;

use artifacts::{DirectoryStore, ObjectStore};
use axum::body::Body;
use axum::http::{Request, header};
use common::*;
use ranking_api::backends::embedded::{DEFAULT_SYNC_TIMEOUT, EmbeddedRecommender, ModelFallback, ModelSlot};
use ranking_api::backends::popularity::PopularFallback;
use ranking_api::port::{BackendError, FallbackReason};
use ranking_api::service::RankingService;
use ranking_api::{AppState, router};
use serde_json::json;

/// A version older than any a training run names now, so that a fresh publish supersedes it.
const OLD_VERSION: &str = "20000101T000000Z-000000000000";

fn trained(data: &TestData) -> recommender::Model {
    let rows: Vec<recommender::InteractionRow> = data.interactions.iter().map(Into::into).collect();
    recommender::train(rows, &recommender::TrainConfig::default()).unwrap()
}

/// `models/` whose `LATEST` names a version whose file was cut short.
fn corrupt_models_dir(data: &TestData) -> std::path::PathBuf {
    let models = data.dir.path().join("models");
    let bytes = trained(data).to_bytes();
    std::fs::create_dir_all(models.join(OLD_VERSION)).unwrap();
    std::fs::write(models.join(OLD_VERSION).join("model.bin"), &bytes[..bytes.len() / 2]).unwrap();
    std::fs::write(models.join("LATEST"), format!("{OLD_VERSION}\n")).unwrap();
    models
}

fn local_state(data: &TestData, slot: Arc<ModelSlot>) -> AppState {
    let service = RankingService::new(
        Some(Arc::new(EmbeddedRecommender::new(slot.clone()))),
        Arc::new(PopularFallback::new(data.popularity.clone())),
    );
    AppState::new(service, Default::default()).with_model_health(slot)
}

#[tokio::test]
async fn a_corrupt_local_model_is_reported_and_popular_items_answer_until_a_good_one_is_published() {
    let data = test_data(ROWS);
    let models = corrupt_models_dir(&data);
    let slot = Arc::new(ModelSlot::local(&models).await);
    let app = router(local_state(&data, slot.clone()));

    let (status, health) = get(app.clone(), "/health").await;
    assert_eq!(status, 200);
    let model = &health["model"];
    assert_eq!((model["status"].as_str(), &model["version"]), (Some("failed"), &json!(null)), "{health}");
    assert_eq!(model["problem"]["kind"], "corrupt_model", "{health}");
    assert_eq!(model["problem"]["version"], OLD_VERSION);
    let object = models.join(OLD_VERSION).join("model.bin");
    assert_eq!(model["problem"]["object"], object.display().to_string());
    assert_eq!(model["problem"]["retryable"], false);

    let (status, body) = get(app.clone(), "/ranking/u3").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["source"].as_str(), body["fallback"]["reason"].as_str()),
        (Some("fallback"), Some("no_model"))
    );
    let message = body["fallback"]["message"].as_str().unwrap();
    assert!(message.contains("corrupt_model"), "{message}");
    assert_eq!(item_ids(&body), ["B", "C"]);

    // The pipeline publishes a good version: the next refresh serves it and the problem is gone.
    let good = recommender::ModelRegistry::in_dir(&models).publish(&trained(&data)).await.unwrap();
    assert_eq!(slot.refresh().await.unwrap(), Some(good.to_string()));
    let (_, health) = get(app.clone(), "/health").await;
    assert_eq!(
        health["model"],
        json!({"status": "loaded", "version": good.as_str(), "problem": null}),
        "{health}"
    );
    let (_, body) = get(app, "/ranking/u3").await;
    assert_eq!(body["source"], "embedded", "{body}");
}

#[tokio::test]
async fn a_latest_naming_a_missing_version_or_holding_garbage_is_reported() {
    for (latest, kind) in [(format!("{OLD_VERSION}\n"), "missing_version"), (String::new(), "bad_latest")] {
        let data = test_data(ROWS);
        let models = data.dir.path().join("models");
        std::fs::create_dir_all(&models).unwrap();
        std::fs::write(models.join("LATEST"), &latest).unwrap();
        let slot = Arc::new(ModelSlot::local(&models).await);
        let app = router(local_state(&data, slot));
        let (_, health) = get(app.clone(), "/health").await;
        assert_eq!(health["model"]["status"], "failed", "{latest:?}: {health}");
        assert_eq!(health["model"]["problem"]["kind"], kind, "{latest:?}: {health}");
        let (status, body) = get(app, "/ranking/u3").await;
        assert_eq!((status, body["source"].as_str()), (200, Some("fallback")), "{latest:?}: {body}");
    }
}

/// Inside Lambda: Personalize, and the model from the bucket as the fallback.
struct Lambda {
    _dir: tempfile::TempDir,
    bucket: DirectoryStore,
    slot: Arc<ModelSlot>,
    app: axum::Router,
}

async fn lambda_with(personalize: Result<ranking_api::port::Ranked, BackendError>, latest: &[u8]) -> Lambda {
    let dir = tempfile::tempdir().unwrap();
    let bucket = DirectoryStore::new(dir.path().join("bucket"));
    bucket.put("models/LATEST", latest).await.unwrap();
    // As `build_state` does: read the bucket straight into memory, then follow it.
    let slot = Arc::new(ModelSlot::bucket(Arc::new(bucket.clone()), DEFAULT_SYNC_TIMEOUT).await);
    let service = RankingService::new(
        Some(ScriptedBackend::new(personalize)),
        Arc::new(ModelFallback::new(slot.clone())),
    );
    let app = router(AppState::new(service, Default::default()).with_model_health(slot.clone()));
    Lambda { _dir: dir, bucket, slot, app }
}

#[tokio::test]
async fn with_a_bad_latest_in_the_bucket_personalize_still_answers_and_health_says_why() {
    let answer = ranking_api::port::Ranked {
        items: vec![ranking_api::port::ScoredItem { item_id: "C".parse().unwrap(), score: Some(0.5) }],
        recommendation_id: Some("RID-1".into()),
    };
    let lambda = lambda_with(Ok(answer), b"").await;
    let (status, body) = get(lambda.app.clone(), "/ranking/u1").await;
    assert_eq!((status, body["source"].as_str()), (200, Some("personalize")), "{body}");
    let (_, health) = get(lambda.app, "/health").await;
    assert_eq!(health["backend"], "personalize");
    assert_eq!(health["fallbackReady"], false);
    assert_eq!(
        health["model"]["problem"],
        json!({
            "kind": "bad_latest",
            "object": lambda.bucket.location("models/LATEST"),
            "version": null,
            "message": "models/LATEST is empty",
            "retryable": false,
        }),
        "{health}"
    );
}

#[tokio::test]
async fn when_nothing_can_answer_the_503_says_why_and_a_good_publish_recovers() {
    let slow =
        Err(BackendError::unavailable(FallbackReason::Timeout, "Personalize did not answer within 300 ms"));
    let lambda = lambda_with(slow, b"not a version/\n").await;
    let response =
        call(lambda.app.clone(), Request::get("/ranking/newcomer").body(Body::empty()).unwrap()).await;
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()[header::RETRY_AFTER], "5");
    let body = json(response).await;
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("timeout") && message.contains("bad_latest"), "{message}");
    assert!(message.contains("models/LATEST holds \"not a version/\""), "{message}");

    // A good version is published; the next refresh fetches it and the fallback answers from it.
    let data = test_data(ROWS);
    let model = trained(&data);
    let version = model.info().version.clone();
    lambda.bucket.put(&format!("models/{version}/model.bin"), &model.to_bytes()).await.unwrap();
    lambda.bucket.put("models/LATEST", format!("{version}\n").as_bytes()).await.unwrap();
    let _ = lambda.slot.refresh().await;

    let (_, health) = get(lambda.app.clone(), "/health").await;
    assert_eq!(health["model"], json!({"status": "loaded", "version": version, "problem": null}), "{health}");
    assert_eq!(health["fallbackReady"], true);
    let (status, body) = get(lambda.app, "/ranking/newcomer").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["source"].as_str(), body["fallback"]["reason"].as_str()),
        (Some("fallback"), Some("timeout"))
    );
    assert_eq!(item_ids(&body)[0], "A", "the model's most popular item");
}

#[tokio::test]
async fn a_corrupt_model_in_the_bucket_leaves_the_cached_one_serving() {
    let data = test_data(ROWS);
    let good = trained(&data);
    let good_version = good.info().version.clone();
    let lambda = lambda_with(
        Err(BackendError::unavailable(FallbackReason::Throttled, "rate exceeded")),
        format!("{good_version}\n").as_bytes(),
    )
    .await;
    lambda.bucket.put(&format!("models/{good_version}/model.bin"), &good.to_bytes()).await.unwrap();
    let _ = lambda.slot.refresh().await;
    let (_, health) = get(lambda.app.clone(), "/health").await;
    assert_eq!(health["model"]["status"], "loaded", "{health}");

    // A newer publish whose file is corrupt.
    let bad = "29991231T000000Z-000000000000";
    let key = format!("models/{bad}/model.bin");
    lambda.bucket.put(&key, b"not a model").await.unwrap();
    lambda.bucket.put("models/LATEST", format!("{bad}\n").as_bytes()).await.unwrap();
    let _ = lambda.slot.refresh().await;
    let (_, health) = get(lambda.app.clone(), "/health").await;
    let model = &health["model"];
    assert_eq!((model["status"].as_str(), model["version"].as_str()), (Some("stale"), Some(&*good_version)));
    assert_eq!(model["problem"]["kind"], "corrupt_model", "{health}");
    assert_eq!(model["problem"]["object"], lambda.bucket.location(&key));
    assert_eq!(model["problem"]["version"], bad);
    let (status, body) = get(lambda.app.clone(), "/ranking/u3").await;
    assert_eq!((status, body["source"].as_str()), (200, Some("fallback")), "{body}");
    assert_eq!(item_ids(&body), ["B", "C"], "from the good model still");
    // Refused once, remembered while LATEST names it: still reported, the good one still serving.
    assert!(lambda.slot.refresh().await.unwrap().is_none());
    let (_, health) = get(lambda.app.clone(), "/health").await;
    assert_eq!(
        (health["model"]["status"].as_str(), health["model"]["problem"]["kind"].as_str()),
        (Some("stale"), Some("corrupt_model"))
    );
}

#[tokio::test]
async fn build_state_starts_on_a_corrupt_local_model_dir() {
    use clap::Parser;
    let data = test_data(ROWS);
    corrupt_models_dir(&data);
    let dir = data.dir.path().to_str().unwrap();
    let cli = ranking_api::config::Cli::try_parse_from(["ranking-api", "--data-dir", dir, "--no-demo-seed"])
        .unwrap();
    let (state, _store) = ranking_api::startup::build_state(&cli.config, false).await.unwrap();
    let (status, health) = get(router(state), "/health").await;
    assert_eq!(status, 200);
    assert_eq!(
        (health["backend"].as_str(), health["model"]["status"].as_str()),
        (Some("embedded"), Some("failed"))
    );
    assert_eq!(health["model"]["problem"]["kind"], "corrupt_model", "{health}");
}

// Moved from the old `BucketModels` unit tests: the same assertions, through the slot over the bucket.

#[tokio::test]
async fn an_empty_or_garbled_latest_in_the_bucket_is_a_bad_latest() {
    for (content, expected) in [
        (&b""[..], "models/LATEST is empty"),
        (b"\n  \n", "models/LATEST is empty"),
        (b"../../etc/passwd", "not a model version name"),
        (b"\xff\xfe", "is not text"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let bucket = DirectoryStore::new(dir.path().join("bucket"));
        bucket.put("models/LATEST", content).await.unwrap();
        let slot = ModelSlot::bucket(Arc::new(bucket.clone()), DEFAULT_SYNC_TIMEOUT).await;
        let err = slot.problem().expect("a problem is recorded");
        assert_eq!(err.kind, ranking_api::port::ModelProblemKind::BadLatest, "{content:?}: {err:?}");
        assert_eq!(err.object, bucket.location("models/LATEST"));
        assert!(err.message.contains(expected), "{content:?}: {err:?}");
        assert!(slot.current().is_none());
    }
}

#[tokio::test]
async fn a_corrupt_model_in_the_bucket_is_refused_remembered_and_a_newer_good_one_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let bucket = DirectoryStore::new(dir.path().join("bucket"));
    let data = test_data(ROWS);
    let good = trained(&data);
    let bytes = good.to_bytes();
    let key = format!("models/{OLD_VERSION}/model.bin");
    bucket.put(&key, &bytes[..bytes.len() / 2]).await.unwrap();
    bucket.put("models/LATEST", format!("{OLD_VERSION}\n").as_bytes()).await.unwrap();
    let slot = ModelSlot::bucket(Arc::new(bucket.clone()), DEFAULT_SYNC_TIMEOUT).await;

    let err = slot.problem().expect("refused");
    assert_eq!(err.kind, ranking_api::port::ModelProblemKind::CorruptModel, "{err:?}");
    assert_eq!(
        (err.object.as_str(), err.version.as_deref()),
        (bucket.location(&key).as_str(), Some(OLD_VERSION))
    );
    assert!(err.message.contains(&key), "{err:?}");
    assert!(!err.retryable, "a corrupt file stays corrupt");
    assert_eq!(slot.refresh().await.unwrap(), None, "not read again while LATEST names it");
    assert_eq!(slot.problem(), Some(err), "still refused, and said so");

    // A good version published next is what recovers.
    let version = good.info().version.clone();
    bucket.put(&format!("models/{version}/model.bin"), &bytes).await.unwrap();
    bucket.put("models/LATEST", format!("{version}\n").as_bytes()).await.unwrap();
    assert_eq!(slot.refresh().await.unwrap(), Some(version));
    assert_eq!(slot.problem(), None);
}

#[tokio::test]
async fn an_unreachable_bucket_is_reported_within_the_deadline() {
    use std::time::Duration;
    // Nothing listens on a port just released; a listener that never answers holds the
    // connection open, so only the deadline ends the wait.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let timeout = Duration::from_millis(400);
    for endpoint in [format!("http://{closed}"), format!("http://{silent_addr}")] {
        let base = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .endpoint_url(&endpoint)
            .credentials_provider(aws_sdk_personalizeruntime::config::Credentials::new(
                "AKIDTEST", "secret", None, None, "test",
            ))
            .load()
            .await;
        let config =
            ranking_api::startup::s3_config(&base, aws_failure::timeouts::Service::S3.defaults(), timeout);
        let objects = Arc::new(artifacts::S3Store::new(artifacts::s3::client(&config), "models-bucket"));
        let started = std::time::Instant::now();
        let slot = ModelSlot::bucket(objects, timeout).await;
        let took = started.elapsed();
        assert!(took < timeout + Duration::from_millis(600), "{endpoint}: took {took:?}");
        let err = slot.problem().expect("a problem is recorded");
        assert_eq!(err.kind, ranking_api::port::ModelProblemKind::BucketUnreachable, "{endpoint}: {err:?}");
        assert_eq!(err.object, "s3://models-bucket/models/LATEST");
        assert!(err.retryable, "{endpoint}: the network may come back");
    }
    drop(silent);
}
