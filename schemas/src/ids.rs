//! Identifier newtypes that parse, not validate: once you hold a [`UserId`] or an
//! [`ItemId`], it is one Personalize will accept (1 to 256 characters, no control
//! characters), so nothing downstream checks again.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Personalize's limit for USER_ID and ITEM_ID, counted in characters.
pub const MAX_ID_CHARS: usize = 256;

/// Why a string is not a valid identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("{kind} is empty")]
    Empty { kind: &'static str },
    #[error("{kind} is {chars} characters long; the limit is {MAX_ID_CHARS}")]
    TooLong { kind: &'static str, chars: usize },
    #[error("{kind} contains a control character at position {position}")]
    ControlCharacter { kind: &'static str, position: usize },
}

fn check_id(kind: &'static str, raw: &str) -> Result<(), IdError> {
    if raw.is_empty() {
        return Err(IdError::Empty { kind });
    }
    // Count characters, stopping early: a hostile 10 MB id must not be walked twice.
    let mut chars = 0;
    for (position, c) in raw.chars().enumerate() {
        if c.is_control() {
            return Err(IdError::ControlCharacter { kind, position });
        }
        chars += 1;
        if chars > MAX_ID_CHARS {
            return Err(IdError::TooLong { kind, chars: raw.chars().count() });
        }
    }
    Ok(())
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        ///
        /// Held as `Arc<str>`: ids are immutable and copied into caches, snapshots and
        /// responses, where a clone should be a reference count, not an allocation.
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(Arc<str>);

        impl $name {
            /// What this identifier is called in error messages.
            pub const KIND: &'static str = $kind;

            /// Parses `raw` into an identifier, or says exactly what is wrong with it.
            pub fn parse(raw: impl Into<String>) -> Result<Self, IdError> {
                let raw = raw.into();
                check_id($kind, &raw)?;
                Ok(Self(Arc::from(raw)))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }

            pub fn into_inner(self) -> String {
                self.0.to_string()
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(raw: String) -> Result<Self, IdError> {
                Self::parse(raw)
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdError;
            fn from_str(raw: &str) -> Result<Self, IdError> {
                Self::parse(raw)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0.to_string()
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

id_type!(
    /// A Personalize USER_ID: a student (or teacher) of the platform.
    UserId,
    "userId"
);
id_type!(
    /// A Personalize ITEM_ID: a class (course) of the platform.
    ItemId,
    "itemId"
);

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_the_limits() {
        assert!(UserId::parse("a").is_ok());
        assert!(UserId::parse("x".repeat(256)).is_ok());
        // 256 characters, 768 bytes: the limit is in characters.
        assert!(ItemId::parse("ễ".repeat(256)).is_ok());
    }

    #[test]
    fn rejects_with_a_reason() {
        assert_eq!(UserId::parse(""), Err(IdError::Empty { kind: "userId" }));
        assert_eq!(ItemId::parse("x".repeat(257)), Err(IdError::TooLong { kind: "itemId", chars: 257 }));
        assert_eq!(UserId::parse("ab\ncd"), Err(IdError::ControlCharacter { kind: "userId", position: 2 }));
        assert_eq!(
            UserId::parse("x".repeat(300)).unwrap_err().to_string(),
            "userId is 300 characters long; the limit is 256"
        );
    }

    #[test]
    fn serde_parses_too() {
        let id: ItemId = serde_json::from_str("\"class-1\"").unwrap();
        assert_eq!(id.as_str(), "class-1");
        assert!(serde_json::from_str::<ItemId>("\"\"").is_err());
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"class-1\"");
    }

    proptest! {
        #[test]
        fn any_short_string_without_controls_parses_and_round_trips(s in "[^\\p{Cc}]{1,256}") {
            let id = UserId::parse(s.clone()).unwrap();
            prop_assert_eq!(id.as_str(), s.as_str());
            let back: UserId = serde_json::from_str(&serde_json::to_string(&id).unwrap()).unwrap();
            prop_assert_eq!(back, id);
        }

        #[test]
        fn parse_agrees_with_the_rule(s in "\\PC{0,300}|[a\\x00-\\x1f\\x7f]{0,8}") {
            let chars = s.chars().count();
            let ok = (1..=MAX_ID_CHARS).contains(&chars) && !s.chars().any(char::is_control);
            prop_assert_eq!(ItemId::parse(s.clone()).is_ok(), ok, "input {:?}", s);
        }

        #[test]
        fn arbitrary_strings_follow_the_rule(s in any::<String>()) {
            let ok = (1..=MAX_ID_CHARS).contains(&s.chars().count()) && !s.chars().any(char::is_control);
            prop_assert_eq!(UserId::parse(s).is_ok(), ok);
        }
    }
}
