//! The export: one pass over the interactions, written as it is read to a
//! Personalize CSV and an analytics Parquet file side by side (plus, when a previous
//! import exists, a delta CSV of the newer rows), each streamed into the object store.
//! `manifest.json` goes last; an export without one is incomplete by definition.
//!
//! Memory is bounded by the pages in flight (one per scan segment), one CSV chunk,
//! one Parquet batch and row group, and one upload part per file, plus one map entry
//! per distinct user and item: the "25 users with 2 or more" rule needs a count per
//! user, which is O(users), not O(rows). A table of 10 M interactions among 100 k
//! users costs a few MB for it.
//!
//! The CSV header always includes EVENT_VALUE: the Personalize schema declares it
//! (nullable), the scan is a single pass so we cannot know in advance whether any row
//! has a value, and Personalize accepts empty cells for a nullable field. Rows without
//! a value leave the cell empty.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::Arc;

use artifacts::{ArtifactError, ObjectStore, ObjectWriter};
use futures::stream::{self, BoxStream, Stream, StreamExt};
use schemas::Interaction;
use schemas::interaction::CSV_HEADER_WITH_VALUE;
use store::{InteractionSource, ScanPage, StoreError};

use crate::manifest::{
    DeltaSummary, ExportedFile, MANIFEST_SCHEMA_VERSION, Manifest, RejectedEntry, RejectedSummary,
};

#[cfg(feature = "parquet")]
mod parquet;
#[cfg(feature = "parquet")]
use self::parquet::ParquetSink;
#[cfg(feature = "parquet")]
pub use self::parquet::parquet_schema;

/// Without the `parquet` feature there is no Parquet file (the manifest has no `parquet`
/// entry): this type has no values, so every use of one is unreachable.
#[cfg(not(feature = "parquet"))]
enum ParquetSink {}

#[cfg(not(feature = "parquet"))]
impl ParquetSink {
    fn push(&mut self, _: &Interaction) {
        match *self {}
    }
    fn batch_full(&self) -> bool {
        match *self {}
    }
    async fn write_batch(&mut self, _: bool) -> Result<(), ExportError> {
        match *self {}
    }
    async fn drain(&mut self) -> Result<(), ExportError> {
        match *self {}
    }
    async fn close(&mut self) -> Result<(), ExportError> {
        match *self {}
    }
    fn into_out(self) -> (Box<dyn ObjectWriter>, u64) {
        match self {}
    }
}

#[cfg(feature = "parquet")]
impl ParquetSink {
    fn into_out(self) -> (Box<dyn ObjectWriter>, u64) {
        (self.out, self.rows)
    }
}

pub const CSV_FILE: &str = "interactions.csv";
pub const PARQUET_FILE: &str = "interactions.parquet";
pub const DELTA_FILE: &str = "interactions-delta.csv";
pub const MANIFEST_FILE: &str = "manifest.json";

/// How far back the delta file reaches before the previous import's newest row, to
/// catch events delivered late (identical events collapse in Personalize).
pub const DEFAULT_DELTA_OVERLAP_SECS: i64 = 2 * 86_400;

/// CSV bytes gathered before they are handed to the object writer.
const CSV_CHUNK_BYTES: usize = 1 << 20;
/// How many rejected records the manifest names.
const REJECTED_LISTED: usize = 100;

/// Where and what to export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportPlan {
    pub run_id: String,
    /// Key prefix of the export, e.g. `exports/<run-id>`.
    pub prefix: String,
    /// The previous import's newest timestamp, if any: rows after it also go to the
    /// delta file.
    pub delta_since: Option<i64>,
    pub delta_overlap_secs: i64,
}

impl ExportPlan {
    pub fn new(run_id: &str) -> Self {
        Self {
            run_id: run_id.to_owned(),
            prefix: format!("exports/{run_id}"),
            delta_since: None,
            delta_overlap_secs: DEFAULT_DELTA_OVERLAP_SECS,
        }
    }

    pub fn key(&self, file: &str) -> String {
        format!("{}/{file}", self.prefix)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("reading the interactions: {0}")]
    Scan(#[source] StoreError),
    #[error("writing the export: {0}")]
    Upload(#[source] ArtifactError),
    #[error("encoding {file}: {message}")]
    Encode { file: &'static str, message: String },
}

impl ExportError {
    pub fn is_retryable(&self) -> bool {
        match self {
            ExportError::Scan(e) => e.is_retryable(),
            ExportError::Upload(e) => e.is_retryable(),
            ExportError::Encode { .. } => false,
        }
    }
}

/// Reads every segment of the store at once, yielding pages as they arrive: the
/// parallel Scan, merged into one stream for the single writer.
pub fn scan_all(store: &dyn InteractionSource, segments: u32) -> BoxStream<'_, Result<ScanPage, StoreError>> {
    let segments = segments.max(1);
    stream::select_all((0..segments).map(|s| store.scan_segment(s, segments))).boxed()
}

/// As [`scan_all`], with each segment read by its own task, so that fetching and
/// decoding pages (the SDK's work for a DynamoDB scan) runs on other worker threads
/// while the export writes. At most one page per segment waits in the channel; the
/// tasks stop when the export stops reading.
pub fn scan_all_in_tasks(
    store: Arc<dyn InteractionSource>,
    segments: u32,
) -> BoxStream<'static, Result<ScanPage, StoreError>> {
    let segments = segments.max(1);
    let (tx, mut rx) = tokio::sync::mpsc::channel(segments as usize);
    for segment in 0..segments {
        let (store, tx) = (store.clone(), tx.clone());
        tokio::spawn(async move {
            let mut pages = store.scan_segment(segment, segments);
            while let Some(page) = pages.next().await {
                let failed = page.is_err();
                if tx.send(page).await.is_err() || failed {
                    break;
                }
            }
        });
    }
    stream::poll_fn(move |cx| rx.poll_recv(cx)).boxed()
}

/// An in-memory chunk shared between the CSV writer (which appends) and the export
/// loop (which drains it into the object writer). `csv::Writer` owns its sink and
/// offers no `get_mut`, hence the shared handle; the lock is uncontended.
#[derive(Clone, Default)]
struct Chunk(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Chunk {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A CSV writer over an in-memory chunk that is drained into an object writer.
struct CsvSink {
    csv: csv::Writer<Chunk>,
    chunk: Chunk,
    out: Box<dyn ObjectWriter>,
    rows: u64,
    number: String,
}

impl CsvSink {
    async fn new(out: Box<dyn ObjectWriter>) -> Result<Self, ExportError> {
        let chunk = Chunk(Arc::new(std::sync::Mutex::new(Vec::with_capacity(CSV_CHUNK_BYTES + (64 << 10)))));
        let csv = csv::WriterBuilder::new()
            .quote_style(csv::QuoteStyle::Necessary)
            .terminator(csv::Terminator::Any(b'\n'))
            .buffer_capacity(64 << 10)
            .from_writer(chunk.clone());
        let mut sink = Self { csv, chunk, out, rows: 0, number: String::new() };
        sink.csv.write_record(CSV_HEADER_WITH_VALUE).map_err(csv_error)?;
        Ok(sink)
    }

    fn push(&mut self, i: &Interaction) -> Result<(), ExportError> {
        self.number.clear();
        write!(self.number, "{}", i.timestamp.epoch_seconds()).expect("writing to a String");
        let ts_end = self.number.len();
        if let Some(v) = i.event_value {
            // `{}` prints the shortest text that parses back to the same f32.
            write!(self.number, "{v}").expect("writing to a String");
        }
        let (ts, value) = self.number.split_at(ts_end);
        self.csv
            .write_record([i.user_id.as_str(), i.item_id.as_str(), ts, i.event_type.as_str(), value])
            .map_err(csv_error)?;
        self.rows += 1;
        Ok(())
    }

    /// Hands the gathered bytes to the object writer once there are enough of them.
    async fn drain(&mut self, force: bool) -> Result<(), ExportError> {
        if force {
            self.csv.flush().map_err(|e| csv_error(e.into()))?;
        }
        let ready = {
            let mut buffer = self.chunk.0.lock().unwrap_or_else(|p| p.into_inner());
            if buffer.len() >= CSV_CHUNK_BYTES || (force && !buffer.is_empty()) {
                Some(std::mem::replace(&mut *buffer, Vec::with_capacity(CSV_CHUNK_BYTES + (64 << 10))))
            } else {
                None
            }
        };
        if let Some(bytes) = ready {
            self.out.write_all(&bytes).await.map_err(ExportError::Upload)?;
        }
        Ok(())
    }

    /// Bytes written so far are all handed over; the object is not finished yet.
    async fn close(&mut self) -> Result<(), ExportError> {
        self.drain(true).await
    }
}

fn csv_error(e: csv::Error) -> ExportError {
    ExportError::Encode { file: "CSV", message: e.to_string() }
}

/// The per-user and per-item counts are keyed by a 64-bit fingerprint of the id
/// (SipHash with fixed keys) rather than the id itself: a lookup then touches one
/// small table entry instead of chasing a heap string for the comparison, which
/// made those lookups the export's single largest cost. Two ids share a fingerprint
/// with probability about n²/2⁶⁵ (3 in 100 million for a million ids); such a pair
/// would be counted as one user or item.
fn fingerprint(id: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    id.hash(&mut h);
    h.finish()
}

/// The fingerprints are already uniformly distributed: hashing them again is waste.
#[derive(Default, Clone, Copy)]
struct PassThrough(u64);

impl std::hash::Hasher for PassThrough {
    fn write(&mut self, _: &[u8]) {
        unreachable!("only u64 fingerprints are hashed")
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

type ByFingerprint<V> = HashMap<u64, V, std::hash::BuildHasherDefault<PassThrough>>;

/// Counts for the manifest, gathered as rows go by.
#[derive(Default)]
struct Tally {
    per_user: ByFingerprint<u32>,
    items: HashSet<u64, std::hash::BuildHasherDefault<PassThrough>>,
    min_ts: Option<i64>,
    max_ts: Option<i64>,
    max_user_chars: u64,
    max_item_chars: u64,
    empty_fields: u64,
    with_value: u64,
    event_types: HashMap<String, u64>,
    rejected: RejectedSummary,
}

impl Tally {
    fn add(&mut self, i: &Interaction) {
        let (user, item) = (i.user_id.as_str(), i.item_id.as_str());
        let seen = self.per_user.entry(fingerprint(user)).or_insert(0);
        if *seen == 0 {
            self.max_user_chars = self.max_user_chars.max(user.chars().count() as u64);
        }
        *seen = seen.saturating_add(1);
        if self.items.insert(fingerprint(item)) {
            self.max_item_chars = self.max_item_chars.max(item.chars().count() as u64);
        }
        let ts = i.timestamp.epoch_seconds();
        self.min_ts = Some(self.min_ts.map_or(ts, |m| m.min(ts)));
        self.max_ts = Some(self.max_ts.map_or(ts, |m| m.max(ts)));
        if user.is_empty() || item.is_empty() || i.event_type.as_str().is_empty() {
            self.empty_fields += 1;
        }
        if i.event_value.is_some() {
            self.with_value += 1;
        }
        match self.event_types.get_mut(i.event_type.as_str()) {
            Some(n) => *n += 1,
            None => {
                self.event_types.insert(i.event_type.as_str().to_owned(), 1);
            }
        }
    }
}

/// Streams `pages` into `<prefix>/interactions.csv`, `<prefix>/interactions.parquet`
/// (and the delta CSV when planned), then writes `<prefix>/manifest.json`. On any
/// error every writer is aborted and no manifest is written. `progress` is told the
/// number of rows written so far after each page.
pub async fn export<S>(
    pages: S,
    objects: &dyn ObjectStore,
    plan: &ExportPlan,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Manifest, ExportError>
where
    S: Stream<Item = Result<ScanPage, StoreError>> + Send,
{
    let mut writers = Writers::open(objects, plan).await?;
    let result = writers.fill(pages, plan, progress).await;
    match result {
        Ok(tally) => writers.finish(objects, plan, tally).await,
        Err(e) => {
            writers.abort_all().await;
            Err(e)
        }
    }
}

struct Writers {
    csv: Option<CsvSink>,
    parquet: Option<ParquetSink>,
    delta: Option<(CsvSink, u64)>,
}

impl Writers {
    async fn open(objects: &dyn ObjectStore, plan: &ExportPlan) -> Result<Self, ExportError> {
        let begin = |file: &'static str| {
            let key = plan.key(file);
            async move { objects.begin(&key).await.map_err(ExportError::Upload) }
        };
        let mut writers = Writers { csv: None, parquet: None, delta: None };
        let opened: Result<(), ExportError> = async {
            writers.csv = Some(CsvSink::new(begin(CSV_FILE).await?).await?);
            #[cfg(feature = "parquet")]
            {
                writers.parquet = Some(ParquetSink::new(begin(PARQUET_FILE).await?)?);
            }
            if plan.delta_since.is_some() {
                writers.delta = Some((CsvSink::new(begin(DELTA_FILE).await?).await?, 0));
            }
            Ok(())
        }
        .await;
        match opened {
            Ok(()) => Ok(writers),
            Err(e) => {
                writers.abort_all().await;
                Err(e)
            }
        }
    }

    async fn fill<S>(
        &mut self,
        pages: S,
        plan: &ExportPlan,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<Tally, ExportError>
    where
        S: Stream<Item = Result<ScanPage, StoreError>> + Send,
    {
        let (csv, mut parquet) = (self.csv.as_mut().expect("opened"), self.parquet.as_mut());
        let delta_from = plan.delta_since.map(|since| since - plan.delta_overlap_secs);
        let mut tally = Tally::default();
        let mut pages = std::pin::pin!(pages);
        while let Some(page) = pages.next().await {
            let page = page.map_err(ExportError::Scan)?;
            for rejected in page.rejected {
                tally.rejected.count += 1;
                if tally.rejected.first.len() < REJECTED_LISTED {
                    tally.rejected.first.push(RejectedEntry { key: rejected.key, reason: rejected.reason });
                }
            }
            for i in &page.interactions {
                csv.push(i)?;
                if let Some(parquet) = parquet.as_deref_mut() {
                    parquet.push(i);
                }
                tally.add(i);
                if let (Some((delta, new_rows)), Some(from), Some(since)) =
                    (self.delta.as_mut(), delta_from, plan.delta_since)
                {
                    let ts = i.timestamp.epoch_seconds();
                    if ts > from {
                        delta.push(i)?;
                    }
                    if ts > since {
                        *new_rows += 1;
                    }
                }
                if let Some(parquet) = parquet.as_deref_mut()
                    && parquet.batch_full()
                {
                    parquet.write_batch(false).await?;
                }
            }
            csv.drain(false).await?;
            if let Some(parquet) = parquet.as_deref_mut() {
                parquet.drain().await?;
            }
            if let Some((delta, _)) = self.delta.as_mut() {
                delta.drain(false).await?;
            }
            progress(csv.rows);
        }
        Ok(tally)
    }

    async fn finish(
        mut self,
        objects: &dyn ObjectStore,
        plan: &ExportPlan,
        tally: Tally,
    ) -> Result<Manifest, ExportError> {
        // First hand every byte to every writer, so that the likely failures (a write,
        // a part upload) happen while nothing is finished and everything can be aborted.
        let closed: Result<(), ExportError> = async {
            self.csv.as_mut().expect("opened").close().await?;
            if let Some(parquet) = self.parquet.as_mut() {
                parquet.close().await?;
            }
            if let Some((delta, _)) = self.delta.as_mut() {
                delta.close().await?;
            }
            Ok(())
        }
        .await;
        if let Err(e) = closed {
            self.abort_all().await;
            return Err(e);
        }
        // Then finish them one by one. A failure here leaves the files finished before
        // it in place, whole but without a manifest, which makes the export incomplete;
        // a rerun of the step overwrites them.
        let csv = self.csv.take().expect("opened");
        let parquet = self.parquet.take().map(ParquetSink::into_out);
        let with_parquet = parquet.is_some();
        let delta = self.delta.take();
        let mut outs: Vec<(Box<dyn ObjectWriter>, u64)> = vec![(csv.out, csv.rows)];
        outs.extend(parquet);
        let new_rows = delta.as_ref().map(|(_, n)| *n);
        if let Some((d, _)) = delta {
            outs.push((d.out, d.rows));
        }
        let mut finished = Vec::new();
        let mut outs = outs.into_iter();
        while let Some((out, rows)) = outs.next() {
            match out.finish().await {
                Ok(info) => {
                    finished.push(ExportedFile { key: info.key, rows, size: info.size, sha256: info.sha256 })
                }
                Err(e) => {
                    for (rest, _) in outs {
                        let _ = rest.abort().await;
                    }
                    tracing::warn!(run_id = %plan.run_id, error = %e, "export failed while finishing its files");
                    return Err(ExportError::Upload(e));
                }
            }
        }
        let delta = new_rows.map(|new_rows| (finished.pop().expect("the delta finished"), new_rows));
        let parquet_file = with_parquet.then(|| finished.pop().expect("the Parquet file finished"));
        let csv_file = finished.pop().expect("the CSV finished");
        let manifest = Manifest {
            schema_version: MANIFEST_SCHEMA_VERSION,
            run_id: plan.run_id.clone(),
            created_at: time::OffsetDateTime::now_utc().unix_timestamp(),
            csv_header: CSV_HEADER_WITH_VALUE.iter().map(|s| (*s).to_owned()).collect(),
            rows: csv_file.rows,
            csv: csv_file,
            parquet: parquet_file,
            delta: delta.map(|(file, new_rows)| DeltaSummary {
                since: plan.delta_since.expect("a delta is written only with a since"),
                overlap_from: plan.delta_since.expect("set") - plan.delta_overlap_secs,
                new_rows,
                file,
            }),
            distinct_users: tally.per_user.len() as u64,
            distinct_items: tally.items.len() as u64,
            users_with_two_or_more: tally.per_user.values().filter(|&&n| n >= 2).count() as u64,
            min_timestamp: tally.min_ts,
            max_timestamp: tally.max_ts,
            max_user_id_chars: tally.max_user_chars,
            max_item_id_chars: tally.max_item_chars,
            rows_with_empty_fields: tally.empty_fields,
            rows_with_event_value: tally.with_value,
            event_types: tally.event_types.into_iter().collect::<BTreeMap<_, _>>(),
            rejected: tally.rejected,
        };
        objects.put(&plan.key(MANIFEST_FILE), &manifest.to_json()).await.map_err(ExportError::Upload)?;
        if manifest.rejected.count > 0 {
            tracing::warn!(
                run_id = %plan.run_id,
                rejected = manifest.rejected.count,
                "stored records that no longer parse were left out; the manifest lists them"
            );
        }
        Ok(manifest)
    }

    async fn abort_all(&mut self) {
        if let Some(s) = self.csv.take() {
            let _ = s.out.abort().await;
        }
        if let Some(s) = self.parquet.take() {
            let _ = s.into_out().0.abort().await;
        }
        if let Some((s, _)) = self.delta.take() {
            let _ = s.out.abort().await;
        }
    }
}

/// Reads a finished export's manifest, or says why it is missing or unreadable.
pub async fn read_manifest(objects: &dyn ObjectStore, prefix: &str) -> Result<Manifest, String> {
    let key = format!("{prefix}/{MANIFEST_FILE}");
    match objects.get(&key).await {
        Ok(Some(bytes)) => Manifest::parse(&bytes),
        Ok(None) => Err(format!("{} has no manifest: the export is incomplete", objects.location(prefix))),
        Err(e) => Err(format!("reading {key}: {e}")),
    }
}
