//! The [`ModelTrainer`] port on the embedded recommender (crate `recommender`): train on
//! the export's CSV (the very file Personalize imports), keep the result as a candidate
//! until the quality gate passes, then publish it as a model version the ranking API
//! picks up.
//!
//! Where models live:
//! * locally, `$DATA_DIR/models/` through the recommender's own `ModelRegistry`
//!   (`<version>/model.bin`, `<version>/info.json`, `LATEST`);
//! * with `DATA_BUCKET`, the same layout under `models/` in the bucket, written through
//!   `artifacts` (`LATEST` last, so a reader never follows it to a partial version).
//!
//! Candidates wait under `model-candidates/<version>/model.bin` in the object store:
//! the registry's `publish` also makes a version live, so a model that may yet be
//! rejected must not go through it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use artifacts::ObjectStore;
use async_trait::async_trait;
use recommender::{Model, ModelInfo, ModelRegistry, TrainConfig, Version};

use crate::manifest::Manifest;
use crate::trainer::{ModelTrainer, ModelVersion, TrainerError};

/// Where the live versions are kept.
enum Published {
    /// The recommender's registry in a local directory.
    Registry(ModelRegistry),
    /// The same layout under `models/` in the object store (a bucket).
    Objects,
}

pub struct EmbeddedTrainer {
    objects: Arc<dyn ObjectStore>,
    /// The directory the object store writes to, when it is one: the CSV is read in place.
    local_root: Option<PathBuf>,
    published: Published,
    config: TrainConfig,
}

const MODELS: &str = "models";
const CANDIDATES: &str = "model-candidates";

fn failure(message: impl Into<String>, retryable: bool) -> TrainerError {
    TrainerError { message: message.into(), retryable }
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
    /// Locally: exports and candidates in `data_dir` (a `DirectoryStore` rooted there),
    /// versions in `data_dir/models` through the registry.
    pub fn local(data_dir: PathBuf, objects: Arc<dyn ObjectStore>) -> Result<Self, TrainerError> {
        let registry =
            ModelRegistry::open(data_dir.join(MODELS)).map_err(|e| failure(e.to_string(), false))?;
        Ok(Self {
            objects,
            local_root: Some(data_dir),
            published: Published::Registry(registry),
            config: TrainConfig::default(),
        })
    }

    /// In AWS without Personalize: everything in the bucket.
    pub fn in_bucket(objects: Arc<dyn ObjectStore>) -> Self {
        Self { objects, local_root: None, published: Published::Objects, config: TrainConfig::default() }
    }

    /// Sets the training configuration (tests fix the seed and clock).
    pub fn with_config(mut self, config: TrainConfig) -> Self {
        self.config = config;
        self
    }

    fn candidate_key(version: &str) -> String {
        format!("{CANDIDATES}/{version}/model.bin")
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

    async fn load_object_model(&self, key: &str) -> Result<Option<Model>, TrainerError> {
        let Some(bytes) =
            self.objects.get(key).await.map_err(|e| failure(e.to_string(), e.is_retryable()))?
        else {
            return Ok(None);
        };
        Model::from_bytes(&bytes).map(Some).map_err(|e| failure(format!("{key}: {e}"), false))
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
        let version = info.version.clone();
        self.objects
            .put(&Self::candidate_key(&version), &model.to_bytes())
            .await
            .map_err(|e| failure(e.to_string(), e.is_retryable()))?;
        tracing::info!(
            %version, model = %info.model, users = info.users, items = info.items,
            fit_seconds = info.fit_seconds, "embedded model trained"
        );
        Ok(ModelVersion { version, metrics: figures(info) })
    }

    async fn live(&self) -> Result<Option<ModelVersion>, TrainerError> {
        let model = match &self.published {
            Published::Registry(registry) => {
                let Some(version) = registry.latest_version().map_err(|e| failure(e.to_string(), true))?
                else {
                    return Ok(None);
                };
                registry.load(&version).map_err(|e| failure(e.to_string(), false))?
            }
            Published::Objects => {
                let Some(latest) = self
                    .objects
                    .get(&format!("{MODELS}/LATEST"))
                    .await
                    .map_err(|e| failure(e.to_string(), true))?
                else {
                    return Ok(None);
                };
                let version = String::from_utf8_lossy(&latest).trim().to_owned();
                self.load_object_model(&format!("{MODELS}/{version}/model.bin")).await?.ok_or_else(|| {
                    failure(format!("{MODELS}/LATEST names {version}, which is missing"), false)
                })?
            }
        };
        Ok(Some(ModelVersion { version: model.info().version.clone(), metrics: figures(model.info()) }))
    }

    async fn publish(&self, version: &str) -> Result<(), TrainerError> {
        let parsed = Version::parse(version).map_err(|e| failure(e.to_string(), false))?;
        let candidate = self.load_object_model(&Self::candidate_key(version)).await?;
        match (&self.published, candidate) {
            (Published::Registry(registry), Some(model)) => {
                registry.publish(&model).map_err(|e| failure(e.to_string(), false))?;
                // `publish` moves LATEST only forward; a rollback to an older version needs this.
                registry.point_latest_to(&parsed).map_err(|e| failure(e.to_string(), true))?;
            }
            (Published::Registry(registry), None) => {
                // A rollback: the version was published before.
                if !registry.versions().map_err(|e| failure(e.to_string(), true))?.contains(&parsed) {
                    return Err(failure(
                        format!("model version {version} is neither a candidate nor published"),
                        false,
                    ));
                }
                registry.point_latest_to(&parsed).map_err(|e| failure(e.to_string(), true))?;
            }
            (Published::Objects, candidate) => {
                let model_key = format!("{MODELS}/{version}/model.bin");
                if let Some(model) = candidate {
                    let info = serde_json::to_vec_pretty(model.info()).expect("model info serializes");
                    let put = |key: String, bytes: Vec<u8>| async move {
                        self.objects
                            .put(&key, &bytes)
                            .await
                            .map_err(|e| failure(e.to_string(), e.is_retryable()))
                    };
                    put(model_key.clone(), model.to_bytes()).await?;
                    put(format!("{MODELS}/{version}/info.json"), info).await?;
                } else if self.load_object_model(&model_key).await?.is_none() {
                    return Err(failure(
                        format!("model version {version} is neither a candidate nor published"),
                        false,
                    ));
                }
                self.objects
                    .put(&format!("{MODELS}/LATEST"), format!("{version}\n").as_bytes())
                    .await
                    .map_err(|e| failure(e.to_string(), e.is_retryable()))?;
            }
        }
        tracing::info!(%version, "embedded model version published");
        Ok(())
    }
}
