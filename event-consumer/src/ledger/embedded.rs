//! The embedded ledger: a table in the same SQLite file as the embedded store
//! (`$DATA_DIR/store.db`, opened with the store's pragmas), so a CLI run and a
//! concurrent one in another terminal see each other's claims. Every decision is
//! taken inside an `IMMEDIATE` transaction: read and write happen under the one
//! write lock, so two processes cannot both claim.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::{
    Claim, ClaimToken, Completion, EffectKey, IdempotencyLedger, LedgerError, lease_secs, retention_secs,
};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS effect_ledger (
    effect_key       TEXT PRIMARY KEY,
    effect           TEXT NOT NULL,
    event_id         TEXT NOT NULL,
    state            TEXT NOT NULL CHECK (state IN ('claimed', 'done')),
    claim_token      TEXT,
    lease_expires_at INTEGER,
    receipt          TEXT,
    updated_at       INTEGER NOT NULL,
    expires_at       INTEGER NOT NULL
);
-- Addresses not to mail (crate::suppression): no expiry, by design.
CREATE TABLE IF NOT EXISTS suppressions (
    address_key       TEXT PRIMARY KEY,
    reason            TEXT CHECK (reason IN ('bounce', 'complaint')),
    detail            TEXT,
    suppressed_at     INTEGER,
    transient_bounces INTEGER NOT NULL DEFAULT 0,
    updated_at        INTEGER NOT NULL
);
-- Students of each class, for announcements (crate::roster).
CREATE TABLE IF NOT EXISTS roster (
    class_id     TEXT NOT NULL,
    student_id   TEXT NOT NULL,
    email        TEXT NOT NULL,
    student_name TEXT,
    enrolled_at  INTEGER NOT NULL,
    PRIMARY KEY (class_id, student_id)
);
";

#[derive(Clone)]
pub struct EmbeddedLedger {
    path: PathBuf,
    conn: Arc<Mutex<Connection>>,
}

impl std::fmt::Debug for EmbeddedLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedLedger").field("path", &self.path).finish()
    }
}

/// A ledger row as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerRow {
    pub state: String,
    pub claim_token: Option<String>,
    pub lease_expires_at: Option<i64>,
    pub receipt: Option<String>,
}

impl EmbeddedLedger {
    /// Opens the ledger inside `$DATA_DIR/store.db`.
    pub fn open_in(data_dir: &Path) -> Result<Self, LedgerError> {
        Self::open(&data_dir.join(store::embedded::FILE_NAME))
    }

    pub fn open(path: &Path) -> Result<Self, LedgerError> {
        let conn = store::embedded::open_connection(path)?;
        let ledger = Self { path: path.to_owned(), conn: Arc::new(Mutex::new(conn)) };
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        ledger.with_conn(|c| {
            store::embedded::apply_schema(c, SCHEMA, |tx| {
                tx.execute("DELETE FROM effect_ledger WHERE expires_at < ?1", [now]).map(drop)
            })
        })?;
        Ok(ledger)
    }

    pub(crate) fn with_conn<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
    ) -> Result<T, LedgerError> {
        // SQLite rolls back whatever a panicking holder left open; the lock is safe to reuse.
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut conn).map_err(|source| LedgerError::Sqlite { path: self.path.display().to_string(), source })
    }

    pub(crate) async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&EmbeddedLedger) -> Result<T, LedgerError> + Send + 'static,
    ) -> Result<T, LedgerError> {
        let ledger = self.clone();
        tokio::task::spawn_blocking(move || f(&ledger)).await.map_err(|e| LedgerError::Task(e.to_string()))?
    }

    /// The row for `key`, if any (for tests and diagnostics).
    pub fn row_blocking(&self, key: &EffectKey) -> Result<Option<LedgerRow>, LedgerError> {
        self.with_conn(|c| read_row(c, &key.to_string()))
    }

    /// How many effects are recorded as done.
    pub fn done_count_blocking(&self) -> Result<u64, LedgerError> {
        self.with_conn(|c| {
            c.query_row("SELECT count(*) FROM effect_ledger WHERE state = 'done'", [], |r| r.get::<_, i64>(0))
        })
        .map(|n| n as u64)
    }

    fn claim_blocking(&self, key: &EffectKey, now: i64, lease: Duration) -> Result<Claim, LedgerError> {
        let key_text = key.to_string();
        let token = ClaimToken::generate();
        let lease_expires_at = now + lease_secs(lease);
        self.with_conn(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let claim = match read_row(&tx, &key_text)? {
                Some(row) if row.state == "done" => Claim::Done { receipt: row.receipt.unwrap_or_default() },
                Some(row) if row.lease_expires_at.is_some_and(|t| t > now) => {
                    Claim::HeldElsewhere { lease_expires_at: row.lease_expires_at.unwrap_or(now) }
                }
                // No record, or a claim whose holder ran out of lease (it crashed).
                previous => {
                    if previous.is_some() {
                        tracing::warn!(effect_key = %key_text, "taking over a claim whose lease expired");
                    }
                    tx.execute(
                        "INSERT INTO effect_ledger
                             (effect_key, effect, event_id, state, claim_token, lease_expires_at, updated_at, expires_at)
                         VALUES (?1, ?2, ?3, 'claimed', ?4, ?5, ?6, ?7)
                         ON CONFLICT (effect_key) DO UPDATE SET
                             state = 'claimed', claim_token = ?4, lease_expires_at = ?5, receipt = NULL,
                             updated_at = ?6, expires_at = ?7",
                        params![
                            key_text,
                            key.effect.as_str(),
                            key.event_id.as_str(),
                            token.as_str(),
                            lease_expires_at,
                            now,
                            now + retention_secs()
                        ],
                    )?;
                    Claim::Acquired(token.clone())
                }
            };
            tx.commit()?;
            Ok(claim)
        })
    }

    fn complete_blocking(
        &self,
        key: &EffectKey,
        token: &ClaimToken,
        receipt: &str,
        now: i64,
    ) -> Result<Completion, LedgerError> {
        let key_text = key.to_string();
        self.with_conn(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let completion = match read_row(&tx, &key_text)? {
                Some(row) if row.state == "done" => Completion::AlreadyDone,
                previous => {
                    tx.execute(
                        "INSERT INTO effect_ledger
                             (effect_key, effect, event_id, state, receipt, updated_at, expires_at)
                         VALUES (?1, ?2, ?3, 'done', ?4, ?5, ?6)
                         ON CONFLICT (effect_key) DO UPDATE SET
                             state = 'done', receipt = ?4, claim_token = NULL, lease_expires_at = NULL,
                             updated_at = ?5, expires_at = ?6",
                        params![
                            key_text,
                            key.effect.as_str(),
                            key.event_id.as_str(),
                            receipt,
                            now,
                            now + retention_secs()
                        ],
                    )?;
                    let ours = previous.is_some_and(|row| row.claim_token.as_deref() == Some(token.as_str()));
                    if ours { Completion::Recorded } else { Completion::RecordedAfterTakeover }
                }
            };
            tx.commit()?;
            Ok(completion)
        })
    }

    fn release_blocking(&self, key: &EffectKey, token: &ClaimToken) -> Result<(), LedgerError> {
        self.with_conn(|c| {
            c.execute(
                "DELETE FROM effect_ledger WHERE effect_key = ?1 AND state = 'claimed' AND claim_token = ?2",
                params![key.to_string(), token.as_str()],
            )
            .map(drop)
        })
    }
}

fn read_row(c: &Connection, key: &str) -> rusqlite::Result<Option<LedgerRow>> {
    c.query_row(
        "SELECT state, claim_token, lease_expires_at, receipt FROM effect_ledger WHERE effect_key = ?1",
        [key],
        |r| {
            Ok(LedgerRow {
                state: r.get(0)?,
                claim_token: r.get(1)?,
                lease_expires_at: r.get(2)?,
                receipt: r.get(3)?,
            })
        },
    )
    .optional()
}

#[async_trait]
impl IdempotencyLedger for EmbeddedLedger {
    async fn claim(&self, key: &EffectKey, now: i64, lease: Duration) -> Result<Claim, LedgerError> {
        let key = key.clone();
        self.run(move |l| l.claim_blocking(&key, now, lease)).await
    }

    async fn complete(
        &self,
        key: &EffectKey,
        token: &ClaimToken,
        receipt: &str,
        now: i64,
    ) -> Result<Completion, LedgerError> {
        let (key, token, receipt) = (key.clone(), token.clone(), receipt.to_owned());
        self.run(move |l| l.complete_blocking(&key, &token, &receipt, now)).await
    }

    async fn release(&self, key: &EffectKey, token: &ClaimToken) -> Result<(), LedgerError> {
        let (key, token) = (key.clone(), token.clone());
        self.run(move |l| l.release_blocking(&key, &token)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::Effect;
    use schemas::EventId;

    const LEASE: Duration = Duration::from_secs(60);
    const T0: i64 = 1_795_168_800;

    fn key(id: &str) -> EffectKey {
        EffectKey::new(Effect::ConfirmationEmail, EventId::parse(id).unwrap())
    }

    #[tokio::test]
    async fn claim_complete_then_done_forever() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = EmbeddedLedger::open_in(dir.path()).unwrap();
        let Claim::Acquired(token) = ledger.claim(&key("e-1"), T0, LEASE).await.unwrap() else {
            panic!("a fresh key is free")
        };
        assert_eq!(
            ledger.claim(&key("e-1"), T0 + 1, LEASE).await.unwrap(),
            Claim::HeldElsewhere { lease_expires_at: T0 + 60 }
        );
        assert_eq!(
            ledger.complete(&key("e-1"), &token, "msg-1", T0 + 2).await.unwrap(),
            Completion::Recorded
        );
        // Done stays done, however much later.
        assert_eq!(
            ledger.claim(&key("e-1"), T0 + 10_000, LEASE).await.unwrap(),
            Claim::Done { receipt: "msg-1".into() }
        );
        // Other effects of the same event are separate records.
        let retrain = EffectKey::new(Effect::Retrain, EventId::parse("e-1").unwrap());
        assert!(matches!(ledger.claim(&retrain, T0, LEASE).await.unwrap(), Claim::Acquired(_)));
        assert_eq!(ledger.done_count_blocking().unwrap(), 1);
    }

    #[tokio::test]
    async fn an_expired_claim_can_be_taken_over_and_the_late_holder_is_told() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = EmbeddedLedger::open_in(dir.path()).unwrap();
        let Claim::Acquired(crashed) = ledger.claim(&key("e-1"), T0, LEASE).await.unwrap() else { panic!() };
        let Claim::Acquired(second) = ledger.claim(&key("e-1"), T0 + 60, LEASE).await.unwrap() else {
            panic!("the lease ran out at T0 + 60")
        };
        assert_ne!(crashed, second);
        // The first holder was slow, not dead: it finishes and learns it was overtaken.
        assert_eq!(
            ledger.complete(&key("e-1"), &crashed, "late", T0 + 61).await.unwrap(),
            Completion::RecordedAfterTakeover
        );
        assert_eq!(
            ledger.complete(&key("e-1"), &second, "msg-2", T0 + 62).await.unwrap(),
            Completion::AlreadyDone
        );
        assert_eq!(ledger.row_blocking(&key("e-1")).unwrap().unwrap().receipt.as_deref(), Some("late"));
    }

    #[tokio::test]
    async fn release_frees_only_our_own_claim() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = EmbeddedLedger::open_in(dir.path()).unwrap();
        let Claim::Acquired(token) = ledger.claim(&key("e-1"), T0, LEASE).await.unwrap() else { panic!() };
        ledger.release(&key("e-1"), &ClaimToken::generate()).await.unwrap();
        assert!(matches!(ledger.claim(&key("e-1"), T0, LEASE).await.unwrap(), Claim::HeldElsewhere { .. }));
        ledger.release(&key("e-1"), &token).await.unwrap();
        assert!(matches!(ledger.claim(&key("e-1"), T0, LEASE).await.unwrap(), Claim::Acquired(_)));
    }

    #[tokio::test]
    async fn two_handles_on_one_file_never_both_claim() {
        // Stands in for two processes: separate connections to one file, racing.
        let dir = tempfile::tempdir().unwrap();
        let a = EmbeddedLedger::open_in(dir.path()).unwrap();
        let b = EmbeddedLedger::open_in(dir.path()).unwrap();
        for n in 0..50 {
            let k = key(&format!("e-{n}"));
            let (ra, rb) = tokio::join!(a.claim(&k, T0, LEASE), b.claim(&k, T0, LEASE));
            let acquired =
                [ra.unwrap(), rb.unwrap()].iter().filter(|c| matches!(c, Claim::Acquired(_))).count();
            assert_eq!(acquired, 1, "event {n}");
        }
    }

    #[test]
    fn old_records_are_cleaned_up_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = EmbeddedLedger::open_in(dir.path()).unwrap();
        let long_ago = 1_000_000_000;
        let Claim::Acquired(t) = ledger.claim_blocking(&key("old"), long_ago, LEASE).unwrap() else {
            panic!()
        };
        ledger.complete_blocking(&key("old"), &t, "m", long_ago).unwrap();
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let Claim::Acquired(t) = ledger.claim_blocking(&key("new"), now, LEASE).unwrap() else { panic!() };
        ledger.complete_blocking(&key("new"), &t, "m", now).unwrap();
        let reopened = EmbeddedLedger::open_in(dir.path()).unwrap();
        assert_eq!(reopened.row_blocking(&key("old")).unwrap(), None);
        assert!(reopened.row_blocking(&key("new")).unwrap().is_some());
    }
}
