//! The interactions store: where every interaction lands before it is exported and
//! trained on. One port in two narrow halves, [`InteractionSink`] (put) and
//! [`InteractionSource`] (scan), with two adapters:
//!
//! * [`dynamodb::DynamoInteractionStore`] in AWS;
//! * [`embedded::EmbeddedStore`] on a laptop: SQLite in WAL mode, so the API, the
//!   event consumer's CLI and the export can all use one file from separate processes.
//!
//! Writes are idempotent by construction: an interaction is keyed by the id of the
//! event it came from, so a redelivered event finds its first copy and adds nothing.

pub mod demo;
#[cfg(feature = "dynamodb")]
pub mod dynamodb;
pub mod embedded;
pub mod item;

use async_trait::async_trait;
use futures::stream::BoxStream;
use schemas::Interaction;

/// What a put did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    /// The interaction is new and now stored.
    Inserted,
    /// An interaction with this event id was already stored; nothing was written.
    Duplicate,
}

/// A stored record that no longer parses (written by an older version or by hand).
/// Reported, never silently dropped, so an export can count and name them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectedRecord {
    /// The record's key, as far as it could be read.
    pub key: String,
    pub reason: String,
}

/// One page of a scan: the records that parsed and the ones that did not.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScanPage {
    pub interactions: Vec<Interaction>,
    pub rejected: Vec<RejectedRecord>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("embedded store {path}: {source}")]
    Sqlite {
        path: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error("DynamoDB {operation} on table {table}: {message}")]
    Dynamo { operation: &'static str, table: String, message: String, retryable: bool },
    #[error("scan segment {segment} is not below the segment count {total}")]
    BadSegment { segment: u32, total: u32 },
    #[error("store task failed: {0}")]
    Task(String),
}

impl StoreError {
    /// Whether trying the same call again later may succeed (throttling, 5xx, I/O).
    pub fn is_retryable(&self) -> bool {
        match self {
            StoreError::Sqlite { source, .. } => matches!(
                source.sqlite_error_code(),
                Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
            ),
            StoreError::Dynamo { retryable, .. } => *retryable,
            StoreError::BadSegment { .. } => false,
            StoreError::Task(_) => true,
        }
    }
}

/// The writing half of the port: the event consumer only ever puts.
#[async_trait]
pub trait InteractionSink: Send + Sync {
    /// Stores `interaction` unless one with the same event id is already stored.
    async fn put(&self, interaction: &Interaction) -> Result<PutOutcome, StoreError>;
}

/// The reading half of the port: the export (and the API's popularity) only ever scan.
pub trait InteractionSource: Send + Sync {
    /// Streams segment `segment` of `total` disjoint segments, page by page. Reading
    /// all segments (in parallel, if you like) yields every record exactly once.
    fn scan_segment(&self, segment: u32, total: u32) -> BoxStream<'_, Result<ScanPage, StoreError>>;
}

/// Both halves, for code that holds a whole store (tests, tools); every adapter is one.
pub trait InteractionStore: InteractionSink + InteractionSource {}

impl<T: InteractionSink + InteractionSource + ?Sized> InteractionStore for T {}

fn check_segment(segment: u32, total: u32) -> Result<(), StoreError> {
    if total == 0 || segment >= total {
        return Err(StoreError::BadSegment { segment, total });
    }
    Ok(())
}
