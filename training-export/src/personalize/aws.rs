//! The Personalize adapter over the AWS SDK (the `aws` feature).

use std::collections::BTreeMap;

use async_trait::async_trait;
use aws_sdk_personalize::Client;
use aws_sdk_personalize::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_personalize::types::{self as pt, DataSource};

use super::{CampaignState, JobStatus, Personalize, PersonalizeError, PersonalizeResources};
use crate::run::{ImportMode, TrainingMode};

impl JobStatus {
    /// Personalize's `status` and `failureReason`: `CREATE PENDING`, `CREATE IN_PROGRESS`, ...
    /// are in progress, `ACTIVE` is done, `... FAILED` failed.
    fn from_status(status: Option<&str>, failure: Option<&str>) -> Self {
        match status {
            Some("ACTIVE") => JobStatus::Active,
            Some(s) if s.ends_with("FAILED") => {
                JobStatus::Failed(failure.unwrap_or("Personalize gave no failureReason").to_owned())
            }
            Some(s) => JobStatus::InProgress(s.to_owned()),
            None => JobStatus::InProgress("UNKNOWN".to_owned()),
        }
    }
}

pub struct AwsPersonalize {
    client: Client,
    resources: PersonalizeResources,
}

fn error<E>(operation: &'static str, err: SdkError<E>) -> PersonalizeError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    // UpdateCampaign while another update is in progress: wait for it.
    let failure = aws_failure::classify(&err, &["ResourceInUseException"]);
    PersonalizeError { operation, message: failure.summary, retryable: failure.retryable }
}

impl AwsPersonalize {
    pub fn new(client: Client, resources: PersonalizeResources) -> Self {
        Self { client, resources }
    }

    /// `arn:aws:personalize:<region>:<account>:dataset-import-job/<name>`: import job
    /// ARNs follow from their name, so an existing job needs no listing to be found.
    pub fn import_job_arn(&self, name: &str) -> String {
        let parts: Vec<&str> = self.resources.dataset_group_arn.splitn(6, ':').collect();
        let (partition, region, account) = match parts.as_slice() {
            [_, partition, _, region, account, _] => (*partition, *region, *account),
            _ => ("aws", "", ""),
        };
        format!("arn:{partition}:personalize:{region}:{account}:dataset-import-job/{name}")
    }

    /// Finds the solution version called `name`: solution version ARNs end in a
    /// random id, so list the solution's versions created since the run began and
    /// describe them until the name matches.
    async fn find_solution_version(&self, name: &str, not_before: i64) -> Result<String, PersonalizeError> {
        let mut pages = self
            .client
            .list_solution_versions()
            .solution_arn(&self.resources.solution_arn)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| error("ListSolutionVersions", e))?;
            for summary in page.solution_versions() {
                let recent = summary.creation_date_time().is_none_or(|t| t.secs() >= not_before - 60);
                let Some(arn) = summary.solution_version_arn().filter(|_| recent) else { continue };
                let described = self
                    .client
                    .describe_solution_version()
                    .solution_version_arn(arn)
                    .send()
                    .await
                    .map_err(|e| error("DescribeSolutionVersion", e))?;
                if described.solution_version().and_then(|v| v.name()) == Some(name) {
                    return Ok(arn.to_owned());
                }
            }
        }
        Err(PersonalizeError {
            operation: "ListSolutionVersions",
            message: format!("solution version {name} exists but is not listed yet"),
            retryable: true,
        })
    }
}

#[async_trait]
impl Personalize for AwsPersonalize {
    async fn start_import(
        &self,
        name: &str,
        source: &str,
        mode: ImportMode,
    ) -> Result<String, PersonalizeError> {
        let import_mode = match mode {
            ImportMode::Full => pt::ImportMode::Full,
            ImportMode::Incremental => pt::ImportMode::Incremental,
        };
        let result = self
            .client
            .create_dataset_import_job()
            .job_name(name)
            .dataset_arn(&self.resources.interactions_dataset_arn)
            .data_source(DataSource::builder().data_location(source).build())
            .role_arn(&self.resources.import_role_arn)
            .import_mode(import_mode)
            .send()
            .await;
        match result {
            Ok(out) => out.dataset_import_job_arn().map(str::to_owned).ok_or_else(|| PersonalizeError {
                operation: "CreateDatasetImportJob",
                message: "the response has no job ARN".into(),
                retryable: true,
            }),
            Err(SdkError::ServiceError(e)) if e.err().is_resource_already_exists_exception() => {
                let arn = self.import_job_arn(name);
                tracing::info!(job = name, %arn, "import job already exists; resuming it");
                Ok(arn)
            }
            Err(e) => Err(error("CreateDatasetImportJob", e)),
        }
    }

    async fn import_status(&self, job_arn: &str) -> Result<JobStatus, PersonalizeError> {
        let out = self
            .client
            .describe_dataset_import_job()
            .dataset_import_job_arn(job_arn)
            .send()
            .await
            .map_err(|e| error("DescribeDatasetImportJob", e))?;
        let job = out.dataset_import_job();
        Ok(JobStatus::from_status(job.and_then(|j| j.status()), job.and_then(|j| j.failure_reason())))
    }

    async fn start_training(
        &self,
        name: &str,
        mode: TrainingMode,
        not_before: i64,
    ) -> Result<String, PersonalizeError> {
        let training_mode = match mode {
            TrainingMode::Full => pt::TrainingMode::Full,
            TrainingMode::Update => pt::TrainingMode::Update,
        };
        let result = self
            .client
            .create_solution_version()
            .name(name)
            .solution_arn(&self.resources.solution_arn)
            .training_mode(training_mode)
            .send()
            .await;
        match result {
            Ok(out) => out.solution_version_arn().map(str::to_owned).ok_or_else(|| PersonalizeError {
                operation: "CreateSolutionVersion",
                message: "the response has no solution version ARN".into(),
                retryable: true,
            }),
            Err(SdkError::ServiceError(e)) if e.err().is_resource_already_exists_exception() => {
                tracing::info!(name, "solution version already exists; finding it");
                self.find_solution_version(name, not_before).await
            }
            Err(e) => Err(error("CreateSolutionVersion", e)),
        }
    }

    async fn training_status(&self, solution_version_arn: &str) -> Result<JobStatus, PersonalizeError> {
        let out = self
            .client
            .describe_solution_version()
            .solution_version_arn(solution_version_arn)
            .send()
            .await
            .map_err(|e| error("DescribeSolutionVersion", e))?;
        let v = out.solution_version();
        Ok(JobStatus::from_status(v.and_then(|v| v.status()), v.and_then(|v| v.failure_reason())))
    }

    async fn metrics(&self, solution_version_arn: &str) -> Result<BTreeMap<String, f64>, PersonalizeError> {
        let out = self
            .client
            .get_solution_metrics()
            .solution_version_arn(solution_version_arn)
            .send()
            .await
            .map_err(|e| error("GetSolutionMetrics", e))?;
        Ok(out.metrics().map(|m| m.iter().map(|(k, v)| (k.clone(), *v)).collect()).unwrap_or_default())
    }

    async fn campaign(&self) -> Result<CampaignState, PersonalizeError> {
        let out = self
            .client
            .describe_campaign()
            .campaign_arn(&self.resources.campaign_arn)
            .send()
            .await
            .map_err(|e| error("DescribeCampaign", e))?;
        let campaign = out.campaign();
        let latest_update = campaign.and_then(|c| c.latest_campaign_update()).and_then(|u| {
            let target = u.solution_version_arn()?.to_owned();
            Some((target, JobStatus::from_status(u.status(), u.failure_reason())))
        });
        Ok(CampaignState {
            serving: campaign.and_then(|c| c.solution_version_arn()).map(str::to_owned),
            latest_update,
        })
    }

    async fn update_campaign(&self, solution_version_arn: &str) -> Result<(), PersonalizeError> {
        self.client
            .update_campaign()
            .campaign_arn(&self.resources.campaign_arn)
            .solution_version_arn(solution_version_arn)
            .send()
            .await
            .map_err(|e| error("UpdateCampaign", e))?;
        Ok(())
    }
}
