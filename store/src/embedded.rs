//! The embedded adapter: one SQLite file under the data directory, in WAL mode so
//! that the API, the event consumer's CLI and the export can use it from separate
//! processes at once (readers never block the writer, the writer never blocks them).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::{self, BoxStream, StreamExt};
use rusqlite::{Connection, OptionalExtension, params};
use schemas::{EventId, EventType, Interaction, ItemId, Timestamp, UserId};

use crate::{
    InteractionSink, InteractionSource, PutOutcome, RejectedRecord, ScanPage, StoreError, check_segment,
};

/// File name of the embedded store inside the data directory.
pub const FILE_NAME: &str = "store.db";

/// Where every function keeps its local data when `DATA_DIR` is not set.
pub const DEFAULT_DATA_DIR: &str = "./.data";

/// How many rows one scan page holds: large enough to amortise a query, small
/// enough that memory stays flat however big the table grows.
const PAGE_ROWS: i64 = 2_000;

/// Opens a connection configured for sharing the file between processes. Other
/// crates use this for their own tables (pipeline runs, sent-mail records) so the
/// whole embedded world lives in one file with one set of pragmas.
pub fn open_connection(path: &Path) -> Result<Connection, StoreError> {
    let wrap = |source| StoreError::Sqlite { path: path.display().to_string(), source };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| StoreError::Sqlite {
            path: path.display().to_string(),
            source: rusqlite::Error::ToSqlConversionFailure(Box::new(e)),
        })?;
    }
    let conn = Connection::open(path).map_err(wrap)?;
    // Another process may hold the write lock for a moment; wait rather than fail.
    conn.busy_timeout(LOCK_WAIT).map_err(wrap)?;
    // Switching a new file to WAL needs it to itself; a second process opening the
    // same fresh file at that moment gets SQLITE_BUSY without the busy handler.
    retry_while_busy(|| conn.pragma_update(None, "journal_mode", "WAL")).map_err(wrap)?;
    // NORMAL is durable across application crashes in WAL mode; only a power loss
    // can take back the last transactions, which a redelivered event would restore.
    conn.pragma_update(None, "synchronous", "NORMAL").map_err(wrap)?;
    Ok(conn)
}

/// How long one process waits for another's lock before it reports one.
const LOCK_WAIT: Duration = Duration::from_secs(10);

fn is_busy(error: &rusqlite::Error) -> bool {
    matches!(
        error.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

/// Runs `step` again while SQLite says another connection holds the lock, for at
/// most [`LOCK_WAIT`]. For the cases SQLite does not hand to the busy handler.
fn retry_while_busy<T>(mut step: impl FnMut() -> rusqlite::Result<T>) -> rusqlite::Result<T> {
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    let mut pause = Duration::from_millis(5);
    loop {
        match step() {
            Err(e) if is_busy(&e) && std::time::Instant::now() < deadline => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(200));
            }
            other => return other,
        }
    }
}

/// Creates a crate's tables (idempotent DDL in `schema`), then runs `after` (a
/// cleanup at open, say), in one write transaction taken up front.
///
/// Run as separate autocommit statements, `CREATE TABLE IF NOT EXISTS` reads the
/// schema and then writes; when another process commits in between, SQLite fails
/// the stale writer at once with SQLITE_BUSY rather than waiting. `BEGIN
/// IMMEDIATE` takes the write lock first, which the busy timeout does wait for,
/// and the whole step is retried for the cases it does not.
pub fn apply_schema(
    conn: &mut Connection,
    schema: &str,
    after: impl Fn(&rusqlite::Transaction<'_>) -> rusqlite::Result<()>,
) -> rusqlite::Result<()> {
    retry_while_busy(|| {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        tx.execute_batch(schema)?;
        after(&tx)?;
        tx.commit()
    })
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS interactions (
    seq         INTEGER PRIMARY KEY,
    event_id    TEXT NOT NULL UNIQUE,
    user_id     TEXT NOT NULL,
    item_id     TEXT NOT NULL,
    ts          INTEGER NOT NULL,
    event_type  TEXT NOT NULL,
    event_value REAL
);
CREATE INDEX IF NOT EXISTS interactions_by_user ON interactions(user_id);
";

/// The embedded interactions store.
#[derive(Clone)]
pub struct EmbeddedStore {
    path: PathBuf,
    conn: Arc<Mutex<Connection>>,
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore").field("path", &self.path).finish()
    }
}

impl EmbeddedStore {
    /// Opens (creating if needed) `store.db` inside `data_dir`.
    pub fn open_in(data_dir: &Path) -> Result<Self, StoreError> {
        Self::open(&data_dir.join(FILE_NAME))
    }

    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let mut conn = open_connection(path)?;
        apply_schema(&mut conn, SCHEMA, |_| Ok(()))
            .map_err(|source| StoreError::Sqlite { path: path.display().to_string(), source })?;
        Ok(Self { path: path.to_owned(), conn: Arc::new(Mutex::new(conn)) })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Sqlite { path: self.path.display().to_string(), source }
    }

    /// Runs `f` on the connection; blocking, so async callers go through [`Self::run`].
    fn with_conn<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T, StoreError> {
        // A panic while holding the lock cannot leave SQLite inconsistent (it rolls
        // back), so a poisoned mutex is safe to keep using.
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        f(&conn).map_err(|e| self.err(e))
    }

    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&EmbeddedStore) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || f(&store)).await.map_err(|e| StoreError::Task(e.to_string()))?
    }

    /// Stores many interactions in one transaction; returns how many were new.
    pub fn put_many_blocking(&self, interactions: &[Interaction]) -> Result<usize, StoreError> {
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let tx = conn.transaction().map_err(|e| self.err(e))?;
        let mut inserted = 0;
        {
            let mut insert = tx.prepare_cached(INSERT).map_err(|e| self.err(e))?;
            for i in interactions {
                inserted += insert.execute(insert_params(i)).map_err(|e| self.err(e))?;
            }
        }
        tx.commit().map_err(|e| self.err(e))?;
        Ok(inserted)
    }

    pub fn put_blocking(&self, interaction: &Interaction) -> Result<PutOutcome, StoreError> {
        let changed = self.with_conn(|c| c.prepare_cached(INSERT)?.execute(insert_params(interaction)))?;
        Ok(if changed == 0 { PutOutcome::Duplicate } else { PutOutcome::Inserted })
    }

    pub fn count_blocking(&self) -> Result<u64, StoreError> {
        self.with_conn(|c| c.query_row("SELECT count(*) FROM interactions", [], |r| r.get::<_, i64>(0)))
            .map(|n| n as u64)
    }

    /// A number that grows whenever any process stores an interaction: cheap to
    /// poll, so readers can refresh caches only when something changed.
    pub fn change_marker_blocking(&self) -> Result<i64, StoreError> {
        self.with_conn(|c| c.query_row("SELECT coalesce(max(seq), 0) FROM interactions", [], |r| r.get(0)))
    }

    /// Items by number of distinct users who interacted with them, most popular first;
    /// ties broken by the most recent interaction, then by id, so the order is stable.
    pub fn popular_items_blocking(&self, limit: usize) -> Result<Vec<(ItemId, u64)>, StoreError> {
        let rows = self.with_conn(|c| {
            let mut q = c.prepare_cached(
                "SELECT item_id, count(DISTINCT user_id) AS users, max(ts) AS latest
                 FROM interactions GROUP BY item_id ORDER BY users DESC, latest DESC, item_id LIMIT ?1",
            )?;
            let rows = q.query_map([limit as i64], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
        })?;
        // Ids in the store were parsed on the way in; one that fails now was written
        // by hand, and is left out of recommendations rather than served.
        Ok(rows.into_iter().filter_map(|(id, n)| ItemId::parse(id).ok().map(|id| (id, n as u64))).collect())
    }

    /// The distinct items a user has interacted with.
    pub fn items_of_blocking(&self, user: &UserId) -> Result<Vec<ItemId>, StoreError> {
        let rows = self.with_conn(|c| {
            let mut q = c.prepare_cached("SELECT DISTINCT item_id FROM interactions WHERE user_id = ?1")?;
            let rows = q.query_map([user.as_str()], |r| r.get::<_, String>(0))?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
        })?;
        Ok(rows.into_iter().filter_map(|id| ItemId::parse(id).ok()).collect())
    }

    /// Every distinct (user, item) pair, grouped by user: what each user already has.
    pub fn distinct_user_items_blocking(&self) -> Result<Vec<(String, String)>, StoreError> {
        self.with_conn(|c| {
            let mut q =
                c.prepare_cached("SELECT DISTINCT user_id, item_id FROM interactions ORDER BY user_id")?;
            let rows = q.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
        })
    }

    /// Whether an interaction with this event id is stored.
    pub fn contains_event_blocking(&self, event_id: &EventId) -> Result<bool, StoreError> {
        self.with_conn(|c| {
            c.query_row("SELECT 1 FROM interactions WHERE event_id = ?1", [event_id.as_str()], |_| Ok(()))
                .optional()
                .map(|found| found.is_some())
        })
    }

    fn scan_page_blocking(
        &self,
        segment: u32,
        total: u32,
        after: i64,
    ) -> Result<(ScanPage, i64), StoreError> {
        let rows = self.with_conn(|c| {
            let mut q = c.prepare_cached(
                "SELECT seq, event_id, user_id, item_id, ts, event_type, event_value FROM interactions
                 WHERE seq > ?1 AND seq % ?2 = ?3 ORDER BY seq LIMIT ?4",
            )?;
            let rows = q.query_map(params![after, total, segment, PAGE_ROWS], |r| {
                Ok(RawRow {
                    seq: r.get(0)?,
                    event_id: r.get(1)?,
                    user_id: r.get(2)?,
                    item_id: r.get(3)?,
                    ts: r.get(4)?,
                    event_type: r.get(5)?,
                    event_value: r.get(6)?,
                })
            })?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
        })?;
        let last = rows.last().map_or(after, |r| r.seq);
        let mut page = ScanPage::default();
        for row in rows {
            match row.parse() {
                Ok(i) => page.interactions.push(i),
                Err(reason) => page.rejected.push(RejectedRecord { key: row.event_id, reason }),
            }
        }
        Ok((page, last))
    }
}

const INSERT: &str =
    "INSERT OR IGNORE INTO interactions (event_id, user_id, item_id, ts, event_type, event_value)
                      VALUES (?1, ?2, ?3, ?4, ?5, ?6)";

fn insert_params(i: &Interaction) -> (&str, &str, &str, i64, &str, Option<f64>) {
    (
        i.event_id.as_str(),
        i.user_id.as_str(),
        i.item_id.as_str(),
        i.timestamp.epoch_seconds(),
        i.event_type.as_str(),
        i.event_value.map(f64::from),
    )
}

struct RawRow {
    seq: i64,
    event_id: String,
    user_id: String,
    item_id: String,
    ts: i64,
    event_type: String,
    event_value: Option<f64>,
}

impl RawRow {
    fn parse(&self) -> Result<Interaction, String> {
        Ok(Interaction {
            user_id: UserId::parse(self.user_id.clone()).map_err(|e| e.to_string())?,
            item_id: ItemId::parse(self.item_id.clone()).map_err(|e| e.to_string())?,
            timestamp: Timestamp::from_epoch_seconds(self.ts).map_err(|e| e.to_string())?,
            event_type: EventType::parse(self.event_type.clone()).map_err(|e| e.to_string())?,
            event_value: Interaction::validate_value(self.event_value.map(|v| v as f32))
                .map_err(|e| e.to_string())?,
            event_id: EventId::parse(self.event_id.clone()).map_err(|e| e.to_string())?,
        })
    }
}

#[async_trait]
impl InteractionSink for EmbeddedStore {
    async fn put(&self, interaction: &Interaction) -> Result<PutOutcome, StoreError> {
        let interaction = interaction.clone();
        self.run(move |s| s.put_blocking(&interaction)).await
    }
}

impl InteractionSource for EmbeddedStore {
    fn scan_segment(&self, segment: u32, total: u32) -> BoxStream<'_, Result<ScanPage, StoreError>> {
        if let Err(e) = check_segment(segment, total) {
            return stream::once(async { Err(e) }).boxed();
        }
        // State: the last seq read, or None once the segment is exhausted.
        stream::unfold(Some(0_i64), move |after| async move {
            let after = after?;
            match self.run(move |s| s.scan_page_blocking(segment, total, after)).await {
                Ok((page, _)) if page.interactions.is_empty() && page.rejected.is_empty() => None,
                Ok((page, last)) => Some((Ok(page), Some(last))),
                Err(e) => Some((Err(e), None)),
            }
        })
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn interaction(event: &str, user: &str, item: &str, ts: i64) -> Interaction {
        Interaction {
            user_id: user.parse().unwrap(),
            item_id: item.parse().unwrap(),
            timestamp: Timestamp::from_epoch_seconds(ts).unwrap(),
            event_type: EventType::enrolled(),
            event_value: None,
            event_id: EventId::parse(event).unwrap(),
        }
    }

    async fn collect_all(store: &EmbeddedStore, total: u32) -> Vec<Interaction> {
        let mut all = Vec::new();
        for segment in 0..total {
            let mut pages = store.scan_segment(segment, total);
            while let Some(page) = pages.next().await {
                all.extend(page.unwrap().interactions);
            }
        }
        all.sort_by(|a, b| a.event_id.cmp(&b.event_id));
        all
    }

    #[tokio::test]
    async fn a_redelivered_event_writes_nothing_new() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open_in(dir.path()).unwrap();
        let i = interaction("e-1", "s-1", "A", 1_767_225_600);
        assert_eq!(store.put(&i).await.unwrap(), PutOutcome::Inserted);
        assert_eq!(store.put(&i).await.unwrap(), PutOutcome::Duplicate);
        assert_eq!(store.count_blocking().unwrap(), 1);
        assert!(store.contains_event_blocking(&i.event_id).unwrap());
    }

    #[tokio::test]
    async fn segments_partition_the_table() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open_in(dir.path()).unwrap();
        let rows: Vec<_> = (0..5_003)
            .map(|n| interaction(&format!("e-{n:05}"), &format!("s-{}", n % 97), "A", 1_767_225_600 + n))
            .collect();
        assert_eq!(store.put_many_blocking(&rows).unwrap(), 5_003);
        for total in [1, 3, 8] {
            assert_eq!(collect_all(&store, total).await, rows, "with {total} segments");
        }
        let err = store.scan_segment(3, 3).next().await.unwrap().unwrap_err();
        assert!(matches!(err, StoreError::BadSegment { segment: 3, total: 3 }));
    }

    #[tokio::test]
    async fn rows_that_no_longer_parse_are_reported_not_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open_in(dir.path()).unwrap();
        store.put_blocking(&interaction("good", "s-1", "A", 1_767_225_600)).unwrap();
        store
            .with_conn(|c| {
                c.execute(
                    "INSERT INTO interactions (event_id, user_id, item_id, ts, event_type) VALUES ('bad', '', 'A', 1767225600, 'enrolled')",
                    [],
                )
            })
            .unwrap();
        let page = store.scan_segment(0, 1).next().await.unwrap().unwrap();
        assert_eq!(page.interactions.len(), 1);
        assert_eq!(
            page.rejected,
            vec![RejectedRecord { key: "bad".into(), reason: "userId is empty".into() }]
        );
    }

    #[test]
    fn popularity_counts_people_not_clicks() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open_in(dir.path()).unwrap();
        let t = 1_767_225_600;
        store
            .put_many_blocking(&[
                interaction("1", "s-1", "A", t),
                interaction("2", "s-1", "A", t + 1),
                interaction("3", "s-1", "A", t + 2),
                interaction("4", "s-1", "B", t),
                interaction("5", "s-2", "B", t),
                interaction("6", "s-3", "C", t + 9),
            ])
            .unwrap();
        let popular: Vec<_> =
            store.popular_items_blocking(10).unwrap().into_iter().map(|(i, n)| (i.into_inner(), n)).collect();
        assert_eq!(popular, vec![("B".into(), 2), ("C".into(), 1), ("A".into(), 1)]);
        let mut seen = store.items_of_blocking(&"s-1".parse().unwrap()).unwrap();
        seen.sort();
        assert_eq!(seen, vec!["A".parse().unwrap(), "B".parse().unwrap()]);
        let pairs = store.distinct_user_items_blocking().unwrap();
        assert_eq!(pairs.len(), 4, "{pairs:?}");
    }

    #[test]
    fn two_handles_on_one_file_see_each_other() {
        // Stands in for two processes: separate connections to the same file.
        let dir = tempfile::tempdir().unwrap();
        let writer = EmbeddedStore::open_in(dir.path()).unwrap();
        let reader = EmbeddedStore::open_in(dir.path()).unwrap();
        let before = reader.change_marker_blocking().unwrap();
        writer.put_blocking(&interaction("e-1", "s-1", "A", 1_767_225_600)).unwrap();
        assert!(reader.change_marker_blocking().unwrap() > before);
        assert_eq!(reader.count_blocking().unwrap(), 1);
        let mode: String =
            reader.with_conn(|c| c.query_row("PRAGMA journal_mode", [], |r| r.get(0))).unwrap();
        assert_eq!(mode, "wal");
    }
}
