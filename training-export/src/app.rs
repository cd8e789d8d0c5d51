//! Wiring: the configuration picks an adapter for each port, and the Lambda handler
//! turns an invocation into a [`Request`] with the invocation's deadline.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use anyhow::Context as _;
use artifacts::{DirectoryStore, ObjectStore, S3Store};
use aws_failure::config::AwsSetup;
use aws_failure::timeouts::Service;
use store::InteractionSource;
use store::dynamodb::DynamoInteractionStore;
use store::embedded::EmbeddedStore;

use crate::backend::{EmbeddedBackend, ModelBackend, PersonalizeBackend};
use crate::config::Config;
use crate::embedded_model::EmbeddedTrainer;
use crate::events::{EventBridgeEvents, LocalEvents, PipelineEvents};
use crate::personalize::AwsPersonalize;
use crate::pipeline::{Deadline, Pipeline, PipelineError, Request, Response};
use crate::runs::{DynamoRunStore, EmbeddedRunStore, RunStore};
use crate::trainer::ModelTrainer;

/// File of local pipeline events inside the data directory.
pub const EVENTS_FILE: &str = "pipeline-events.jsonl";

/// Builds the pipeline the configuration describes. On an empty embedded store the
/// demo dataset is seeded first, the same one the API seeds.
pub async fn build(config: &Config, in_lambda: bool) -> anyhow::Result<Pipeline> {
    config.validate(in_lambda)?;
    #[cfg(feature = "test-hooks")]
    if let Some(state) = config.crash_after {
        tracing::warn!(
            state,
            "TRAINING_EXPORT_CRASH_AFTER is set: this process aborts once a run is saved in {state}"
        );
    }
    let aws = if config.uses_aws() {
        // Every client's timeouts (overridable, see `aws_failure::timeouts`), read once here.
        Some(AwsSetup::load().await.map_err(|e| anyhow::anyhow!("configuration: {e}"))?)
    } else {
        None
    };
    let aws_for = |service: Service| {
        aws.as_ref().expect("loaded when any AWS resource is configured").for_service(service)
    };
    let store_path = config.data_dir.join(store::embedded::FILE_NAME);

    let interactions: Arc<dyn InteractionSource> = match &config.interactions_table {
        Some(table) => Arc::new(DynamoInteractionStore::new(
            aws_sdk_dynamodb::Client::new(&aws_for(Service::DynamoDb)),
            table.clone(),
        )),
        None => {
            let store = EmbeddedStore::open(&store_path)?;
            if let Some(seeded) = store::demo::seed_if_empty(&store)? {
                tracing::info!(seeded, path = %store_path.display(), "empty store: seeded the demo dataset");
            }
            Arc::new(store)
        }
    };
    let objects: Arc<dyn ObjectStore> = match &config.data_bucket {
        Some(bucket) => Arc::new(
            S3Store::new(artifacts::s3::client(&aws_for(Service::S3)), bucket.clone())
                .with_part_size(config.part_size_mib as usize * 1024 * 1024)?,
        ),
        None => Arc::new(DirectoryStore::new(&config.data_dir)),
    };
    let runs: Arc<dyn RunStore> = match &config.runs_table {
        Some(table) => Arc::new(DynamoRunStore::new(
            aws_sdk_dynamodb::Client::new(&aws_for(Service::DynamoDb)),
            table.clone(),
        )),
        None => Arc::new(EmbeddedRunStore::open(&store_path).context("opening the embedded run store")?),
    };
    let events: Arc<dyn PipelineEvents> = match &config.event_bus_name {
        Some(bus) => Arc::new(EventBridgeEvents::new(
            aws_sdk_eventbridge::Client::new(&aws_for(Service::EventBridge)),
            bus.clone(),
        )),
        None => Arc::new(LocalEvents::new(config.data_dir.join(EVENTS_FILE))),
    };
    let trainer = embedded_trainer(config, objects.clone())?;
    let (backend, fallback_models): (Arc<dyn ModelBackend>, _) = match config.personalize()? {
        Some(resources) => (
            Arc::new(PersonalizeBackend::new(
                Arc::new(AwsPersonalize::new(
                    aws_sdk_personalize::Client::new(&aws_for(Service::Personalize)),
                    resources,
                )),
                objects.clone(),
                config.personalize_settings(),
            )),
            Some(trainer),
        ),
        None => (Arc::new(EmbeddedBackend::new(trainer, objects.clone())), None),
    };
    Ok(Pipeline {
        interactions,
        objects,
        runs,
        events,
        backend,
        fallback_models,
        settings: config.settings(),
        progress: None,
    })
}

/// The embedded recommender: models in `$DATA_DIR/models` locally, under `models/` in
/// the bucket when `DATA_BUCKET` is set.
fn embedded_trainer(config: &Config, objects: Arc<dyn ObjectStore>) -> anyhow::Result<Arc<dyn ModelTrainer>> {
    Ok(match &config.data_bucket {
        Some(_) => Arc::new(EmbeddedTrainer::in_bucket(objects)),
        None => Arc::new(EmbeddedTrainer::local(config.data_dir.clone(), objects)?),
    })
}

#[derive(Debug, thiserror::Error)]
pub enum InvocationError {
    #[error(
        "the payload {payload} is not a request ({reason}); expected {{\"action\": \"run\"|\"export\"|\"advance\"|\"status\"|\"rollback\"}}"
    )]
    BadPayload { payload: String, reason: String },
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
}

impl InvocationError {
    /// Whether invoking again with the same payload can succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            InvocationError::BadPayload { .. } => false,
            InvocationError::Pipeline(e) => e.is_retryable(),
        }
    }

    /// A short stable name for the kind of failure.
    pub fn kind(&self) -> &'static str {
        match self {
            InvocationError::BadPayload { .. } => "BadPayload",
            InvocationError::Pipeline(e) => e.kind(),
        }
    }

    /// Lambda's `errorType`: `Retryable.<Kind>` or `NonRetryable.<Kind>`, the vocabulary
    /// the event consumer uses, so whoever reads the failure knows whether invoking again
    /// can help.
    pub fn error_type(&self) -> String {
        aws_failure::lambda::error_type(self.is_retryable(), self.kind())
    }
}

impl From<InvocationError> for lambda_runtime::Diagnostic {
    fn from(e: InvocationError) -> Self {
        lambda_runtime::Diagnostic { error_type: e.error_type(), error_message: e.to_string() }
    }
}

/// Handles one Lambda invocation: the payload is a [`Request`]; the answer is the
/// [`Response`] as JSON. A payload that does not parse is an error that says why.
pub async fn handle_lambda(
    pipeline: &Pipeline,
    payload: serde_json::Value,
    deadline: SystemTime,
) -> Result<Response, InvocationError> {
    let request: Request = serde_json::from_value(payload.clone())
        .map_err(|e| InvocationError::BadPayload { payload: payload.to_string(), reason: e.to_string() })?;
    let remaining = deadline.duration_since(SystemTime::now()).unwrap_or_default();
    Ok(pipeline.handle(request, Deadline::at(Instant::now() + remaining)).await?)
}
