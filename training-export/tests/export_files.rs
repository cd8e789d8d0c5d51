//! The export end to end on the embedded store and a directory: what the files hold,
//! what the manifest says, what pandas/csv/pyarrow read back, and what a failure
//! leaves behind (nothing).

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use artifacts::{ArtifactError, DirectoryStore, ObjectInfo, ObjectStore, ObjectWriter};
use async_trait::async_trait;
use futures::stream::{self, StreamExt};
use schemas::{EventId, EventType, Interaction, Timestamp};
use serde_json::Value;
use store::embedded::EmbeddedStore;
use store::{RejectedRecord, ScanPage, StoreError};
use training_export::export::{self, ExportPlan};

fn interaction(n: usize, user: &str, item: &str, ts: i64, value: Option<f32>) -> Interaction {
    Interaction {
        user_id: user.parse().unwrap(),
        item_id: item.parse().unwrap(),
        timestamp: Timestamp::from_epoch_seconds(ts).unwrap(),
        event_type: if n.is_multiple_of(3) {
            EventType::submitted_assignment()
        } else {
            EventType::enrolled()
        },
        event_value: value,
        event_id: EventId::parse(format!("e-{n:06}")).unwrap(),
    }
}

/// Ids that break naive CSV writers and readers: commas, quotes, non-ASCII, spaces
/// at either end, a lone quote, something that looks like a number or NA.
const TRICKY_USERS: [&str; 8] =
    ["s,1", "\"quoted\"", "Nguyễn Văn An", " leading space", "trailing ", "NA", "007", "a\"b,c"];
const TRICKY_ITEMS: [&str; 5] = ["Giải tích 101", "math,101", "'single'", "x", "null"];

fn tricky_rows() -> Vec<Interaction> {
    let long_item = "ễ".repeat(256);
    let mut rows = Vec::new();
    for (n, user) in TRICKY_USERS.iter().enumerate() {
        for (k, item) in TRICKY_ITEMS.iter().chain([&long_item.as_str()]).enumerate() {
            let value = [None, Some(0.5), Some(2.25), Some(1.0)][(n + k) % 4];
            rows.push(interaction(n * 10 + k, user, item, 1_790_000_000 + (n * 100 + k) as i64, value));
        }
    }
    rows
}

async fn export_rows(
    rows: Vec<Interaction>,
    objects: &dyn ObjectStore,
    plan: &ExportPlan,
) -> Result<training_export::manifest::Manifest, export::ExportError> {
    // Pages of 7 rows, to cross page boundaries the way a real scan does.
    let pages: Vec<Result<ScanPage, StoreError>> =
        rows.chunks(7).map(|c| Ok(ScanPage { interactions: c.to_vec(), rejected: vec![] })).collect();
    export::export(stream::iter(pages), objects, plan, &|_| {}).await
}

fn python() -> String {
    match std::env::var("PYTHON") {
        Ok(p) if !p.is_empty() => p,
        _ => panic!(
            "PYTHON is not set. This test reads the export back with pandas and pyarrow: run `scripts/test` \
             (it creates .venv with them and exports PYTHON), or `python3 -m venv .venv && \
             .venv/bin/pip install -r scripts/requirements-test.txt` and export PYTHON=$PWD/.venv/bin/python"
        ),
    }
}

fn read_back(csv: &Path, parquet: &Path) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/read_back.py");
    let out = Command::new(python()).arg(script).arg(csv).arg(parquet).output().expect("run $PYTHON");
    assert!(out.status.success(), "read_back.py failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("read_back.py prints JSON")
}

fn expected_text_rows(rows: &[Interaction]) -> Vec<Vec<String>> {
    rows.iter()
        .map(|i| {
            vec![
                i.user_id.to_string(),
                i.item_id.to_string(),
                i.timestamp.epoch_seconds().to_string(),
                i.event_type.to_string(),
                i.event_value.map(|v| v.to_string()).unwrap_or_default(),
            ]
        })
        .collect()
}

#[tokio::test]
async fn pandas_csv_and_pyarrow_read_back_exactly_what_was_written() {
    let dir = tempfile::tempdir().unwrap();
    let objects = DirectoryStore::new(dir.path());
    let rows = tricky_rows();
    let plan = ExportPlan::new("r-tricky");
    let manifest = export_rows(rows.clone(), &objects, &plan).await.unwrap();
    let csv_path = dir.path().join("exports/r-tricky/interactions.csv");
    let parquet_path = dir.path().join("exports/r-tricky/interactions.parquet");
    let seen = read_back(&csv_path, &parquet_path);

    let header = ["USER_ID", "ITEM_ID", "TIMESTAMP", "EVENT_TYPE", "EVENT_VALUE"];
    assert_eq!(seen["pandas_header"], serde_json::json!(header));
    assert_eq!(seen["csv_header"], serde_json::json!(header));
    let expected = serde_json::to_value(expected_text_rows(&rows)).unwrap();
    assert_eq!(seen["pandas"], expected, "pandas reads the CSV as written");
    assert_eq!(seen["csv"], expected, "Python's csv module reads the CSV as written");

    let parquet_expected: Vec<Value> = rows
        .iter()
        .map(|i| {
            serde_json::json!([
                i.user_id.as_str(),
                i.item_id.as_str(),
                i.timestamp.epoch_seconds(),
                i.event_type.as_str(),
                i.event_value
            ])
        })
        .collect();
    assert_eq!(seen["parquet"], Value::Array(parquet_expected), "pyarrow reads the same rows");
    assert_eq!(
        seen["parquet_schema"],
        serde_json::json!([
            ["USER_ID", "string", false],
            ["ITEM_ID", "string", false],
            ["TIMESTAMP", "int64", false],
            ["EVENT_TYPE", "string", false],
            ["EVENT_VALUE", "float", true]
        ])
    );
    assert_eq!(seen["parquet_compression"], serde_json::json!(["ZSTD"]));

    // Quoting only where needed: plain fields are bare, the header is bare.
    let text = std::fs::read_to_string(&csv_path).unwrap();
    assert!(text.starts_with("USER_ID,ITEM_ID,TIMESTAMP,EVENT_TYPE,EVENT_VALUE\n"));
    assert!(text.contains("\n007,null,"), "plain fields are not quoted:\n{text}");
    assert!(text.contains("\n\"s,1\",\"math,101\","), "fields with commas are quoted");
    assert!(text.contains("\n\"\"\"quoted\"\"\","), "quotes are doubled inside quotes");
    assert_eq!(manifest.rows, rows.len() as u64);
    assert_eq!(manifest.max_item_id_chars, 256);
}

#[tokio::test]
async fn the_manifest_describes_the_files_it_sits_beside() {
    let dir = tempfile::tempdir().unwrap();
    let objects = DirectoryStore::new(dir.path());
    let store = EmbeddedStore::open_in(&dir.path().join("data")).unwrap();
    let seeded = store::demo::seed_if_empty(&store).unwrap().unwrap();
    let data = store::demo::generate(&store::demo::DemoSpec::default());

    let plan = ExportPlan::new("r-demo");
    let manifest = export::export(export::scan_all(&store, 4), &objects, &plan, &|_| {}).await.unwrap();

    assert_eq!(manifest.rows, seeded as u64);
    let users: std::collections::HashSet<_> = data.interactions.iter().map(|i| &i.user_id).collect();
    let items: std::collections::HashSet<_> = data.interactions.iter().map(|i| &i.item_id).collect();
    assert_eq!(manifest.distinct_users, users.len() as u64);
    assert_eq!(manifest.distinct_items, items.len() as u64);
    assert_eq!(manifest.min_timestamp, data.interactions.iter().map(|i| i.timestamp.epoch_seconds()).min());
    assert_eq!(manifest.max_timestamp, data.interactions.iter().map(|i| i.timestamp.epoch_seconds()).max());
    assert_eq!(manifest.event_types.values().sum::<u64>(), manifest.rows);
    assert_eq!(manifest.validate(), Ok(()));

    for file in [&manifest.csv, manifest.parquet.as_ref().expect("this build writes Parquet")] {
        let bytes = objects.get(&file.key).await.unwrap().unwrap();
        assert_eq!(file.size, bytes.len() as u64, "{}", file.key);
        assert_eq!(file.sha256, artifacts::sha256_hex(&bytes), "{}", file.key);
    }
    let read = export::read_manifest(&objects, &plan.prefix).await.unwrap();
    assert_eq!(read, manifest);

    // Every stored row is in the CSV exactly once, whatever the segment count.
    let bytes = objects.get(&manifest.csv.key).await.unwrap().unwrap();
    let mut reader = csv::Reader::from_reader(bytes.as_slice());
    let mut got: Vec<Vec<String>> =
        reader.records().map(|r| r.unwrap().iter().map(str::to_owned).collect()).collect();
    let mut want = expected_text_rows(&data.interactions);
    got.sort();
    want.sort();
    assert_eq!(got, want);
}

#[tokio::test]
async fn the_delta_file_holds_the_new_rows_and_a_safety_overlap() {
    let dir = tempfile::tempdir().unwrap();
    let objects = DirectoryStore::new(dir.path());
    let day = 86_400;
    let since = 1_790_000_000;
    let rows: Vec<_> = (0..10)
        .map(|n| interaction(n, &format!("s-{n}"), "A", since - 5 * day + n as i64 * day, None))
        .collect();
    let mut plan = ExportPlan::new("r-delta");
    plan.delta_since = Some(since);
    let manifest = export_rows(rows.clone(), &objects, &plan).await.unwrap();
    let delta = manifest.delta.expect("a delta was planned");
    // Rows at since-5d .. since+4d: 4 are strictly newer; since-1d and since itself fall
    // in the 2-day overlap; the row at since-2d is not after the overlap start.
    assert_eq!(delta.new_rows, 4);
    assert_eq!(delta.file.rows, 6);
    assert_eq!(delta.overlap_from, since - 2 * day);
    let bytes = objects.get(&delta.file.key).await.unwrap().unwrap();
    assert!(
        String::from_utf8(bytes).unwrap().starts_with("USER_ID,ITEM_ID,TIMESTAMP,EVENT_TYPE,EVENT_VALUE\n")
    );
    assert_eq!(manifest.csv.rows, 10);
}

#[tokio::test]
async fn rejected_records_are_counted_and_named_never_dropped_silently() {
    let dir = tempfile::tempdir().unwrap();
    let objects = DirectoryStore::new(dir.path());
    let good: Vec<_> = (0..3).map(|n| interaction(n, "s-1", "A", 1_790_000_000, None)).collect();
    let rejected: Vec<_> = (0..150)
        .map(|n| RejectedRecord { key: format!("s-9/bad-{n}"), reason: "userId is empty".into() })
        .collect();
    let pages = vec![
        Ok(ScanPage { interactions: good, rejected: rejected[..100].to_vec() }),
        Ok(ScanPage { interactions: vec![], rejected: rejected[100..].to_vec() }),
    ];
    let manifest =
        export::export(stream::iter(pages), &objects, &ExportPlan::new("r-rej"), &|_| {}).await.unwrap();
    assert_eq!(manifest.rows, 3);
    assert_eq!(manifest.rejected.count, 150);
    assert_eq!(manifest.rejected.first.len(), 100);
    assert_eq!(manifest.rejected.first[0].key, "s-9/bad-0");
    assert_eq!(manifest.rejected.first[0].reason, "userId is empty");
}

/// An object store whose writers fail after a byte budget: a disk filling up, or S3
/// refusing a part halfway through.
struct FailingStore {
    inner: DirectoryStore,
    fail_key_suffix: &'static str,
    budget: u64,
    aborted: Arc<AtomicU64>,
}

struct FailingWriter {
    inner: Box<dyn ObjectWriter>,
    remaining: Option<u64>,
    aborted: Arc<AtomicU64>,
}

#[async_trait]
impl ObjectWriter for FailingWriter {
    async fn write_all(&mut self, bytes: &[u8]) -> Result<(), ArtifactError> {
        if let Some(remaining) = self.remaining.as_mut() {
            if bytes.len() as u64 > *remaining {
                return Err(ArtifactError::Io {
                    path: "test".into(),
                    source: std::io::Error::new(std::io::ErrorKind::StorageFull, "disk full"),
                });
            }
            *remaining -= bytes.len() as u64;
        }
        self.inner.write_all(bytes).await
    }
    async fn finish(self: Box<Self>) -> Result<ObjectInfo, ArtifactError> {
        self.inner.finish().await
    }
    async fn abort(self: Box<Self>) -> Result<(), ArtifactError> {
        self.aborted.fetch_add(1, Ordering::SeqCst);
        self.inner.abort().await
    }
    fn bytes_written(&self) -> u64 {
        self.inner.bytes_written()
    }
}

#[async_trait]
impl ObjectStore for FailingStore {
    async fn begin(&self, key: &str) -> Result<Box<dyn ObjectWriter>, ArtifactError> {
        let remaining = key.ends_with(self.fail_key_suffix).then_some(self.budget);
        Ok(Box::new(FailingWriter {
            inner: self.inner.begin(key).await?,
            remaining,
            aborted: self.aborted.clone(),
        }))
    }
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, ArtifactError> {
        self.inner.get(key).await
    }
    async fn copy_to(
        &self,
        key: &str,
        writer: &mut (dyn tokio::io::AsyncWrite + Unpin + Send),
    ) -> Result<Option<u64>, ArtifactError> {
        self.inner.copy_to(key, writer).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<String>, ArtifactError> {
        self.inner.list(prefix).await
    }
    fn location(&self, key: &str) -> String {
        self.inner.location(key)
    }
}

fn many_rows(n: usize) -> Vec<Interaction> {
    (0..n)
        .map(|k| interaction(k, &format!("s-{}", k % 500), &format!("c-{}", k % 40), 1_790_000_000, None))
        .collect()
}

#[tokio::test]
async fn a_failed_upload_aborts_every_file_and_writes_no_manifest() {
    // The Parquet file is written out at its close (150,000 rows are under one row group),
    // and the manifest last of all: both fail after the CSV has been handed all its bytes.
    for (suffix, budget) in [(".csv", 10_000), (".parquet", 10_000), ("manifest.json", 100)] {
        let dir = tempfile::tempdir().unwrap();
        let aborted = Arc::new(AtomicU64::new(0));
        let objects = FailingStore {
            inner: DirectoryStore::new(dir.path()),
            fail_key_suffix: suffix,
            budget,
            aborted: aborted.clone(),
        };
        let err = export_rows(many_rows(150_000), &objects, &ExportPlan::new("r-fail")).await.unwrap_err();
        assert!(err.to_string().contains("disk full"), "{suffix}: {err}");
        assert!(err.is_retryable(), "a full disk may be cleaned up");
        assert_eq!(
            objects.list("exports/r-fail/manifest.json").await.unwrap(),
            Vec::<String>::new(),
            "{suffix}: no manifest after a failure"
        );
        if suffix != "manifest.json" {
            assert!(aborted.load(Ordering::SeqCst) >= 1, "{suffix}: the failing writer was aborted");
            assert_eq!(objects.list("").await.unwrap(), Vec::<String>::new(), "{suffix}: nothing visible");
        }
    }
}

#[tokio::test]
async fn a_scan_error_midway_aborts_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let objects = DirectoryStore::new(dir.path());
    let pages = vec![
        Ok(ScanPage { interactions: many_rows(10), rejected: vec![] }),
        Err(StoreError::Dynamo {
            operation: "Scan",
            table: "interactions".into(),
            message: "throttled".into(),
            retryable: true,
        }),
    ];
    let err = export::export(stream::iter(pages).boxed(), &objects, &ExportPlan::new("r-scan"), &|_| {})
        .await
        .unwrap_err();
    assert!(err.is_retryable());
    assert!(err.to_string().contains("reading the interactions"), "{err}");
    assert!(objects.list("").await.unwrap().is_empty(), "nothing visible after a failed scan");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segments_read_in_their_own_tasks_yield_every_row_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(EmbeddedStore::open_in(dir.path()).unwrap());
    store::demo::seed_if_empty(&store).unwrap();
    let pages: Vec<_> = export::scan_all_in_tasks(store.clone(), 5).collect().await;
    let mut ids: Vec<String> =
        pages.into_iter().flat_map(|p| p.unwrap().interactions).map(|i| i.event_id.to_string()).collect();
    let total = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), total, "no row twice");
    assert_eq!(total as u64, store.count_blocking().unwrap(), "every row");
}
