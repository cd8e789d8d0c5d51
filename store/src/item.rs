//! The interaction item: the attributes an interaction is stored as in DynamoDB, and the
//! rules that read one back. Shared by the DynamoDB adapter (SDK attribute values) and the
//! reader of DynamoDB's own table exports (the same attributes in DynamoDB JSON), so
//! that both export paths keep and reject exactly the same records.
//!
//! Layout: partition key `userId` (S), sort key `eventId` (S); attributes `itemId` (S),
//! `timestamp` (N, epoch seconds), `eventType` (S), `eventValue` (N, optional).

use schemas::{EventId, EventType, Interaction, ItemId, Timestamp, UserId};

pub const USER_ID: &str = "userId";
pub const EVENT_ID: &str = "eventId";
pub const ITEM_ID: &str = "itemId";
pub const TIMESTAMP: &str = "timestamp";
pub const EVENT_TYPE: &str = "eventType";
pub const EVENT_VALUE: &str = "eventValue";

/// One stored attribute, as far as the rules care: a string, a number (its decimal
/// text), an explicit null, or something else (a list, a binary, a boolean ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attribute<'a> {
    S(&'a str),
    N(&'a str),
    Null,
    Other,
}

/// An attribute to store: a string or a number's decimal text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stored {
    S(String),
    N(String),
}

/// The attributes stored for `i`, by name (`eventValue` only when it has one).
pub fn attributes(i: &Interaction) -> Vec<(&'static str, Stored)> {
    let mut item = vec![
        (USER_ID, Stored::S(i.user_id.to_string())),
        (EVENT_ID, Stored::S(i.event_id.to_string())),
        (ITEM_ID, Stored::S(i.item_id.to_string())),
        (TIMESTAMP, Stored::N(i.timestamp.epoch_seconds().to_string())),
        (EVENT_TYPE, Stored::S(i.event_type.to_string())),
    ];
    if let Some(v) = i.event_value {
        item.push((EVENT_VALUE, Stored::N(v.to_string())));
    }
    item
}

fn string<'a>(get: &impl Fn(&str) -> Option<Attribute<'a>>, name: &str) -> Result<&'a str, String> {
    match get(name) {
        Some(Attribute::S(s)) => Ok(s),
        Some(_) => Err(format!("{name} is not a string")),
        None => Err(format!("{name} is missing")),
    }
}

fn number<'a>(get: &impl Fn(&str) -> Option<Attribute<'a>>, name: &str) -> Result<Option<&'a str>, String> {
    match get(name) {
        Some(Attribute::N(n)) => Ok(Some(n)),
        Some(Attribute::Null) | None => Ok(None),
        Some(_) => Err(format!("{name} is not a number")),
    }
}

/// Reads a stored item back into an interaction (`get` looks an attribute up by name),
/// or says which attribute is wrong.
pub fn decode<'a>(get: impl Fn(&str) -> Option<Attribute<'a>>) -> Result<Interaction, String> {
    let ts = number(&get, TIMESTAMP)?.ok_or_else(|| format!("{TIMESTAMP} is missing"))?;
    let ts: i64 = ts.parse().map_err(|_| format!("{TIMESTAMP} {ts:?} is not whole seconds"))?;
    let value = match number(&get, EVENT_VALUE)? {
        Some(v) => Some(v.parse::<f32>().map_err(|_| format!("{EVENT_VALUE} {v:?} is not a float"))?),
        None => None,
    };
    Ok(Interaction {
        user_id: UserId::parse(string(&get, USER_ID)?).map_err(|e| e.to_string())?,
        item_id: ItemId::parse(string(&get, ITEM_ID)?).map_err(|e| e.to_string())?,
        timestamp: Timestamp::from_epoch_seconds(ts).map_err(|e| e.to_string())?,
        event_type: EventType::parse(string(&get, EVENT_TYPE)?).map_err(|e| e.to_string())?,
        event_value: Interaction::validate_value(value).map_err(|e| e.to_string())?,
        event_id: EventId::parse(string(&get, EVENT_ID)?).map_err(|e| e.to_string())?,
    })
}

/// The item's key as far as it can be read (`?` for a part that cannot), for the
/// manifest's list of rejected records.
pub fn key_of<'a>(get: impl Fn(&str) -> Option<Attribute<'a>>) -> String {
    let part = |name| string(&get, name).unwrap_or("?");
    format!("{}/{}", part(USER_ID), part(EVENT_ID))
}
