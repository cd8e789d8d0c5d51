//! The embedded backend: the live model version in the model registry (`$DATA_DIR/models`
//! locally, the data bucket in Lambda), served in-process and swapped for a newer one
//! without a restart.

use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use artifacts::{ArtifactError, ObjectStore};
use async_trait::async_trait;
use recommender::{LiveModel, Model, ModelRegistry, QueryOptions, Refresh, RegistryError, Version};
use schemas::ItemId;

use super::answer_cache::AnswerCache;
use crate::port::{
    BackendError, FallbackReason, ModelHealth, ModelProblem, ModelProblemKind, ModelStatus, Ranked,
    RecommendRequest, Recommender, RerankRequest, ScoredItem, Source,
};

/// How long one read from the bucket may take unless told otherwise (`MODEL_SYNC_TIMEOUT_MS`).
pub const DEFAULT_SYNC_TIMEOUT: Duration = Duration::from_secs(3);

/// The model being served, once one exists, and what went wrong fetching or loading one.
pub struct ModelSlot {
    registry: ModelRegistry,
    /// Whether a cold start may fall back to an older version, which means listing the
    /// versions: locally yes; the API's bucket role may only read what `LATEST` names.
    older_versions: bool,
    live: RwLock<Option<Arc<LiveModel>>>,
    /// A version refused as corrupt on a cold start: not read again while `LATEST` names it.
    cold_refused: Mutex<Option<Version>>,
    /// The last failure, until a refresh succeeds again.
    problem: Mutex<Option<ModelProblem>>,
}

impl ModelSlot {
    /// Over a local models directory (`$DATA_DIR/models`), loading the newest version that loads.
    /// Nothing about the directory's content is an error here: a model that does not load (a
    /// corrupt file, a bad `LATEST`, a missing version) or a directory that cannot be read
    /// leaves the slot empty (or on an older version), [`ModelHealth`] says why, and the next
    /// refresh tries again.
    pub async fn local(models_dir: &Path) -> Self {
        Self::open(ModelRegistry::in_dir(models_dir), true).await
    }

    /// Over the data bucket (`models/` in it), every read bounded by `timeout`
    /// (`MODEL_SYNC_TIMEOUT_MS`): a bucket that does not answer cannot hold the start.
    pub async fn bucket(objects: Arc<dyn ObjectStore>, timeout: Duration) -> Self {
        Self::open(ModelRegistry::new(objects).with_timeout(timeout), false).await
    }

    async fn open(registry: ModelRegistry, older_versions: bool) -> Self {
        let slot = Self {
            registry,
            older_versions,
            live: RwLock::new(None),
            cold_refused: Mutex::new(None),
            problem: Mutex::new(None),
        };
        // Any failure is recorded (and logged) by `refresh`.
        let _ = slot.refresh().await;
        slot
    }

    /// Where versions are published for this slot to pick up.
    pub fn registry(&self) -> &ModelRegistry {
        &self.registry
    }

    /// The model to answer this request with.
    pub fn current(&self) -> Option<Arc<Model>> {
        self.live().map(|l| l.current())
    }

    fn live(&self) -> Option<Arc<LiveModel>> {
        self.live.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Picks up a newer version, or the first one. The model serving now keeps
    /// serving when the new one is refused; the refusal is recorded for `/health`.
    pub async fn refresh(&self) -> Result<Option<String>, RegistryError> {
        match self.live() {
            Some(live) => match live.refresh().await {
                Ok(Refresh::Swapped { from, to }) => {
                    tracing::info!(%from, %to, model = %live.current().info().model, "swapped in a newer model");
                    self.record(None);
                    Ok(Some(to.to_string()))
                }
                Ok(Refresh::Unchanged) => {
                    // A refused version stays refused (and reported) until LATEST moves on; back
                    // on the version serving (a rollback), nothing is wrong any more.
                    if self.registry.latest().await.ok().flatten().is_some_and(|v| v == live.version()) {
                        self.record(None);
                    }
                    Ok(None)
                }
                Err(e) => {
                    self.record(Some(problem_of(&e)));
                    Err(e)
                }
            },
            None => self.cold_start().await,
        }
    }

    async fn cold_start(&self) -> Result<Option<String>, RegistryError> {
        let latest = match self.registry.latest().await {
            Ok(Some(latest)) => latest,
            Ok(None) => {
                self.record(None);
                return Ok(None);
            }
            Err(e) => {
                self.record(Some(problem_of(&e)));
                return Err(e);
            }
        };
        if self.cold_refused.lock().unwrap_or_else(|p| p.into_inner()).as_ref() == Some(&latest) {
            // Still refused, and still reported, while LATEST names it.
            return Ok(None);
        }
        let registry = self.registry.clone();
        let opened = if self.older_versions {
            LiveModel::open(registry).await
        } else {
            LiveModel::open_latest(registry).await.map(|live| (live, Vec::new()))
        };
        match opened {
            Ok((live, refused)) => {
                let version = live.version();
                tracing::info!(%version, model = %live.current().info().model, "serving the embedded model");
                for e in refused.iter().skip(1) {
                    tracing::warn!(error = %e, "an older model version was refused too");
                }
                *self.live.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(live));
                self.record(refused.first().map(problem_of));
                Ok(Some(version.to_string()))
            }
            Err(RegistryError::NoModel(_)) => {
                self.record(None);
                Ok(None)
            }
            Err(e) => {
                // A corrupt file stays corrupt; a missing one may still be on its way.
                if matches!(e, RegistryError::Corrupt { .. }) {
                    *self.cold_refused.lock().unwrap_or_else(|p| p.into_inner()) = Some(latest);
                }
                self.record(Some(problem_of(&e)));
                Err(e)
            }
        }
    }

    /// Logs a problem when it first appears or changes, and when it goes away, not on every refresh.
    fn record(&self, problem: Option<ModelProblem>) {
        let mut slot = self.problem.lock().unwrap_or_else(|p| p.into_inner());
        if *slot == problem {
            return;
        }
        let serving = self.live().map(|l| l.version().to_string());
        match &problem {
            Some(p) => tracing::warn!(
                kind = %p.kind,
                object = %p.object,
                version = p.version.as_deref().unwrap_or("-"),
                retryable = p.retryable,
                serving = serving.as_deref().unwrap_or("none"),
                error = %p.message,
                "could not load the model; answering without it"
            ),
            None => tracing::info!(
                serving = serving.as_deref().unwrap_or("none"),
                "could not load the model: resolved"
            ),
        }
        *slot = problem;
    }

    /// The problem `/health` and the 503 report.
    pub fn problem(&self) -> Option<ModelProblem> {
        self.problem.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Why there is no model to answer with, for the person reading a fallback answer or a 503.
    pub fn why_no_model(&self) -> String {
        match self.problem() {
            Some(p) => format!("no model is loaded ({}): {}", p.kind, p.message),
            None => {
                "no model has been trained yet (run `cargo run --release -p training-export -- run`)".into()
            }
        }
    }

    /// Polls for new versions every `every` until the process ends.
    pub fn refresh_in_background(self: &Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        let slot = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // The first tick is immediate, and the slot has just been opened.
            tick.tick().await;
            loop {
                tick.tick().await;
                // Failures are recorded and logged by the slot itself.
                let _ = slot.refresh().await;
            }
        })
    }
}

impl ModelHealth for ModelSlot {
    fn model_status(&self) -> ModelStatus {
        ModelStatus::new(self.live().map(|l| l.version().to_string()), self.problem())
    }
}

/// What a registry error means for `/health`: which object, which version, what was wrong.
fn problem_of(e: &RegistryError) -> ModelProblem {
    let problem = |kind, object: &str, version: Option<&Version>, message: String| ModelProblem {
        kind,
        object: object.to_owned(),
        version: version.map(Version::to_string),
        message,
        retryable: e.is_retryable(),
    };
    match e {
        RegistryError::Store { location, source } => {
            let kind = match source {
                ArtifactError::S3 { .. } => ModelProblemKind::BucketUnreachable,
                _ => ModelProblemKind::StorageError,
            };
            problem(kind, location, None, e.to_string())
        }
        RegistryError::Timeout { location, after } => problem(
            ModelProblemKind::BucketUnreachable,
            location,
            None,
            format!(
                "no answer for {location} within the {} ms the model sync may take (MODEL_SYNC_TIMEOUT_MS)",
                after.as_millis()
            ),
        ),
        RegistryError::BadLatest { location, message } => {
            problem(ModelProblemKind::BadLatest, location, None, message.clone())
        }
        RegistryError::MissingVersion { version, location, .. } => {
            problem(ModelProblemKind::MissingVersion, location, Some(version), e.to_string())
        }
        RegistryError::Corrupt { version, location, .. } => {
            problem(ModelProblemKind::CorruptModel, location, Some(version), e.to_string())
        }
        other => {
            problem(ModelProblemKind::StorageError, other.location().unwrap_or("-"), None, e.to_string())
        }
    }
}

/// Six decimals are plenty to order items, and print in a third of the bytes.
pub(crate) fn round_score(score: f64) -> f64 {
    (score * 1e6).round() / 1e6
}

fn scored(items: impl IntoIterator<Item = (String, Option<f32>)>) -> Vec<ScoredItem> {
    items
        .into_iter()
        .filter_map(|(id, score)| {
            // Ids in a model came from parsed interactions; anything else is skipped, not served.
            let item_id = ItemId::parse(id).ok()?;
            Some(ScoredItem { item_id, score: score.map(|s| round_score(f64::from(s))) })
        })
        .collect()
}

/// The embedded backend over the model slot.
pub struct EmbeddedRecommender {
    slot: Arc<ModelSlot>,
    answers: AnswerCache,
}

impl EmbeddedRecommender {
    /// Answers every request from the model.
    pub fn new(slot: Arc<ModelSlot>) -> Self {
        Self { slot, answers: AnswerCache::new(0) }
    }

    /// Keeps up to about `bytes` of answers until the model changes (see [`AnswerCache`]).
    pub fn with_answer_cache(mut self, bytes: usize) -> Self {
        self.answers = AnswerCache::new(bytes);
        self
    }

    fn model_for(&self, request_user: &str, filtered: bool) -> Result<Arc<Model>, BackendError> {
        if filtered {
            return Err(BackendError::InvalidInput(
                "filters are evaluated by Personalize; the embedded recommender has none".into(),
            ));
        }
        let model = self
            .slot
            .current()
            .ok_or_else(|| BackendError::unavailable(FallbackReason::NoModel, self.slot.why_no_model()))?;
        if !model.knows_user(request_user) {
            return Err(BackendError::unavailable(
                FallbackReason::UnknownUser,
                "no history for this user in the model",
            ));
        }
        Ok(model)
    }
}

#[async_trait]
impl Recommender for EmbeddedRecommender {
    fn source(&self) -> Source {
        Source::Embedded
    }

    async fn recommend(&self, request: &RecommendRequest) -> Result<Ranked, BackendError> {
        let model = self.model_for(request.user_id.as_str(), request.filter.is_some())?;
        let (user, n) = (request.user_id.as_str(), request.num_results);
        if let Some(items) = self.answers.get(&model, user, n) {
            return Ok(Ranked { items: items.to_vec(), recommendation_id: None });
        }
        let recs = model.recommend(user, n, &QueryOptions::default());
        let items = scored(recs.items.into_iter().map(|(id, s)| (id, Some(s))));
        if self.answers.is_enabled() {
            self.answers.put(&model, user, n, items.as_slice().into());
        }
        Ok(Ranked { items, recommendation_id: None })
    }

    async fn rerank(&self, request: &RerankRequest) -> Result<Ranked, BackendError> {
        let model = self.model_for(request.user_id.as_str(), request.filter.is_some())?;
        let items: Vec<&str> = request.items.iter().map(|i| i.as_str()).collect();
        Ok(Ranked { items: scored(model.rerank(request.user_id.as_str(), &items)), recommendation_id: None })
    }

    fn is_ready(&self) -> bool {
        self.slot.current().is_some()
    }
}

/// The fallback inside Lambda, where there is no local store: popular items from the
/// newest model (the pipeline refreshes it from every export), minus what the student
/// already has when the model knows them.
pub struct ModelFallback {
    slot: Arc<ModelSlot>,
}

impl ModelFallback {
    pub fn new(slot: Arc<ModelSlot>) -> Self {
        Self { slot }
    }
}

impl crate::port::Fallback for ModelFallback {
    fn popular(&self, user: &schemas::UserId, n: usize) -> Option<Vec<ScoredItem>> {
        let model = self.slot.current()?;
        let seen: std::collections::HashSet<&str> = model.history(user.as_str()).into_iter().collect();
        let ranked = model.popular(n + seen.len());
        let top = ranked.first().map_or(1.0, |(_, s)| f64::from(*s).max(f64::MIN_POSITIVE));
        let items = ranked
            .into_iter()
            .filter(|(id, _)| !seen.contains(id.as_str()))
            .take(n)
            .map(|(id, s)| (id, Some((f64::from(s) / top) as f32)));
        Some(scored(items))
    }

    fn rerank(&self, items: &[ItemId]) -> Option<Vec<ScoredItem>> {
        let Some(model) = self.slot.current() else {
            // Without data, the caller's own order is the honest answer.
            return Some(items.iter().map(|i| ScoredItem { item_id: i.clone(), score: None }).collect());
        };
        let ids: Vec<&str> = items.iter().map(|i| i.as_str()).collect();
        // An empty user id is never a valid USER_ID, so the model orders by popularity.
        Some(scored(model.rerank("", &ids)))
    }

    fn has_data(&self) -> bool {
        self.slot.current().is_some()
    }

    fn why_no_data(&self) -> Option<String> {
        (!self.has_data()).then(|| self.slot.why_no_model())
    }
}
