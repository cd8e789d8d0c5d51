//! Wiring: the configuration picks an adapter for each port ([`Composition`]), and the
//! Lambda handler turns an invocation into a [`Request`] with the invocation's deadline.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use anyhow::Context as _;
use artifacts::{DirectoryStore, ObjectStore};
use store::InteractionSource;
use store::embedded::EmbeddedStore;

use crate::backend::{EmbeddedBackend, ModelBackend};
use crate::config::Config;
use crate::embedded_model::{self, EmbeddedTrainer};
use crate::events::{LocalEvents, PipelineEvents};
use crate::personalize::PersonalizeResources;
use crate::pipeline::{Deadline, Pipeline, PipelineError, Request, Response};
use crate::runs::{EmbeddedRunStore, RunStore};
use crate::table_export::TableExporter;
use crate::table_export::embedded::EmbeddedTableExporter;
use crate::trainer::ModelTrainer;

/// File of local pipeline events inside the data directory.
pub const EVENTS_FILE: &str = "pipeline-events.jsonl";

/// A table in DynamoDB, or the embedded store's SQLite file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Table {
    DynamoDb(String),
    Embedded(PathBuf),
}

/// Where exports and model versions go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Objects {
    Bucket(String),
    Directory(PathBuf),
}

/// Where terminal states are announced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Announcements {
    Bus(String),
    File(PathBuf),
}

/// What trains and serves the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Models {
    /// Personalize, with the embedded recommender as the fallback model in the bucket.
    Personalize(PersonalizeResources),
    Embedded,
}

/// How a table too big to scan is exported, if it can be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TableExport {
    /// Always scanned: no threshold, or a DynamoDB table with no bucket to export to.
    Scan,
    /// `ExportTableToPointInTime` into the bucket above this many bytes.
    DynamoDb { table: String, bucket: String, above_bytes: u64 },
    /// The embedded store written in DynamoDB's export layout above this many bytes (`0`:
    /// always), so the path runs offline.
    Embedded { above_bytes: u64 },
}

/// Which adapter serves each port. [`describe`](Composition::describe) and [`build`] both
/// read this one decision, so what the start-up log says is what runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Composition {
    pub interactions: Table,
    pub runs: Table,
    pub objects: Objects,
    pub announcements: Announcements,
    pub models: Models,
    pub table_export: TableExport,
}

impl Composition {
    pub fn of(config: &Config) -> anyhow::Result<Self> {
        let table = |t: &Option<String>| match t {
            Some(t) => Table::DynamoDb(t.clone()),
            None => Table::Embedded(config.data_dir.join(store::embedded::FILE_NAME)),
        };
        let above = config.settings().table_export_above_bytes.filter(|&bytes| bytes != u64::MAX);
        let table_export = match (&config.interactions_table, &config.data_bucket, above) {
            (_, _, None) | (Some(_), None, _) => TableExport::Scan,
            (Some(table), Some(bucket), Some(above_bytes)) => {
                TableExport::DynamoDb { table: table.clone(), bucket: bucket.clone(), above_bytes }
            }
            (None, _, Some(above_bytes)) => TableExport::Embedded { above_bytes },
        };
        Ok(Self {
            table_export,
            interactions: table(&config.interactions_table),
            runs: table(&config.runs_table),
            objects: match &config.data_bucket {
                Some(bucket) => Objects::Bucket(bucket.clone()),
                None => Objects::Directory(config.data_dir.clone()),
            },
            announcements: match &config.event_bus_name {
                Some(bus) => Announcements::Bus(bus.clone()),
                None => Announcements::File(config.data_dir.join(EVENTS_FILE)),
            },
            models: match config.personalize()? {
                Some(resources) => Models::Personalize(resources),
                None => Models::Embedded,
            },
        })
    }

    pub fn needs_aws(&self) -> bool {
        matches!(self.interactions, Table::DynamoDb(_))
            || matches!(self.runs, Table::DynamoDb(_))
            || matches!(self.objects, Objects::Bucket(_))
            || matches!(self.announcements, Announcements::Bus(_))
            || matches!(self.models, Models::Personalize(_))
    }

    /// One line per port saying which adapter serves it.
    pub fn describe(&self) -> Vec<String> {
        let table = |what: &str, t: &Table| match t {
            Table::DynamoDb(name) => format!("{what}: DynamoDB table {name}"),
            Table::Embedded(file) => format!("{what}: embedded, in {}", file.display()),
        };
        vec![
            table("interactions", &self.interactions),
            table("runs", &self.runs),
            match &self.objects {
                Objects::Bucket(b) => format!("exports and models: S3 bucket {b}"),
                Objects::Directory(d) => format!("exports and models: directory {}", d.display()),
            },
            match &self.announcements {
                Announcements::Bus(b) => format!("pipeline events: EventBridge bus {b}"),
                Announcements::File(f) => format!("pipeline events: {}", f.display()),
            },
            match &self.models {
                Models::Personalize(r) => format!("model: Personalize solution {}", r.solution_arn),
                Models::Embedded => "model: the embedded recommender".to_owned(),
            },
            match &self.table_export {
                TableExport::Scan => "export: a parallel scan".to_owned(),
                TableExport::DynamoDb { table, bucket, above_bytes } => format!(
                    "export: a scan, or above {above_bytes} bytes ExportTableToPointInTime of {table} into {bucket}"
                ),
                TableExport::Embedded { above_bytes } => {
                    format!(
                        "export: a scan, or above {above_bytes} bytes the embedded store in DynamoDB's export layout"
                    )
                }
            },
        ]
    }
}

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
    let composition = Composition::of(config)?;
    for line in composition.describe() {
        tracing::info!("{line}");
    }
    let aws = if composition.needs_aws() { Some(aws::load().await?) } else { None };
    let aws = || aws.as_ref().expect("loaded whenever the composition has an AWS adapter");

    let interactions: Arc<dyn InteractionSource> = match &composition.interactions {
        Table::DynamoDb(table) => aws::interactions(aws(), table),
        Table::Embedded(path) => {
            let store = EmbeddedStore::open(path)?;
            if let Some(seeded) = store::demo::seed_if_empty(&store)? {
                tracing::info!(seeded, path = %path.display(), "empty store: seeded the demo dataset");
            }
            Arc::new(store)
        }
    };
    let objects: Arc<dyn ObjectStore> = match &composition.objects {
        Objects::Bucket(bucket) => aws::bucket(aws(), bucket, config.part_size_mib)?,
        Objects::Directory(dir) => Arc::new(DirectoryStore::new(dir)),
    };
    let runs: Arc<dyn RunStore> = match &composition.runs {
        Table::DynamoDb(table) => aws::runs(aws(), table),
        Table::Embedded(path) => {
            Arc::new(EmbeddedRunStore::open(path).context("opening the embedded run store")?)
        }
    };
    let events: Arc<dyn PipelineEvents> = match &composition.announcements {
        Announcements::Bus(bus) => aws::events(aws(), bus),
        Announcements::File(path) => Arc::new(LocalEvents::new(path)),
    };
    let memory_budget = embedded_model::memory_budget_bytes(
        embedded_model::explicit_memory_budget_mib(),
        config.function_memory_mib,
    );
    tracing::info!(memory_budget_mib = memory_budget >> 20, "embedded trainer memory budget");
    let trainer: Arc<dyn ModelTrainer> = Arc::new(
        match &composition.objects {
            Objects::Bucket(_) => EmbeddedTrainer::in_bucket(objects.clone()),
            Objects::Directory(dir) => EmbeddedTrainer::new(objects.clone(), Some(dir.clone())),
        }
        .with_memory_budget(memory_budget),
    );
    let (backend, fallback_models): (Arc<dyn ModelBackend>, _) = match composition.models {
        Models::Personalize(resources) => {
            (aws::personalize(aws(), resources, objects.clone(), config), Some(trainer))
        }
        Models::Embedded => (Arc::new(EmbeddedBackend::new(trainer, objects.clone())), None),
    };
    let table_exporter: Option<Arc<dyn TableExporter>> = match &composition.table_export {
        TableExport::Scan => None,
        TableExport::DynamoDb { table, bucket, .. } => Some(aws::table_exporter(aws(), table, bucket)),
        TableExport::Embedded { .. } => {
            Some(Arc::new(EmbeddedTableExporter::new(interactions.clone(), objects.clone())))
        }
    };
    Ok(Pipeline {
        table_exporter,
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

/// The AWS adapters, in builds with the `aws` feature.
#[cfg(feature = "aws")]
mod aws {
    use std::sync::Arc;

    use artifacts::{ObjectStore, S3Store};
    use aws_failure::config::AwsSetup;
    use aws_failure::timeouts::Service;
    use store::InteractionSource;
    use store::dynamodb::DynamoInteractionStore;

    use crate::backend::{ModelBackend, PersonalizeBackend};
    use crate::config::Config;
    use crate::events::{EventBridgeEvents, PipelineEvents};
    use crate::personalize::{AwsPersonalize, PersonalizeResources};
    use crate::runs::{DynamoRunStore, RunStore};
    use crate::table_export::TableExporter;
    use crate::table_export::dynamo::DynamoTableExporter;

    /// Every client's configuration and timeouts (overridable, see `aws_failure::timeouts`), read once.
    pub async fn load() -> anyhow::Result<AwsSetup> {
        AwsSetup::load().await.map_err(|e| anyhow::anyhow!("configuration: {e}"))
    }

    pub fn interactions(aws: &AwsSetup, table: &str) -> Arc<dyn InteractionSource> {
        let client = aws_sdk_dynamodb::Client::new(&aws.for_service(Service::DynamoDb));
        Arc::new(DynamoInteractionStore::new(client, table.to_owned()))
    }

    pub fn bucket(aws: &AwsSetup, bucket: &str, part_size_mib: u32) -> anyhow::Result<Arc<dyn ObjectStore>> {
        let client = artifacts::s3::client(&aws.for_service(Service::S3));
        Ok(Arc::new(
            S3Store::new(client, bucket.to_owned()).with_part_size(part_size_mib as usize * 1024 * 1024)?,
        ))
    }

    pub fn table_exporter(aws: &AwsSetup, table: &str, bucket: &str) -> Arc<dyn TableExporter> {
        let client = aws_sdk_dynamodb::Client::new(&aws.for_service(Service::DynamoDb));
        Arc::new(DynamoTableExporter::new(client, table, bucket))
    }

    pub fn runs(aws: &AwsSetup, table: &str) -> Arc<dyn RunStore> {
        Arc::new(DynamoRunStore::new(
            aws_sdk_dynamodb::Client::new(&aws.for_service(Service::DynamoDb)),
            table,
        ))
    }

    pub fn events(aws: &AwsSetup, bus: &str) -> Arc<dyn PipelineEvents> {
        let client = aws_sdk_eventbridge::Client::new(&aws.for_service(Service::EventBridge));
        Arc::new(EventBridgeEvents::new(client, bus))
    }

    pub fn personalize(
        aws: &AwsSetup,
        resources: PersonalizeResources,
        objects: Arc<dyn ObjectStore>,
        config: &Config,
    ) -> Arc<dyn ModelBackend> {
        let client = aws_sdk_personalize::Client::new(&aws.for_service(Service::Personalize));
        Arc::new(PersonalizeBackend::new(
            Arc::new(AwsPersonalize::new(client, resources)),
            objects,
            config.personalize_settings(),
        ))
    }
}

/// Without the `aws` feature: a configuration that names an AWS resource is refused at start,
/// saying so, instead of being served by an embedded adapter it did not ask for.
#[cfg(not(feature = "aws"))]
mod aws {
    use std::sync::Arc;

    use artifacts::ObjectStore;
    use store::InteractionSource;

    use crate::backend::ModelBackend;
    use crate::config::Config;
    use crate::events::PipelineEvents;
    use crate::personalize::PersonalizeResources;
    use crate::runs::RunStore;
    use crate::table_export::TableExporter;

    /// Never built: `load` refuses first.
    pub enum Unavailable {}

    pub async fn load() -> anyhow::Result<Unavailable> {
        anyhow::bail!(
            "an AWS resource is configured (INTERACTIONS_TABLE, RUNS_TABLE, DATA_BUCKET, EVENT_BUS_NAME or \
             PERSONALIZE_*), but this build of the pipeline has no AWS adapters (the `aws` feature)"
        )
    }

    pub fn interactions(never: &Unavailable, _: &str) -> Arc<dyn InteractionSource> {
        match *never {}
    }

    pub fn bucket(never: &Unavailable, _: &str, _: u32) -> anyhow::Result<Arc<dyn ObjectStore>> {
        match *never {}
    }

    pub fn runs(never: &Unavailable, _: &str) -> Arc<dyn RunStore> {
        match *never {}
    }

    pub fn table_exporter(never: &Unavailable, _: &str, _: &str) -> Arc<dyn TableExporter> {
        match *never {}
    }

    pub fn events(never: &Unavailable, _: &str) -> Arc<dyn PipelineEvents> {
        match *never {}
    }

    pub fn personalize(
        never: &Unavailable,
        _: PersonalizeResources,
        _: Arc<dyn ObjectStore>,
        _: &Config,
    ) -> Arc<dyn ModelBackend> {
        match *never {}
    }
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

#[cfg(feature = "aws")]
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
