//! The `Mailer` port and its two adapters: SES v2 in AWS ([`ses::SesMailer`]) and an
//! outbox of `.eml` files on a laptop ([`outbox::OutboxMailer`]).

pub mod outbox;
pub mod pacer;
pub mod ses;
pub mod simulator;
pub mod templates;

use std::path::PathBuf;

use async_trait::async_trait;
use schemas::{EmailAddress, EventId, UserId};

use crate::suppression::SuppressionReason;

pub use templates::{Language, RenderedEmail, render_announcement, render_enrollment};

/// One email ready to go. `Debug` shows neither addresses nor bodies.
#[derive(Clone)]
pub struct OutgoingEmail {
    /// The event the email belongs to; adapters use it as their own idempotency key
    /// where the transport has one (the outbox does, SES does not).
    pub event_id: EventId,
    /// For an event that sends one email per student (an announcement), whose copy this
    /// is; part of the outbox's file name and the SES tags.
    pub recipient: Option<UserId>,
    pub from: EmailAddress,
    pub to: EmailAddress,
    pub content: RenderedEmail,
}

impl std::fmt::Debug for OutgoingEmail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutgoingEmail").field("event_id", &self.event_id).finish_non_exhaustive()
    }
}

/// Proof that the transport took the email.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailReceipt {
    /// SES's message id, or the outbox file's `Message-ID`.
    pub message_id: String,
    /// Where the outbox wrote the `.eml` file (outbox only).
    pub outbox_file: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum MailError {
    /// The message never contains addresses: SES names identities in some errors,
    /// and those are scrubbed before the error is built (see [`scrub_addresses`]).
    ///
    /// `may_have_been_sent`: the request may have reached SES and the email may be on its
    /// way (a timeout, a 5xx, a connection lost after sending). The consumer then keeps
    /// its claim until the lease expires instead of freeing it for an immediate resend.
    #[error("SES {operation} failed ({code}): {message}")]
    Ses { operation: &'static str, code: String, message: String, retryable: bool, may_have_been_sent: bool },
    #[error("outbox {path}: {source}")]
    Outbox {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("mail task failed: {0}")]
    Task(String),
}

impl MailError {
    /// Whether the email may have gone out although sending failed. Only SES can be unsure;
    /// the outbox knows whether it wrote its file.
    pub fn may_have_been_sent(&self) -> bool {
        matches!(self, MailError::Ses { may_have_been_sent: true, .. })
    }

    /// Throttling, 5xx, timeouts and disk hiccups pass; a rejected message does not.
    pub fn is_retryable(&self) -> bool {
        match self {
            MailError::Ses { retryable, .. } => *retryable,
            MailError::Outbox { source, .. } => !matches!(
                source.kind(),
                std::io::ErrorKind::PermissionDenied
                    | std::io::ErrorKind::InvalidInput
                    | std::io::ErrorKind::InvalidFilename
            ),
            MailError::Task(_) => true,
        }
    }
}

/// Sends one email. Implementations do not deduplicate across calls on their own
/// (the consumer's ledger does that); the outbox does refuse to write a second file
/// for the same event, as a second line of defence.
#[async_trait]
pub trait Mailer: Send + Sync {
    async fn send(&self, email: &OutgoingEmail) -> Result<MailReceipt, MailError>;

    /// Puts the address on the transport's own suppression list (SES's account-level
    /// list; the outbox keeps one like it), so the transport itself refuses it from now on.
    /// Idempotent.
    async fn suppress_destination(
        &self,
        address: &EmailAddress,
        reason: SuppressionReason,
    ) -> Result<(), MailError>;
}

/// Replaces every word that holds an `@` with `<address>`, so an error text from
/// a transport ("identities failed the check: a@b.c") can be logged safely.
pub fn scrub_addresses(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        if word.contains('@') {
            out.push_str("<address>");
        } else {
            out.push_str(word);
        }
        word.clear();
    };
    for c in text.chars() {
        if c.is_whitespace() || ",;<>()[]\"'".contains(c) {
            flush(&mut word, &mut out);
            out.push(c);
        } else {
            word.push(c);
        }
    }
    flush(&mut word, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_scrubbed_from_transport_errors() {
        let raw = "Email address is not verified. The following identities failed the check in region \
                   US-EAST-1: an.nguyen@example.edu.vn, <no-reply@student.vn>";
        let scrubbed = scrub_addresses(raw);
        assert!(!scrubbed.contains('@'), "{scrubbed}");
        assert_eq!(
            scrubbed,
            "Email address is not verified. The following identities failed the check in region \
             US-EAST-1: <address>, <<address>>"
        );
    }

    #[test]
    fn outgoing_email_debug_hides_people() {
        let email = OutgoingEmail {
            event_id: EventId::parse("e-1").unwrap(),
            recipient: None,
            from: EmailAddress::parse("no-reply@student.vn").unwrap(),
            to: EmailAddress::parse("an@example.com").unwrap(),
            content: RenderedEmail { subject: "s".into(), html: "Chào An".into(), text: "Chào An".into() },
        };
        let printed = format!("{email:?}");
        assert!(!printed.contains('@') && !printed.contains("An"), "{printed}");
    }
}
