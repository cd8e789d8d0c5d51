//! Where runs are persisted: the [`RunStore`] port, with a DynamoDB adapter (AWS) and
//! an embedded adapter (a table in the SQLite file of the embedded store).
//!
//! Both give the same two guarantees:
//! * **one active run**: creating a run while another is not terminal is refused with
//!   the active run's id;
//! * **no lost updates**: `save` succeeds only if nobody saved the run since it was
//!   read (a version number), so two overlapping invocations cannot both advance it.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};

use crate::run::Run;

#[cfg(feature = "aws")]
mod dynamo;
#[cfg(feature = "aws")]
pub use dynamo::DynamoRunStore;

#[derive(Debug, thiserror::Error)]
pub enum RunStoreError {
    #[error("run {active_run_id} is still active; a new run can start when it finishes")]
    Busy { active_run_id: String },
    #[error("run {run_id} was changed by another invocation since it was read")]
    Conflict { run_id: String },
    #[error("run store: {message}")]
    Backend { message: String, retryable: bool },
    #[error("stored run {run_id} does not parse: {message}")]
    Corrupt { run_id: String, message: String },
}

impl RunStoreError {
    /// Busy and Conflict are answers, not faults: another invocation is doing the work.
    pub fn is_retryable(&self) -> bool {
        match self {
            RunStoreError::Busy { .. } | RunStoreError::Conflict { .. } => true,
            RunStoreError::Backend { retryable, .. } => *retryable,
            RunStoreError::Corrupt { .. } => false,
        }
    }
}

#[async_trait]
pub trait RunStore: Send + Sync {
    /// Stores a new run, unless another run is active.
    async fn create(&self, run: &Run) -> Result<(), RunStoreError>;
    /// Stores `run` if the stored copy still has `run.version`, then bumps `run.version`.
    /// Saving a terminal state releases the one-active-run guard.
    async fn save(&self, run: &mut Run) -> Result<(), RunStoreError>;
    async fn get(&self, run_id: &str) -> Result<Option<Run>, RunStoreError>;
    /// The run that is not terminal yet, if any.
    async fn active(&self) -> Result<Option<Run>, RunStoreError>;
    /// The latest runs, newest first.
    async fn recent(&self, limit: usize) -> Result<Vec<Run>, RunStoreError>;
}

fn parse(run_id: &str, body: &str) -> Result<Run, RunStoreError> {
    serde_json::from_str(body)
        .map_err(|e| RunStoreError::Corrupt { run_id: run_id.to_owned(), message: e.to_string() })
}

fn body(run: &Run) -> String {
    serde_json::to_string(run).expect("a run serializes")
}

// ---------------------------------------------------------------------------------
// Embedded

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS pipeline_runs (
    run_id  TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    active  INTEGER NOT NULL,
    body    TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS pipeline_runs_one_active ON pipeline_runs(active) WHERE active = 1;
";

/// Runs in the embedded SQLite file (`$DATA_DIR/store.db`, table `pipeline_runs`).
#[derive(Clone)]
pub struct EmbeddedRunStore {
    path: PathBuf,
    conn: Arc<Mutex<Connection>>,
}

impl EmbeddedRunStore {
    pub fn open(path: &Path) -> Result<Self, RunStoreError> {
        let conn = store::embedded::open_connection(path)
            .map_err(|e| RunStoreError::Backend { message: e.to_string(), retryable: e.is_retryable() })?;
        let store = Self { path: path.to_owned(), conn: Arc::new(Mutex::new(conn)) };
        store.with_conn(|c| store::embedded::apply_schema(c, SCHEMA, |_| Ok(())))?;
        Ok(store)
    }

    fn with_conn<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
    ) -> Result<T, RunStoreError> {
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut conn).map_err(|e| RunStoreError::Backend {
            message: format!("{}: {e}", self.path.display()),
            retryable: matches!(
                e.sqlite_error_code(),
                Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
            ),
        })
    }

    async fn run_blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&EmbeddedRunStore) -> Result<T, RunStoreError> + Send + 'static,
    ) -> Result<T, RunStoreError> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .map_err(|e| RunStoreError::Backend { message: e.to_string(), retryable: true })?
    }
}

#[async_trait]
impl RunStore for EmbeddedRunStore {
    async fn create(&self, run: &Run) -> Result<(), RunStoreError> {
        let run = run.clone();
        self.run_blocking(move |s| {
            let active: Option<String> = s.with_conn(|c| {
                // IMMEDIATE takes the write lock first, so check-then-insert is atomic
                // across processes too.
                let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                let active: Option<String> = tx
                    .query_row("SELECT run_id FROM pipeline_runs WHERE active = 1", [], |r| r.get(0))
                    .optional()?;
                if active.is_none() {
                    tx.execute(
                        "INSERT INTO pipeline_runs (run_id, version, active, body) VALUES (?1, ?2, ?3, ?4)",
                        params![run.run_id, run.version as i64, run.is_active(), body(&run)],
                    )?;
                }
                tx.commit()?;
                Ok(active)
            })?;
            match active {
                Some(active_run_id) => Err(RunStoreError::Busy { active_run_id }),
                None => Ok(()),
            }
        })
        .await
    }

    async fn save(&self, run: &mut Run) -> Result<(), RunStoreError> {
        let mut next = run.clone();
        next.version += 1;
        let saved = next.clone();
        let expected = run.version;
        self.run_blocking(move |s| {
            let changed = s.with_conn(|c| {
                c.execute(
                    "UPDATE pipeline_runs SET version = ?1, active = ?2, body = ?3 WHERE run_id = ?4 AND version = ?5",
                    params![next.version as i64, next.is_active(), body(&next), next.run_id, expected as i64],
                )
            })?;
            if changed == 0 {
                return Err(RunStoreError::Conflict { run_id: next.run_id });
            }
            Ok(())
        })
        .await?;
        *run = saved;
        Ok(())
    }

    async fn get(&self, run_id: &str) -> Result<Option<Run>, RunStoreError> {
        let run_id = run_id.to_owned();
        self.run_blocking(move |s| {
            let body: Option<String> = s.with_conn(|c| {
                c.query_row("SELECT body FROM pipeline_runs WHERE run_id = ?1", [&run_id], |r| r.get(0))
                    .optional()
            })?;
            body.map(|b| parse(&run_id, &b)).transpose()
        })
        .await
    }

    async fn active(&self) -> Result<Option<Run>, RunStoreError> {
        self.run_blocking(|s| {
            let row: Option<(String, String)> = s.with_conn(|c| {
                c.query_row("SELECT run_id, body FROM pipeline_runs WHERE active = 1", [], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .optional()
            })?;
            row.map(|(id, b)| parse(&id, &b)).transpose()
        })
        .await
    }

    async fn recent(&self, limit: usize) -> Result<Vec<Run>, RunStoreError> {
        self.run_blocking(move |s| {
            let rows: Vec<(String, String)> = s.with_conn(|c| {
                let mut q =
                    c.prepare("SELECT run_id, body FROM pipeline_runs ORDER BY run_id DESC LIMIT ?1")?;
                let rows = q.query_map([limit as i64], |r| Ok((r.get(0)?, r.get(1)?)))?;
                rows.collect()
            })?;
            rows.iter().map(|(id, b)| parse(id, b)).collect()
        })
        .await
    }
}

// ---------------------------------------------------------------------------------
// DynamoDB

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::{Backend, RunKind, RunState};

    fn run(id: &str) -> Run {
        Run::new(id.into(), RunKind::Full, Backend::Embedded, "test", RunState::Exporting, 1_795_000_000)
    }

    #[tokio::test]
    async fn one_active_run_and_no_lost_updates() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        let store = EmbeddedRunStore::open(&path).unwrap();
        let mut first = run("20261122T020000Z-aaaa");
        store.create(&first).await.unwrap();
        let err = store.create(&run("20261122T030000Z-bbbb")).await.unwrap_err();
        assert!(
            matches!(&err, RunStoreError::Busy { active_run_id } if active_run_id == "20261122T020000Z-aaaa"),
            "{err}"
        );

        // A second handle (another process) reads the run, then the first saves.
        let other = EmbeddedRunStore::open(&path).unwrap();
        let mut stale = other.get(&first.run_id).await.unwrap().unwrap();
        first.enter(RunState::Exported, 1_795_000_100);
        store.save(&mut first).await.unwrap();
        assert_eq!(first.version, 1);
        stale.enter(RunState::Exported, 1_795_000_101);
        assert!(matches!(other.save(&mut stale).await, Err(RunStoreError::Conflict { .. })));

        first.enter(RunState::Done, 1_795_000_200);
        store.save(&mut first).await.unwrap();
        assert_eq!(store.active().await.unwrap(), None, "a terminal run releases the guard");
        let second = run("20261122T030000Z-bbbb");
        store.create(&second).await.unwrap();
        assert_eq!(store.active().await.unwrap().unwrap().run_id, second.run_id);
        let recent: Vec<_> = store.recent(10).await.unwrap().into_iter().map(|r| r.run_id).collect();
        assert_eq!(recent, vec!["20261122T030000Z-bbbb", "20261122T020000Z-aaaa"]);
        assert_eq!(store.get("nope").await.unwrap(), None);
    }
}
