//! The DynamoDB table exporter and the conversion against the repository's DynamoDB
//! export stand-in (`tests/ddb_export_standin`: moto behind a proxy that implements
//! `ExportTableToPointInTime` as AWS documents it, validating every request against
//! botocore's model and keeping the write time of every item written through it).
//! A full export reports its `ExportTime`; an incremental one, asked as the pipeline asks
//! it, holds exactly the items written in its window, as new images, and its delete is
//! skipped and counted. Needs `MOTO_ENDPOINT` and `PYTHON` (both set by `scripts/test`).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use artifacts::{S3Store, s3};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType,
    PointInTimeRecoverySpecification, PutRequest, ScalarAttributeType, WriteRequest,
};
use schemas::{EventId, EventType, Interaction, Timestamp};
use store::dynamodb::{DynamoInteractionStore, to_item};
use training_export::backend::{JobStatus, PersonalizeBackend, PersonalizeSettings};
use training_export::events::LocalEvents;
use training_export::export::{self, ExportPlan};
use training_export::personalize::{CampaignState, Personalize, PersonalizeError};
use training_export::pipeline::{Deadline, Pipeline, Request, Settings};
use training_export::run::{ExportWindow, ImportMode, RunState, TrainingMode};
use training_export::runs::EmbeddedRunStore;
use training_export::table_export::dynamo::DynamoTableExporter;
use training_export::table_export::{self as table_export, TableExportStatus, TableExporter};

/// The stand-in, as a child process of this test; killed when dropped.
struct StandIn {
    child: Child,
    url: String,
}

impl Drop for StandIn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn python() -> String {
    match std::env::var("PYTHON") {
        Ok(p) if !p.is_empty() => p,
        _ => panic!(
            "PYTHON is not set. This test runs the DynamoDB export stand-in: run `scripts/test`, or create .venv \
             with `pip install -r scripts/requirements-test.txt` and export PYTHON=$PWD/.venv/bin/python"
        ),
    }
}

fn start_standin() -> StandIn {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the workspace root");
    let moto = testkit::moto_endpoint();
    let mut child = Command::new(python())
        .current_dir(root)
        .args([
            "-m",
            "tests.ddb_export_standin",
            "--port",
            "0",
            "--dynamodb-endpoint",
            &moto,
            "--s3-endpoint",
            &moto,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the DynamoDB export stand-in with $PYTHON");
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut first).unwrap();
    let url = first.trim().strip_prefix("listening on ").unwrap_or_else(|| panic!("stand-in said {first:?}"));
    StandIn { url: url.to_owned(), child }
}

/// A plain HTTP request to the stand-in's control API; returns the JSON body.
fn admin(url: &str, method: &str, path: &str, body: &str) -> serde_json::Value {
    let host = url.trim_start_matches("http://");
    let mut stream = TcpStream::connect(host).unwrap();
    write!(
        stream,
        "{method} /_standin/{path} HTTP/1.0\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (_, body) = response.split_once("\r\n\r\n").expect("an HTTP answer");
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

fn clock(url: &str) -> f64 {
    admin(url, "GET", "clock", "")["now"].as_f64().unwrap()
}

fn advance(url: &str, seconds: u32) {
    admin(url, "POST", "clock", &format!(r#"{{"advance_seconds": {seconds}}}"#));
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn interaction(n: usize) -> Interaction {
    Interaction {
        user_id: format!("student-{}", n % 60).parse().unwrap(),
        item_id: format!("cs-{n}").parse().unwrap(),
        timestamp: Timestamp::from_epoch_seconds(1_790_000_000 + n as i64).unwrap(),
        event_type: EventType::enrolled(),
        event_value: None,
        event_id: EventId::parse(format!("e-{n}")).unwrap(),
    }
}

async fn completed(exporter: &DynamoTableExporter, id: &str) -> String {
    for _ in 0..50 {
        match exporter.status(id).await.unwrap() {
            TableExportStatus::Completed { manifest_key } => return manifest_key,
            TableExportStatus::Failed(why) => panic!("export failed: {why}"),
            TableExportStatus::InProgress(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    panic!("export {id} did not complete");
}

/// The interactions table (keys userId, eventId) through the stand-in, with PITR on.
async fn create_table(dynamo: &aws_sdk_dynamodb::Client) -> String {
    let table = testkit::unique_name("incremental");
    let mut create = dynamo.create_table().table_name(&table).billing_mode(BillingMode::PayPerRequest);
    for (attr, kind) in [("userId", KeyType::Hash), ("eventId", KeyType::Range)] {
        create = create
            .attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name(attr)
                    .attribute_type(ScalarAttributeType::S)
                    .build()
                    .unwrap(),
            )
            .key_schema(KeySchemaElement::builder().attribute_name(attr).key_type(kind).build().unwrap());
    }
    create.send().await.unwrap();
    dynamo
        .update_continuous_backups()
        .table_name(&table)
        .point_in_time_recovery_specification(
            PointInTimeRecoverySpecification::builder().point_in_time_recovery_enabled(true).build().unwrap(),
        )
        .send()
        .await
        .unwrap();
    table
}

#[tokio::test]
async fn an_incremental_export_from_the_standin_converts_to_exactly_the_window_s_writes() {
    let standin = start_standin();
    let config = testkit::moto_config().await;
    let dynamo = aws_sdk_dynamodb::Client::from_conf(
        aws_sdk_dynamodb::config::Builder::from(&config).endpoint_url(&standin.url).build(),
    );
    let table = create_table(&dynamo).await;
    let s3_client = s3::client(&config);
    let bucket = testkit::unique_name("incremental");
    s3_client.create_bucket().bucket(&bucket).send().await.unwrap();
    let objects = S3Store::new(s3_client, &bucket);
    let exporter = DynamoTableExporter::new(dynamo.clone(), &table, &bucket);

    let put = |n: usize| dynamo.put_item().table_name(&table).set_item(Some(to_item(&interaction(n)))).send();
    for n in 0..3 {
        put(n).await.unwrap();
    }
    advance(&standin.url, 1_200);
    let from = clock(&standin.url).floor() as i64;
    for n in 10..14 {
        put(n).await.unwrap();
    }
    dynamo
        .delete_item()
        .table_name(&table)
        .key("userId", AttributeValue::S("student-0".into()))
        .key("eventId", AttributeValue::S("e-0".into()))
        .send()
        .await
        .unwrap();
    advance(&standin.url, 1_200);
    let to = clock(&standin.url).floor() as i64;

    let full = exporter.start("full-1", "exports/full/dynamodb", None).await.unwrap();
    let at = full.export_time.expect("DynamoDB says a full export's ExportTime");
    assert!((at - to).abs() <= 2, "{at} vs {to}");

    let window = ExportWindow { from, to };
    let prefix = export::incremental_prefix("run-1");
    let started = exporter.start("run-1", &format!("{prefix}/dynamodb"), Some(window)).await.unwrap();
    let manifest_key = completed(&exporter, &started.export_id).await;
    let files = table_export::data_files(&objects, &manifest_key).await.unwrap();
    let mut plan = ExportPlan::new("run-1");
    plan.prefix = prefix;
    for (index, file) in files.iter().enumerate() {
        export::convert::convert_file(&objects, &plan, index as u32, file, &|| {}).await.unwrap();
    }
    let m = export::convert::assemble(&objects, &plan, files.len() as u32, Some(window)).await.unwrap();
    assert_eq!(m.rows, 4, "the four items written in the window, not the three before it");
    assert_eq!(m.rejected.count, 0, "{:?}", m.rejected);
    let scope = m.incremental.expect("delta-only");
    assert_eq!((scope.from, scope.to, scope.deletes_skipped), (from, to, 1));
    assert_eq!(m.min_timestamp, Some(1_790_000_010));
    assert_eq!(m.max_timestamp, Some(1_790_000_013));
    assert!(m.csv.key.ends_with("run-1/incremental/csv/"), "{}", m.csv.key);
}

/// Personalize whose jobs are ACTIVE at the first look; it keeps the imports it was asked for.
#[derive(Default)]
struct FakePersonalize {
    imports: std::sync::Mutex<Vec<(String, ImportMode)>>,
    serving: std::sync::Mutex<Option<String>>,
}

#[async_trait::async_trait]
impl Personalize for FakePersonalize {
    async fn start_import(
        &self,
        name: &str,
        source: &str,
        mode: ImportMode,
    ) -> Result<String, PersonalizeError> {
        let mut imports = self.imports.lock().unwrap();
        if !imports.iter().any(|(s, _)| s == source) {
            imports.push((source.to_owned(), mode));
        }
        Ok(format!("arn:import/{name}"))
    }

    async fn import_status(&self, _: &str) -> Result<JobStatus, PersonalizeError> {
        Ok(JobStatus::Active)
    }

    async fn start_training(&self, name: &str, _: TrainingMode, _: i64) -> Result<String, PersonalizeError> {
        Ok(format!("arn:solution-version/{name}"))
    }

    async fn training_status(&self, _: &str) -> Result<JobStatus, PersonalizeError> {
        Ok(JobStatus::Active)
    }

    async fn metrics(&self, _: &str) -> Result<BTreeMap<String, f64>, PersonalizeError> {
        Ok(BTreeMap::from([("normalized_discounted_cumulative_gain_at_10".to_owned(), 0.3)]))
    }

    async fn campaign(&self) -> Result<CampaignState, PersonalizeError> {
        let serving = self.serving.lock().unwrap().clone();
        Ok(CampaignState { latest_update: serving.clone().map(|s| (s, JobStatus::Active)), serving })
    }

    async fn update_campaign(&self, version: &str) -> Result<(), PersonalizeError> {
        *self.serving.lock().unwrap() = Some(version.to_owned());
        Ok(())
    }
}

async fn batch_put(dynamo: &aws_sdk_dynamodb::Client, table: &str, rows: impl Iterator<Item = Interaction>) {
    let rows: Vec<Interaction> = rows.collect();
    for chunk in rows.chunks(25) {
        let writes = chunk
            .iter()
            .map(|i| {
                WriteRequest::builder()
                    .put_request(PutRequest::builder().set_item(Some(to_item(i))).build().unwrap())
                    .build()
            })
            .collect();
        dynamo.batch_write_item().request_items(table, writes).send().await.unwrap();
    }
}

/// The pipeline's two nightly runs on the stand-in: the first exports the table (FULL) and
/// imports FULL; after 30 minutes of the stand-in's clock, the second asks DynamoDB (the
/// stand-in, checking the request against botocore) for an incremental export since the
/// first's `ExportTime`, converts exactly the 1,200 items written since, and imports them
/// INCREMENTAL.
#[tokio::test]
async fn the_pipeline_s_second_run_exports_incrementally_from_the_standin() {
    let standin = start_standin();
    let config = testkit::moto_config().await;
    let dynamo = aws_sdk_dynamodb::Client::from_conf(
        aws_sdk_dynamodb::config::Builder::from(&config).endpoint_url(&standin.url).build(),
    );
    let table = create_table(&dynamo).await;
    let s3_client = s3::client(&config);
    let bucket = testkit::unique_name("incremental");
    s3_client.create_bucket().bucket(&bucket).send().await.unwrap();
    let objects: Arc<dyn artifacts::ObjectStore> = Arc::new(S3Store::new(s3_client, &bucket));
    let dir = tempfile::tempdir().unwrap();
    let personalize = Arc::new(FakePersonalize::default());
    let mut pipeline = Pipeline {
        interactions: Arc::new(DynamoInteractionStore::new(dynamo.clone(), &table)),
        objects: objects.clone(),
        runs: Arc::new(EmbeddedRunStore::open(&dir.path().join("runs.db")).unwrap()),
        events: Arc::new(LocalEvents::new(dir.path().join("events.jsonl"))),
        backend: Arc::new(PersonalizeBackend::new(
            personalize.clone(),
            objects,
            PersonalizeSettings::default(),
        )),
        fallback_models: None,
        settings: Settings { table_export_above_bytes: Some(0), ..Settings::default() },
        progress: None,
        table_exporter: Some(Arc::new(DynamoTableExporter::new(dynamo.clone(), &table, &bucket))),
    };
    let nightly = async |pipeline: &Pipeline| {
        let answer = pipeline.handle(Request::run("schedule", None), Deadline::none()).await.unwrap();
        let run_id = answer.run.unwrap().run_id;
        for _ in 0..20 {
            let run = pipeline.runs.get(&run_id).await.unwrap().unwrap();
            if !run.is_active() {
                return run;
            }
            pipeline.handle(Request::Advance {}, Deadline::none()).await.unwrap();
        }
        panic!("run {run_id} did not end");
    };

    batch_put(&dynamo, &table, (0..1_500).map(|n| interaction(100_000 + n))).await;
    // The run keeps ExportTime to the second, rounded down: an item written in the second
    // before it is in both exports (harmless: identical events collapse in Personalize).
    // Here no item is, so that the second export is exactly what was written since.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let first = nightly(&pipeline).await;
    assert_eq!(first.state, RunState::Done, "{first:?}");
    let record = first.table_export.clone().unwrap();
    assert_eq!(record.incremental, None);
    let exported_at = record.export_time.expect("the ExportTime the stand-in answered");
    assert_eq!(first.export.as_ref().unwrap().rows, 1_500);

    let new: Vec<Interaction> = (0..1_200).map(|n| interaction(200_000 + n)).collect();
    batch_put(&dynamo, &table, new.iter().cloned()).await;
    advance(&standin.url, 1_800);
    pipeline.settings.export_clock_offset_secs = (clock(&standin.url) - now() as f64).round() as i64;
    let second = nightly(&pipeline).await;
    assert_eq!(second.state, RunState::Done, "{second:?}");
    let window = second.table_export.as_ref().unwrap().incremental.expect("an incremental export");
    assert_eq!(window.from, exported_at, "from the first run's ExportTime");
    let export = second.export.clone().unwrap();
    assert_eq!(export.rows, 1_200, "exactly the items written since");
    assert_eq!(export.max_timestamp, Some(1_790_201_199));
    let imports = personalize.imports.lock().unwrap().clone();
    let expected_second = format!("s3://{bucket}/exports/{}/incremental/csv/", second.run_id);
    assert_eq!(
        imports,
        [
            (format!("s3://{bucket}/exports/{}/csv/", first.run_id), ImportMode::Full),
            (expected_second, ImportMode::Incremental)
        ]
    );
}
