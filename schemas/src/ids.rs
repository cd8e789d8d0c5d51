//! Identifier newtypes that parse, not validate: once you hold a [`UserId`] or an
//! [`ItemId`], it is one Personalize will accept (1 to 256 characters, no control
//! characters), so nothing downstream checks again. A [`UserId`] is also never `.` or `..`:
//! the ranking API takes it as a path segment (`/ranking/{userId}`), which HTTP clients and
//! gateways resolve before the API sees it, so a student stored under `.` could never be served.
//! [`USER_ID_PATTERN`] says the same rule as a regular expression, for the OpenAPI document.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Personalize's limit for USER_ID and ITEM_ID, counted in characters.
pub const MAX_ID_CHARS: usize = 256;

/// [`UserId::parse`]'s rule as an ECMA-262 regular expression (the OpenAPI `pattern` of
/// `{userId}`), length aside (`minLength` 1, `maxLength` [`MAX_ID_CHARS`]): no control character
/// (Rust's `char::is_control`, U+0000–U+001F and U+007F–U+009F), and not `.` or `..`. Written
/// without lookahead so that every regex engine a client or test generator uses can read it;
/// `tests::the_pattern_and_the_parser_agree` holds it to the parser.
pub const USER_ID_PATTERN: &str = r"^(?:[^.\u0000-\u001F\u007F-\u009F]|\.[^.\u0000-\u001F\u007F-\u009F]|\.\.[^\u0000-\u001F\u007F-\u009F])[^\u0000-\u001F\u007F-\u009F]*$";

/// The path segments a user id may not be (see the module documentation).
const DOT_SEGMENTS: [&str; 2] = [".", ".."];

/// Why a string is not a valid identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("{kind} is empty")]
    Empty { kind: &'static str },
    #[error("{kind} is {chars} characters long; the limit is {MAX_ID_CHARS}")]
    TooLong { kind: &'static str, chars: usize },
    #[error("{kind} contains a control character at position {position}")]
    ControlCharacter { kind: &'static str, position: usize },
    #[error("{kind} {raw:?} is a path segment, not an id")]
    PathSegment { kind: &'static str, raw: &'static str },
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

/// [`check_id`], and not `.` or `..`.
fn check_user_id(kind: &'static str, raw: &str) -> Result<(), IdError> {
    if let Some(segment) = DOT_SEGMENTS.into_iter().find(|s| *s == raw) {
        return Err(IdError::PathSegment { kind, raw: segment });
    }
    check_id(kind, raw)
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $check:path) => {
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
                $check($kind, &raw)?;
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
    /// A Personalize USER_ID: a student (or teacher) of the platform; never `.` or `..`.
    UserId,
    "userId",
    check_user_id
);
id_type!(
    /// A Personalize ITEM_ID: a class (course) of the platform.
    ItemId,
    "itemId",
    check_id
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

    /// The rule, said once more in the plainest words, for the properties below.
    fn is_a_user_id(s: &str) -> bool {
        (1..=MAX_ID_CHARS).contains(&s.chars().count())
            && !s.chars().any(char::is_control)
            && s != "."
            && s != ".."
    }

    /// What the OpenAPI document says of `{userId}`: its pattern and its length limits.
    fn document_accepts(s: &str) -> bool {
        let pattern = regex_lite::Regex::new(USER_ID_PATTERN).expect("the pattern compiles");
        (1..=MAX_ID_CHARS).contains(&s.chars().count()) && pattern.is_match(s)
    }

    #[test]
    fn dot_segments_are_not_user_ids_but_may_be_item_ids() {
        assert_eq!(UserId::parse("."), Err(IdError::PathSegment { kind: "userId", raw: "." }));
        assert_eq!(
            UserId::parse("..").unwrap_err().to_string(),
            "userId \"..\" is a path segment, not an id"
        );
        for fine in ["...", ".a", "a.", "./", "a/b"] {
            assert!(UserId::parse(fine).is_ok(), "{fine:?}");
        }
        // Item ids travel in the query string, never as a path segment.
        assert!(ItemId::parse(".").is_ok());
    }

    #[test]
    fn the_pattern_and_the_parser_agree() {
        let long = "x".repeat(256);
        let too_long = "x".repeat(257);
        let wide = "ễ".repeat(256);
        let cases: &[&str] = &[
            "", ".", "..", "...", ".a", "a.", "..a", "a..", ". ", " .", "a/b", "/", "%2E", "a b", "é",
            "学生-1", "🎓", "\u{0}", "a\nb", "\t", "\u{1f}", "\u{7f}", "\u{80}", "\u{9f}", "\u{a0}",
            "\u{ad}", "\u{2028}", ".\u{0}", "\u{0}.", "s-1", &long, &too_long, &wide,
        ];
        for s in cases {
            assert_eq!(document_accepts(s), UserId::parse(*s).is_ok(), "{s:?}");
            assert_eq!(UserId::parse(*s).is_ok(), is_a_user_id(s), "{s:?}");
        }
    }

    #[test]
    fn a_student_named_dot_is_refused_at_the_event() {
        use crate::events::{DetailType, DomainEvent, EventError};
        let detail = serde_json::json!({"studentId": ".", "classId": "c-1", "email": "a@example.com"});
        let err = DomainEvent::from_detail(DetailType::StudentEnrolled, &detail).unwrap_err();
        assert!(matches!(&err, EventError::Malformed(m) if m.contains("path segment")), "{err}");
    }

    proptest! {
        #[test]
        fn the_pattern_and_the_parser_agree_on_anything(s in "\\PC{0,4}|[.a\\x00-\\x1f\\x7f-\\u{a0}]{0,4}|\\PC{250,260}", t in any::<String>()) {
            prop_assert_eq!(document_accepts(&s), UserId::parse(s.clone()).is_ok(), "input {:?}", s);
            prop_assert_eq!(document_accepts(&t), UserId::parse(t.clone()).is_ok(), "input {:?}", t);
        }

        #[test]
        fn any_short_string_without_controls_parses_and_round_trips(s in "[^\\p{Cc}]{1,256}") {
            prop_assume!(s != "." && s != "..");
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
            prop_assert_eq!(UserId::parse(s.clone()).is_ok(), is_a_user_id(&s));
        }
    }
}
