//! The second export path: a DynamoDB table export (gzipped DynamoDB JSON data files,
//! see [`crate::table_export`]) converted file by file into the run's export, one part
//! per data file:
//!
//! ```text
//! exports/<run>/csv/part-00000.csv        ← Personalize imports the folder exports/<run>/csv/
//! exports/<run>/parquet/part-00000.parquet
//! exports/<run>/delta/part-00000.csv      (when a previous import exists)
//! exports/<run>/parts/part-00000.json     what the part holds (files, figures) ...
//! exports/<run>/parts/part-00000.ids      ... and its per-user counts and items (binary)
//! exports/<run>/manifest.json             last, from every part's record
//! ```
//!
//! Each row goes through the same decoding ([`store::item::decode`]), the same writers and
//! the same tally as the scan path, so both paths keep, reject and count the same rows.
//! A part's names follow from its data file's index, and every object appears whole or
//! not at all, so converting a file again (after a crash in the middle of it) replaces
//! its part: no duplicate, no partial part is ever visible. The part's record is written
//! after its files; the run's checkpoint after the record.
//!
//! An incremental export's files convert the same way (their lines carry a `NewImage`);
//! a delete (a line with `Keys` and no `NewImage`) is skipped and counted, not rejected.
//! Its parts go under the run's [`super::incremental_prefix`], and its manifest says it
//! is delta-only ([`IncrementalScope`]).

use std::borrow::Cow;
use std::io::{self, BufRead, Read};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use artifacts::ObjectStore;
use futures::channel::mpsc;
use futures::{SinkExt, StreamExt, stream};
use serde::{Deserialize, Serialize};
use store::item::{self, Attribute};
use store::{RejectedRecord, ScanPage};

use super::{
    ExportError, ExportPlan, FileKeys, Files, MANIFEST_FILE, Tally, TallySummary, assemble_manifest,
};
use crate::manifest::{ExportedFile, IncrementalScope, Manifest};
use crate::run::ExportWindow;
use crate::table_export::DataFile;

/// Interactions handed from the decoding thread to the writers at a time.
const PAGE_ROWS: usize = 1_000;

/// Chunks of a data file (the store's: S3's body chunks, the directory store's 1 MiB
/// reads) on their way from the download to the decoding thread.
const CHUNKS_IN_FLIGHT: usize = 4;

const MISSING: &str = "the data file is missing";

/// What the download hands the decoding thread.
enum Chunk {
    Bytes(Vec<u8>),
    /// The whole object was copied.
    End,
    /// The download stopped before the end: the object is missing or its transfer broke.
    Failed(String),
}

/// The download's end: the `AsyncWrite` [`ObjectStore::copy_to`] writes into, forwarding
/// each chunk over the bounded channel (waiting while it is full).
struct ChunkSender {
    tx: mpsc::Sender<Chunk>,
    /// The decoding thread hung up before the end (it failed, or the writers stopped).
    hung_up: bool,
}

impl tokio::io::AsyncWrite for ChunkSender {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let sent = match ready!(this.tx.poll_ready(cx)) {
            Ok(()) => this.tx.start_send(Chunk::Bytes(buf.to_vec())),
            Err(e) => Err(e),
        };
        Poll::Ready(match sent {
            Ok(()) => Ok(buf.len()),
            Err(_) => {
                this.hung_up = true;
                Err(io::Error::new(io::ErrorKind::BrokenPipe, "the decoding stopped"))
            }
        })
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// The decoding thread's end: the chunks as one `BufRead`, waiting for each. A download
/// that stopped (or a channel closed before [`Chunk::End`]) is an error here, never an
/// early end of file, so a partial stream cannot pass for a whole one.
struct ChunkReader {
    rx: mpsc::Receiver<Chunk>,
    runtime: tokio::runtime::Handle,
    chunk: Vec<u8>,
    at: usize,
    ended: bool,
}

impl BufRead for ChunkReader {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        while self.at == self.chunk.len() && !self.ended {
            match self.runtime.block_on(self.rx.next()) {
                Some(Chunk::Bytes(bytes)) => (self.chunk, self.at) = (bytes, 0),
                Some(Chunk::End) => self.ended = true,
                Some(Chunk::Failed(message)) => return Err(io::Error::other(message)),
                None => {
                    let message = "the download stopped before the end of the file";
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, message));
                }
            }
        }
        Ok(&self.chunk[self.at..])
    }

    fn consume(&mut self, n: usize) {
        self.at = (self.at + n).min(self.chunk.len());
    }
}

impl Read for ChunkReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let available = self.fill_buf()?;
        let n = available.len().min(out.len());
        out[..n].copy_from_slice(&available[..n]);
        self.consume(n);
        Ok(n)
    }
}

fn part_key(plan: &ExportPlan, folder: &str, index: u32, extension: &str) -> String {
    format!("{}/{folder}/part-{index:05}.{extension}", plan.prefix)
}

fn part_files(plan: &ExportPlan, index: u32) -> FileKeys {
    FileKeys {
        csv: part_key(plan, "csv", index, "csv"),
        parquet: part_key(plan, "parquet", index, "parquet"),
        delta: plan.delta_since.map(|_| part_key(plan, "delta", index, "csv")),
    }
}

/// What a converted part holds, written after its files.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PartRecord {
    data_file: String,
    files: Files,
    summary: TallySummary,
    /// Deletes in an incremental export's file, skipped.
    #[serde(default)]
    deletes_skipped: u64,
}

/// Converts the data file `data_file` (the `index`th of the export) into its part and
/// returns the rows it wrote. `mid_file` is called once the part's files are written and
/// before its record is (the crash hook of the tests).
pub async fn convert_file(
    objects: &dyn ObjectStore,
    plan: &ExportPlan,
    index: u32,
    data_file: &DataFile,
    mid_file: &(dyn Fn() + Sync),
) -> Result<u64, ExportError> {
    let key = data_file.data_file_s3_key.clone();
    // The data file streams in: the download writes its chunks into a bounded channel, a
    // blocking thread inflates and parses them (CPU work) and hands pages to this task's
    // writers, so a file costs a few chunks of memory, not its size.
    let (chunk_tx, chunk_rx) = mpsc::channel(CHUNKS_IN_FLIGHT);
    let (tx, mut rx) = tokio::sync::mpsc::channel(4);
    let decoding_key = key.clone();
    let runtime = tokio::runtime::Handle::current();
    let decoder = tokio::task::spawn_blocking(move || {
        let reader = ChunkReader { rx: chunk_rx, runtime, chunk: Vec::new(), at: 0, ended: false };
        let decoded = decode(reader, &decoding_key, &mut |page| tx.blocking_send(Ok(page)).is_ok());
        if decoded.is_err() {
            // The writers throw their files away; the decoding's own error is returned below.
            let stop =
                ExportError::Input { key: decoding_key, message: "the data file did not decode".into() };
            let _ = tx.blocking_send(Err(stop));
        }
        decoded
    });
    let download = async {
        let mut sink = ChunkSender { tx: chunk_tx, hung_up: false };
        let copied = objects.copy_to(&key, &mut sink).await;
        let last = match &copied {
            Ok(Some(_)) => Chunk::End,
            Ok(None) => Chunk::Failed(MISSING.into()),
            Err(e) => Chunk::Failed(format!("the download failed: {e}")),
        };
        let _ = sink.tx.send(last).await;
        (copied, sink.hung_up)
    };
    let pages = stream::poll_fn(move |cx| rx.poll_recv(cx));
    let keys = part_files(plan, index);
    let written = super::write_files(pages, objects, plan, &keys, &|_| {});
    let ((copied, hung_up), written) = tokio::join!(download, written);
    let decoded =
        decoder.await.map_err(|e| ExportError::Input { key: key.clone(), message: e.to_string() })?;
    // Which failure says why: the download's own (a missing object, a broken transfer), then
    // the decoding's, then the writers'. Any of them fails the part before its record is
    // written: the writers may have finished on a stream that ended early, and a redo of
    // the file replaces them.
    let download_failed = match copied {
        Ok(Some(_)) => None,
        Ok(None) => return Err(ExportError::Input { key, message: MISSING.into() }),
        Err(e) if !hung_up => return Err(ExportError::Upload(e)),
        // The decoding stopped taking chunks first: its error (or the writers') comes first.
        Err(e) => Some(e),
    };
    let (files, tally, deletes_skipped) = match (written, decoded) {
        (_, Err(e)) | (Err(e), _) => return Err(e),
        (Ok(_), Ok(_)) if download_failed.is_some() => {
            return Err(ExportError::Upload(download_failed.expect("checked")));
        }
        (Ok((files, tally)), Ok(deletes)) => (files, tally, deletes),
    };
    mid_file();
    let rows = files.csv.rows;
    let record = PartRecord { data_file: key, files, summary: tally.summary(), deletes_skipped };
    let json = serde_json::to_vec(&record).expect("a part record serializes");
    objects
        .put(&part_key(plan, "parts", index, "ids"), &encode_ids(&tally))
        .await
        .map_err(ExportError::Upload)?;
    objects.put(&part_key(plan, "parts", index, "json"), &json).await.map_err(ExportError::Upload)?;
    Ok(rows)
}

/// Writes `manifest.json` for the `parts` converted parts, from their records: the same
/// fields as a one-pass export's, the files listing their parts; with `incremental`, the
/// window of the delta-only export they came from.
pub async fn assemble(
    objects: &dyn ObjectStore,
    plan: &ExportPlan,
    parts: u32,
    incremental: Option<ExportWindow>,
) -> Result<Manifest, ExportError> {
    let mut deletes_skipped = 0;
    let mut tally = Tally::default();
    let mut summary = TallySummary::default();
    let (mut csv, mut parquet, mut delta) = (Vec::new(), Vec::new(), Vec::new());
    let mut new_rows = 0;
    for index in 0..parts {
        let read = |key: String| async move {
            objects
                .get(&key)
                .await
                .map_err(ExportError::Upload)?
                .ok_or_else(|| ExportError::Input { key, message: "the part's record is missing".into() })
        };
        let record_key = part_key(plan, "parts", index, "json");
        let record: PartRecord = serde_json::from_slice(&read(record_key.clone()).await?)
            .map_err(|e| ExportError::Input { key: record_key, message: e.to_string() })?;
        let ids_key = part_key(plan, "parts", index, "ids");
        let (users, items) = decode_ids(&read(ids_key.clone()).await?)
            .ok_or_else(|| ExportError::Input { key: ids_key, message: "not a part's id counts".into() })?;
        tally.merge_ids(users, items);
        summary.merge(record.summary);
        deletes_skipped += record.deletes_skipped;
        csv.push(record.files.csv);
        parquet.extend(record.files.parquet);
        if let Some((file, n)) = record.files.delta {
            delta.push(file);
            new_rows += n;
        }
    }
    let folder = |name: &str| format!("{}/{name}/", plan.prefix);
    // A build without Parquet writes no Parquet parts; a mix cannot happen within a run
    // unless builds changed mid-run, and then the Parquet copy is left out.
    let parquet = (parquet.len() == csv.len() && !csv.is_empty())
        .then(|| ExportedFile::in_parts(folder("parquet"), parquet));
    let delta = plan.delta_since.map(|_| (ExportedFile::in_parts(folder("delta"), delta), new_rows));
    let files = Files { csv: ExportedFile::in_parts(folder("csv"), csv), parquet, delta };
    let scope = incremental.map(|w| IncrementalScope { from: w.from, to: w.to, deletes_skipped });
    let manifest = assemble_manifest(plan, files, summary, &tally, scope);
    objects.put(&plan.key(MANIFEST_FILE), &manifest.to_json()).await.map_err(ExportError::Upload)?;
    Ok(manifest)
}

/// One line of a DynamoDB JSON export: `{"Item": {...}}` (full export), or
/// `{"Metadata": ..., "Keys": ..., "NewImage": {...}}` (incremental; no `NewImage` for a
/// delete).
#[derive(Deserialize)]
struct ExportLine<'a> {
    #[serde(rename = "Metadata", default)]
    metadata: Option<serde::de::IgnoredAny>,
    #[serde(rename = "Keys", default)]
    keys: Option<serde::de::IgnoredAny>,
    #[serde(rename = "Item", borrow, default)]
    item: Option<Attributes<'a>>,
    #[serde(rename = "NewImage", borrow, default)]
    new_image: Option<Attributes<'a>>,
}

/// An item's attributes in the order of the line. A handful per item, so a lookup is a
/// scan from the end (the last of a repeated name wins, as in a map) and a line costs no
/// map and no hashing.
struct Attributes<'a>(Vec<(Text<'a>, JsonAttribute<'a>)>);

impl<'a> Attributes<'a> {
    fn get(&self, name: &str) -> Option<Attribute<'_>> {
        self.0.iter().rev().find(|(n, _)| n.0 == name).map(|(_, a)| a.view())
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Attributes<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor<'a>(std::marker::PhantomData<Attributes<'a>>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for Visitor<'a> {
            type Value = Attributes<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a map of attributes")
            }
            fn visit_map<M: serde::de::MapAccess<'de>>(self, mut map: M) -> Result<Attributes<'a>, M::Error> {
                let mut attributes = Vec::with_capacity(map.size_hint().unwrap_or(8));
                while let Some(entry) = map.next_entry()? {
                    attributes.push(entry);
                }
                Ok(Attributes(attributes))
            }
        }
        deserializer.deserialize_map(Visitor(std::marker::PhantomData))
    }
}

/// A string of the line: borrowed from it unless it has escapes. (serde's own `Cow<str>`
/// borrows only as a struct field of exactly that type, not as a map key or inside an
/// `Option`, and allocating every name and value cost more than the rest of the decoding.)
struct Text<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor<'a>(std::marker::PhantomData<Text<'a>>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for Visitor<'a> {
            type Value = Text<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: serde::de::Error>(self, s: &'de str) -> Result<Text<'a>, E> {
                Ok(Text(Cow::Borrowed(s)))
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Text<'a>, E> {
                Ok(Text(Cow::Owned(s.to_owned())))
            }
            fn visit_string<E: serde::de::Error>(self, s: String) -> Result<Text<'a>, E> {
                Ok(Text(Cow::Owned(s)))
            }
        }
        deserializer.deserialize_str(Visitor(std::marker::PhantomData))
    }
}

/// An attribute value in DynamoDB JSON. Types the rules do not read (`L`, `M`, `B`, `BOOL`,
/// sets) leave every field empty and read as "something else".
#[derive(Deserialize)]
struct JsonAttribute<'a> {
    #[serde(rename = "S", borrow, default)]
    s: Option<Text<'a>>,
    #[serde(rename = "N", borrow, default)]
    n: Option<Text<'a>>,
    #[serde(rename = "NULL", default)]
    null: Option<bool>,
}

impl JsonAttribute<'_> {
    fn view(&self) -> Attribute<'_> {
        match (&self.s, &self.n, self.null) {
            (Some(s), _, _) => Attribute::S(&s.0),
            (None, Some(n), _) => Attribute::N(&n.0),
            (None, None, Some(true)) => Attribute::Null,
            _ => Attribute::Other,
        }
    }
}

/// Decompresses and decodes one data file, handing pages to `send` (which says whether
/// to go on); returns how many deletes it skipped. A line that is not an item is rejected
/// by its position, as a stored record that does not parse is by its key; a file that is
/// not gzip fails the conversion.
fn decode(
    compressed: impl BufRead,
    key: &str,
    send: &mut dyn FnMut(ScanPage) -> bool,
) -> Result<u64, ExportError> {
    let mut deletes = 0;
    let mut lines = io::BufReader::with_capacity(1 << 16, flate2::bufread::MultiGzDecoder::new(compressed));
    // Pages are filled to PAGE_ROWS: allocated at that size once, not grown by doubling.
    let new_page = || ScanPage { interactions: Vec::with_capacity(PAGE_ROWS), rejected: Vec::new() };
    let mut page = new_page();
    let mut line = String::new();
    let mut number = 0u64;
    let mut attributes = Vec::with_capacity(8);
    loop {
        line.clear();
        let read = lines.read_line(&mut line).map_err(|e| ExportError::Input {
            key: key.to_owned(),
            message: format!("after line {number}: {e}"),
        })?;
        if read == 0 {
            break;
        }
        number += 1;
        if line.trim().is_empty() {
            continue;
        }
        match decode_line(&line, key, number, &mut attributes) {
            LineOutcome::Row(interaction) => page.interactions.push(interaction),
            LineOutcome::Rejected(rejected) => page.rejected.push(rejected),
            LineOutcome::Delete => deletes += 1,
        }
        if page.interactions.len() + page.rejected.len() >= PAGE_ROWS
            && !send(std::mem::replace(&mut page, new_page()))
        {
            return Ok(deletes);
        }
    }
    if !page.interactions.is_empty() || !page.rejected.is_empty() {
        send(page);
    }
    Ok(deletes)
}

/// What one line of a data file holds.
#[derive(Debug, PartialEq)]
enum LineOutcome {
    Row(schemas::Interaction),
    Rejected(RejectedRecord),
    /// An incremental export's delete (`Keys` and `Metadata`, no `NewImage`).
    Delete,
}

/// Decodes line `number` of the data file `key`. Nearly every line of a full export is
/// `{"Item":{...}}` with plain strings; those are read by [`plain_item`], which costs a
/// fraction of serde's generic parse (the decoding is the table-export path's bottleneck).
/// Everything else (escapes, control characters, other attribute types, incremental lines,
/// extra keys, lines that are not JSON) goes to serde, so that errors and unescaping have one
/// implementation. Both give the same outcome for every line the fast one accepts (the
/// differential test below).
fn decode_line(line: &str, key: &str, number: u64, buffer: &mut Vec<PlainAttribute>) -> LineOutcome {
    match plain_item(line, buffer) {
        Some(item) => from_attributes(|name| item.get(name)),
        None => decode_line_with_serde(line, key, number),
    }
}

fn decode_line_with_serde(line: &str, key: &str, number: u64) -> LineOutcome {
    let reject =
        |reason: String| LineOutcome::Rejected(RejectedRecord { key: format!("{key}:{number}"), reason });
    match serde_json::from_str::<ExportLine>(line) {
        Ok(ExportLine { item: Some(attrs), .. } | ExportLine { new_image: Some(attrs), .. }) => {
            from_attributes(|name| attrs.get(name))
        }
        Ok(ExportLine { metadata: Some(_), keys: Some(_), .. }) => LineOutcome::Delete,
        Ok(_) => reject("the line has no Item".into()),
        Err(e) => reject(format!("not DynamoDB JSON: {e}")),
    }
}

fn from_attributes<'a>(get: impl Fn(&str) -> Option<Attribute<'a>> + Copy) -> LineOutcome {
    match item::decode(get) {
        Ok(interaction) => LineOutcome::Row(interaction),
        Err(reason) => LineOutcome::Rejected(RejectedRecord { key: item::key_of(get), reason }),
    }
}

/// Where an attribute of a plain line is: its name's and its value's byte ranges.
#[derive(Clone, Copy)]
struct PlainAttribute {
    name: (u32, u32),
    value: (u32, u32),
    number: bool,
}

/// An item's string and number attributes, as ranges of its line, in the line's order
/// (the buffer is reused from line to line: no allocation per line).
struct PlainItem<'a, 'b> {
    line: &'a str,
    attributes: &'b [PlainAttribute],
}

impl<'a> PlainItem<'a, '_> {
    /// The last attribute of that name, as serde's reading keeps it.
    fn get(&self, name: &str) -> Option<Attribute<'a>> {
        let text = |(from, to): (u32, u32)| &self.line[from as usize..to as usize];
        self.attributes.iter().rev().find(|a| text(a.name) == name).map(|a| {
            let value = text(a.value);
            if a.number { Attribute::N(value) } else { Attribute::S(value) }
        })
    }
}

/// A full export's line in exactly the shape DynamoDB writes it: `{"Item":{"name":{"S":"v"},
/// "name":{"N":"1"},...}}` where every string is free of escapes and control characters
/// (JSON whitespace between tokens is allowed). `None` for anything else, which is then
/// serde's to read or to refuse.
fn plain_item<'a, 'b>(line: &'a str, buffer: &'b mut Vec<PlainAttribute>) -> Option<PlainItem<'a, 'b>> {
    buffer.clear();
    // Offsets are u32: a line of 4 GiB is serde's.
    u32::try_from(line.len()).ok()?;
    let mut at = Cursor { text: line, at: 0 };
    at.expect(b'{')?;
    at.literal("\"Item\"")?;
    at.expect(b':')?;
    at.expect(b'{')?;
    if at.next_is(b'}') {
        at.at += 1;
    } else {
        loop {
            let name = at.plain_string()?;
            at.expect(b':')?;
            at.expect(b'{')?;
            let kind = at.plain_string()?;
            at.expect(b':')?;
            let value = at.plain_string()?;
            at.expect(b'}')?;
            let number = match &line[kind.0 as usize..kind.1 as usize] {
                "S" => false,
                "N" => true,
                _ => return None,
            };
            buffer.push(PlainAttribute { name, value, number });
            if at.next_is(b',') {
                at.at += 1;
            } else {
                at.expect(b'}')?;
                break;
            }
        }
    }
    at.expect(b'}')?;
    at.skip_whitespace();
    (at.at == line.len()).then_some(PlainItem { line, attributes: buffer })
}

/// A position in a line. Every token it stops at is ASCII, so every range it returns is on
/// character boundaries.
struct Cursor<'a> {
    text: &'a str,
    at: usize,
}

impl Cursor<'_> {
    fn skip_whitespace(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.text.as_bytes().get(self.at) {
            self.at += 1;
        }
    }

    /// Whether the next token starts with `byte` (whitespace skipped).
    fn next_is(&mut self, byte: u8) -> bool {
        self.skip_whitespace();
        self.text.as_bytes().get(self.at) == Some(&byte)
    }

    fn expect(&mut self, byte: u8) -> Option<()> {
        self.next_is(byte).then(|| self.at += 1)
    }

    fn literal(&mut self, token: &str) -> Option<()> {
        self.skip_whitespace();
        self.text.as_bytes()[self.at..].starts_with(token.as_bytes()).then(|| self.at += token.len())
    }

    /// The byte range of a string's contents, if it has no escape and no control character
    /// (`None` at either: serde's to handle).
    fn plain_string(&mut self) -> Option<(u32, u32)> {
        self.expect(b'"')?;
        let start = self.at;
        let rest = &self.text.as_bytes()[start..];
        let len = memchr::memchr(b'"', rest)?;
        // A fold, not `any`: no early exit, so it compiles to a vector loop.
        let special = rest[..len].iter().fold(false, |seen, &b| seen | (b == b'\\') | (b < 0x20));
        if special {
            return None;
        }
        self.at = start + len + 1;
        Some((start as u32, (start + len) as u32))
    }
}

const IDS_MAGIC: &[u8; 8] = b"TXIDS01\n";

/// A part's per-user counts and items: their 64-bit fingerprints, little-endian.
fn encode_ids(tally: &Tally) -> Vec<u8> {
    let mut out = Vec::with_capacity(24 + tally.per_user.len() * 12 + tally.items.len() * 8);
    out.extend_from_slice(IDS_MAGIC);
    out.extend_from_slice(&(tally.per_user.len() as u64).to_le_bytes());
    for (user, n) in &tally.per_user {
        out.extend_from_slice(&user.to_le_bytes());
        out.extend_from_slice(&n.to_le_bytes());
    }
    out.extend_from_slice(&(tally.items.len() as u64).to_le_bytes());
    for item in &tally.items {
        out.extend_from_slice(&item.to_le_bytes());
    }
    out
}

type Ids = (Vec<(u64, u32)>, Vec<u64>);

fn decode_ids(bytes: &[u8]) -> Option<Ids> {
    let mut rest = bytes.strip_prefix(IDS_MAGIC.as_slice())?;
    let mut take = |n: usize| -> Option<&[u8]> {
        let (head, tail) = rest.split_at_checked(n)?;
        rest = tail;
        Some(head)
    };
    let u64_of = |b: &[u8]| u64::from_le_bytes(b.try_into().expect("eight bytes"));
    let users = u64_of(take(8)?) as usize;
    let mut per_user = Vec::with_capacity(users.min(bytes.len() / 12));
    for _ in 0..users {
        let user = u64_of(take(8)?);
        let n = u32::from_le_bytes(take(4)?.try_into().expect("four bytes"));
        per_user.push((user, n));
    }
    let items = u64_of(take(8)?) as usize;
    let mut item_ids = Vec::with_capacity(items.min(bytes.len() / 8));
    for _ in 0..items {
        item_ids.push(u64_of(take(8)?));
    }
    take(1).is_none().then_some((per_user, item_ids))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gz(text: &str) -> Vec<u8> {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(text.as_bytes()).unwrap();
        e.finish().unwrap()
    }

    fn decoded(text: &str) -> ScanPage {
        let mut all = ScanPage::default();
        decode(gz(text).as_slice(), "d.json.gz", &mut |p| {
            all.interactions.extend(p.interactions);
            all.rejected.extend(p.rejected);
            true
        })
        .unwrap();
        all
    }

    const GOOD: &str = r#"{"Item":{"userId":{"S":"s-1"},"eventId":{"S":"e-1"},"itemId":{"S":"cs-101"},"timestamp":{"N":"1767225600"},"eventType":{"S":"enrolled"},"eventValue":{"N":"2.5"}}}"#;

    /// Lines built from the pieces a DynamoDB export (or a broken one) has: plain and
    /// awkward ids (escapes, non-ASCII, bidi and format characters, quotes, commas, control
    /// characters), whitespace between tokens, other attribute types, repeated names,
    /// incremental lines, extra keys, long items, cut lines and trailing bytes.
    fn random_line(rng: &mut impl rand::RngExt) -> String {
        const VALUES: &[&str] = &[
            "s-1",
            "cs-101",
            "",
            "é-ü",
            "学生-7",
            "\u{202e}rtl",
            "a\u{2028}b",
            "x y",
            "a,b",
            "a\\\"b",
            "\\u0041",
            "\\n",
            "tab\\t",
            "1767225600",
            "1767225600000",
            "-5",
            "2.5",
            "NaN",
            "enrolled",
            "submitAssignment",
            "a\u{1}b",
            "a\tb",
            "🙂",
            "\\\\",
            "e-1",
        ];
        const NAMES: &[&str] = &[
            "userId",
            "itemId",
            "eventId",
            "timestamp",
            "eventType",
            "eventValue",
            "other",
            "",
            "user\\u0049d",
        ];
        fn ws(rng: &mut impl rand::RngExt) -> &'static str {
            [" ", "", "", "", "\t", "\r\n", "  "][rng.random_range(0..7)]
        }
        let mut attrs = Vec::new();
        for _ in 0..rng.random_range(0..8) {
            let name = NAMES[rng.random_range(0..NAMES.len())];
            let value = VALUES[rng.random_range(0..VALUES.len())];
            let typed = match rng.random_range(0..12) {
                0 => format!(r#"{{"N":{value:?}}}"#).replace("\\\\", "\\"),
                1 => r#"{"NULL":true}"#.to_owned(),
                2 => r#"{"L":[]}"#.to_owned(),
                3 => format!(r#"{{"S":"{value}","S":"x"}}"#),
                4 => r#"{"N":1767225600}"#.to_owned(),
                5 => format!(r#"{{"SS":["{value}"]}}"#),
                6..=8 => format!(r#"{{{}"N"{}:{}"{value}"{}}}"#, ws(rng), ws(rng), ws(rng), ws(rng)),
                _ => format!(r#"{{"S":{}"{value}"}}"#, ws(rng)),
            };
            attrs.push(format!(r#"{}"{name}"{}:{}{typed}"#, ws(rng), ws(rng), ws(rng)));
        }
        if rng.random_range(0..4) == 0 {
            // The common shape, so that the fast path is exercised on good rows as well.
            attrs = vec![
                r#""userId":{"S":"s-1"}"#.into(),
                r#""eventId":{"S":"e-1"}"#.into(),
                r#""itemId":{"S":"cs-101"}"#.into(),
                r#""timestamp":{"N":"1767225600"}"#.into(),
                format!(r#""eventType":{{"S":"{}"}}"#, VALUES[rng.random_range(0..VALUES.len())]),
            ];
        }
        if rng.random_range(0..20) == 0 {
            attrs.extend((0..40).map(|n| format!(r#""x{n}":{{"S":"v"}}"#)));
        }
        let body = format!("{{{}}}", attrs.join(","));
        let mut line = match rng.random_range(0..10) {
            0 => format!(r#"{{"Metadata":{{}},"Keys":{body}}}"#),
            1 => format!(r#"{{"Metadata":{{}},"Keys":{body},"NewImage":{body}}}"#),
            2 => format!(r#"{{"Item":{body},"Extra":1}}"#),
            3 => format!(r#"{{"Item":{body},"Item":{body}}}"#),
            4 => format!(r#"{{"Itemz":{body}}}"#),
            _ => format!(r#"{}{{{}"Item"{}:{body}{}}}{}"#, ws(rng), ws(rng), ws(rng), ws(rng), ws(rng)),
        };
        match rng.random_range(0..15) {
            0 => {
                let mut cut = rng.random_range(0..=line.len());
                while !line.is_char_boundary(cut) {
                    cut -= 1;
                }
                line.truncate(cut);
            }
            1 => line.push_str(" x"),
            2 => line.push('}'),
            _ => {}
        }
        line.push('\n');
        line
    }

    #[test]
    fn the_plain_reading_and_serde_agree_on_every_line_the_plain_one_accepts() {
        use rand::SeedableRng;
        let mut rng = rand::rngs::ChaCha8Rng::seed_from_u64(13);
        let (mut plain, mut rows, mut rejected, mut buffer) = (0, 0, 0, Vec::new());
        for number in 1..=50_000u64 {
            let line = random_line(&mut rng);
            let expected = decode_line_with_serde(&line, "d.json.gz", number);
            if plain_item(&line, &mut buffer).is_some() {
                plain += 1;
            }
            let got = decode_line(&line, "d.json.gz", number, &mut buffer);
            assert_eq!(got, expected, "line {number}: {line:?}");
            match got {
                LineOutcome::Row(_) => rows += 1,
                LineOutcome::Rejected(_) => rejected += 1,
                LineOutcome::Delete => {}
            }
        }
        // The generator reaches both readings and both outcomes, or the comparison proves little.
        assert!(plain > 5_000 && plain < 45_000, "{plain} lines read plainly");
        assert!(rows > 5_000 && rejected > 5_000, "{rows} rows, {rejected} rejected");
    }

    #[test]
    fn items_decode_by_the_store_rules_and_bad_lines_are_rejected_by_position() {
        let text = format!(
            "{GOOD}\n\n{}\n{}\nnot json\n{}\n",
            r#"{"Item":{"userId":{"S":"s-2"},"eventId":{"S":"e-2"},"itemId":{"S":"x"},"timestamp":{"N":"1767225600000"},"eventType":{"S":"enrolled"}}}"#,
            r#"{"Keys":{"userId":{"S":"s-3"}}}"#,
            r#"{"Item":{"userId":{"S":"s-4"},"eventId":{"S":"e-4"},"itemId":{"L":[]},"timestamp":{"N":"1767225600"},"eventType":{"S":"enrolled"}}}"#,
        );
        let page = decoded(&text);
        assert_eq!(page.interactions.len(), 1);
        assert_eq!(page.interactions[0].event_value, Some(2.5));
        let reasons: Vec<_> = page.rejected.iter().map(|r| (r.key.as_str(), r.reason.as_str())).collect();
        assert_eq!(reasons.len(), 4, "{reasons:?}");
        assert_eq!(reasons[0].0, "s-2/e-2");
        assert!(reasons[0].1.contains("timestamp"), "{reasons:?}");
        assert_eq!(reasons[1], ("d.json.gz:4", "the line has no Item"));
        assert_eq!(reasons[2].0, "d.json.gz:5");
        assert!(reasons[2].1.starts_with("not DynamoDB JSON"), "{reasons:?}");
        assert_eq!(reasons[3], ("s-4/e-4", "itemId is not a string"));
    }

    #[test]
    fn incremental_lines_decode_their_new_image_and_deletes_are_skipped_and_counted() {
        let new_image = r#"{"Metadata":{"WriteTimestampMicros":{"N":"1767225600000000"}},"Keys":{"userId":{"S":"s-1"},"eventId":{"S":"e-1"}},"NewImage":{"userId":{"S":"s-1"},"eventId":{"S":"e-1"},"itemId":{"S":"cs-101"},"timestamp":{"N":"1767225600"},"eventType":{"S":"enrolled"}}}"#;
        let delete = r#"{"Metadata":{"WriteTimestampMicros":{"N":"1767225600000001"}},"Keys":{"userId":{"S":"s-2"},"eventId":{"S":"e-2"}}}"#;
        let text = format!("{new_image}\n{delete}\n{delete}\n");
        let mut all = ScanPage::default();
        let deletes = decode(gz(&text).as_slice(), "d.json.gz", &mut |p| {
            all.interactions.extend(p.interactions);
            all.rejected.extend(p.rejected);
            true
        })
        .unwrap();
        assert_eq!(deletes, 2);
        assert_eq!(all.interactions.len(), 1);
        assert_eq!(all.interactions[0].item_id.as_str(), "cs-101");
        assert!(all.rejected.is_empty(), "{:?}", all.rejected);
    }

    #[test]
    fn escaped_strings_decode_and_a_repeated_name_keeps_its_last_value() {
        let line = r#"{"Item":{"userId":{"S":"s-\u00e9\"1"},"eventId":{"S":"e-1"},"itemId":{"S":"cs-1"},"itemId":{"S":"cs-\/2"},"timestamp":{"N":"1767225600"},"eventType":{"S":"enrolled"},"tags":{"L":[{"S":"x"}]},"eventValue":{"NULL":true}}}"#;
        let page = decoded(&format!("{line}\n"));
        assert!(page.rejected.is_empty(), "{:?}", page.rejected);
        let i = &page.interactions[0];
        assert_eq!((i.user_id.as_str(), i.item_id.as_str()), ("s-\u{e9}\"1", "cs-/2"));
        assert_eq!(i.event_value, None);
    }

    #[test]
    fn a_file_that_is_not_gzip_fails_with_its_key() {
        let err = decode(&b"plain text"[..], "exports/r/d.json.gz", &mut |_| true).unwrap_err();
        assert!(err.to_string().contains("exports/r/d.json.gz"), "{err}");
        assert!(!err.is_retryable());
    }

    /// A directory store whose downloads break after `after` bytes (a connection reset).
    struct BreaksMidStream {
        inner: artifacts::DirectoryStore,
        after: usize,
    }

    #[async_trait::async_trait]
    impl ObjectStore for BreaksMidStream {
        async fn begin(
            &self,
            key: &str,
        ) -> Result<Box<dyn artifacts::ObjectWriter>, artifacts::ArtifactError> {
            self.inner.begin(key).await
        }
        async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, artifacts::ArtifactError> {
            self.inner.get(key).await
        }
        async fn copy_to(
            &self,
            key: &str,
            writer: &mut (dyn tokio::io::AsyncWrite + Unpin + Send),
        ) -> Result<Option<u64>, artifacts::ArtifactError> {
            use tokio::io::AsyncWriteExt;
            let Some(bytes) = self.inner.get(key).await? else { return Ok(None) };
            for chunk in bytes[..self.after].chunks(4096) {
                writer.write_all(chunk).await.unwrap();
            }
            Err(artifacts::ArtifactError::S3 {
                operation: "GetObject",
                bucket: "b".into(),
                key: key.into(),
                message: "reading the body: connection reset (injected)".into(),
                retryable: true,
            })
        }
        async fn list(&self, prefix: &str) -> Result<Vec<String>, artifacts::ArtifactError> {
            self.inner.list(prefix).await
        }
        fn location(&self, key: &str) -> String {
            self.inner.location(key)
        }
    }

    const KEY: &str = "exports/r/data/d.json.gz";

    /// Many lines (several pages, gzip larger than one chunk of the test store).
    fn big_file() -> Vec<u8> {
        let text: String = (0..20_000)
            .map(|n| {
                format!(
                    "{{\"Item\":{{\"userId\":{{\"S\":\"s-{n}\"}},\"eventId\":{{\"S\":\"e-{n}\"}},\"itemId\":{{\"S\":\"cs-{}\"}},\"timestamp\":{{\"N\":\"{}\"}},\"eventType\":{{\"S\":\"enrolled\"}}}}}}\n",
                    n % 97,
                    1_767_225_600 + n
                )
            })
            .collect();
        gz(&text)
    }

    async fn convert(objects: &dyn ObjectStore) -> Result<u64, ExportError> {
        let plan = ExportPlan::new("r");
        let file = DataFile { data_file_s3_key: KEY.into(), item_count: 0 };
        convert_file(objects, &plan, 0, &file, &|| {}).await
    }

    /// Nothing of the part is recorded (and no CSV part is left from the broken stream
    /// when the writers could still throw theirs away).
    fn no_record(dir: &std::path::Path) {
        assert!(!dir.join("exports/r/parts/part-00000.json").exists(), "the part was recorded");
        assert!(!dir.join("exports/r/parts/part-00000.ids").exists(), "the part's ids were written");
    }

    #[tokio::test]
    async fn a_whole_file_streams_through() {
        let dir = tempfile::tempdir().unwrap();
        let objects = artifacts::DirectoryStore::new(dir.path());
        objects.put(KEY, &big_file()).await.unwrap();
        assert_eq!(convert(&objects).await.unwrap(), 20_000);
        assert!(dir.path().join("exports/r/parts/part-00000.json").exists());
    }

    #[tokio::test]
    async fn a_download_failing_mid_stream_fails_the_part_with_its_key_retryably() {
        let dir = tempfile::tempdir().unwrap();
        let inner = artifacts::DirectoryStore::new(dir.path());
        let bytes = big_file();
        inner.put(KEY, &bytes).await.unwrap();
        // Mid-stream, and exactly at the end of a gzip member (where the inflater alone
        // could not tell a broken download from the end of the file).
        for after in [bytes.len() / 2, bytes.len()] {
            let objects = BreaksMidStream { inner: artifacts::DirectoryStore::new(dir.path()), after };
            let err = convert(&objects).await.unwrap_err();
            assert!(err.to_string().contains(KEY), "{err}");
            assert!(err.to_string().contains("connection reset"), "{err}");
            assert!(err.is_retryable(), "{err}");
            no_record(dir.path());
            assert!(
                !dir.path().join("exports/r/csv/part-00000.csv").exists(),
                "a part from a broken download"
            );
        }
    }

    #[tokio::test]
    async fn a_truncated_gzip_a_missing_file_and_a_plain_file_fail_with_their_key() {
        let dir = tempfile::tempdir().unwrap();
        let objects = artifacts::DirectoryStore::new(dir.path());
        let err = convert(&objects).await.unwrap_err();
        assert!(err.to_string().contains(KEY) && err.to_string().contains("missing"), "{err}");
        no_record(dir.path());
        assert!(!dir.path().join("exports/r/csv/part-00000.csv").exists(), "a part from a missing file");

        let bytes = big_file();
        for broken in [&bytes[..bytes.len() / 2], &bytes[..bytes.len() - 4], b"plain text".as_slice()] {
            objects.put(KEY, broken).await.unwrap();
            let err = convert(&objects).await.unwrap_err();
            assert!(err.to_string().contains(KEY), "{err}");
            assert!(!err.is_retryable(), "{err}");
            no_record(dir.path());
            assert!(!dir.path().join("exports/r/csv/part-00000.csv").exists(), "a part from a broken file");
        }
    }

    #[test]
    fn id_counts_round_trip_and_truncation_is_refused() {
        let mut tally = Tally::default();
        tally.merge_ids([(7, 2), (9, 1)], [3, 4, 5]);
        let bytes = encode_ids(&tally);
        let (mut users, mut items) = decode_ids(&bytes).unwrap();
        users.sort();
        items.sort();
        assert_eq!((users, items), (vec![(7, 2), (9, 1)], vec![3, 4, 5]));
        assert!(decode_ids(&bytes[..bytes.len() - 1]).is_none());
        assert!(decode_ids(&[bytes.as_slice(), b"x"].concat()).is_none());
    }
}
