//! Where models come from, behind one port: the pipeline's state machine drives a
//! [`ModelBackend`] through prepare (import) → train → gate → deploy without knowing
//! whether Amazon Personalize or the embedded recommender does the work.
//!
//! Every call returns at once or finishes its work synchronously; waiting for a job is
//! the state machine's business (it saves the run and ends the invocation).

use std::collections::BTreeMap;

use async_trait::async_trait;

use crate::run::{Backend, ExportRecord, ImportRecord, Run, TrainingRecord};
pub use crate::trainer::ModelVersion;

pub mod embedded;
pub mod personalize;

pub use embedded::EmbeddedBackend;
pub use personalize::{PersonalizeBackend, PersonalizeSettings};

/// Where a job stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobStatus {
    /// Still running; says what and how far (`import job CREATE IN_PROGRESS`): come back later.
    InProgress(String),
    Active,
    /// Failed, with the backend's reason.
    Failed(String),
}

/// What a backend needs done with an export before it can train on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Preparation {
    /// A job was started (Personalize: a dataset import job); the run waits for it.
    Started(ImportRecord),
    /// The backend trains straight from the export (embedded).
    NotNeeded,
}

/// The answer to "put this version live".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deployment {
    /// It is live.
    Done,
    /// It is on its way (or waits for someone else's update): ask again later.
    Wait(String),
    /// It will not go live; the reason says what is live instead.
    Failed(String),
}

/// A backend call that failed. `retryable`: throttling, a busy resource, a network
/// fault, where the next invocation may succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct BackendError {
    pub message: String,
    pub retryable: bool,
}

impl BackendError {
    pub fn permanent(message: impl Into<String>) -> Self {
        Self { message: message.into(), retryable: false }
    }
}

#[async_trait]
pub trait ModelBackend: Send + Sync {
    /// Which backend this is, recorded on every run it starts.
    fn kind(&self) -> Backend;
    /// After the export of `run`: start whatever must happen before training.
    /// Idempotent by name, as a crashed invocation may repeat it.
    async fn prepare(&self, run: &Run, export: &ExportRecord) -> Result<Preparation, BackendError>;
    /// How the preparation [`Preparation::Started`] is doing.
    async fn preparation_status(&self, import: &ImportRecord) -> Result<JobStatus, BackendError>;
    /// Starts (or, synchronously, does) the training of `run`; `history` is the latest
    /// runs, newest first. A record that is `completed` needs no [`Self::training_status`].
    async fn start_training(&self, run: &Run, history: &[Run]) -> Result<TrainingRecord, BackendError>;
    async fn training_status(&self, training: &TrainingRecord) -> Result<JobStatus, BackendError>;
    /// The offline metrics of the newly trained version.
    async fn candidate_metrics(
        &self,
        training: &TrainingRecord,
    ) -> Result<BTreeMap<String, f64>, BackendError>;
    /// The version live now and its metrics (none when it is `candidate` itself:
    /// there is nothing else to compare with).
    async fn live(&self, candidate: &str) -> Result<Option<ModelVersion>, BackendError>;
    /// Puts `target` live (also how a rollback puts the previous version back).
    /// Asked again until it answers Done or Failed.
    async fn deploy(&self, target: &str) -> Result<Deployment, BackendError>;
    /// Why a new run must export the whole table rather than only what was written since
    /// the last imported export (`history`: the latest runs, newest first), or `None`
    /// when a delta-only export will do. By default the whole table: a backend that
    /// trains from the export itself needs all of it.
    fn full_export_due(&self, _history: &[Run], _now: i64) -> Option<String> {
        Some(format!("the {:?} backend trains on the whole export", self.kind()))
    }
}
