//! The whole nightly run end to end on local services: interactions in DynamoDB and
//! the export in S3 (moto), Personalize played by the repository's stand-in
//! (`tests/personalize_standin`, which imports our CSV from moto's S3 and validates
//! every request against botocore's models), runs in DynamoDB, the terminal event on
//! an EventBridge bus. Needs `MOTO_ENDPOINT` and `PYTHON` (both set by `scripts/test`).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use artifacts::{S3Store, s3};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, PutRequest, ScalarAttributeType,
    WriteRequest,
};
use aws_sdk_personalize::types::DataSource;
use store::dynamodb::{DynamoInteractionStore, to_item};
use training_export::backend::{PersonalizeBackend, PersonalizeSettings};
use training_export::events::EventBridgeEvents;
use training_export::export::{self, ExportPlan};
use training_export::personalize::{AwsPersonalize, JobStatus, Personalize, PersonalizeResources};
use training_export::pipeline::{Deadline, Pipeline, Request, Settings};
use training_export::run::{ImportMode, RunState, TrainingMode};
use training_export::runs::{DynamoRunStore, RunStore};

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
            "PYTHON is not set. This test runs the Personalize stand-in: run `scripts/test`, or create .venv with \
             `pip install -r scripts/requirements-test.txt` and export PYTHON=$PWD/.venv/bin/python"
        ),
    }
}

fn start_standin() -> StandIn {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the workspace root");
    let dir = tempfile::tempdir().unwrap();
    let port_file = dir.path().join("port");
    let child = Command::new(python())
        .current_dir(root)
        .args(["-m", "tests.personalize_standin", "--port", "0", "--port-file"])
        .arg(&port_file)
        .args(["--pending-describes", "1"])
        .env("MOTO_ENDPOINT", testkit::moto_endpoint())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the Personalize stand-in with $PYTHON");
    let mut standin = StandIn { child, url: String::new() };
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(20) {
        if let Ok(port) = std::fs::read_to_string(&port_file)
            && !port.trim().is_empty()
        {
            standin.url = format!("http://127.0.0.1:{}", port.trim());
            return standin;
        }
        if let Ok(Some(status)) = standin.child.try_wait() {
            panic!("the Personalize stand-in exited with {status}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("the Personalize stand-in did not start within 20 s");
}

/// A plain HTTP GET of the stand-in's admin API (no HTTP client in the workspace needs it).
fn admin_get(url: &str, path: &str) -> String {
    let host = url.trim_start_matches("http://");
    let mut stream = TcpStream::connect(host).unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response.split_once("\r\n\r\n").map(|(_, body)| body.to_owned()).unwrap_or_default()
}

async fn table(client: &aws_sdk_dynamodb::Client, keys: &[&str]) -> String {
    let name = testkit::unique_name("e2e");
    let mut create = client.create_table().table_name(&name).billing_mode(BillingMode::PayPerRequest);
    for (n, attr) in keys.iter().enumerate() {
        let kind = if n == 0 { KeyType::Hash } else { KeyType::Range };
        create = create
            .attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name(*attr)
                    .attribute_type(ScalarAttributeType::S)
                    .build()
                    .unwrap(),
            )
            .key_schema(KeySchemaElement::builder().attribute_name(*attr).key_type(kind).build().unwrap());
    }
    create.send().await.expect("create table on moto");
    name
}

/// Polls a stand-in resource until it leaves CREATE PENDING / IN_PROGRESS (bounded).
async fn until_active<F, Fut>(what: &str, mut describe: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<String>>,
{
    for _ in 0..10 {
        match describe().await.as_deref() {
            Some("ACTIVE") => return,
            Some(s) if s.contains("FAILED") => panic!("{what} failed during setup"),
            _ => {}
        }
    }
    panic!("{what} did not become ACTIVE");
}

#[tokio::test]
async fn a_nightly_run_against_moto_and_the_personalize_standin() {
    let standin = start_standin();
    let config = testkit::moto_config().await;
    let personalize = aws_sdk_personalize::Client::from_conf(
        aws_sdk_personalize::config::Builder::from(&config).endpoint_url(&standin.url).build(),
    );

    // Interactions: the demo dataset in a DynamoDB table.
    let dynamo = aws_sdk_dynamodb::Client::new(&config);
    let interactions_table = table(&dynamo, &["userId", "eventId"]).await;
    let demo = store::demo::generate(&store::demo::DemoSpec::default());
    for chunk in demo.interactions.chunks(25) {
        let writes = chunk
            .iter()
            .map(|i| {
                WriteRequest::builder()
                    .put_request(PutRequest::builder().set_item(Some(to_item(i))).build().unwrap())
                    .build()
            })
            .collect();
        dynamo.batch_write_item().request_items(&interactions_table, writes).send().await.unwrap();
    }
    let interactions = DynamoInteractionStore::new(dynamo.clone(), &interactions_table);
    let s3_client = s3::client(&config);
    let bucket = testkit::unique_name("e2e");
    s3_client.create_bucket().bucket(&bucket).send().await.unwrap();
    let objects = S3Store::new(s3_client, &bucket);

    // Infra's part: dataset group, schema, dataset, solution; and a first version behind
    // the campaign (a campaign cannot exist without one).
    let group = personalize.create_dataset_group().name("ranking").send().await.unwrap();
    let group = group.dataset_group_arn().unwrap().to_owned();
    until_active("dataset group", || async {
        let d = personalize.describe_dataset_group().dataset_group_arn(&group).send().await.unwrap();
        d.dataset_group().and_then(|g| g.status()).map(str::to_owned)
    })
    .await;
    let schema = personalize
        .create_schema()
        .name("interactions")
        .schema(schemas::personalize::INTERACTIONS_SCHEMA)
        .send()
        .await
        .unwrap();
    let dataset = personalize
        .create_dataset()
        .name("interactions")
        .dataset_group_arn(&group)
        .dataset_type("Interactions")
        .schema_arn(schema.schema_arn().unwrap())
        .send()
        .await
        .unwrap();
    let dataset = dataset.dataset_arn().unwrap().to_owned();
    until_active("dataset", || async {
        let d = personalize.describe_dataset().dataset_arn(&dataset).send().await.unwrap();
        d.dataset().and_then(|d| d.status()).map(str::to_owned)
    })
    .await;
    let solution = personalize
        .create_solution()
        .name("ranking")
        .dataset_group_arn(&group)
        .recipe_arn("arn:aws:personalize:::recipe/aws-user-personalization")
        .send()
        .await
        .unwrap();
    let solution = solution.solution_arn().unwrap().to_owned();
    until_active("solution", || async {
        let d = personalize.describe_solution().solution_arn(&solution).send().await.unwrap();
        d.solution().and_then(|s| s.status()).map(str::to_owned)
    })
    .await;
    let bootstrap =
        export::export(export::scan_all(&interactions, 2), &objects, &ExportPlan::new("bootstrap"), &|_| {})
            .await
            .unwrap();
    let job = personalize
        .create_dataset_import_job()
        .job_name("bootstrap")
        .dataset_arn(&dataset)
        .role_arn("arn:aws:iam::123456789012:role/personalize-import")
        .data_source(
            DataSource::builder().data_location(format!("s3://{bucket}/{}", bootstrap.csv.key)).build(),
        )
        .send()
        .await
        .unwrap();
    let job = job.dataset_import_job_arn().unwrap().to_owned();
    until_active("bootstrap import", || async {
        let d = personalize.describe_dataset_import_job().dataset_import_job_arn(&job).send().await.unwrap();
        d.dataset_import_job().and_then(|j| j.status()).map(str::to_owned)
    })
    .await;
    let first =
        personalize.create_solution_version().solution_arn(&solution).name("bootstrap").send().await.unwrap();
    let first = first.solution_version_arn().unwrap().to_owned();
    until_active("first solution version", || async {
        let d = personalize.describe_solution_version().solution_version_arn(&first).send().await.unwrap();
        d.solution_version().and_then(|v| v.status()).map(str::to_owned)
    })
    .await;
    let campaign =
        personalize.create_campaign().name("ranking").solution_version_arn(&first).send().await.unwrap();
    let campaign = campaign.campaign_arn().unwrap().to_owned();
    until_active("campaign", || async {
        let d = personalize.describe_campaign().campaign_arn(&campaign).send().await.unwrap();
        d.campaign().and_then(|c| c.status()).map(str::to_owned)
    })
    .await;

    // The pipeline, wired as in AWS.
    let runs_table = table(&dynamo, &["pk", "sk"]).await;
    let eventbridge = aws_sdk_eventbridge::Client::new(&config);
    let bus = testkit::unique_name("bus");
    eventbridge.create_event_bus().name(&bus).send().await.unwrap();
    let resources = PersonalizeResources {
        dataset_group_arn: group,
        interactions_dataset_arn: dataset,
        solution_arn: solution,
        campaign_arn: campaign,
        import_role_arn: "arn:aws:iam::123456789012:role/personalize-import".into(),
    };
    let aws_personalize = Arc::new(AwsPersonalize::new(personalize.clone(), resources));
    let runs = Arc::new(DynamoRunStore::new(dynamo.clone(), runs_table));
    let objects: Arc<dyn artifacts::ObjectStore> = Arc::new(objects);
    let pipeline = Pipeline {
        table_exporter: None,
        interactions: Arc::new(interactions),
        objects: objects.clone(),
        runs: runs.clone(),
        events: Arc::new(EventBridgeEvents::new(eventbridge, bus)),
        backend: Arc::new(PersonalizeBackend::new(
            aws_personalize.clone(),
            objects.clone(),
            PersonalizeSettings { training_mode: TrainingMode::Full, ..PersonalizeSettings::default() },
        )),
        fallback_models: Some(Arc::new(training_export::embedded_model::EmbeddedTrainer::in_bucket(
            objects.clone(),
        ))),
        settings: Settings::default(),
        progress: None,
    };
    let started = pipeline.handle(Request::run("schedule", None), Deadline::none()).await.unwrap();
    let run_id = started.run.unwrap().run_id;
    let mut run = runs.get(&run_id).await.unwrap().unwrap();
    for _ in 0..20 {
        if !run.is_active() {
            break;
        }
        pipeline.handle(Request::Advance {}, Deadline::none()).await.unwrap();
        run = runs.get(&run_id).await.unwrap().unwrap();
    }
    assert_eq!(run.state, RunState::Done, "{:?} (last error {:?})", run.state, run.last_error);
    assert_eq!(run.import.as_ref().unwrap().mode, ImportMode::Full);
    let new_version = run.training.as_ref().unwrap().version.clone().unwrap();
    assert_ne!(new_version, first);
    let gate = run.gate.as_ref().unwrap();
    assert!(gate.candidate.is_some() && gate.live.is_some(), "{gate:?}");
    assert_eq!(run.deploy.as_ref().unwrap().previous.as_deref(), Some(first.as_str()));
    let live = aws_personalize.campaign().await.unwrap();
    assert_eq!(live.serving.as_deref(), Some(new_version.as_str()));
    // The API's fallback model was refreshed from the same export, next to it in the bucket.
    let fallback = run.fallback_model.as_ref().and_then(|f| f.version.clone()).expect("fallback refreshed");
    let latest = objects.get("models/LATEST").await.unwrap().expect("models/LATEST written");
    assert_eq!(String::from_utf8(latest).unwrap().trim(), fallback);
    assert_eq!(live.latest_update.map(|u| u.1), Some(JobStatus::Active));

    // The stand-in read our CSV and found every request well-formed.
    let violations: serde_json::Value =
        serde_json::from_str(&admin_get(&standin.url, "/_standin/violations"))
            .expect("the admin API answers JSON");
    assert_eq!(violations["violations"], serde_json::json!([]), "the stand-in saw malformed requests");

    // One invoke puts the first version back.
    let rollback =
        pipeline.handle(Request::Rollback { trigger: "manual".into() }, Deadline::none()).await.unwrap();
    let rollback_id = rollback.run.unwrap().run_id;
    let mut rolled = runs.get(&rollback_id).await.unwrap().unwrap();
    for _ in 0..10 {
        if !rolled.is_active() {
            break;
        }
        pipeline.handle(Request::Advance {}, Deadline::none()).await.unwrap();
        rolled = runs.get(&rollback_id).await.unwrap().unwrap();
    }
    assert_eq!(rolled.state, RunState::Done);
    assert_eq!(aws_personalize.campaign().await.unwrap().serving.as_deref(), Some(first.as_str()));
}
