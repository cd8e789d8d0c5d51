//! Why handling an event failed, and whether a redelivery can help.

use schemas::{EventError, EventId};
use store::StoreError;

use crate::ledger::{Effect, LedgerError};
use crate::mail::MailError;
use crate::mail::templates::RenderError;
use crate::retrain::RetrainError;

#[derive(Debug, thiserror::Error)]
pub enum ConsumerError {
    /// The event itself is wrong: malformed, unknown detail-type, invalid field.
    /// Nothing was written; the same bytes will be refused again.
    #[error("rejected event: {0}")]
    Rejected(#[from] EventError),
    #[error("interactions store: {0}")]
    Store(#[from] StoreError),
    #[error("confirmation email: {0}")]
    Mail(#[from] MailError),
    #[error(transparent)]
    Render(#[from] RenderError),
    #[error("idempotency ledger: {0}")]
    Ledger(#[from] LedgerError),
    /// A concurrent delivery of the same event holds the effect right now.
    #[error(
        "{effect} for event {event_id} is being performed by another delivery \
         (its claim expires in {remaining_secs}s); retry later"
    )]
    InProgressElsewhere { effect: Effect, event_id: EventId, remaining_secs: i64 },
    #[error("retrain: {0}")]
    Retrain(#[from] RetrainError),
    /// Some students of the class did not get their copy this time. The ones who did
    /// are recorded, so a redelivery sends only the rest.
    #[error(
        "announcement to class {class_id}: {sent} sent, {unfinished} not yet ({reason}); \
         a redelivery sends only the missing copies"
    )]
    AnnouncementIncomplete {
        class_id: String,
        sent: usize,
        unfinished: usize,
        reason: String,
        retryable: bool,
    },
}

impl ConsumerError {
    /// Whether delivering the same event again later can succeed. Lambda and
    /// EventBridge retry either way; this decides what we log and how the CLI exits.
    pub fn is_retryable(&self) -> bool {
        match self {
            ConsumerError::Rejected(_) | ConsumerError::Render(_) => false,
            ConsumerError::Store(e) => e.is_retryable(),
            ConsumerError::Mail(e) => e.is_retryable(),
            ConsumerError::Ledger(e) => e.is_retryable(),
            ConsumerError::InProgressElsewhere { .. } => true,
            ConsumerError::Retrain(e) => e.is_retryable(),
            ConsumerError::AnnouncementIncomplete { retryable, .. } => *retryable,
        }
    }

    /// Whether the effect being performed may have happened although this failed (an SES
    /// send that timed out after the request went out). The consumer then keeps the claim
    /// until its lease expires rather than releasing it for an immediate repeat.
    pub fn may_have_taken_effect(&self) -> bool {
        match self {
            ConsumerError::Mail(e) => e.may_have_been_sent(),
            // A repeated retrain start is recognised by its request id downstream.
            _ => false,
        }
    }

    /// A short stable name for the kind of failure (Lambda's `errorType`, metrics).
    pub fn kind(&self) -> &'static str {
        match self {
            ConsumerError::Rejected(_) => "RejectedEvent",
            ConsumerError::Store(_) => "StoreFailure",
            ConsumerError::Mail(_) => "MailFailure",
            ConsumerError::Render(_) => "RenderFailure",
            ConsumerError::Ledger(_) => "LedgerFailure",
            ConsumerError::InProgressElsewhere { .. } => "InProgressElsewhere",
            ConsumerError::Retrain(_) => "RetrainFailure",
            ConsumerError::AnnouncementIncomplete { .. } => "AnnouncementIncomplete",
        }
    }
}

/// Lambda reports `errorType` as `Retryable.<Kind>` or `NonRetryable.<Kind>`, so a
/// look at the dead-letter queue's `ERROR_CODE`/logs tells which is which.
impl From<ConsumerError> for lambda_runtime::Diagnostic {
    fn from(err: ConsumerError) -> Self {
        lambda_runtime::Diagnostic {
            error_type: aws_failure::lambda::error_type(err.is_retryable(), err.kind()),
            error_message: err.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diagnostics_say_whether_to_retry() {
        let bad: lambda_runtime::Diagnostic =
            ConsumerError::Rejected(EventError::UnknownDetailType("student.graduated".into())).into();
        assert_eq!(bad.error_type, "NonRetryable.RejectedEvent");
        assert!(bad.error_message.contains("student.graduated"));
        let busy: lambda_runtime::Diagnostic = ConsumerError::InProgressElsewhere {
            effect: Effect::ConfirmationEmail,
            event_id: EventId::parse("e-1").unwrap(),
            remaining_secs: 30,
        }
        .into();
        assert_eq!(busy.error_type, "Retryable.InProgressElsewhere");
    }
}
