//! The domain events the app publishes on the `student-event-bus`, as EventBridge
//! delivers them, parsed into types that cannot hold a bad value.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use crate::ids::{IdError, ItemId, UserId};
use crate::interaction::{EventId, EventType, Interaction, InteractionError, Timestamp};

/// The custom bus the app publishes on.
pub const EVENT_BUS_NAME: &str = "student-event-bus";

/// Every detail-type the product knows, with the one source allowed to send it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DetailType {
    StudentEnrolled,
    StudentSubmitAssignment,
    TeacherSendAnnouncement,
    RankingRequestUpdate,
    /// Published by the training pipeline on every terminal state.
    RankingPipeline,
}

impl DetailType {
    pub const ALL: [DetailType; 5] = [
        DetailType::StudentEnrolled,
        DetailType::StudentSubmitAssignment,
        DetailType::TeacherSendAnnouncement,
        DetailType::RankingRequestUpdate,
        DetailType::RankingPipeline,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DetailType::StudentEnrolled => "student.enrolled",
            DetailType::StudentSubmitAssignment => "student.submitAssignment",
            DetailType::TeacherSendAnnouncement => "teacher.sendAnnouncement",
            DetailType::RankingRequestUpdate => "ranking.requestUpdate",
            DetailType::RankingPipeline => "ranking.pipeline",
        }
    }

    /// The EventBridge `source` that publishes this detail-type.
    pub fn source(self) -> &'static str {
        match self {
            DetailType::StudentEnrolled => "api.student",
            DetailType::StudentSubmitAssignment => "api.assignment",
            DetailType::TeacherSendAnnouncement => "api.teacher",
            DetailType::RankingRequestUpdate => "api.ranking",
            DetailType::RankingPipeline => "svc.training-export",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|d| d.as_str() == raw)
    }
}

impl fmt::Display for DetailType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an event was refused. None of these get better by retrying.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EventError {
    #[error("malformed event: {0}")]
    Malformed(String),
    #[error("unknown detail-type {0:?}")]
    UnknownDetailType(String),
    #[error("detail-type {detail_type} must come from source {expected:?}, not {actual:?}")]
    UnexpectedSource { detail_type: DetailType, expected: &'static str, actual: String },
    #[error("invalid {field}: {reason}")]
    InvalidField { field: &'static str, reason: String },
    #[error(transparent)]
    Id(#[from] IdError),
    #[error(transparent)]
    Interaction(#[from] InteractionError),
}

/// The EventBridge envelope, as a rule target receives it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventEnvelope {
    #[serde(default = "default_version")]
    pub version: String,
    pub id: String,
    #[serde(rename = "detail-type")]
    pub detail_type: String,
    pub source: String,
    #[serde(default)]
    pub account: String,
    /// RFC 3339, as EventBridge writes it: `2026-11-20T10:00:00Z`.
    pub time: String,
    #[serde(default)]
    pub region: String,
    #[serde(default)]
    pub resources: Vec<String>,
    pub detail: Value,
}

fn default_version() -> String {
    "0".to_owned()
}

/// An email address SES will send to. It has no `Display` and a redacted `Debug`, so it
/// cannot slip into a log line by accident; `as_str` is for the mailer only.
///
/// SES takes addresses in ASCII only: a mailbox name (before the `@`) outside ASCII needs
/// SMTPUTF8, which SES does not offer, so it is refused here, when the event is parsed,
/// rather than by SES at send time; an internationalised domain has an ASCII form (IDNA,
/// `xn--…`), which is what is kept.
#[derive(Clone, PartialEq, Eq, Serialize)]
#[serde(into = "String")]
pub struct EmailAddress(String);

impl EmailAddress {
    pub const MAX_CHARS: usize = 254;

    pub fn parse(raw: impl Into<String>) -> Result<Self, EventError> {
        let raw = raw.into();
        let invalid = |reason: &str| EventError::InvalidField { field: "email", reason: reason.to_owned() };
        if raw.is_empty() || raw.chars().count() > Self::MAX_CHARS {
            return Err(invalid("must be 1 to 254 characters"));
        }
        let (local, domain) = raw.rsplit_once('@').ok_or_else(|| invalid("has no @"))?;
        if !local.is_ascii() {
            return Err(invalid(
                "the part before @ has characters outside ASCII, which SES cannot send to (no SMTPUTF8)",
            ));
        }
        let forbidden = |c: char| c.is_whitespace() || c.is_control() || "<>()[]\\,;:\"@".contains(c);
        if local.is_empty() || local.len() > 64 || local.chars().any(forbidden) {
            return Err(invalid("the part before @ is not a mailbox name"));
        }
        if local.starts_with('.') || local.ends_with('.') || local.contains("..") {
            return Err(invalid("the part before @ has a misplaced dot"));
        }
        let not_a_domain = || invalid("the part after @ is not a domain name");
        // UTS 46 with the STD3 rules: maps (lower case, width) and encodes each label, and
        // refuses what DNS cannot carry. An ASCII domain comes back lower-cased.
        let domain = if domain.is_empty() || domain.ends_with('.') {
            return Err(not_a_domain());
        } else {
            idna::domain_to_ascii_strict(domain).map_err(|_| not_a_domain())?
        };
        let labels: Vec<&str> = domain.split('.').collect();
        let label_ok = |l: &&str| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        };
        if labels.len() < 2 || !labels.iter().all(label_ok) || labels.last().is_some_and(|tld| tld.len() < 2)
        {
            return Err(not_a_domain());
        }
        let address = format!("{local}@{domain}");
        if address.len() > Self::MAX_CHARS {
            return Err(invalid("must be at most 254 characters in its ASCII form"));
        }
        Ok(Self(address))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EmailAddress(<redacted>)")
    }
}

impl From<EmailAddress> for String {
    fn from(e: EmailAddress) -> String {
        e.0
    }
}

impl<'de> Deserialize<'de> for EmailAddress {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        EmailAddress::parse(raw).map_err(serde::de::Error::custom)
    }
}

/// Free text shown to people (a student's or a class's name): bounded, no control
/// characters. Debug is redacted because names are personal data.
#[derive(Clone, PartialEq, Eq, Serialize)]
#[serde(into = "String")]
pub struct DisplayName(String);

impl DisplayName {
    pub const MAX_CHARS: usize = 256;

    pub fn parse(field: &'static str, raw: impl Into<String>) -> Result<Self, EventError> {
        let raw = raw.into();
        let trimmed = raw.trim();
        if trimmed.is_empty()
            || trimmed.chars().count() > Self::MAX_CHARS
            || trimmed.chars().any(char::is_control)
        {
            return Err(EventError::InvalidField {
                field,
                reason: format!("must be 1 to {} characters without control characters", Self::MAX_CHARS),
            });
        }
        if let Some(c) = trimmed.chars().find(|&c| is_refused_format_char(c)) {
            return Err(EventError::InvalidField {
                field,
                reason: format!(
                    "has the invisible format character U+{:04X}, which can reorder or split what a reader \
                     sees (bidirectional controls, line and paragraph separators are refused)",
                    u32::from(c)
                ),
            });
        }
        Ok(Self(trimmed.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for DisplayName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DisplayName(<redacted>)")
    }
}

impl From<DisplayName> for String {
    fn from(n: DisplayName) -> String {
        n.0
    }
}

impl<'de> Deserialize<'de> for DisplayName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        DisplayName::parse("name", raw).map_err(serde::de::Error::custom)
    }
}

/// Format characters a name shown in an email must not carry: the bidirectional controls
/// (marks, embeddings, overrides, isolates: they make a name display as something else, and
/// can spoof a sender or a class in a subject line), the line and paragraph separators (a
/// name breaking a header or a line), the zero-width no-break space and the invisible
/// mathematical operators. The zero-width joiner and non-joiner stay: scripts such as
/// Persian and the Indic ones need them in ordinary names.
fn is_refused_format_char(c: char) -> bool {
    matches!(
        c,
        '\u{061C}'
            | '\u{200B}'
            | '\u{200E}'
            | '\u{200F}'
            | '\u{2028}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{2069}'
            | '\u{FEFF}'
            | '\u{FFF9}'..='\u{FFFB}'
    )
}

/// `student.enrolled`: `{studentId, classId, email, studentName?, className?}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StudentEnrolled {
    pub student_id: UserId,
    pub class_id: ItemId,
    pub email: EmailAddress,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub student_name: Option<DisplayName>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class_name: Option<DisplayName>,
}

/// `student.submitAssignment`: `{studentId, fileUrl, ...}`. The class is optional
/// in the payload; without it the submission cannot become an interaction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AssignmentSubmitted {
    pub student_id: UserId,
    pub file_url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class_id: Option<ItemId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assignment_id: Option<String>,
    /// Whatever else the app sends along is kept, not rejected.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, Value>,
}

/// `teacher.sendAnnouncement`: `{teacherId, classId, content, className?, language?}`.
/// The announcement is emailed to every student enrolled in the class, so the class
/// is required; `content` is plain text (escaped in the HTML part, verbatim in the
/// text part).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AnnouncementSent {
    pub teacher_id: UserId,
    pub class_id: ItemId,
    pub content: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class_name: Option<DisplayName>,
    /// The class's language; the consumer's configured language when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<ContentLanguage>,
}

impl AnnouncementSent {
    pub const MAX_CONTENT_BYTES: usize = 100_000;
}

/// The language an email to a class is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ContentLanguage {
    Vi,
    En,
}

/// `ranking.requestUpdate`: `{trigger}`, e.g. `"nightly"` or `"manual"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RankingUpdateRequested {
    pub trigger: String,
}

/// A delivered event, parsed: which kind it is, with its payload.
#[derive(Debug, Clone, PartialEq)]
pub enum DomainEvent {
    StudentEnrolled(StudentEnrolled),
    AssignmentSubmitted(AssignmentSubmitted),
    AnnouncementSent(AnnouncementSent),
    RankingUpdateRequested(RankingUpdateRequested),
}

impl DomainEvent {
    pub fn detail_type(&self) -> DetailType {
        match self {
            DomainEvent::StudentEnrolled(_) => DetailType::StudentEnrolled,
            DomainEvent::AssignmentSubmitted(_) => DetailType::StudentSubmitAssignment,
            DomainEvent::AnnouncementSent(_) => DetailType::TeacherSendAnnouncement,
            DomainEvent::RankingUpdateRequested(_) => DetailType::RankingRequestUpdate,
        }
    }

    /// The `detail` JSON of this event, as a publisher puts it on the bus.
    pub fn detail_json(&self) -> Value {
        let value = match self {
            DomainEvent::StudentEnrolled(d) => serde_json::to_value(d),
            DomainEvent::AssignmentSubmitted(d) => serde_json::to_value(d),
            DomainEvent::AnnouncementSent(d) => serde_json::to_value(d),
            DomainEvent::RankingUpdateRequested(d) => serde_json::to_value(d),
        };
        value.expect("event payloads serialize to JSON")
    }

    /// Parses a detail payload of a known detail-type.
    pub fn from_detail(detail_type: DetailType, detail: &Value) -> Result<Self, EventError> {
        fn parse<T: serde::de::DeserializeOwned>(detail: &Value) -> Result<T, EventError> {
            T::deserialize(detail).map_err(|e| EventError::Malformed(format!("detail: {e}")))
        }
        let event = match detail_type {
            DetailType::StudentEnrolled => DomainEvent::StudentEnrolled(parse(detail)?),
            DetailType::StudentSubmitAssignment => {
                let d: AssignmentSubmitted = parse(detail)?;
                if d.file_url.trim().is_empty() || d.file_url.len() > 2048 {
                    return Err(EventError::InvalidField {
                        field: "fileUrl",
                        reason: "must be 1 to 2048 bytes".into(),
                    });
                }
                DomainEvent::AssignmentSubmitted(d)
            }
            DetailType::TeacherSendAnnouncement => {
                if detail.get("classId").is_none_or(Value::is_null) {
                    return Err(EventError::InvalidField {
                        field: "classId",
                        reason: "is required: an announcement is emailed to the students of one class".into(),
                    });
                }
                let d: AnnouncementSent = parse(detail)?;
                if d.content.trim().is_empty() || d.content.len() > AnnouncementSent::MAX_CONTENT_BYTES {
                    return Err(EventError::InvalidField {
                        field: "content",
                        reason: format!("must be 1 to {} bytes", AnnouncementSent::MAX_CONTENT_BYTES),
                    });
                }
                // Line breaks and tabs are text; other controls garble a message, and the
                // bidirectional embeddings, overrides and isolates can make it display as
                // something else. The marks (U+200E, U+200F) stay: right-to-left text needs them.
                if let Some(c) = d.content.chars().find(|&c| {
                    (c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
                        || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
                }) {
                    return Err(EventError::InvalidField {
                        field: "content",
                        reason: format!(
                            "has the control or invisible format character U+{:04X}",
                            u32::from(c)
                        ),
                    });
                }
                DomainEvent::AnnouncementSent(d)
            }
            DetailType::RankingRequestUpdate => {
                let d: RankingUpdateRequested = parse(detail)?;
                if d.trigger.is_empty() || d.trigger.len() > 64 || d.trigger.chars().any(char::is_control) {
                    return Err(EventError::InvalidField {
                        field: "trigger",
                        reason: "must be 1 to 64 plain characters".into(),
                    });
                }
                DomainEvent::RankingUpdateRequested(d)
            }
            DetailType::RankingPipeline => {
                return Err(EventError::UnknownDetailType(detail_type.as_str().to_owned()));
            }
        };
        Ok(event)
    }
}

/// An envelope whose every part checked out: id, time, source and payload.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedEvent {
    pub id: EventId,
    pub time: Timestamp,
    pub event: DomainEvent,
}

impl ParsedEvent {
    /// Parses raw JSON as EventBridge delivers it to a target.
    pub fn from_json(raw: &[u8]) -> Result<Self, EventError> {
        // JSON is UTF-8. serde_json skips the fields the envelope ignores without checking
        // their bytes, so without this a broken `"region"` passed here and failed in the
        // Lambda's path (which reads a whole `Value` first). Found by fuzz/event_parser.
        let raw = std::str::from_utf8(raw)
            .map_err(|e| EventError::Malformed(format!("envelope: not UTF-8 ({e})")))?;
        let envelope: EventEnvelope =
            serde_json::from_str(raw).map_err(|e| EventError::Malformed(format!("envelope: {e}")))?;
        Self::from_envelope(&envelope)
    }

    pub fn from_envelope(envelope: &EventEnvelope) -> Result<Self, EventError> {
        let detail_type = DetailType::parse(&envelope.detail_type)
            .filter(|d| *d != DetailType::RankingPipeline)
            .ok_or_else(|| EventError::UnknownDetailType(envelope.detail_type.clone()))?;
        if envelope.source != detail_type.source() {
            return Err(EventError::UnexpectedSource {
                detail_type,
                expected: detail_type.source(),
                actual: envelope.source.clone(),
            });
        }
        let id = EventId::parse(envelope.id.clone())?;
        let time =
            time::OffsetDateTime::parse(&envelope.time, &time::format_description::well_known::Rfc3339)
                .map_err(|e| EventError::InvalidField { field: "time", reason: e.to_string() })?;
        let time = Timestamp::from_datetime(time)?;
        let event = DomainEvent::from_detail(detail_type, &envelope.detail)?;
        Ok(Self { id, time, event })
    }

    /// The interaction this event stands for, if it stands for one: student events
    /// that name a class do (USER_ID = studentId, ITEM_ID = classId).
    pub fn interaction(&self) -> Option<Interaction> {
        let (user_id, item_id, event_type) = match &self.event {
            DomainEvent::StudentEnrolled(d) => (&d.student_id, &d.class_id, EventType::enrolled()),
            DomainEvent::AssignmentSubmitted(AssignmentSubmitted {
                student_id,
                class_id: Some(class_id),
                ..
            }) => (student_id, class_id, EventType::submitted_assignment()),
            _ => return None,
        };
        Some(Interaction {
            user_id: user_id.clone(),
            item_id: item_id.clone(),
            timestamp: self.time,
            event_type,
            event_value: None,
            event_id: self.id.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn envelope(detail_type: &str, source: &str, detail: Value) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "version": "0",
            "id": "0d079340-135a-c8c6-95c2-41fb8f496c53",
            "detail-type": detail_type,
            "source": source,
            "account": "123456789012",
            "time": "2026-11-20T10:00:00Z",
            "region": "ap-southeast-1",
            "resources": [],
            "detail": detail
        }))
        .unwrap()
    }

    #[test]
    fn invalid_utf8_in_an_ignored_field_is_malformed() {
        // Fuzz finding: the bytes of a field the envelope does not read went unchecked.
        let mut raw = envelope(
            "student.enrolled",
            "api.student",
            json!({
                "studentId": "s-1", "classId": "c-1", "email": "a@example.edu"
            }),
        );
        assert!(ParsedEvent::from_json(&raw).is_ok());
        let at = raw.windows(14).position(|w| w == b"ap-southeast-1").unwrap();
        raw[at + 2] = 0xFF;
        let err = ParsedEvent::from_json(&raw).unwrap_err();
        assert!(matches!(&err, EventError::Malformed(m) if m.contains("not UTF-8")), "{err}");
        assert!(serde_json::from_slice::<Value>(&raw).is_err(), "the Lambda's path refuses it too");
    }

    #[test]
    fn enrollment_becomes_an_interaction() {
        let raw = envelope(
            "student.enrolled",
            "api.student",
            json!({"studentId": "s-1", "classId": "A1", "email": "an.nguyen@example.edu.vn", "studentName": "Nguyễn An"}),
        );
        let parsed = ParsedEvent::from_json(&raw).unwrap();
        let i = parsed.interaction().unwrap();
        assert_eq!(
            (i.user_id.as_str(), i.item_id.as_str(), i.event_type.as_str()),
            ("s-1", "A1", "enrolled")
        );
        assert_eq!(i.timestamp.epoch_seconds(), 1_795_168_800);
        assert_eq!(i.event_id.as_str(), "0d079340-135a-c8c6-95c2-41fb8f496c53");
    }

    #[test]
    fn submissions_without_a_class_are_not_interactions() {
        let raw = envelope(
            "student.submitAssignment",
            "api.assignment",
            json!({"studentId": "1", "fileUrl": "s3://b/k"}),
        );
        let parsed = ParsedEvent::from_json(&raw).unwrap();
        assert_eq!(parsed.interaction(), None);
        let raw = envelope(
            "student.submitAssignment",
            "api.assignment",
            json!({"studentId": "1", "fileUrl": "s3://b/k", "classId": "A1", "grade": 9}),
        );
        let parsed = ParsedEvent::from_json(&raw).unwrap();
        assert_eq!(parsed.interaction().unwrap().event_type.as_str(), "submitAssignment");
        let DomainEvent::AssignmentSubmitted(d) = parsed.event else { panic!("wrong kind") };
        assert_eq!(d.extra.get("grade"), Some(&json!(9)));
    }

    #[test]
    fn bad_events_say_why() {
        let cases = [
            (b"{not json".to_vec(), "malformed event"),
            (envelope("student.graduated", "api.student", json!({})), "unknown detail-type"),
            (envelope("student.enrolled", "api.teacher", json!({})), "must come from source"),
            (
                envelope(
                    "student.enrolled",
                    "api.student",
                    json!({"studentId": "1", "classId": "A1", "email": "nope"}),
                ),
                "email",
            ),
            (
                envelope(
                    "student.enrolled",
                    "api.student",
                    json!({"studentId": "x".repeat(257), "classId": "A1", "email": "a@b.co"}),
                ),
                "257 characters",
            ),
            (envelope("ranking.requestUpdate", "api.ranking", json!({})), "missing field `trigger`"),
            (
                envelope(
                    "teacher.sendAnnouncement",
                    "api.teacher",
                    json!({"teacherId": "t-7", "content": "Hi"}),
                ),
                "invalid classId: is required",
            ),
            (
                envelope(
                    "teacher.sendAnnouncement",
                    "api.teacher",
                    json!({"teacherId": "t-7", "classId": null, "content": "Hi"}),
                ),
                "invalid classId: is required",
            ),
            (
                envelope(
                    "teacher.sendAnnouncement",
                    "api.teacher",
                    json!({"teacherId": "t-7", "classId": "A1", "content": "Hi \u{202E}txt.exe"}),
                ),
                "U+202E",
            ),
            (
                envelope(
                    "teacher.sendAnnouncement",
                    "api.teacher",
                    json!({"teacherId": "t-7", "classId": "A1", "content": "a\u{0007}b"}),
                ),
                "U+0007",
            ),
            (
                envelope(
                    "teacher.sendAnnouncement",
                    "api.teacher",
                    json!({"teacherId": "t-7", "classId": "A1", "content": "Hi", "language": "fr"}),
                ),
                "unknown variant `fr`",
            ),
        ];
        for (raw, expected) in cases {
            let err = ParsedEvent::from_json(&raw).unwrap_err().to_string();
            assert!(err.contains(expected), "{err:?} should mention {expected:?}");
        }
    }

    #[test]
    fn an_announcement_keeps_its_lines_and_language() {
        let raw = envelope(
            "teacher.sendAnnouncement",
            "api.teacher",
            json!({"teacherId": "t-7", "classId": "A1", "content": "Dòng 1\n\tDòng 2 <b>", "language": "en",
                   "className": "Toán 1"}),
        );
        let DomainEvent::AnnouncementSent(d) = ParsedEvent::from_json(&raw).unwrap().event else { panic!() };
        assert_eq!(d.content, "Dòng 1\n\tDòng 2 <b>");
        assert_eq!(d.language, Some(ContentLanguage::En));
        assert_eq!(d.class_id.as_str(), "A1");
        assert_eq!(d.class_name.as_ref().map(|n| n.as_str()), Some("Toán 1"));
    }

    #[test]
    fn addresses_ses_cannot_send_to_are_refused_with_the_reason() {
        let reason = |raw: &str| match EmailAddress::parse(raw) {
            Err(EventError::InvalidField { field: "email", reason }) => reason,
            other => panic!("{raw}: {other:?}"),
        };
        assert!(reason("nguyễn@truong.edu.vn").contains("outside ASCII"));
        assert!(reason("étudiant@école.fr").contains("outside ASCII"));
        assert!(reason("a@exa mple.com").contains("not a domain name"));
        assert!(reason("a@xn--.com").contains("not a domain name"));
        assert!(reason("a@b.co.").contains("not a domain name"));
    }

    #[test]
    fn an_internationalised_domain_is_kept_in_its_idna_form() {
        let parsed = |raw: &str| EmailAddress::parse(raw).unwrap().as_str().to_owned();
        assert_eq!(parsed("an@trường.vn"), "an@xn--trng-rib8295b.vn");
        assert_eq!(parsed("an@bücher.example"), "an@xn--bcher-kva.example");
        assert_eq!(
            parsed("An.Nguyen@Truong.EDU.vn"),
            "An.Nguyen@truong.edu.vn",
            "the domain is lower-cased, the mailbox kept"
        );
        assert_eq!(parsed("x@xn--80ak6aa92e.com"), "x@xn--80ak6aa92e.com", "already ASCII");
    }

    #[test]
    fn names_with_bidi_controls_or_separators_are_refused_and_joiners_kept() {
        for bad in [
            "An\u{202E}gnp.exe",
            "An\u{2066}x\u{2069}",
            "An\u{2028}Bcc: x",
            "An\u{2029}Bình",
            "\u{200F}An",
            "A\u{FEFF}n",
        ] {
            match DisplayName::parse("studentName", bad) {
                Err(EventError::InvalidField { field: "studentName", reason }) => {
                    assert!(reason.contains("format character U+"), "{reason}")
                }
                other => panic!("{bad:?}: {other:?}"),
            }
        }
        for ok in ["Nguyễn Văn An", "می\u{200C}خواهم", "क्\u{200D}ष", "Lê Thị Ánh"] {
            assert!(DisplayName::parse("studentName", ok).is_ok(), "{ok:?}");
        }
        let event =
            json!({"studentId": "s-1", "classId": "A1", "email": "a@b.co", "studentName": "An\u{202E}x"});
        let refused = serde_json::from_value::<StudentEnrolled>(event).unwrap_err().to_string();
        assert!(refused.contains("U+202E"), "{refused}");
    }

    #[test]
    fn emails() {
        for ok in ["a@b.co", "an.nguyen+class@truong.edu.vn", "x@xn--80ak6aa92e.com"] {
            assert!(EmailAddress::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a", "a@b", "@b.co", "a@.co", "a b@c.co", "a@b..co", "a@-b.co", ".a@b.co", "a@b.c"] {
            assert!(EmailAddress::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn personal_data_never_prints() {
        let e = StudentEnrolled {
            student_id: "s-1".parse().unwrap(),
            class_id: "A1".parse().unwrap(),
            email: EmailAddress::parse("an@example.com").unwrap(),
            student_name: Some(DisplayName::parse("studentName", "Nguyễn An").unwrap()),
            class_name: None,
        };
        let printed = format!("{e:?}");
        assert!(!printed.contains("an@example.com") && !printed.contains("Nguyễn"), "{printed}");
    }

    #[test]
    fn detail_json_round_trips() {
        let e = DomainEvent::RankingUpdateRequested(RankingUpdateRequested { trigger: "manual".into() });
        let back = DomainEvent::from_detail(e.detail_type(), &e.detail_json()).unwrap();
        assert_eq!(back, e);
    }
}
