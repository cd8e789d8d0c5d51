//! The embedded recommender as a [`ModelBackend`]: it trains straight from the export's
//! manifest (no import), synchronously, so a run goes Exported → Training → Trained in
//! one invocation; deploying is publishing the version, which is done at once.

use std::collections::BTreeMap;
use std::sync::Arc;

use artifacts::ObjectStore;
use async_trait::async_trait;

use super::{BackendError, Deployment, JobStatus, ModelBackend, ModelVersion, Preparation};
use crate::export;
use crate::run::{Backend, ExportRecord, ImportRecord, Run, TrainingMode, TrainingRecord};
use crate::trainer::{ModelTrainer, TrainerError};

pub struct EmbeddedBackend {
    trainer: Arc<dyn ModelTrainer>,
    /// Where the exports' manifests are read from.
    objects: Arc<dyn ObjectStore>,
}

impl EmbeddedBackend {
    pub fn new(trainer: Arc<dyn ModelTrainer>, objects: Arc<dyn ObjectStore>) -> Self {
        Self { trainer, objects }
    }
}

impl From<TrainerError> for BackendError {
    /// The bare message: run records and events have always carried it without a prefix.
    fn from(e: TrainerError) -> Self {
        BackendError { message: e.message, retryable: e.retryable }
    }
}

#[async_trait]
impl ModelBackend for EmbeddedBackend {
    fn kind(&self) -> Backend {
        Backend::Embedded
    }

    async fn prepare(&self, _: &Run, _: &ExportRecord) -> Result<Preparation, BackendError> {
        Ok(Preparation::NotNeeded)
    }

    async fn preparation_status(&self, import: &ImportRecord) -> Result<JobStatus, BackendError> {
        Err(BackendError::permanent(format!(
            "the embedded model imports nothing, yet the run records import job {}",
            import.job_name
        )))
    }

    async fn start_training(&self, run: &Run, _: &[Run]) -> Result<TrainingRecord, BackendError> {
        let prefix = run.export.as_ref().map(|e| e.prefix.clone()).ok_or_else(|| {
            BackendError::permanent(format!("run {} has no export to train on", run.run_id))
        })?;
        let manifest =
            export::read_manifest(self.objects.as_ref(), &prefix).await.map_err(BackendError::permanent)?;
        let model = self.trainer.train(&manifest, &run.run_id).await?;
        Ok(TrainingRecord {
            name: run.run_id.clone(),
            version: Some(model.version),
            mode: TrainingMode::Full,
            completed: true,
            metrics: model.metrics,
        })
    }

    async fn training_status(&self, _: &TrainingRecord) -> Result<JobStatus, BackendError> {
        // Training is synchronous: a record exists only once it is done.
        Ok(JobStatus::Active)
    }

    async fn candidate_metrics(
        &self,
        training: &TrainingRecord,
    ) -> Result<BTreeMap<String, f64>, BackendError> {
        Ok(training.metrics.clone())
    }

    async fn live(&self, _candidate: &str) -> Result<Option<ModelVersion>, BackendError> {
        Ok(self.trainer.live().await?)
    }

    async fn deploy(&self, target: &str) -> Result<Deployment, BackendError> {
        self.trainer.publish(target).await?;
        Ok(Deployment::Done)
    }
}
