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

pub mod convert;

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

/// The key prefix of a run's delta-only export (an incremental table export): beside
/// the run's whole export, so a run that falls back to a full export writes it where a
/// whole export always goes, and never mixes their parts.
pub fn incremental_prefix(run_id: &str) -> String {
    format!("exports/{run_id}/incremental")
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

    /// The files of a one-pass export: `interactions.csv` and its siblings.
    fn whole_files(&self) -> FileKeys {
        FileKeys {
            csv: self.key(CSV_FILE),
            parquet: self.key(PARQUET_FILE),
            delta: self.delta_since.map(|_| self.key(DELTA_FILE)),
        }
    }
}

/// Where one set of export files goes: the whole export's, or one part's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FileKeys {
    pub csv: String,
    pub parquet: String,
    pub delta: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("reading the interactions: {0}")]
    Scan(#[source] StoreError),
    #[error("writing the export: {0}")]
    Upload(#[source] ArtifactError),
    #[error("encoding {file}: {message}")]
    Encode { file: &'static str, message: String },
    #[error("reading the table export's {key}: {message}")]
    Input { key: String, message: String },
}

impl ExportError {
    pub fn is_retryable(&self) -> bool {
        match self {
            ExportError::Scan(e) => e.is_retryable(),
            ExportError::Upload(e) => e.is_retryable(),
            ExportError::Encode { .. } | ExportError::Input { .. } => false,
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
pub(crate) struct PassThrough(u64);

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
pub(crate) struct Tally {
    pub per_user: ByFingerprint<u32>,
    pub items: HashSet<u64, std::hash::BuildHasherDefault<PassThrough>>,
    event_types: HashMap<String, u64>,
    summary: TallySummary,
}

/// The tally's figures that are not per id: what a part records beside its id counts, and
/// what adds up across parts.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TallySummary {
    pub min_ts: Option<i64>,
    pub max_ts: Option<i64>,
    pub max_user_chars: u64,
    pub max_item_chars: u64,
    pub empty_fields: u64,
    pub with_value: u64,
    pub event_types: BTreeMap<String, u64>,
    pub rejected: RejectedSummary,
}

impl TallySummary {
    /// Adds `other`'s figures, as if its rows had been tallied here too.
    pub fn merge(&mut self, other: TallySummary) {
        self.min_ts = self.min_ts.into_iter().chain(other.min_ts).min();
        self.max_ts = self.max_ts.into_iter().chain(other.max_ts).max();
        self.max_user_chars = self.max_user_chars.max(other.max_user_chars);
        self.max_item_chars = self.max_item_chars.max(other.max_item_chars);
        self.empty_fields += other.empty_fields;
        self.with_value += other.with_value;
        for (event_type, n) in other.event_types {
            *self.event_types.entry(event_type).or_insert(0) += n;
        }
        self.rejected.count += other.rejected.count;
        let room = REJECTED_LISTED.saturating_sub(self.rejected.first.len());
        self.rejected.first.extend(other.rejected.first.into_iter().take(room));
    }
}

impl Tally {
    fn add(&mut self, i: &Interaction) {
        let (user, item) = (i.user_id.as_str(), i.item_id.as_str());
        let s = &mut self.summary;
        let seen = self.per_user.entry(fingerprint(user)).or_insert(0);
        if *seen == 0 {
            s.max_user_chars = s.max_user_chars.max(user.chars().count() as u64);
        }
        *seen = seen.saturating_add(1);
        if self.items.insert(fingerprint(item)) {
            s.max_item_chars = s.max_item_chars.max(item.chars().count() as u64);
        }
        let ts = i.timestamp.epoch_seconds();
        s.min_ts = Some(s.min_ts.map_or(ts, |m| m.min(ts)));
        s.max_ts = Some(s.max_ts.map_or(ts, |m| m.max(ts)));
        if user.is_empty() || item.is_empty() || i.event_type.as_str().is_empty() {
            s.empty_fields += 1;
        }
        if i.event_value.is_some() {
            s.with_value += 1;
        }
        match self.event_types.get_mut(i.event_type.as_str()) {
            Some(n) => *n += 1,
            None => {
                self.event_types.insert(i.event_type.as_str().to_owned(), 1);
            }
        }
    }

    fn reject(&mut self, key: String, reason: String) {
        let rejected = &mut self.summary.rejected;
        rejected.count += 1;
        if rejected.first.len() < REJECTED_LISTED {
            rejected.first.push(RejectedEntry { key, reason });
        }
    }

    pub fn summary(&self) -> TallySummary {
        let mut summary = self.summary.clone();
        summary.event_types = self.event_types.iter().map(|(k, v)| (k.clone(), *v)).collect();
        summary
    }

    /// Folds another tally's ids in: counts per user add up, items are a union.
    pub fn merge_ids(
        &mut self,
        users: impl IntoIterator<Item = (u64, u32)>,
        items: impl IntoIterator<Item = u64>,
    ) {
        for (user, n) in users {
            let seen = self.per_user.entry(user).or_insert(0);
            *seen = seen.saturating_add(n);
        }
        self.items.extend(items);
    }
}

/// The manifest of an export whose files are `files` and whose rows tallied as `tally`
/// (with `summary` its figures: one tally's, or the sum of the parts').
pub(crate) fn assemble_manifest(
    plan: &ExportPlan,
    files: Files,
    summary: TallySummary,
    tally: &Tally,
    incremental: Option<crate::manifest::IncrementalScope>,
) -> Manifest {
    let Files { csv, parquet, delta } = files;
    Manifest {
        schema_version: MANIFEST_SCHEMA_VERSION,
        run_id: plan.run_id.clone(),
        created_at: time::OffsetDateTime::now_utc().unix_timestamp(),
        csv_header: CSV_HEADER_WITH_VALUE.iter().map(|s| (*s).to_owned()).collect(),
        rows: csv.rows,
        csv,
        parquet,
        delta: delta.map(|(file, new_rows)| DeltaSummary {
            since: plan.delta_since.expect("a delta is written only with a since"),
            overlap_from: plan.delta_since.expect("set") - plan.delta_overlap_secs,
            new_rows,
            file,
        }),
        distinct_users: tally.per_user.len() as u64,
        distinct_items: tally.items.len() as u64,
        users_with_two_or_more: tally.per_user.values().filter(|&&n| n >= 2).count() as u64,
        min_timestamp: summary.min_ts,
        max_timestamp: summary.max_ts,
        max_user_id_chars: summary.max_user_chars,
        max_item_id_chars: summary.max_item_chars,
        rows_with_empty_fields: summary.empty_fields,
        rows_with_event_value: summary.with_value,
        event_types: summary.event_types,
        rejected: summary.rejected,
        incremental,
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
    let pages = pages.map(|page| page.map_err(ExportError::Scan));
    let (files, tally) = write_files(pages, objects, plan, &plan.whole_files(), progress).await?;
    let manifest = assemble_manifest(plan, files, tally.summary(), &tally, None);
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

/// Streams `pages` into the files `keys` name and finishes them: either all of them
/// are written, or none is left half-written (on an error every writer is aborted).
pub(crate) async fn write_files<S>(
    pages: S,
    objects: &dyn ObjectStore,
    plan: &ExportPlan,
    keys: &FileKeys,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<(Files, Tally), ExportError>
where
    S: Stream<Item = Result<ScanPage, ExportError>> + Send,
{
    let mut writers = Writers::open(objects, keys).await?;
    match writers.fill(pages, plan, progress).await {
        Ok(tally) => Ok((writers.finish(plan).await?, tally)),
        Err(e) => {
            writers.abort_all().await;
            Err(e)
        }
    }
}

/// The files one export (or one part of it) wrote.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Files {
    pub csv: ExportedFile,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parquet: Option<ExportedFile>,
    /// The delta file and its count of rows newer than the previous import.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delta: Option<(ExportedFile, u64)>,
}

struct Writers {
    csv: Option<CsvSink>,
    parquet: Option<ParquetSink>,
    delta: Option<(CsvSink, u64)>,
}

impl Writers {
    async fn open(objects: &dyn ObjectStore, keys: &FileKeys) -> Result<Self, ExportError> {
        let begin = |key: &str| {
            let key = key.to_owned();
            async move { objects.begin(&key).await.map_err(ExportError::Upload) }
        };
        let mut writers = Writers { csv: None, parquet: None, delta: None };
        let opened: Result<(), ExportError> = async {
            writers.csv = Some(CsvSink::new(begin(&keys.csv).await?).await?);
            #[cfg(feature = "parquet")]
            {
                writers.parquet = Some(ParquetSink::new(begin(&keys.parquet).await?)?);
            }
            if let Some(delta) = &keys.delta {
                writers.delta = Some((CsvSink::new(begin(delta).await?).await?, 0));
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
        S: Stream<Item = Result<ScanPage, ExportError>> + Send,
    {
        let (csv, mut parquet) = (self.csv.as_mut().expect("opened"), self.parquet.as_mut());
        let delta_from = plan.delta_since.map(|since| since - plan.delta_overlap_secs);
        let mut tally = Tally::default();
        let mut pages = std::pin::pin!(pages);
        while let Some(page) = pages.next().await {
            let page = page?;
            for rejected in page.rejected {
                tally.reject(rejected.key, rejected.reason);
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

    async fn finish(mut self, plan: &ExportPlan) -> Result<Files, ExportError> {
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
                Ok(info) => finished.push(ExportedFile::new(info.key, rows, info.size, info.sha256)),
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
        let parquet = with_parquet.then(|| finished.pop().expect("the Parquet file finished"));
        let csv = finished.pop().expect("the CSV finished");
        Ok(Files { csv, parquet, delta })
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
