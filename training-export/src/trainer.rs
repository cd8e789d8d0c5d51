//! The embedded retrain, behind a port: train the embedded recommender on an export,
//! keep the result as a candidate model version, say what is live, publish a version.
//! The pipeline drives it, like Personalize, through its backend port (gate, deploy,
//! rollback), but it is not the same dance: the embedded model trains synchronously on
//! the export's CSV and needs no import. The pipeline's tests do not depend on the
//! recommender crate.

use std::collections::BTreeMap;

use async_trait::async_trait;

use crate::manifest::Manifest;

/// A trained model version and its validation figures (e.g. `ndcg_at_10`).
#[derive(Debug, Clone, PartialEq)]
pub struct ModelVersion {
    pub version: String,
    pub metrics: BTreeMap<String, f64>,
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("embedded model: {message}")]
pub struct TrainerError {
    pub message: String,
    pub retryable: bool,
}

#[async_trait]
pub trait ModelTrainer: Send + Sync {
    /// Trains on the export described by `manifest` and stores the result as the
    /// candidate `version` (not live yet). Training the same version again replaces it.
    async fn train(&self, manifest: &Manifest, version: &str) -> Result<ModelVersion, TrainerError>;
    /// The live version, if any, with its figures.
    async fn live(&self) -> Result<Option<ModelVersion>, TrainerError>;
    /// Makes `version` the live one (also used to roll back).
    async fn publish(&self, version: &str) -> Result<(), TrainerError>;
}

/// For pipelines that only export (tools, tests): every training call says that no
/// trainer is configured, and a full run fails at its Train step with that reason.
/// The binaries use [`crate::embedded_model::EmbeddedTrainer`].
pub struct RecommenderNotBuiltIn;

const NOT_BUILT_IN: &str = "no model trainer is configured in this pipeline; use `export` only";

#[async_trait]
impl ModelTrainer for RecommenderNotBuiltIn {
    async fn train(&self, _: &Manifest, _: &str) -> Result<ModelVersion, TrainerError> {
        Err(TrainerError { message: NOT_BUILT_IN.into(), retryable: false })
    }
    async fn live(&self) -> Result<Option<ModelVersion>, TrainerError> {
        Ok(None)
    }
    async fn publish(&self, _: &str) -> Result<(), TrainerError> {
        Err(TrainerError { message: NOT_BUILT_IN.into(), retryable: false })
    }
}
