//! The interaction record: one thing a user did with an item, in the shape the
//! Personalize Interactions dataset imports.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::ids::{ItemId, UserId};

/// Exact header of the CSV Personalize imports when no EVENT_VALUE is present.
pub const CSV_HEADER: [&str; 4] = ["USER_ID", "ITEM_ID", "TIMESTAMP", "EVENT_TYPE"];
/// Exact header of the CSV Personalize imports when EVENT_VALUE is present.
pub const CSV_HEADER_WITH_VALUE: [&str; 5] = ["USER_ID", "ITEM_ID", "TIMESTAMP", "EVENT_TYPE", "EVENT_VALUE"];

/// Personalize's limit on categorical string values such as EVENT_TYPE.
pub const MAX_EVENT_TYPE_CHARS: usize = 1000;
/// Our own limit on the idempotency key; EventBridge event ids are 36 characters.
pub const MAX_EVENT_ID_CHARS: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InteractionError {
    #[error("eventType must be 1 to {MAX_EVENT_TYPE_CHARS} characters without control characters or commas")]
    BadEventType,
    #[error("eventId must be 1 to {MAX_EVENT_ID_CHARS} characters without control characters")]
    BadEventId,
    #[error("timestamp {0} is not epoch seconds between 2000-01-01 and 2100-01-01")]
    BadTimestamp(i64),
    #[error("eventValue must be a finite number")]
    BadEventValue,
}

fn plain_text(raw: &str, max_chars: usize, allow_comma: bool) -> bool {
    !raw.is_empty()
        && raw.chars().count() <= max_chars
        && !raw.chars().any(|c| c.is_control() || (!allow_comma && c == ','))
}

/// An EVENT_TYPE value such as `enrolled`. Categorical in Personalize, so kept plain.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct EventType(String);

impl EventType {
    /// A student enrolled in a class (`student.enrolled`).
    pub const ENROLLED: &'static str = "enrolled";
    /// A student handed in an assignment for a class (`student.submitAssignment`).
    pub const SUBMITTED_ASSIGNMENT: &'static str = "submitAssignment";

    pub fn parse(raw: impl Into<String>) -> Result<Self, InteractionError> {
        let raw = raw.into();
        if plain_text(&raw, MAX_EVENT_TYPE_CHARS, false) {
            Ok(Self(raw))
        } else {
            Err(InteractionError::BadEventType)
        }
    }

    pub fn enrolled() -> Self {
        Self(Self::ENROLLED.to_owned())
    }

    pub fn submitted_assignment() -> Self {
        Self(Self::SUBMITTED_ASSIGNMENT.to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for EventType {
    type Error = InteractionError;
    fn try_from(raw: String) -> Result<Self, InteractionError> {
        Self::parse(raw)
    }
}

impl From<EventType> for String {
    fn from(t: EventType) -> String {
        t.0
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The key that makes a write idempotent: a redelivered event carries the same id,
/// so storing it twice finds the first copy instead of adding a second.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct EventId(String);

impl EventId {
    pub fn parse(raw: impl Into<String>) -> Result<Self, InteractionError> {
        let raw = raw.into();
        if plain_text(&raw, MAX_EVENT_ID_CHARS, true) {
            Ok(Self(raw))
        } else {
            Err(InteractionError::BadEventId)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for EventId {
    type Error = InteractionError;
    fn try_from(raw: String) -> Result<Self, InteractionError> {
        Self::parse(raw)
    }
}

impl From<EventId> for String {
    fn from(id: EventId) -> String {
        id.0
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Epoch seconds as Personalize wants them. Bounded so that milliseconds passed by
/// mistake (13 digits) are refused instead of landing in the year 50,000.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "i64")]
pub struct Timestamp(i64);

impl Timestamp {
    /// 2000-01-01T00:00:00Z
    pub const MIN: i64 = 946_684_800;
    /// 2100-01-01T00:00:00Z
    pub const MAX: i64 = 4_102_444_800;

    pub fn from_epoch_seconds(secs: i64) -> Result<Self, InteractionError> {
        if (Self::MIN..Self::MAX).contains(&secs) {
            Ok(Self(secs))
        } else {
            Err(InteractionError::BadTimestamp(secs))
        }
    }

    pub fn from_datetime(t: time::OffsetDateTime) -> Result<Self, InteractionError> {
        Self::from_epoch_seconds(t.unix_timestamp())
    }

    pub fn epoch_seconds(self) -> i64 {
        self.0
    }
}

impl TryFrom<i64> for Timestamp {
    type Error = InteractionError;
    fn try_from(secs: i64) -> Result<Self, InteractionError> {
        Self::from_epoch_seconds(secs)
    }
}

impl From<Timestamp> for i64 {
    fn from(t: Timestamp) -> i64 {
        t.0
    }
}

/// One row of the Interactions dataset, plus the id of the event it came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Interaction {
    pub user_id: UserId,
    pub item_id: ItemId,
    pub timestamp: Timestamp,
    pub event_type: EventType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_value: Option<f32>,
    /// Not exported to Personalize: only the store uses it, to make writes idempotent.
    pub event_id: EventId,
}

impl Interaction {
    /// Checks the one field the types cannot: EVENT_VALUE must be a finite float.
    pub fn validate_value(value: Option<f32>) -> Result<Option<f32>, InteractionError> {
        match value {
            Some(v) if !v.is_finite() => Err(InteractionError::BadEventValue),
            other => Ok(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_seconds_not_milliseconds() {
        assert!(Timestamp::from_epoch_seconds(1_767_225_600).is_ok());
        assert_eq!(
            Timestamp::from_epoch_seconds(1_767_225_600_000),
            Err(InteractionError::BadTimestamp(1_767_225_600_000))
        );
    }

    #[test]
    fn event_types_are_plain_categories() {
        assert!(EventType::parse("enrolled").is_ok());
        assert_eq!(EventType::parse("a,b"), Err(InteractionError::BadEventType));
        assert_eq!(EventType::parse(""), Err(InteractionError::BadEventType));
    }

    #[test]
    fn interaction_json_round_trips() {
        let i = Interaction {
            user_id: "s-1".parse().unwrap(),
            item_id: "math-101".parse().unwrap(),
            timestamp: Timestamp::from_epoch_seconds(1_767_225_600).unwrap(),
            event_type: EventType::enrolled(),
            event_value: None,
            event_id: EventId::parse("6a7e8feb-b491-4cf7-a9f1-bf3703467718").unwrap(),
        };
        let json = serde_json::to_string(&i).unwrap();
        assert_eq!(
            json,
            r#"{"userId":"s-1","itemId":"math-101","timestamp":1767225600,"eventType":"enrolled","eventId":"6a7e8feb-b491-4cf7-a9f1-bf3703467718"}"#
        );
        assert_eq!(serde_json::from_str::<Interaction>(&json).unwrap(), i);
    }

    #[test]
    fn non_finite_values_are_refused() {
        assert_eq!(Interaction::validate_value(Some(f32::NAN)), Err(InteractionError::BadEventValue));
        assert_eq!(Interaction::validate_value(Some(2.5)), Ok(Some(2.5)));
    }
}
