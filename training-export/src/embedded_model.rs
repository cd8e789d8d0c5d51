//! The [`ModelTrainer`] port on the embedded recommender (crate `recommender`): train on
//! the export's CSV (the very file Personalize imports), keep the result as a candidate
//! until the quality gate passes, then publish it as a model version the ranking API
//! picks up.
//!
//! Candidates and live versions both go through the recommender's `ModelRegistry`, over the
//! pipeline's object store: `$DATA_DIR` locally, the data bucket with `DATA_BUCKET`. The
//! registry owns the layout; a candidate is kept aside, not live, until the gate passes.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use artifacts::ObjectStore;
use async_trait::async_trait;
use recommender::{ModelInfo, ModelRegistry, RegistryError, TrainConfig, Version};

use crate::manifest::Manifest;
use crate::trainer::{ModelTrainer, ModelVersion, TrainerError};

pub struct EmbeddedTrainer {
    objects: Arc<dyn ObjectStore>,
    /// The directory the object store writes to, when it is one: the CSV is read in place.
    local_root: Option<PathBuf>,
    registry: ModelRegistry,
    config: TrainConfig,
}

fn failure(message: impl Into<String>, retryable: bool) -> TrainerError {
    TrainerError { message: message.into(), retryable }
}

impl From<RegistryError> for TrainerError {
    fn from(e: RegistryError) -> Self {
        failure(e.to_string(), e.is_retryable())
    }
}

/// The figures the quality gate compares, under our names and Personalize's, so one
/// `QUALITY_METRIC` setting works for both backends.
pub fn figures(info: &ModelInfo) -> BTreeMap<String, f64> {
    let mut metrics = BTreeMap::new();
    // Candidates are listed best first; the chosen model is the first.
    if let Some(best) = info.selection.candidates.first() {
        metrics.insert("ndcg_at_10".to_owned(), best.ndcg_at_10);
        metrics.insert("normalized_discounted_cumulative_gain_at_10".to_owned(), best.ndcg_at_10);
        metrics.insert("recall_at_20".to_owned(), best.recall_at_20);
    }
    metrics
}

impl EmbeddedTrainer {
    /// Over the pipeline's object store. `local_root` is the directory that store writes to,
    /// when it is one, so that the export's CSV is trained on in place.
    pub fn new(objects: Arc<dyn ObjectStore>, local_root: Option<PathBuf>) -> Self {
        let registry = ModelRegistry::new(objects.clone());
        Self { objects, local_root, registry, config: TrainConfig::default() }
    }

    /// In AWS without Personalize: everything in the bucket.
    pub fn in_bucket(objects: Arc<dyn ObjectStore>) -> Self {
        Self::new(objects, None)
    }

    /// Sets the training configuration (tests fix the seed and clock).
    pub fn with_config(mut self, config: TrainConfig) -> Self {
        self.config = config;
        self
    }

    /// The export's CSV as a local file: in place for a directory, downloaded otherwise.
    async fn csv_path(&self, manifest: &Manifest) -> Result<(PathBuf, bool), TrainerError> {
        if let Some(root) = &self.local_root {
            return Ok((root.join(&manifest.csv.key), false));
        }
        let bytes = self
            .objects
            .get(&manifest.csv.key)
            .await
            .map_err(|e| failure(e.to_string(), e.is_retryable()))?
            .ok_or_else(|| failure(format!("{} is missing", manifest.csv.key), false))?;
        let path = std::env::temp_dir().join(format!("training-export-{}.csv", manifest.run_id));
        tokio::fs::write(&path, bytes)
            .await
            .map_err(|e| failure(format!("{}: {e}", path.display()), true))?;
        Ok((path, true))
    }
}

#[async_trait]
impl ModelTrainer for EmbeddedTrainer {
    async fn train(&self, manifest: &Manifest, _version: &str) -> Result<ModelVersion, TrainerError> {
        let (path, downloaded) = self.csv_path(manifest).await?;
        let config = self.config.clone();
        let training_path = path.clone();
        // Training is CPU work for seconds to minutes: off the async threads.
        let trained = tokio::task::spawn_blocking(move || {
            let rows = recommender::read_csv(&training_path).map_err(|e| e.to_string())?;
            recommender::try_train(rows, &config).map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| failure(format!("the training task failed: {e}"), true))?;
        if downloaded {
            let _ = tokio::fs::remove_file(&path).await;
        }
        let model = trained.map_err(|e| failure(e, false))?;
        let info = model.info();
        let version = self.registry.store_candidate(&model).await?.to_string();
        tracing::info!(
            %version, model = %info.model, users = info.users, items = info.items,
            fit_seconds = info.fit_seconds, "embedded model trained"
        );
        Ok(ModelVersion { version, metrics: figures(info) })
    }

    async fn live(&self) -> Result<Option<ModelVersion>, TrainerError> {
        let live = self.registry.live().await?;
        Ok(live.map(|(version, info)| ModelVersion { version: version.to_string(), metrics: figures(&info) }))
    }

    async fn publish(&self, version: &str) -> Result<(), TrainerError> {
        let parsed = Version::parse(version)?;
        self.registry.promote(&parsed).await?;
        tracing::info!(%version, "embedded model version published");
        Ok(())
    }
}
