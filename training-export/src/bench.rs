//! The export benchmark's two halves, used by `scripts/bench-export` through the
//! `bench_export` example (not part of the API): generate a raw
//! interactions file (the store's shape: `event_id,user_id,item_id,timestamp,
//! event_type,event_value`), and convert it through the real export code into the
//! Personalize CSV + zstd Parquet. pandas + pyarrow do the same conversion of the same
//! file in the same run (`scripts/bench_export_pandas.py`).

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use artifacts::DirectoryStore;
use futures::stream;
use rand::rngs::ChaCha8Rng;
use rand::{RngExt, SeedableRng};
use schemas::{EventId, EventType, Interaction, ItemId, Timestamp, UserId};
use store::{ScanPage, StoreError};

use crate::export::{self, ExportPlan};
use crate::manifest::Manifest;

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
        loop {
            let mut page = ScanPage::default();
            while page.interactions.len() + page.rejected.len() < PAGE_ROWS {
                match reader.read_record(&mut record) {
                    Ok(true) => match parse_row(&record) {
                        Ok(i) => page.interactions.push(i),
                        Err(reason) => page.rejected.push(store::RejectedRecord {
                            key: record.get(0).unwrap_or("?").to_owned(),
                            reason,
                        }),
                    },
                    Ok(false) => break,
                    Err(e) => {
                        let _ = pages_tx.blocking_send(Err(StoreError::Task(e.to_string())));
                        return;
                    }
                }
            }
            if page.interactions.is_empty() && page.rejected.is_empty() {
                return;
            }
            if pages_tx.blocking_send(Ok(page)).is_err() {
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
}
