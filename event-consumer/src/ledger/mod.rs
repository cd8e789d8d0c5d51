//! The idempotency ledger: one record per side effect per event (the confirmation
//! email of an enrollment, the retrain of a `ranking.requestUpdate`), so that an
//! event delivered five times still has its effect once.
//!
//! A record goes through two states:
//!
//! 1. **claimed**: a delivery has taken the effect on, until its lease expires.
//!    [`IdempotencyLedger::claim`] creates it only if there is no record, or if the
//!    previous claim's lease has run out (that delivery crashed).
//! 2. **done**: the effect happened; the record keeps the transport's receipt (the
//!    SES message id). Nothing ever performs the effect again.
//!
//! A delivery that fails before the effect happened releases its claim, so the
//! retry can go at once. Records expire after [`RETENTION`] (DynamoDB TTL on
//! `expiresAt`; a cleanup on open for the embedded ledger): long after EventBridge
//! and Lambda have stopped redelivering (24 hours at most).

pub mod dynamodb;
pub mod embedded;

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use schemas::{EventId, UserId};

/// How long a record outlives its last change.
pub const RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);

/// The side effects the consumer performs at most once per event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Effect {
    ConfirmationEmail,
    Retrain,
    /// Acting on one SES event (a bounce, a complaint), keyed by SES's report id.
    SesFeedback,
    /// One student's copy of a class announcement: one record per (announcement, student).
    AnnouncementEmail,
}

impl Effect {
    pub fn as_str(self) -> &'static str {
        match self {
            Effect::ConfirmationEmail => "confirmation-email",
            Effect::Retrain => "retrain",
            Effect::SesFeedback => "ses-feedback",
            Effect::AnnouncementEmail => "announcement-email",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        [Effect::ConfirmationEmail, Effect::Retrain, Effect::SesFeedback, Effect::AnnouncementEmail]
            .into_iter()
            .find(|e| e.as_str() == raw)
    }
}

impl fmt::Display for Effect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which effect of which event: `confirmation-email#<event id>`, or for an effect
/// per recipient, `announcement-email#<event id>#<student id>` (EventBridge's event
/// ids are UUIDs, so the first `#` after the effect ends the id).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EffectKey {
    pub effect: Effect,
    pub event_id: EventId,
    pub recipient: Option<UserId>,
}

impl EffectKey {
    pub fn new(effect: Effect, event_id: EventId) -> Self {
        Self { effect, event_id, recipient: None }
    }

    /// One of several effects of one event, one per recipient.
    pub fn for_recipient(effect: Effect, event_id: EventId, recipient: UserId) -> Self {
        Self { effect, event_id, recipient: Some(recipient) }
    }
}

impl fmt::Display for EffectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", self.effect, self.event_id)?;
        if let Some(recipient) = &self.recipient {
            write!(f, "#{}", recipient.as_str())?;
        }
        Ok(())
    }
}

/// Proves which claim a delivery holds, so it only ever completes or releases its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimToken(String);

impl ClaimToken {
    pub fn generate() -> Self {
        Self(uuid::Uuid::new_v4().to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What [`IdempotencyLedger::claim`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// This delivery now owns the effect until the lease expires.
    Acquired(ClaimToken),
    /// The effect already happened; `receipt` says how (e.g. the SES message id).
    Done { receipt: String },
    /// Another delivery is performing the effect right now (or crashed doing it and
    /// its lease has not run out yet). Retrying after the lease is safe.
    HeldElsewhere { lease_expires_at: i64 },
}

/// What [`IdempotencyLedger::complete`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Completion {
    /// Our claim is now recorded as done.
    Recorded,
    /// Our lease ran out while we worked and another delivery took the claim over
    /// (or released it); we recorded done anyway, because our effect did happen,
    /// but the effect may have happened twice. Logged as a warning.
    RecordedAfterTakeover,
    /// Another delivery had already recorded the effect as done: it happened twice.
    AlreadyDone,
}

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("DynamoDB {operation} on idempotency table {table}: {message}")]
    Dynamo { operation: &'static str, table: String, message: String, retryable: bool },
    #[error("embedded ledger {path}: {source}")]
    Sqlite {
        path: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error("opening the embedded ledger: {0}")]
    Open(#[from] store::StoreError),
    #[error("ledger record {key} is unreadable: {reason}")]
    Corrupt { key: String, reason: String },
    #[error("ledger task failed: {0}")]
    Task(String),
}

impl LedgerError {
    pub fn is_retryable(&self) -> bool {
        match self {
            LedgerError::Dynamo { retryable, .. } => *retryable,
            LedgerError::Sqlite { source, .. } => matches!(
                source.sqlite_error_code(),
                Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
            ),
            LedgerError::Open(e) => e.is_retryable(),
            LedgerError::Corrupt { .. } => false,
            LedgerError::Task(_) => true,
        }
    }
}

/// The port: a record per effect key, claimed, then done. `now` is epoch seconds,
/// passed in so that tests can move time.
#[async_trait]
pub trait IdempotencyLedger: Send + Sync {
    async fn claim(&self, key: &EffectKey, now: i64, lease: Duration) -> Result<Claim, LedgerError>;

    /// Records that the claimed effect happened, with its receipt.
    async fn complete(
        &self,
        key: &EffectKey,
        token: &ClaimToken,
        receipt: &str,
        now: i64,
    ) -> Result<Completion, LedgerError>;

    /// Gives up a claim whose effect did not happen, so a retry need not wait for
    /// the lease. Does nothing if the claim is no longer ours.
    async fn release(&self, key: &EffectKey, token: &ClaimToken) -> Result<(), LedgerError>;
}

pub(crate) fn retention_secs() -> i64 {
    RETENTION.as_secs() as i64
}

fn lease_secs(lease: Duration) -> i64 {
    // A zero lease would let two deliveries claim at once; one second is the floor.
    (lease.as_secs() as i64).max(1)
}
