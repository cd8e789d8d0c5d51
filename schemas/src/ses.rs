//! SES's email events, as a configuration set's EventBridge destination delivers them:
//! an envelope with `source` `aws.ses`, a `detail-type` such as `Email Bounced`, and as
//! `detail` SES's own event record (`eventType`, `mail`, and one object named after the
//! event: `bounce`, `complaint`, `delivery`, `deliveryDelay`, `reject`).
//!
//! Only what the consumer acts on is kept: who the event is about, what happened, and
//! an id that is the same however often (and in whatever order) the event arrives.
//! Addresses are [`EmailAddress`]es, so they never reach a log line.

use serde_json::Value;

use crate::events::{EmailAddress, EventEnvelope, EventError};
use crate::interaction::EventId;

/// The `source` of every SES event on EventBridge.
pub const SES_SOURCE: &str = "aws.ses";

/// The tag SES adds to every event of a message sent through a configuration set.
pub const CONFIGURATION_SET_TAG: &str = "ses:configuration-set";

/// The SES events the consumer takes, with their EventBridge `detail-type` and SES `eventType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SesEventKind {
    Bounce,
    Complaint,
    Delivery,
    DeliveryDelay,
    Reject,
}

impl SesEventKind {
    pub const ALL: [SesEventKind; 5] = [
        SesEventKind::Bounce,
        SesEventKind::Complaint,
        SesEventKind::Delivery,
        SesEventKind::DeliveryDelay,
        SesEventKind::Reject,
    ];

    /// The EventBridge `detail-type` (the template's rule lists these).
    pub fn detail_type(self) -> &'static str {
        match self {
            SesEventKind::Bounce => "Email Bounced",
            SesEventKind::Complaint => "Email Complaint Received",
            SesEventKind::Delivery => "Email Delivered",
            SesEventKind::DeliveryDelay => "Email Delivery Delayed",
            SesEventKind::Reject => "Email Rejected",
        }
    }

    /// SES's `eventType` in the record.
    pub fn event_type(self) -> &'static str {
        match self {
            SesEventKind::Bounce => "Bounce",
            SesEventKind::Complaint => "Complaint",
            SesEventKind::Delivery => "Delivery",
            SesEventKind::DeliveryDelay => "DeliveryDelay",
            SesEventKind::Reject => "Reject",
        }
    }

    /// The record's object that describes the event.
    fn object(self) -> &'static str {
        match self {
            SesEventKind::Bounce => "bounce",
            SesEventKind::Complaint => "complaint",
            SesEventKind::Delivery => "delivery",
            SesEventKind::DeliveryDelay => "deliveryDelay",
            SesEventKind::Reject => "reject",
        }
    }

    pub fn from_detail_type(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.detail_type() == raw)
    }
}

/// `bounceType`: only a permanent bounce means the address will never take mail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BounceType {
    Permanent,
    Transient,
    Undetermined,
}

impl BounceType {
    pub fn as_str(self) -> &'static str {
        match self {
            BounceType::Permanent => "Permanent",
            BounceType::Transient => "Transient",
            BounceType::Undetermined => "Undetermined",
        }
    }
}

/// What SES reports, per kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SesFeedback {
    Bounce { bounce_type: BounceType, sub_type: String },
    Complaint { feedback_type: Option<String> },
    Delivery,
    DeliveryDelay { delay_type: String },
    Reject { reason: String },
}

/// One SES event, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct SesEvent {
    pub kind: SesEventKind,
    /// SES's message id of the email the event is about.
    pub message_id: String,
    /// The configuration set the email went through (its `ses:configuration-set` tag).
    pub configuration_set: Option<String>,
    /// The same for every delivery of the same SES event: SES's `feedbackId` for bounces
    /// and complaints (one per report), else the kind and the message id. EventBridge's
    /// envelope id is not enough: SES can publish one report in two envelopes.
    pub dedupe_id: EventId,
    pub feedback: SesFeedback,
    /// The recipients the event is about (bounced, complained, delivered or delayed
    /// ones; for a rejection, the message's destination).
    pub recipients: Vec<EmailAddress>,
    /// Recipients SES named that are not addresses we could have sent to; counted, not kept.
    pub unreadable_recipients: usize,
}

impl SesEvent {
    /// Whether an envelope comes from SES (and should be parsed with [`SesEvent::from_envelope`]).
    pub fn is_ses(envelope_source: &str) -> bool {
        envelope_source == SES_SOURCE
    }

    pub fn from_envelope(envelope: &EventEnvelope) -> Result<Self, EventError> {
        if envelope.source != SES_SOURCE {
            return Err(EventError::Malformed(format!(
                "SES events come from {SES_SOURCE}, not {:?}",
                envelope.source
            )));
        }
        let kind = SesEventKind::from_detail_type(&envelope.detail_type)
            .ok_or_else(|| EventError::UnknownDetailType(envelope.detail_type.clone()))?;
        Self::from_record(kind, &envelope.detail)
    }

    /// Parses SES's event record (the envelope's `detail`) for an event of `kind`.
    pub fn from_record(kind: SesEventKind, record: &Value) -> Result<Self, EventError> {
        let invalid =
            |field: &'static str, reason: &str| EventError::InvalidField { field, reason: reason.to_owned() };
        let event_type = record
            .get("eventType")
            .or_else(|| record.get("notificationType"))
            .and_then(Value::as_str)
            .ok_or_else(|| invalid("eventType", "missing"))?;
        if event_type != kind.event_type() {
            return Err(invalid(
                "eventType",
                &format!("is {event_type:?}, but the detail-type says {:?}", kind.event_type()),
            ));
        }
        let mail = record.get("mail").ok_or_else(|| invalid("mail", "missing"))?;
        let message_id = text(mail, "messageId").ok_or_else(|| invalid("mail.messageId", "missing"))?;
        let configuration_set = mail
            .get("tags")
            .and_then(|tags| tags.get(CONFIGURATION_SET_TAG))
            .and_then(|names| names.get(0))
            .and_then(Value::as_str)
            .map(str::to_owned);
        let object = record.get(kind.object()).ok_or_else(|| {
            invalid("detail", &format!("a {} event has no {:?} object", event_type, kind.object()))
        })?;

        let (feedback, raw_recipients, feedback_id) = match kind {
            SesEventKind::Bounce => {
                let bounce_type = match text(object, "bounceType") {
                    Some("Permanent") => BounceType::Permanent,
                    Some("Transient") => BounceType::Transient,
                    Some("Undetermined") => BounceType::Undetermined,
                    _ => {
                        return Err(invalid(
                            "bounce.bounceType",
                            "must be Permanent, Transient or Undetermined",
                        ));
                    }
                };
                let sub_type = text(object, "bounceSubType").unwrap_or("General").to_owned();
                (
                    SesFeedback::Bounce { bounce_type, sub_type },
                    addresses_of(object, "bouncedRecipients"),
                    text(object, "feedbackId"),
                )
            }
            SesEventKind::Complaint => (
                SesFeedback::Complaint {
                    feedback_type: text(object, "complaintFeedbackType").map(str::to_owned),
                },
                addresses_of(object, "complainedRecipients"),
                text(object, "feedbackId"),
            ),
            SesEventKind::Delivery => (SesFeedback::Delivery, strings_of(object, "recipients"), None),
            SesEventKind::DeliveryDelay => (
                SesFeedback::DeliveryDelay {
                    delay_type: text(object, "delayType").unwrap_or("General").to_owned(),
                },
                addresses_of(object, "delayedRecipients"),
                None,
            ),
            SesEventKind::Reject => (
                SesFeedback::Reject { reason: text(object, "reason").unwrap_or("unknown").to_owned() },
                strings_of(mail, "destination"),
                None,
            ),
        };
        if matches!(kind, SesEventKind::Bounce | SesEventKind::Complaint) && feedback_id.is_none() {
            return Err(invalid("feedbackId", "a bounce or complaint names its report"));
        }
        if raw_recipients.is_empty() && !matches!(kind, SesEventKind::Reject) {
            return Err(invalid("recipients", "the event names no recipient"));
        }
        let dedupe_id = dedupe_id(kind, feedback_id, message_id)?;
        let mut recipients = Vec::with_capacity(raw_recipients.len());
        let mut unreadable_recipients = 0;
        for raw in raw_recipients {
            match EmailAddress::parse(bare_address(raw)) {
                Ok(address) if !recipients.contains(&address) => recipients.push(address),
                Ok(_) => {}
                Err(_) => unreadable_recipients += 1,
            }
        }
        Ok(Self {
            kind,
            message_id: message_id.to_owned(),
            configuration_set,
            dedupe_id,
            feedback,
            recipients,
            unreadable_recipients,
        })
    }

    /// A permanent bounce or a complaint: the address must never be mailed again.
    pub fn suppresses(&self) -> bool {
        matches!(
            self.feedback,
            SesFeedback::Bounce { bounce_type: BounceType::Permanent, .. } | SesFeedback::Complaint { .. }
        )
    }
}

fn text<'a>(value: &'a Value, field: &str) -> Option<&'a str> {
    value.get(field).and_then(Value::as_str).filter(|s| !s.is_empty())
}

fn addresses_of<'a>(object: &'a Value, field: &str) -> Vec<&'a str> {
    object
        .get(field)
        .and_then(Value::as_array)
        .map(|list| list.iter().filter_map(|r| text(r, "emailAddress")).collect())
        .unwrap_or_default()
}

fn strings_of<'a>(object: &'a Value, field: &str) -> Vec<&'a str> {
    object
        .get(field)
        .and_then(Value::as_array)
        .map(|list| list.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// SES names recipients bare, but a `Name <address>` form costs nothing to accept.
fn bare_address(raw: &str) -> &str {
    let raw = raw.trim();
    match (raw.rfind('<'), raw.ends_with('>')) {
        (Some(open), true) => &raw[open + 1..raw.len() - 1],
        _ => raw,
    }
}

fn dedupe_id(kind: SesEventKind, feedback_id: Option<&str>, message_id: &str) -> Result<EventId, EventError> {
    let raw = match feedback_id {
        Some(id) => format!("ses-{}-{id}", kind.event_type()),
        None => format!("ses-{}-{message_id}", kind.event_type()),
    };
    EventId::parse(raw).map_err(|_| EventError::InvalidField {
        field: "feedbackId",
        reason: "is not a plain id of at most 256 characters".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn envelope(detail_type: &str, detail: Value) -> EventEnvelope {
        serde_json::from_value(json!({
            "version": "0", "id": "8a1f", "detail-type": detail_type, "source": "aws.ses",
            "account": "123456789012", "time": "2026-12-07T02:00:00Z", "region": "us-east-1",
            "resources": [], "detail": detail,
        }))
        .unwrap()
    }

    fn mail() -> Value {
        json!({"messageId": "0100abc-000000", "destination": ["an@example.edu.vn"],
               "tags": {"ses:configuration-set": ["ranking-email"]}})
    }

    #[test]
    fn a_permanent_bounce_suppresses_its_recipients() {
        let event = SesEvent::from_envelope(&envelope(
            "Email Bounced",
            json!({"eventType": "Bounce", "mail": mail(), "bounce": {
                "bounceType": "Permanent", "bounceSubType": "General", "feedbackId": "fb-1",
                "bouncedRecipients": [{"emailAddress": "An@Example.EDU.vn"}, {"emailAddress": "not an address"}]}}),
        ))
        .unwrap();
        assert!(event.suppresses());
        assert_eq!(event.dedupe_id.as_str(), "ses-Bounce-fb-1");
        assert_eq!(event.configuration_set.as_deref(), Some("ranking-email"));
        assert_eq!(event.recipients.len(), 1);
        assert_eq!(event.recipients[0].as_str(), "An@example.edu.vn");
        assert_eq!(event.unreadable_recipients, 1);
    }

    #[test]
    fn a_transient_bounce_and_a_delivery_do_not_suppress() {
        let transient = SesEvent::from_record(
            SesEventKind::Bounce,
            &json!({"eventType": "Bounce", "mail": mail(), "bounce": {
                "bounceType": "Transient", "bounceSubType": "MailboxFull", "feedbackId": "fb-2",
                "bouncedRecipients": [{"emailAddress": "an@example.edu.vn"}]}}),
        )
        .unwrap();
        assert!(!transient.suppresses());
        let delivered = SesEvent::from_record(
            SesEventKind::Delivery,
            &json!({"eventType": "Delivery", "mail": mail(), "delivery": {"recipients": ["an@example.edu.vn"]}}),
        )
        .unwrap();
        assert!(!delivered.suppresses());
        assert_eq!(delivered.dedupe_id.as_str(), "ses-Delivery-0100abc-000000");
    }

    #[test]
    fn a_complaint_suppresses() {
        let event = SesEvent::from_record(
            SesEventKind::Complaint,
            &json!({"eventType": "Complaint", "mail": mail(), "complaint": {
                "feedbackId": "fb-3", "complaintFeedbackType": "abuse",
                "complainedRecipients": [{"emailAddress": "an@example.edu.vn"}]}}),
        )
        .unwrap();
        assert!(event.suppresses());
        assert_eq!(event.feedback, SesFeedback::Complaint { feedback_type: Some("abuse".into()) });
    }

    #[test]
    fn malformed_records_are_refused_with_the_field() {
        let cases = [
            ("Email Bounced", json!({"eventType": "Complaint", "mail": mail(), "bounce": {}}), "eventType"),
            ("Email Bounced", json!({"eventType": "Bounce", "bounce": {}}), "mail"),
            (
                "Email Bounced",
                json!({"eventType": "Bounce", "mail": mail(), "bounce": {"bounceType": "Soft",
                    "feedbackId": "x", "bouncedRecipients": [{"emailAddress": "a@b.cd"}]}}),
                "bounce.bounceType",
            ),
            (
                "Email Bounced",
                json!({"eventType": "Bounce", "mail": mail(), "bounce": {"bounceType": "Permanent",
                    "bouncedRecipients": [{"emailAddress": "a@b.cd"}]}}),
                "feedbackId",
            ),
            (
                "Email Complaint Received",
                json!({"eventType": "Complaint", "mail": mail(), "complaint": {"feedbackId": "x",
                    "complainedRecipients": []}}),
                "recipients",
            ),
        ];
        for (detail_type, detail, field) in cases {
            let err = SesEvent::from_envelope(&envelope(detail_type, detail)).unwrap_err();
            assert!(
                matches!(&err, EventError::InvalidField { field: f, .. } if *f == field),
                "{detail_type}: expected {field}, got {err}"
            );
        }
        let unknown = SesEvent::from_envelope(&envelope("Email Opened", json!({}))).unwrap_err();
        assert!(matches!(unknown, EventError::UnknownDetailType(_)), "{unknown}");
    }
}
