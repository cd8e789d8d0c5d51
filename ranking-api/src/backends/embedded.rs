//! The embedded backend: the newest model version published under
//! `$DATA_DIR/models` by the training pipeline, served in-process and swapped for a
//! newer one without a restart.

use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use recommender::{
    InteractionRow, LiveModel, Model, ModelRegistry, QueryOptions, Refresh, RegistryError, TrainConfig,
};
use schemas::ItemId;
use store::InteractionStore;
use store::embedded::EmbeddedStore;

use super::answer_cache::AnswerCache;
use crate::port::{
    BackendError, FallbackReason, Ranked, RecommendRequest, Recommender, RerankRequest, ScoredItem, Source,
};

/// The model being served, once one exists.
pub struct ModelSlot {
    registry: ModelRegistry,
    live: RwLock<Option<Arc<LiveModel>>>,
}

impl ModelSlot {
    /// Opens the registry and the newest version that loads, if any. Broken versions
    /// are skipped with a warning; the directory may also simply be empty.
    pub fn open(models_dir: &Path) -> Result<Self, RegistryError> {
        let registry = ModelRegistry::open(models_dir)?;
        let live = Self::open_live(&registry)?;
        Ok(Self { registry, live: RwLock::new(live) })
    }

    fn open_live(registry: &ModelRegistry) -> Result<Option<Arc<LiveModel>>, RegistryError> {
        match LiveModel::open(registry.clone()) {
            Ok((live, refused)) => {
                for e in refused {
                    tracing::warn!(error = %e, "a model version was refused; serving an older one");
                }
                tracing::info!(version = %live.version(), model = %live.current().info().model, "serving the embedded model");
                Ok(Some(Arc::new(live)))
            }
            Err(RegistryError::NoModel(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub fn registry(&self) -> &ModelRegistry {
        &self.registry
    }

    /// The model to answer this request with.
    pub fn current(&self) -> Option<Arc<Model>> {
        let live = self.live.read().unwrap_or_else(|p| p.into_inner()).clone();
        live.map(|l| l.current())
    }

    /// Picks up a newer version, or the first one. The model serving now keeps
    /// serving when the new one is refused.
    pub fn refresh(&self) -> Result<Option<String>, RegistryError> {
        let live = self.live.read().unwrap_or_else(|p| p.into_inner()).clone();
        match live {
            Some(live) => match live.refresh()? {
                Refresh::Swapped { from, to } => {
                    tracing::info!(%from, %to, model = %live.current().info().model, "swapped in a newer model");
                    Ok(Some(to.to_string()))
                }
                Refresh::Unchanged => Ok(None),
            },
            None => {
                let opened = Self::open_live(&self.registry)?;
                let version = opened.as_ref().map(|l| l.version().to_string());
                *self.live.write().unwrap_or_else(|p| p.into_inner()) = opened;
                Ok(version)
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
                match tokio::task::spawn_blocking(move || slot.refresh()).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "model refresh failed; still serving the previous model")
                    }
                    Err(e) => tracing::warn!(error = %e, "model refresh task failed"),
                }
            }
        })
    }
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
    let registry = slot.registry().clone();
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
        let model = self.slot.current().ok_or_else(|| {
            BackendError::unavailable(
                FallbackReason::NoModel,
                "no model has been trained yet (run `cargo run --release -p training-export -- run`)",
            )
        })?;
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
}
