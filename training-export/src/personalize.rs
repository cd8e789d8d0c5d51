//! The Personalize control plane as the pipeline needs it: start a job by a name
//! derived from the run id (finding the existing job when a retried step starts it a
//! second time), ask how it is doing, read metrics, update the campaign. Every call
//! returns at once; waiting is the state machine's business, not this module's.
//!
//! Operations called: `CreateDatasetImportJob`, `DescribeDatasetImportJob`,
//! `CreateSolutionVersion`, `ListSolutionVersions`, `DescribeSolutionVersion`,
//! `GetSolutionMetrics`, `DescribeCampaign`, `UpdateCampaign`.

use std::collections::BTreeMap;

use async_trait::async_trait;

use crate::run::{ImportMode, TrainingMode};

pub use crate::backend::JobStatus;

#[cfg(feature = "aws")]
mod aws;
#[cfg(feature = "aws")]
pub use aws::AwsPersonalize;

/// The campaign: what it serves, and its latest update if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CampaignState {
    pub serving: Option<String>,
    /// (solution version the update puts live, its status)
    pub latest_update: Option<(String, JobStatus)>,
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("Personalize {operation}: {message}")]
pub struct PersonalizeError {
    pub operation: &'static str,
    pub message: String,
    /// Throttling, a busy resource, a network fault: the next invocation may succeed.
    pub retryable: bool,
}

#[async_trait]
pub trait Personalize: Send + Sync {
    /// Starts (or finds, if it already exists) the import job `name`; returns its ARN.
    async fn start_import(
        &self,
        name: &str,
        source: &str,
        mode: ImportMode,
    ) -> Result<String, PersonalizeError>;
    async fn import_status(&self, job_arn: &str) -> Result<JobStatus, PersonalizeError>;
    /// Starts (or finds) the solution version `name`, created no earlier than
    /// `not_before` (epoch seconds); returns its ARN.
    async fn start_training(
        &self,
        name: &str,
        mode: TrainingMode,
        not_before: i64,
    ) -> Result<String, PersonalizeError>;
    async fn training_status(&self, solution_version_arn: &str) -> Result<JobStatus, PersonalizeError>;
    async fn metrics(&self, solution_version_arn: &str) -> Result<BTreeMap<String, f64>, PersonalizeError>;
    async fn campaign(&self) -> Result<CampaignState, PersonalizeError>;
    async fn update_campaign(&self, solution_version_arn: &str) -> Result<(), PersonalizeError>;
}

/// The ARNs the pipeline works with, from the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersonalizeResources {
    pub dataset_group_arn: String,
    pub interactions_dataset_arn: String,
    pub solution_arn: String,
    pub campaign_arn: String,
    pub import_role_arn: String,
}
