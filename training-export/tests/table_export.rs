//! The table-export path end to end on the embedded adapters: DynamoDB's export layout
//! written from the store, converted file by file over pipeline steps, checkpointed in
//! the run. The same table gives the same rows, Parquet contents and manifest figures as
//! the scan path; a failure in the middle of the conversion costs only the file it was on.

mod common;

use common::FailOnce;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use artifacts::DirectoryStore;
use schemas::{EventId, EventType, Interaction, Timestamp};
use store::embedded::EmbeddedStore;
use training_export::app;
use training_export::config::Config;
use training_export::manifest::Manifest;
use training_export::pipeline::{Deadline, Pipeline, Request};
use training_export::run::{Run, RunState};
use training_export::table_export::embedded::EmbeddedTableExporter;

/// Ids the schemas allow that break naive CSV and JSON handling: commas, quotes,
/// backslashes, non-ASCII, spaces at either end, things that look like numbers or NA,
/// the longest id allowed.
fn awkward_rows() -> Vec<Interaction> {
    let longest = "ễ".repeat(schemas::MAX_ID_CHARS);
    let users: Vec<String> =
        ["s,1", "\"quoted\"", "Nguyễn Văn An", " leading", "trailing ", "NA", "007", "a\\b\"c,", "{\"S\":1}"]
            .iter()
            .map(|s| s.to_string())
            .chain([longest.clone()])
            .chain((0..60).map(|n| format!("student-{n:03}")))
            .collect();
    let items =
        ["Giải tích 101", "math,101", "'single'", "null", "line\u{2028}sep\u{200b}", "cs-101", "cs-102"];
    let mut rows = Vec::new();
    for (u, user) in users.iter().enumerate() {
        for k in 0..18 {
            let n = u * 100 + k;
            let item = if k == 17 { longest.as_str() } else { items[(u + k) % items.len()] };
            rows.push(Interaction {
                user_id: user.parse().unwrap(),
                item_id: item.parse().unwrap(),
                timestamp: Timestamp::from_epoch_seconds(1_790_000_000 + n as i64 * 37).unwrap(),
                event_type: if n % 3 == 0 {
                    EventType::submitted_assignment()
                } else {
                    EventType::enrolled()
                },
                event_value: [None, Some(0.5), Some(2.25), Some(1e-7)][n % 4],
                event_id: EventId::parse(format!("e-{n:06}")).unwrap(),
            });
        }
    }
    rows
}

/// A store with the awkward rows and one record the rules refuse (a timestamp in
/// milliseconds, written behind the store's back as an older writer would have).
fn store_in(dir: &Path) {
    let store = EmbeddedStore::open_in(dir).unwrap();
    store.put_many_blocking(&awkward_rows()).unwrap();
    let db = store::embedded::open_connection(&dir.join(store::embedded::FILE_NAME)).unwrap();
    db.execute(
        "INSERT INTO interactions (event_id, user_id, item_id, ts, event_type) VALUES ('e-ms', 's-ms', 'cs-101', 1790000000000, 'enrolled')",
        [],
    )
    .unwrap();
}

async fn pipeline(dir: &Path, table_export_files: Option<usize>) -> Pipeline {
    let mut pipeline = app::build(&Config::embedded(dir), false).await.unwrap();
    if let Some(items_per_file) = table_export_files {
        pipeline.table_exporter = Some(Arc::new(
            EmbeddedTableExporter::new(pipeline.interactions.clone(), pipeline.objects.clone())
                .with_items_per_file(items_per_file),
        ));
        pipeline.settings.table_export_above_bytes = Some(0);
    }
    pipeline
}

async fn export_only(pipeline: &Pipeline) -> Run {
    let answer = pipeline.handle(Request::Export { trigger: "test".into() }, Deadline::none()).await.unwrap();
    let run_id = answer.run.expect("a run").run_id;
    pipeline.runs.get(&run_id).await.unwrap().unwrap()
}

fn manifest(dir: &Path, run: &Run) -> Manifest {
    Manifest::parse(&std::fs::read(dir.join("exports").join(&run.run_id).join("manifest.json")).unwrap())
        .unwrap()
}

/// Every data row of the file's objects (headers checked and dropped), sorted.
fn csv_rows(dir: &Path, file: &training_export::manifest::ExportedFile) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    for object in file.objects() {
        let mut reader = csv::Reader::from_path(dir.join(&object.key)).unwrap();
        assert_eq!(
            reader.headers().unwrap(),
            vec!["USER_ID", "ITEM_ID", "TIMESTAMP", "EVENT_TYPE", "EVENT_VALUE"]
        );
        let part: Vec<Vec<String>> =
            reader.records().map(|r| r.unwrap().iter().map(str::to_owned).collect()).collect();
        assert_eq!(part.len() as u64, object.rows, "{}", object.key);
        rows.extend(part);
    }
    rows.sort();
    rows
}

fn parquet_rows(dir: &Path, file: &training_export::manifest::ExportedFile) -> Vec<String> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let mut rows = Vec::new();
    for object in file.objects() {
        let reader = SerializedFileReader::new(std::fs::File::open(dir.join(&object.key)).unwrap()).unwrap();
        rows.extend(reader.get_row_iter(None).unwrap().map(|row| row.unwrap().to_string()));
    }
    rows.sort();
    rows
}

/// What must agree between the two paths: everything but names, times and sizes.
fn figures(m: &Manifest) -> serde_json::Value {
    let mut v = serde_json::to_value(m).unwrap();
    let object = v.as_object_mut().unwrap();
    for field in ["runId", "createdAt", "csv", "parquet", "delta"] {
        object.remove(field);
    }
    let rejected = object.get_mut("rejected").unwrap().as_object_mut().unwrap();
    rejected.remove("first");
    v
}

#[tokio::test]
async fn both_export_paths_give_the_same_rows_parquet_and_figures() {
    let (scan_dir, export_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    store_in(scan_dir.path());
    store_in(export_dir.path());

    let scanned = export_only(&pipeline(scan_dir.path(), None).await).await;
    assert_eq!(scanned.state, RunState::Done, "{scanned:?}");
    assert!(scanned.table_export.is_none(), "no threshold: the scan path");

    let exported = export_only(&pipeline(export_dir.path(), Some(97)).await).await;
    assert_eq!(exported.state, RunState::Done, "{exported:?}");
    let record = exported.table_export.clone().expect("the table-export path");
    let files = record.data_files.unwrap();
    assert!(files > 5, "{files} data files");
    assert_eq!(record.converted, files, "every file converted");

    let (a, b) = (manifest(scan_dir.path(), &scanned), manifest(export_dir.path(), &exported));
    assert_eq!(b.csv.parts.len() as u32, files, "one part per data file");
    assert!(b.csv.key.ends_with("/csv/"), "Personalize imports the folder: {}", b.csv.key);
    assert_eq!(figures(&a), figures(&b));
    assert_eq!(a.rejected.count, 1, "the millisecond timestamp");
    assert_eq!(a.rows, awkward_rows().len() as u64);
    assert_eq!(csv_rows(scan_dir.path(), &a.csv), csv_rows(export_dir.path(), &b.csv));
    assert_eq!(
        parquet_rows(scan_dir.path(), a.parquet.as_ref().unwrap()),
        parquet_rows(export_dir.path(), b.parquet.as_ref().unwrap())
    );
    // The parts are what the run's record says, and nothing else is under the folder.
    let on_disk = std::fs::read_dir(export_dir.path().join(&b.csv.key)).unwrap().count();
    assert_eq!(on_disk as u32, files);
    for part in &b.csv.parts {
        let bytes = std::fs::read(export_dir.path().join(&part.key)).unwrap();
        assert_eq!(artifacts::sha256_hex(&bytes), part.sha256, "{}", part.key);
    }
}

#[tokio::test]
async fn a_failure_mid_file_resumes_at_that_file_and_redoes_nothing_before_it() {
    let dir = tempfile::tempdir().unwrap();
    store_in(dir.path());
    let mut pipeline = pipeline(dir.path(), Some(150)).await;
    let objects = Arc::new(FailOnce::new(DirectoryStore::new(dir.path()), "parts/part-00002.json"));
    pipeline.objects = objects.clone();
    pipeline.table_exporter = Some(Arc::new(
        EmbeddedTableExporter::new(pipeline.interactions.clone(), objects).with_items_per_file(150),
    ));

    let stopped = export_only(&pipeline).await;
    assert_eq!(stopped.state, RunState::Exporting);
    let record = stopped.table_export.clone().unwrap();
    assert_eq!(record.converted, 2, "files 0 and 1 are checkpointed; file 2 failed");
    assert!(stopped.last_error.as_deref().unwrap_or("").contains("injected"), "{:?}", stopped.last_error);
    let prefix = dir.path().join("exports").join(&stopped.run_id);
    let first_part = prefix.join("csv/part-00000.csv");
    let first_written = std::fs::metadata(&first_part).unwrap().modified().unwrap();
    assert!(
        prefix.join("csv/part-00002.csv").exists(),
        "the failed file's part was written before its record"
    );

    let answer = pipeline.handle(Request::Advance {}, Deadline::none()).await.unwrap();
    assert_eq!(answer.run.unwrap().status, "Done");
    let done = pipeline.runs.get(&stopped.run_id).await.unwrap().unwrap();
    let m = manifest(dir.path(), &done);
    assert_eq!(
        std::fs::metadata(&first_part).unwrap().modified().unwrap(),
        first_written,
        "file 0 not redone"
    );
    assert_eq!(m.rows, awkward_rows().len() as u64, "every row once");
    let rows = csv_rows(dir.path(), &m.csv);
    let mut unique = rows.clone();
    unique.dedup();
    assert_eq!(unique.len(), rows.len(), "no row twice");
    let per_type: BTreeMap<_, _> = m.event_types.clone();
    assert_eq!(per_type.values().sum::<u64>(), m.rows);
}
