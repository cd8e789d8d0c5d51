//! Shared helpers for the ranking-api tests: an app over a small embedded dataset,
//! scripted backends for error paths, and response decoding.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use axum::Router;
use axum::body::Body;
use axum::http::{Request, Response};
use http_body_util::BodyExt;
use ranking_api::backends::embedded::{EmbeddedRecommender, ModelSlot};
use ranking_api::backends::popularity::{PopularFallback, PopularitySnapshot, SharedPopularity};
use ranking_api::port::{
    BackendError, Fallback, Ranked, RecommendRequest, Recommender, RerankRequest, ScoredItem, Source,
};
use ranking_api::service::RankingService;
use ranking_api::{AppState, router};
use schemas::{EventId, EventType, Interaction, ItemId, Timestamp, UserId};
use serde_json::Value;
use store::embedded::EmbeddedStore;
use tower::ServiceExt;

/// u1 took A and B, u2 took A and C, u3 took A: A is the most popular, then B and C.
pub const ROWS: &[(&str, &str)] =
    &[("u1", "A"), ("u1", "B"), ("u2", "A"), ("u2", "C"), ("u3", "A"), ("u4", "B")];

pub struct TestData {
    pub dir: tempfile::TempDir,
    pub popularity: SharedPopularity,
    pub interactions: Vec<Interaction>,
}

pub fn test_data(rows: &[(&str, &str)]) -> TestData {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open_in(dir.path()).unwrap();
    let interactions: Vec<Interaction> = rows
        .iter()
        .enumerate()
        .map(|(n, (user, item))| Interaction {
            user_id: user.parse().unwrap(),
            item_id: item.parse().unwrap(),
            timestamp: Timestamp::from_epoch_seconds(1_767_225_600 + n as i64).unwrap(),
            event_type: EventType::enrolled(),
            event_value: None,
            event_id: EventId::parse(format!("e{n}")).unwrap(),
        })
        .collect();
    store.put_many_blocking(&interactions).unwrap();
    let popularity = SharedPopularity::new(PopularitySnapshot::load(&store).unwrap());
    TestData { dir, popularity, interactions }
}

/// Runs `future` to completion on a runtime of its own, on a thread of its own, so that sync
/// helpers can drive the async registry from inside a `#[tokio::test]`.
pub fn block_on<F: std::future::Future + Send>(future: F) -> F::Output
where
    F::Output: Send,
{
    std::thread::scope(|s| {
        s.spawn(|| {
            tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(future)
        })
        .join()
        .unwrap()
    })
}

/// Trains a model on the test data and publishes it where the embedded backend looks.
pub fn published_model(data: &TestData) -> Arc<ModelSlot> {
    let models = data.dir.path().join("models");
    let rows: Vec<recommender::InteractionRow> = data.interactions.iter().map(Into::into).collect();
    let model = recommender::train(rows, &recommender::TrainConfig::default()).unwrap();
    block_on(async {
        recommender::ModelRegistry::in_dir(&models).publish(&model).await.unwrap();
        Arc::new(ModelSlot::local(&models).await)
    })
}

/// The local composition: embedded model and popular-items fallback over `ROWS`.
pub fn embedded_state() -> (TestData, AppState) {
    let data = test_data(ROWS);
    let slot = published_model(&data);
    let service = RankingService::new(
        Some(Arc::new(EmbeddedRecommender::new(slot))),
        Arc::new(PopularFallback::new(data.popularity.clone())),
    );
    (data, AppState::new(service, HashMap::new()))
}

/// A backend that answers what the test scripted and remembers what it was asked.
pub struct ScriptedBackend {
    pub answer: Result<Ranked, BackendError>,
    pub asked: Mutex<Vec<String>>,
}

impl ScriptedBackend {
    pub fn new(answer: Result<Ranked, BackendError>) -> Arc<Self> {
        Arc::new(Self { answer, asked: Mutex::new(Vec::new()) })
    }
}

#[async_trait]
impl Recommender for ScriptedBackend {
    fn source(&self) -> Source {
        Source::Personalize
    }
    async fn recommend(&self, request: &RecommendRequest) -> Result<Ranked, BackendError> {
        self.asked.lock().unwrap().push(format!("recommend {} {}", request.user_id, request.num_results));
        self.answer.clone()
    }
    async fn rerank(&self, request: &RerankRequest) -> Result<Ranked, BackendError> {
        self.asked.lock().unwrap().push(format!("rerank {} {}", request.user_id, request.items.len()));
        self.answer.clone()
    }
}

/// A fallback with nothing to offer, as in a fresh AWS deployment without a model.
pub struct EmptyFallback;

impl Fallback for EmptyFallback {
    fn popular(&self, _user: &UserId, _n: usize) -> Option<Vec<ScoredItem>> {
        None
    }
    fn rerank(&self, _items: &[ItemId]) -> Option<Vec<ScoredItem>> {
        None
    }
    fn has_data(&self) -> bool {
        false
    }
}

pub async fn call(app: Router, request: Request<Body>) -> Response<Body> {
    app.oneshot(request).await.unwrap()
}

pub async fn get(app: Router, uri: &str) -> (u16, Value) {
    let response = call(app, Request::get(uri).body(Body::empty()).unwrap()).await;
    let status = response.status().as_u16();
    (status, json(response).await)
}

pub async fn json(response: Response<Body>) -> Value {
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&bytes)))
}

pub fn item_ids(body: &Value) -> Vec<String> {
    body["items"].as_array().unwrap().iter().map(|i| i["itemId"].as_str().unwrap().to_owned()).collect()
}

pub fn app(state: AppState) -> Router {
    router(state)
}
