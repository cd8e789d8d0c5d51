//! The export benchmark's two halves, used by `scripts/bench-export` through the
//! `bench_export` example (not part of the API): generate a raw
//! interactions file (the store's shape: `event_id,user_id,item_id,timestamp,
//! event_type,event_value`), and convert it through the real export code into the
//! Personalize CSV + zstd Parquet. pandas + pyarrow do the same conversion of the same
//! file in the same run (`scripts/bench_export_pandas.py`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use artifacts::DirectoryStore;
use futures::StreamExt;
use futures::stream::{self, BoxStream};
use rand::rngs::ChaCha8Rng;
use rand::{RngExt, SeedableRng};
use schemas::{EventId, EventType, Interaction, ItemId, Timestamp, UserId};
use store::{InteractionSource, ScanPage, StoreError};

use crate::export::{self, ExportPlan};
use crate::manifest::Manifest;
use crate::table_export::embedded::EmbeddedTableExporter;
use crate::table_export::{self, TableExporter};

/// Writes `rows` synthetic interactions among a fixed population of `users` and
/// `items`, so that 1 M and 10 M rows differ in history length, not in population.
pub fn generate(rows: u64, users: u32, items: u32, seed: u64, out: &mut impl Write) -> std::io::Result<()> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut w = csv::Writer::from_writer(out);
    w.write_record(["event_id", "user_id", "item_id", "timestamp", "event_type", "event_value"])?;
    let start = 1_785_715_200_i64;
    for n in 0..rows {
        let user = rng.random_range(0..users);
        // Popular items first: squaring a uniform draw skews towards low ids.
        let x: f64 = rng.random_range(0.0..1.0);
        let item = ((x * x) * f64::from(items)) as u32;
        let ts = start + (n as i64) / 4 + rng.random_range(0..3600);
        let (kind, value) = match rng.random_range(0..10) {
            0..=5 => ("enrolled", String::new()),
            6..=8 => ("submitAssignment", String::new()),
            _ => ("rated", format!("{}", rng.random_range(1..=10) as f32 / 2.0)),
        };
        w.write_record([
            format!("ev-{n:010}"),
            format!("s-{user:07}"),
            format!("class-{item:05}"),
            ts.to_string(),
            kind.to_owned(),
            value,
        ])?;
    }
    w.flush()?;
    Ok(())
}

const PAGE_ROWS: usize = 2_000;

fn parse_row(r: &csv::StringRecord) -> Result<Interaction, String> {
    let field = |i: usize| r.get(i).ok_or_else(|| format!("column {i} missing"));
    let value = field(5)?;
    Ok(Interaction {
        event_id: EventId::parse(field(0)?).map_err(|e| e.to_string())?,
        user_id: UserId::parse(field(1)?).map_err(|e| e.to_string())?,
        item_id: ItemId::parse(field(2)?).map_err(|e| e.to_string())?,
        timestamp: Timestamp::from_epoch_seconds(field(3)?.parse().map_err(|_| "bad timestamp")?)
            .map_err(|e| e.to_string())?,
        event_type: EventType::parse(field(4)?).map_err(|e| e.to_string())?,
        event_value: if value.is_empty() {
            None
        } else {
            Some(value.parse().map_err(|_| format!("bad value {value:?}"))?)
        },
    })
}

/// Reads the next page (up to `PAGE_ROWS` records) of a raw file, or `None` at its end.
fn read_page(
    reader: &mut csv::Reader<std::fs::File>,
    record: &mut csv::StringRecord,
) -> Option<Result<ScanPage, StoreError>> {
    let mut page = ScanPage::default();
    while page.interactions.len() + page.rejected.len() < PAGE_ROWS {
        match reader.read_record(record) {
            Ok(true) => match parse_row(record) {
                Ok(i) => page.interactions.push(i),
                Err(reason) => page
                    .rejected
                    .push(store::RejectedRecord { key: record.get(0).unwrap_or("?").to_owned(), reason }),
            },
            Ok(false) => break,
            Err(e) => return Some(Err(StoreError::Task(e.to_string()))),
        }
    }
    (!page.interactions.is_empty() || !page.rejected.is_empty()).then_some(Ok(page))
}

/// Converts the raw file at `source` into `<out>/exports/bench/...` with the export
/// code; returns the manifest and the wall time.
pub async fn convert(source: &Path, out: &Path) -> anyhow::Result<(Manifest, Duration)> {
    let started = Instant::now();
    let mut reader = csv::Reader::from_path(source)?;
    // The source is read and parsed on its own thread, as a DynamoDB scan's pages arrive
    // from the network independently of the export; four pages may wait.
    let (pages_tx, mut pages_rx) = tokio::sync::mpsc::channel::<Result<ScanPage, StoreError>>(4);
    let reader_thread = std::thread::Builder::new().name("bench-reader".into()).spawn(move || {
        let mut record = csv::StringRecord::new();
        while let Some(page) = read_page(&mut reader, &mut record) {
            let failed = page.is_err();
            if pages_tx.blocking_send(page).is_err() || failed {
                return;
            }
        }
    })?;
    let pages = stream::poll_fn(move |cx| pages_rx.poll_recv(cx));
    let objects = DirectoryStore::new(out);
    let manifest = export::export(pages, &objects, &ExportPlan::new("bench"), &|_| {}).await?;
    reader_thread.join().map_err(|_| anyhow::anyhow!("the source reader panicked"))?;
    Ok((manifest, started.elapsed()))
}

/// A raw file as an [`InteractionSource`] (one segment), so that the table-export layout
/// writer ([`EmbeddedTableExporter`]) can write it as DynamoDB would.
pub struct RawFileSource {
    path: PathBuf,
}

impl RawFileSource {
    pub fn new(path: &Path) -> Self {
        Self { path: path.to_owned() }
    }
}

impl InteractionSource for RawFileSource {
    fn scan_segment(&self, segment: u32, total: u32) -> BoxStream<'_, Result<ScanPage, StoreError>> {
        if (segment, total) != (0, 1) {
            return stream::once(async move { Err(StoreError::BadSegment { segment, total }) }).boxed();
        }
        let mut reader = match csv::Reader::from_path(&self.path) {
            Ok(reader) => reader,
            Err(e) => return stream::once(async move { Err(StoreError::Task(e.to_string())) }).boxed(),
        };
        let mut record = csv::StringRecord::new();
        stream::iter(std::iter::from_fn(move || read_page(&mut reader, &mut record))).boxed()
    }
}

/// The export id (client token) and S3 prefix the benchmark's table export is written under.
const TABLE_EXPORT_TOKEN: &str = "bench";
const TABLE_EXPORT_PREFIX: &str = "exports/bench/dynamodb";
/// Where [`write_table_export`] puts the export's `manifest-summary.json`.
pub const TABLE_EXPORT_SUMMARY: &str = "exports/bench/dynamodb/AWSDynamoDB/bench/manifest-summary.json";

/// Writes the raw file at `source` into `out` in the layout DynamoDB's
/// `ExportTableToPointInTime` writes (gzipped DynamoDB JSON data files of
/// `items_per_file` items, `manifest-files.json`, `manifest-summary.json`), with the
/// pipeline's own layout writer; returns the summary's key.
pub async fn write_table_export(source: &Path, out: &Path, items_per_file: usize) -> anyhow::Result<String> {
    let exporter =
        EmbeddedTableExporter::new(Arc::new(RawFileSource::new(source)), Arc::new(DirectoryStore::new(out)))
            .with_items_per_file(items_per_file);
    Ok(exporter.start(TABLE_EXPORT_TOKEN, TABLE_EXPORT_PREFIX, None).await?.export_id)
}

/// The number of data files of the table export at `manifest_key` under `dir`, and
/// their total (compressed) size in bytes.
pub async fn data_file_sizes(dir: &Path, manifest_key: &str) -> anyhow::Result<(usize, u64)> {
    let files = table_export::data_files(&DirectoryStore::new(dir), manifest_key).await?;
    let bytes = files
        .iter()
        .map(|f| std::fs::metadata(dir.join(&f.data_file_s3_key)).map(|m| m.len()))
        .sum::<Result<u64, _>>()?;
    Ok((files.len(), bytes))
}

/// Converts the table export whose `manifest-summary.json` is at `manifest_key` under
/// `dir` as the pipeline does, data file by data file (`convert_file`, the listing read
/// again before each file), then `assemble`, into `<dir>/exports/bench/...`; returns the
/// manifest, the number of data files and the wall time.
pub async fn convert_table_export(
    dir: &Path,
    manifest_key: &str,
) -> anyhow::Result<(Manifest, u32, Duration)> {
    let started = Instant::now();
    let objects = DirectoryStore::new(dir);
    let plan = ExportPlan::new("bench");
    let total = u32::try_from(table_export::data_files(&objects, manifest_key).await?.len())?;
    for index in 0..total {
        let files = table_export::data_files(&objects, manifest_key).await?;
        export::convert::convert_file(&objects, &plan, index, &files[index as usize], &|| {}).await?;
    }
    let manifest = export::convert::assemble(&objects, &plan, total, None).await?;
    Ok((manifest, total, started.elapsed()))
}

/// The process's peak resident set (`VmHWM`), in bytes, on Linux.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn generated_rows_convert_without_rejects() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("raw.csv");
        let mut file = std::fs::File::create(&source).unwrap();
        generate(5_000, 300, 50, 7, &mut file).unwrap();
        drop(file);
        let (manifest, _) = convert(&source, &dir.path().join("out")).await.unwrap();
        assert_eq!(manifest.rows, 5_000);
        assert_eq!(manifest.rejected.count, 0);
        assert!(manifest.distinct_users <= 300 && manifest.distinct_items <= 50);
        assert!(manifest.rows_with_event_value > 0, "some rows carry a value");
        assert!(peak_rss_bytes().is_some_and(|b| b > 0));
    }

    #[tokio::test]
    async fn a_table_export_of_the_generated_rows_converts_to_the_same_figures() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("raw.csv");
        let mut file = std::fs::File::create(&source).unwrap();
        generate(5_000, 300, 50, 7, &mut file).unwrap();
        drop(file);
        let (scanned, _) = convert(&source, &dir.path().join("scan")).await.unwrap();
        let exported = dir.path().join("table");
        let summary = write_table_export(&source, &exported, 2_000).await.unwrap();
        assert_eq!(summary, TABLE_EXPORT_SUMMARY);
        let (converted, files, _) = convert_table_export(&exported, &summary).await.unwrap();
        assert_eq!(files, 3);
        assert_eq!(converted.rows, scanned.rows);
        assert_eq!(converted.rejected.count, 0);
        assert_eq!(
            (converted.distinct_users, converted.distinct_items, converted.rows_with_event_value),
            (scanned.distinct_users, scanned.distinct_items, scanned.rows_with_event_value)
        );
        assert_eq!(converted.csv.rows, scanned.csv.rows);
    }
}
