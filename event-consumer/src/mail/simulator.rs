//! SES's mailbox simulator, offline: the outbox treats the simulator's addresses as
//! SES does and writes the events SES would publish, as the EventBridge envelopes the
//! consumer receives in AWS (`source` `aws.ses`), into `$DATA_DIR/outbox/ses-events/`.
//! `event-consumer handle` then delivers them to the consumer like the bus would
//! ([`pending_events`], [`mark_handled`]), so send → bounce → suppression → no second
//! send runs with no AWS account.
//!
//! The addresses (`…@simulator.amazonses.com`, with an optional `+label`):
//! `success` (delivered), `bounce` (hard bounce), `complaint` (delivered, then a
//! complaint), `ooto` (delivered; the out-of-office reply goes to the sender, not to
//! us) and `suppressionlist` (SES bounces it as if it were on the account-level
//! suppression list, without delivering it). Any address on the outbox's own
//! account-level list is treated like `suppressionlist`.

use std::path::{Path, PathBuf};

use schemas::EmailAddress;
use schemas::ses::{CONFIGURATION_SET_TAG, SES_SOURCE, SesEventKind};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// The simulator's domain.
pub const SIMULATOR_DOMAIN: &str = "simulator.amazonses.com";

/// Where simulated SES events wait for delivery, inside the outbox.
pub const EVENTS_DIR: &str = "ses-events";

/// Where delivered ones are moved, inside [`EVENTS_DIR`].
pub const HANDLED_DIR: &str = "handled";

/// What SES does with a message to a simulator address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Simulated {
    Success,
    Bounce,
    Complaint,
    OutOfOffice,
    SuppressionList,
}

impl Simulated {
    pub fn of(address: &EmailAddress) -> Option<Self> {
        let (local, domain) = address.as_str().rsplit_once('@')?;
        if !domain.eq_ignore_ascii_case(SIMULATOR_DOMAIN) {
            return None;
        }
        let mailbox = local.split_once('+').map_or(local, |(mailbox, _label)| mailbox);
        match mailbox.to_ascii_lowercase().as_str() {
            "success" => Some(Simulated::Success),
            "bounce" => Some(Simulated::Bounce),
            "complaint" => Some(Simulated::Complaint),
            "ooto" => Some(Simulated::OutOfOffice),
            "suppressionlist" => Some(Simulated::SuppressionList),
            _ => None,
        }
    }

    /// Whether SES hands the message to the recipient's server (and the outbox writes its `.eml`).
    pub fn delivers(self) -> bool {
        self != Simulated::SuppressionList
    }

    /// The events SES publishes for it, in order.
    pub fn events(self) -> &'static [SesEventKind] {
        match self {
            Simulated::Success | Simulated::OutOfOffice => &[SesEventKind::Delivery],
            Simulated::Bounce | Simulated::SuppressionList => &[SesEventKind::Bounce],
            Simulated::Complaint => &[SesEventKind::Delivery, SesEventKind::Complaint],
        }
    }
}

/// One message, as SES's events describe it.
pub struct SimulatedMessage<'a> {
    pub message_id: &'a str,
    pub from: &'a EmailAddress,
    pub to: &'a EmailAddress,
    pub configuration_set: Option<&'a str>,
    /// RFC 3339.
    pub timestamp: &'a str,
}

/// The EventBridge envelope SES would publish for `kind` about `message` when it was
/// sent to an address that behaves as `simulated`. Ids are derived from the message id,
/// so writing the same message's events twice gives the same events.
pub fn envelope(kind: SesEventKind, simulated: Simulated, message: &SimulatedMessage<'_>) -> Value {
    let to = message.to.as_str();
    let feedback_id = format!("{}-{}", message.message_id, kind.event_type().to_ascii_lowercase());
    let mut tags = serde_json::Map::new();
    if let Some(set) = message.configuration_set {
        tags.insert(CONFIGURATION_SET_TAG.into(), json!([set]));
    }
    let mail = json!({
        "timestamp": message.timestamp,
        "source": message.from.as_str(),
        "messageId": message.message_id,
        "destination": [to],
        "headersTruncated": false,
        "tags": tags,
    });
    let (object, body) = match kind {
        SesEventKind::Bounce => {
            let (sub_type, status, diagnostic) = if simulated == Simulated::SuppressionList {
                (
                    "OnAccountSuppressionList",
                    "5.1.1",
                    "Amazon SES did not send the message to this address because it is on the suppression list for your account.",
                )
            } else {
                ("General", "5.1.1", "smtp; 550 5.1.1 user unknown")
            };
            (
                "bounce",
                json!({
                    "bounceType": "Permanent", "bounceSubType": sub_type, "feedbackId": feedback_id,
                    "timestamp": message.timestamp, "reportingMTA": "dns; amazonses.com",
                    "bouncedRecipients": [{"emailAddress": to, "action": "failed", "status": status, "diagnosticCode": diagnostic}],
                }),
            )
        }
        SesEventKind::Complaint => (
            "complaint",
            json!({
                "feedbackId": feedback_id, "complaintFeedbackType": "abuse", "timestamp": message.timestamp,
                "complainedRecipients": [{"emailAddress": to}],
            }),
        ),
        SesEventKind::Delivery => (
            "delivery",
            json!({"timestamp": message.timestamp, "recipients": [to], "smtpResponse": "250 2.6.0 Message received", "reportingMTA": "a8-70.smtp-out.amazonses.com"}),
        ),
        SesEventKind::DeliveryDelay => (
            "deliveryDelay",
            json!({"timestamp": message.timestamp, "delayType": "TransientCommunicationFailure", "delayedRecipients": [{"emailAddress": to}]}),
        ),
        SesEventKind::Reject => ("reject", json!({"reason": "Bad content"})),
    };
    let mut detail = json!({"eventType": kind.event_type(), "mail": mail});
    detail[object] = body;
    json!({
        "version": "0",
        "id": hex::encode(&Sha256::digest(feedback_id.as_bytes())[..16]),
        "detail-type": kind.detail_type(),
        "source": SES_SOURCE,
        "account": "000000000000",
        "time": message.timestamp,
        "region": "local",
        "resources": [],
        "detail": detail,
    })
}

/// The file an event is written to: `<message>-<n>-<kind>.json`, so a listing sorts
/// them in the order SES would publish them.
pub fn event_file(events_dir: &Path, message_stem: &str, index: usize, kind: SesEventKind) -> PathBuf {
    events_dir.join(format!("{message_stem}-{index}-{}.json", kind.event_type().to_ascii_lowercase()))
}

/// Simulated events not yet delivered, oldest first (by name within a message).
pub fn pending_events(outbox_dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let dir = outbox_dir.join(EVENTS_DIR);
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry?;
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if entry.file_type()?.is_file() && name.ends_with(".json") && !name.starts_with('.') {
            let modified = entry.metadata()?.modified()?;
            files.push((modified, path));
        }
    }
    files.sort();
    Ok(files.into_iter().map(|(_, path)| path).collect())
}

/// Moves a delivered event out of the way (into `ses-events/handled/`).
pub fn mark_handled(event_file: &Path) -> std::io::Result<PathBuf> {
    let dir = event_file.parent().unwrap_or(Path::new(".")).join(HANDLED_DIR);
    std::fs::create_dir_all(&dir)?;
    let target = dir.join(event_file.file_name().unwrap_or_default());
    std::fs::rename(event_file, &target)?;
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;
    use schemas::EventEnvelope;
    use schemas::ses::SesEvent;

    fn address(raw: &str) -> EmailAddress {
        EmailAddress::parse(raw).unwrap()
    }

    #[test]
    fn simulator_addresses_are_recognised_with_labels() {
        assert_eq!(Simulated::of(&address("bounce@simulator.amazonses.com")), Some(Simulated::Bounce));
        assert_eq!(
            Simulated::of(&address("Complaint+t1@simulator.amazonses.com")),
            Some(Simulated::Complaint)
        );
        assert_eq!(
            Simulated::of(&address("suppressionlist@simulator.amazonses.com")),
            Some(Simulated::SuppressionList)
        );
        assert_eq!(Simulated::of(&address("ooto@simulator.amazonses.com")), Some(Simulated::OutOfOffice));
        assert_eq!(Simulated::of(&address("success@simulator.amazonses.com")), Some(Simulated::Success));
        assert_eq!(Simulated::of(&address("bounce@example.com")), None);
        assert_eq!(Simulated::of(&address("nobody@simulator.amazonses.com")), None);
    }

    #[test]
    fn every_simulated_event_parses_as_the_consumer_parses_ses_events() {
        let from = address("no-reply@student-system.local");
        for simulated in [
            Simulated::Success,
            Simulated::Bounce,
            Simulated::Complaint,
            Simulated::OutOfOffice,
            Simulated::SuppressionList,
        ] {
            let to = address("x+1@simulator.amazonses.com");
            let message = SimulatedMessage {
                message_id: "e-1@outbox.local",
                from: &from,
                to: &to,
                configuration_set: Some("local"),
                timestamp: "2026-12-07T02:00:00Z",
            };
            for kind in simulated.events() {
                let raw = envelope(*kind, simulated, &message);
                let envelope: EventEnvelope = serde_json::from_value(raw).unwrap();
                let event = SesEvent::from_envelope(&envelope).unwrap();
                assert_eq!(event.kind, *kind);
                assert_eq!(event.recipients, vec![to.clone()]);
                assert_eq!(event.configuration_set.as_deref(), Some("local"));
                let suppresses = matches!(kind, SesEventKind::Bounce | SesEventKind::Complaint);
                assert_eq!(event.suppresses(), suppresses, "{simulated:?} {kind:?}");
            }
        }
    }
}
