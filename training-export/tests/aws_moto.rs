//! The AWS adapters against moto (`MOTO_ENDPOINT`, started by `scripts/test`):
//! a parallel Scan of DynamoDB streamed into S3 multipart uploads, an export aborted
//! halfway, the DynamoDB run store's guard and versions, and an export-only run wired
//! through DynamoDB, S3 and EventBridge.

use std::sync::Arc;

use artifacts::{ObjectStore, S3Store, s3};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, PutRequest, ScalarAttributeType,
    WriteRequest,
};
use futures::StreamExt;
use futures::stream;
use schemas::{EventId, EventType, Interaction, Timestamp};
use store::dynamodb::{DynamoInteractionStore, to_item};
use store::{InteractionSource, ScanPage, StoreError};
use training_export::backend::EmbeddedBackend;
use training_export::events::EventBridgeEvents;
use training_export::export::{self, ExportPlan};
use training_export::pipeline::{Deadline, Pipeline, Request, Settings};
use training_export::run::{Backend, Run, RunKind, RunState};
use training_export::runs::{DynamoRunStore, RunStore, RunStoreError};
use training_export::trainer::RecommenderNotBuiltIn;

fn interaction(n: usize) -> Interaction {
    Interaction {
        user_id: format!("s-{:04}", n % 300).parse().unwrap(),
        item_id: format!("class {}, \"{}\"", n % 37, ["Giải tích", "Tin học"][n % 2]).parse().unwrap(),
        timestamp: Timestamp::from_epoch_seconds(1_790_000_000 + n as i64).unwrap(),
        event_type: EventType::enrolled(),
        event_value: None,
        event_id: EventId::parse(format!("e-{n:07}")).unwrap(),
    }
}

async fn table(client: &aws_sdk_dynamodb::Client, keys: &[(&str, KeyType)]) -> String {
    let name = testkit::unique_name("te");
    let mut create = client.create_table().table_name(&name).billing_mode(BillingMode::PayPerRequest);
    for (attr, kind) in keys {
        create = create
            .attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name(*attr)
                    .attribute_type(ScalarAttributeType::S)
                    .build()
                    .unwrap(),
            )
            .key_schema(
                KeySchemaElement::builder().attribute_name(*attr).key_type(kind.clone()).build().unwrap(),
            );
    }
    create.send().await.expect("create table on moto");
    name
}

async fn bucket(config: &aws_config::SdkConfig) -> (aws_sdk_s3::Client, S3Store) {
    let client = s3::client(config);
    let name = testkit::unique_name("te");
    client.create_bucket().bucket(&name).send().await.expect("create bucket on moto");
    (client.clone(), S3Store::new(client, name).with_part_size(s3::MIN_PART_SIZE).unwrap())
}

async fn interactions_table(config: &aws_config::SdkConfig, rows: &[Interaction]) -> DynamoInteractionStore {
    let client = aws_sdk_dynamodb::Client::new(config);
    let name = table(&client, &[("userId", KeyType::Hash), ("eventId", KeyType::Range)]).await;
    for chunk in rows.chunks(25) {
        let writes = chunk
            .iter()
            .map(|i| {
                WriteRequest::builder()
                    .put_request(PutRequest::builder().set_item(Some(to_item(i))).build().unwrap())
                    .build()
            })
            .collect();
        let out = client.batch_write_item().request_items(&name, writes).send().await.unwrap();
        assert!(out.unprocessed_items().is_none_or(|u| u.is_empty()), "moto processes every item");
    }
    DynamoInteractionStore::new(client, name)
}

#[tokio::test]
async fn a_parallel_scan_of_dynamodb_lands_in_s3_complete_and_once() {
    let config = testkit::moto_config().await;
    let rows: Vec<_> = (0..2_000).map(interaction).collect();
    let store = interactions_table(&config, &rows).await;

    // Each segment holds a disjoint, non-empty part of the table.
    let mut per_segment = Vec::new();
    for segment in 0..4 {
        let pages: Vec<_> = store.scan_segment(segment, 4).collect().await;
        per_segment.push(pages.into_iter().map(|p| p.unwrap().interactions.len()).sum::<usize>());
    }
    assert_eq!(per_segment.iter().sum::<usize>(), rows.len(), "{per_segment:?}");
    assert!(per_segment.iter().filter(|&&n| n > 0).count() >= 2, "moto split the table: {per_segment:?}");

    let (_, objects) = bucket(&config).await;
    let plan = ExportPlan::new("r-moto");
    let manifest = export::export(export::scan_all(&store, 4), &objects, &plan, &|_| {}).await.unwrap();
    assert_eq!(manifest.rows, 2_000);
    assert_eq!(manifest.distinct_users, 300);
    let items: std::collections::HashSet<_> = rows.iter().map(|i| &i.item_id).collect();
    assert_eq!(manifest.distinct_items, items.len() as u64);
    let csv = objects.get(&manifest.csv.key).await.unwrap().unwrap();
    assert_eq!(artifacts::sha256_hex(&csv), manifest.csv.sha256);
    let mut got: Vec<String> = csv::Reader::from_reader(csv.as_slice())
        .records()
        .map(|r| {
            let r = r.unwrap();
            format!("{}{}", &r[1], &r[2])
        })
        .collect();
    let mut want: Vec<String> =
        rows.iter().map(|i| i.item_id.to_string() + &i.timestamp.epoch_seconds().to_string()).collect();
    got.sort();
    want.sort();
    assert_eq!(got, want, "every row exactly once, quoted ids intact");
    assert_eq!(
        objects.list("exports/r-moto/").await.unwrap(),
        vec![
            "exports/r-moto/interactions.csv",
            "exports/r-moto/interactions.parquet",
            "exports/r-moto/manifest.json"
        ]
    );
}

fn big_pages(rows: usize) -> Vec<Result<ScanPage, StoreError>> {
    let all: Vec<_> = (0..rows).map(interaction).collect();
    all.chunks(2_000).map(|c| Ok(ScanPage { interactions: c.to_vec(), rejected: vec![] })).collect()
}

#[tokio::test]
async fn a_large_export_goes_up_in_parts_and_a_failed_one_leaves_nothing() {
    // Multipart uploads get a moto of their own (see testkit::moto_multipart_endpoint).
    let config = testkit::moto_multipart_config().await;
    let (client, objects) = bucket(&config).await;

    // ~10 MB of CSV: two 5 MiB parts and a tail.
    let manifest =
        export::export(stream::iter(big_pages(230_000)), &objects, &ExportPlan::new("r-big"), &|_| {})
            .await
            .unwrap();
    assert!(manifest.csv.size > 2 * s3::MIN_PART_SIZE as u64, "{} bytes", manifest.csv.size);
    let head = client.head_object().bucket(objects.bucket()).key(&manifest.csv.key).send().await.unwrap();
    assert!(head.e_tag().unwrap().ends_with("-3\""), "multipart ETag: {:?}", head.e_tag());
    let csv = objects.get(&manifest.csv.key).await.unwrap().unwrap();
    assert_eq!(artifacts::sha256_hex(&csv), manifest.csv.sha256);

    // The same export, with the scan failing after ~7 MB: the CSV upload has a part up.
    let mut pages = big_pages(160_000);
    pages.push(Err(StoreError::Dynamo {
        operation: "Scan",
        table: "t".into(),
        message: "connection reset".into(),
        retryable: true,
    }));
    let err = export::export(stream::iter(pages), &objects, &ExportPlan::new("r-broken"), &|_| {})
        .await
        .unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert!(objects.list("exports/r-broken/").await.unwrap().is_empty(), "no object, no manifest");
    let uploads = client.list_multipart_uploads().bucket(objects.bucket()).send().await.unwrap();
    assert!(uploads.uploads().is_empty(), "the multipart upload was aborted: {:?}", uploads.uploads());
}

fn run(id: &str) -> Run {
    Run::new(id.into(), RunKind::Full, Backend::Personalize, "test", RunState::Exporting, 1_795_000_000)
}

#[tokio::test]
async fn the_dynamodb_run_store_allows_one_active_run_and_no_lost_updates() {
    let config = testkit::moto_config().await;
    let client = aws_sdk_dynamodb::Client::new(&config);
    let name = table(&client, &[("pk", KeyType::Hash), ("sk", KeyType::Range)]).await;
    let runs = DynamoRunStore::new(client, name);

    let mut first = run("20261122T020000Z-aaaa");
    runs.create(&first).await.unwrap();
    let err = runs.create(&run("20261122T030000Z-bbbb")).await.unwrap_err();
    assert!(
        matches!(&err, RunStoreError::Busy { active_run_id } if active_run_id == "20261122T020000Z-aaaa"),
        "{err}"
    );
    let mut stale = runs.get(&first.run_id).await.unwrap().unwrap();
    first.enter(RunState::Exported, 1_795_000_100);
    runs.save(&mut first).await.unwrap();
    stale.enter(RunState::Importing, 1_795_000_101);
    assert!(matches!(runs.save(&mut stale).await, Err(RunStoreError::Conflict { .. })));
    assert_eq!(runs.active().await.unwrap().unwrap().state, RunState::Exported);

    first.enter(RunState::Rejected { reason: "worse".into() }, 1_795_000_200);
    runs.save(&mut first).await.unwrap();
    assert_eq!(runs.active().await.unwrap(), None, "the terminal save released the guard");
    runs.create(&run("20261122T030000Z-bbbb")).await.unwrap();
    let recent: Vec<_> =
        runs.recent(5).await.unwrap().into_iter().map(|r| (r.run_id, r.state.name())).collect();
    assert_eq!(
        recent,
        vec![
            ("20261122T030000Z-bbbb".to_owned(), "Exporting"),
            ("20261122T020000Z-aaaa".to_owned(), "Rejected")
        ]
    );
}

#[tokio::test]
async fn an_export_run_through_dynamodb_s3_and_eventbridge() {
    let config = testkit::moto_config().await;
    let rows: Vec<_> = (0..1_200).map(interaction).collect();
    let interactions = interactions_table(&config, &rows).await;
    let (_, objects) = bucket(&config).await;
    let dynamo = aws_sdk_dynamodb::Client::new(&config);
    let runs_table = table(&dynamo, &[("pk", KeyType::Hash), ("sk", KeyType::Range)]).await;
    let eventbridge = aws_sdk_eventbridge::Client::new(&config);
    let bus = testkit::unique_name("bus");
    eventbridge.create_event_bus().name(&bus).send().await.expect("create bus on moto");
    let pipeline = Pipeline {
        table_exporter: None,
        interactions: Arc::new(interactions),
        objects: Arc::new(objects.clone()),
        runs: Arc::new(DynamoRunStore::new(dynamo, runs_table)),
        events: Arc::new(EventBridgeEvents::new(eventbridge, bus)),
        backend: Arc::new(EmbeddedBackend::new(Arc::new(RecommenderNotBuiltIn), Arc::new(objects.clone()))),
        fallback_models: None,
        settings: Settings { scan_segments: 3, ..Settings::default() },
        progress: None,
    };
    let response =
        pipeline.handle(Request::Export { trigger: "manual".into() }, Deadline::none()).await.unwrap();
    let run = response.run.unwrap();
    assert_eq!((run.status, run.rows), ("Done", Some(1_200)));
    let manifest = export::read_manifest(&objects, &format!("exports/{}", run.run_id)).await.unwrap();
    assert_eq!(manifest.rows, 1_200);
    let status = pipeline.handle(Request::Status {}, Deadline::none()).await.unwrap();
    assert_eq!(status.runs.len(), 1);
    assert_eq!(status.active_run_id, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_personalize_the_embedded_model_is_published_in_the_bucket() {
    use training_export::embedded_model::EmbeddedTrainer;
    let config = testkit::moto_config().await;
    let (_, objects) = bucket(&config).await;
    let objects: Arc<dyn artifacts::ObjectStore> = Arc::new(objects);
    let dir = tempfile::tempdir().unwrap();
    let interactions = store::embedded::EmbeddedStore::open_in(dir.path()).unwrap();
    store::demo::seed_if_empty(&interactions).unwrap();
    let pipeline = Pipeline {
        table_exporter: None,
        interactions: Arc::new(interactions),
        objects: objects.clone(),
        runs: Arc::new(training_export::runs::EmbeddedRunStore::open(&dir.path().join("store.db")).unwrap()),
        events: Arc::new(training_export::events::LocalEvents::new(dir.path().join("events.jsonl"))),
        backend: Arc::new(EmbeddedBackend::new(
            Arc::new(EmbeddedTrainer::in_bucket(objects.clone())),
            objects.clone(),
        )),
        fallback_models: None,
        settings: Settings::default(),
        progress: None,
    };
    let run = pipeline.handle(Request::run("schedule", None), Deadline::none()).await.unwrap();
    let run = run.run.unwrap();
    assert_eq!(run.status, "Done", "{run:?}");
    let version = run.deployed.unwrap();
    let latest = objects.get("models/LATEST").await.unwrap().unwrap();
    assert_eq!(String::from_utf8(latest).unwrap().trim(), version);
    let model = objects.get(&format!("models/{version}/model.bin")).await.unwrap().unwrap();
    let model = recommender::Model::from_bytes(&model).unwrap();
    assert_eq!(model.info().version, version);
    let info = objects.get(&format!("models/{version}/info.json")).await.unwrap().unwrap();
    assert!(String::from_utf8(info).unwrap().contains(&version));
}
