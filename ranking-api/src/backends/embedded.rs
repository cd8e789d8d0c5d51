//! The embedded backend: the newest model version published under
//! `$DATA_DIR/models` by the training pipeline, served in-process and swapped for a
//! newer one without a restart.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use recommender::{
    InteractionRow, LiveModel, Model, ModelFileError, ModelRegistry, QueryOptions, Refresh, RegistryError,
    TrainConfig,
};
use schemas::ItemId;
use store::InteractionStore;
use store::embedded::EmbeddedStore;

use super::answer_cache::AnswerCache;
use crate::port::{
    BackendError, FallbackReason, ModelHealth, ModelProblem, ModelProblemKind, ModelStatus, Ranked,
    RecommendRequest, Recommender, RerankRequest, ScoredItem, Source,
};

/// The model being served, once one exists, and what went wrong fetching or loading one.
pub struct ModelSlot {
    /// The registry directory, opened (created) on first use: one that cannot be created is
    /// reported like any other model problem, not a failed start.
    dir: PathBuf,
    registry: OnceLock<ModelRegistry>,
    live: RwLock<Option<Arc<LiveModel>>>,
    problems: Mutex<Problems>,
}

/// The last failure of each step, until that step succeeds again.
#[derive(Default)]
struct Problems {
    /// Copying from the bucket (see `BucketModels`); never set for a local model directory.
    fetch: Option<ModelProblem>,
    /// Loading from the registry directory.
    load: Option<ModelProblem>,
}

impl ModelSlot {
    /// Opens the registry and the newest version that loads, if any. Nothing about the
    /// directory's content is an error here: a model that does not load (a corrupt file, a
    /// bad `LATEST`, a missing version) or a directory that cannot be created leaves the slot
    /// empty (or on an older version), [`ModelHealth`] says why, and the next refresh tries again.
    pub fn open(models_dir: &Path) -> Self {
        let slot = Self {
            dir: models_dir.to_path_buf(),
            registry: OnceLock::new(),
            live: RwLock::new(None),
            problems: Mutex::default(),
        };
        // Any failure is recorded (and logged) by `refresh`.
        let _ = slot.refresh();
        slot
    }

    /// The registry, opening (creating) its directory the first time.
    pub fn registry(&self) -> Result<&ModelRegistry, RegistryError> {
        if let Some(registry) = self.registry.get() {
            return Ok(registry);
        }
        let opened = ModelRegistry::open(&self.dir)?;
        Ok(self.registry.get_or_init(|| opened))
    }

    /// The model to answer this request with.
    pub fn current(&self) -> Option<Arc<Model>> {
        let live = self.live.read().unwrap_or_else(|p| p.into_inner()).clone();
        live.map(|l| l.current())
    }

    fn live(&self) -> Option<Arc<LiveModel>> {
        self.live.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Picks up a newer version, or the first one. The model serving now keeps
    /// serving when the new one is refused; the refusal is recorded for `/health`.
    pub fn refresh(&self) -> Result<Option<String>, RegistryError> {
        let registry = match self.registry() {
            Ok(registry) => registry,
            Err(e) => {
                self.record_load(Some(registry_problem(&self.dir, &e)));
                return Err(e);
            }
        };
        match self.live() {
            Some(live) => match live.refresh() {
                Ok(Refresh::Swapped { from, to }) => {
                    tracing::info!(%from, %to, model = %live.current().info().model, "swapped in a newer model");
                    self.record_load(None);
                    Ok(Some(to.to_string()))
                }
                Ok(Refresh::Unchanged) => {
                    // A refused version stays refused (and reported) until LATEST moves on; back
                    // on the version serving (a rollback), nothing is wrong any more.
                    if registry.latest_version().ok().flatten().is_some_and(|v| v == live.version()) {
                        self.record_load(None);
                    }
                    Ok(None)
                }
                Err(e) => {
                    self.record_load(Some(registry_problem(&self.dir, &e)));
                    Err(e)
                }
            },
            None => match LiveModel::open(registry.clone()) {
                Ok((live, refused)) => {
                    let version = live.version();
                    tracing::info!(%version, model = %live.current().info().model, "serving the embedded model");
                    for e in refused.iter().skip(1) {
                        tracing::warn!(error = %e, "an older model version was refused too");
                    }
                    *self.live.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(live));
                    self.record_load(refused.first().map(|e| registry_problem(&self.dir, e)));
                    Ok(Some(version.to_string()))
                }
                Err(RegistryError::NoModel(_)) => {
                    self.record_load(None);
                    Ok(None)
                }
                Err(e) => {
                    // The registry reports the last version it tried (the oldest); what matters
                    // is why the one LATEST names does not load.
                    let e = match registry.latest_version() {
                        Ok(Some(latest)) => registry.load(&latest).err().unwrap_or(e),
                        _ => e,
                    };
                    self.record_load(Some(registry_problem(&self.dir, &e)));
                    Err(e)
                }
            },
        }
    }

    /// Records how the last copy from the bucket went (`BucketModels::sync`).
    pub fn record_fetch(&self, problem: Option<ModelProblem>) {
        self.record(problem, |p| &mut p.fetch, "could not fetch the model from the bucket");
    }

    fn record_load(&self, problem: Option<ModelProblem>) {
        self.record(problem, |p| &mut p.load, "could not load the model");
    }

    /// Logs a problem when it first appears or changes, and when it goes away, not on every refresh.
    fn record(
        &self,
        problem: Option<ModelProblem>,
        step: impl FnOnce(&mut Problems) -> &mut Option<ModelProblem>,
        what: &str,
    ) {
        let mut problems = self.problems.lock().unwrap_or_else(|p| p.into_inner());
        let slot = step(&mut problems);
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
                "{what}; answering without it"
            ),
            None => tracing::info!(serving = serving.as_deref().unwrap_or("none"), "{what}: resolved"),
        }
        *slot = problem;
    }

    /// The problem `/health` and the 503 report: the fetch first (it comes first), then the load.
    pub fn problem(&self) -> Option<ModelProblem> {
        let problems = self.problems.lock().unwrap_or_else(|p| p.into_inner());
        problems.fetch.clone().or_else(|| problems.load.clone())
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
            loop {
                tick.tick().await;
                let slot = slot.clone();
                // Failures are recorded and logged by the slot itself.
                if let Err(e) = tokio::task::spawn_blocking(move || slot.refresh()).await {
                    tracing::warn!(error = %e, "model refresh task failed");
                }
            }
        })
    }
}

impl ModelHealth for ModelSlot {
    fn model_status(&self) -> ModelStatus {
        ModelStatus::new(self.live().map(|l| l.version().to_string()), self.problem())
    }
}

/// What a registry error means for `/health`: which file, which version, what was wrong.
fn registry_problem(dir: &Path, e: &RegistryError) -> ModelProblem {
    let latest = dir.join("LATEST");
    let problem = |kind, object: &Path, version: Option<String>, message: String, retryable| ModelProblem {
        kind,
        object: object.display().to_string(),
        version,
        message,
        retryable,
    };
    // `<dir>/<version>/model.bin` names its version.
    let version_of =
        |path: &Path| path.parent().and_then(Path::file_name).and_then(|n| n.to_str()).map(str::to_owned);
    match e {
        RegistryError::BadVersionName(content) => problem(
            ModelProblemKind::BadLatest,
            &latest,
            None,
            bad_latest_message(&latest.display().to_string(), content),
            false,
        ),
        RegistryError::Io { path, source }
            if *path == latest && source.kind() == std::io::ErrorKind::InvalidData =>
        {
            problem(
                ModelProblemKind::BadLatest,
                &latest,
                None,
                format!("{} is not text", latest.display()),
                false,
            )
        }
        RegistryError::ModelFile(ModelFileError::Invalid { path, .. }) => {
            problem(ModelProblemKind::CorruptModel, path, version_of(path), e.to_string(), false)
        }
        RegistryError::ModelFile(ModelFileError::Io { path, source })
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            let version = version_of(path);
            let message = format!(
                "{} names {}, but {} is missing",
                latest.display(),
                version.as_deref().unwrap_or("a version"),
                path.display()
            );
            problem(ModelProblemKind::MissingVersion, path, version, message, false)
        }
        RegistryError::ModelFile(ModelFileError::Io { path, .. }) => {
            problem(ModelProblemKind::StorageError, path, version_of(path), e.to_string(), true)
        }
        RegistryError::Io { path, .. } => {
            problem(ModelProblemKind::StorageError, path, None, e.to_string(), true)
        }
        RegistryError::NoModel(dir) | RegistryError::VersionConflict { dir, .. } => {
            problem(ModelProblemKind::StorageError, dir, None, e.to_string(), false)
        }
    }
}

/// `LATEST` holds something that is not a version name: say what, briefly (it may be anything).
pub(crate) fn bad_latest_message(latest: &str, content: &str) -> String {
    if content.is_empty() {
        return format!("{latest} is empty");
    }
    let shown: String = content.chars().take(64).collect();
    let more = if shown.len() < content.len() { "..." } else { "" };
    format!("{latest} holds {shown:?}{more}, not a model version name")
}

/// Trains and publishes a first model from the embedded store, so a fresh checkout
/// serves personalised answers without running the pipeline first. Later versions
/// come from `training-export run`.
pub async fn train_first_model(store: &EmbeddedStore, slot: &ModelSlot) -> Result<String, String> {
    let mut rows = Vec::new();
    let mut pages = store.scan_segment(0, 1);
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| e.to_string())?;
        rows.extend(page.interactions.iter().map(InteractionRow::from));
    }
    drop(pages);
    let registry = slot.registry().map_err(|e| e.to_string())?.clone();
    let version = tokio::task::spawn_blocking(move || -> Result<String, String> {
        let model = recommender::train(rows, &TrainConfig::default()).map_err(|e| e.to_string())?;
        let version = registry.publish(&model).map_err(|e| e.to_string())?;
        Ok(version.to_string())
    })
    .await
    .map_err(|e| e.to_string())??;
    slot.refresh().map_err(|e| e.to_string())?;
    Ok(version)
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
