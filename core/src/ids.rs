//! Validated identifiers. No raw `String` crosses the domain edge.
//!
//! `call_id` and `call_type` follow the API's contract (docs/api.md): 1–256 bytes, no control characters, no `/`
//! (transports use many formats, so nothing stricter, as the anchor's PR #522 concluded).

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::Error;

/// Maximum length in bytes of a call id or call type.
pub const MAX_NAME_BYTES: usize = 256;

fn validate_name(kind: &str, value: &str) -> Result<(), Error> {
    if value.is_empty() {
        return Err(Error::Invalid(format!("{kind} must not be empty")));
    }
    if value.len() > MAX_NAME_BYTES {
        return Err(Error::Invalid(format!(
            "{kind} must be at most {MAX_NAME_BYTES} bytes"
        )));
    }
    if value.chars().any(char::is_control) {
        return Err(Error::Invalid(format!(
            "{kind} must not contain control characters"
        )));
    }
    if value.contains('/') {
        return Err(Error::Invalid(format!("{kind} must not contain '/'")));
    }
    Ok(())
}

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(Arc<str>);

        impl $name {
            /// Validates and wraps `value`.
            pub fn parse(value: impl AsRef<str>) -> Result<Self, Error> {
                let value = value.as_ref();
                validate_name($kind, value)?;
                Ok(Self(Arc::from(value)))
            }

            /// The identifier as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&*self.0, f)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = Error;
            fn try_from(value: String) -> Result<Self, Error> {
                Self::parse(value)
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.0.to_string()
            }
        }
    };
}

name_type!(
    /// The id of a call (a room) that agents join. 1–256 bytes, no control characters, no `/`.
    CallId,
    "call_id"
);
name_type!(
    /// The type of a call (`default` unless the client says otherwise). Same rules as [`CallId`].
    CallType,
    "call_type"
);

impl Default for CallType {
    fn default() -> Self {
        Self(Arc::from("default"))
    }
}

/// A session's id: a UUID, generated as version 7 so ids sort by creation time.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SessionId(Uuid);

impl SessionId {
    /// A new, time-ordered id.
    pub fn generate() -> Self {
        Self(Uuid::now_v7())
    }

    /// Parses any UUID text form. Anything else (the anchor's tests use `some-id`) is
    /// [`Error::NotFound`]: such a session cannot exist, and callers answer 404.
    pub fn parse(value: &str) -> Result<Self, Error> {
        Uuid::try_parse(value)
            .map(Self)
            .map_err(|_| Error::NotFound)
    }

    /// The underlying UUID.
    pub fn as_uuid(&self) -> &Uuid {
        &self.0
    }
}

impl From<Uuid> for SessionId {
    fn from(value: Uuid) -> Self {
        Self(value)
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0.hyphenated(), f)
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionId({})", self.0.hyphenated())
    }
}

/// An `Idempotency-Key` header value: 1–255 visible ASCII characters, scoped per call.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct IdempotencyKey(Arc<str>);

impl IdempotencyKey {
    /// Maximum key length in bytes.
    pub const MAX_LEN: usize = 255;

    /// Validates and wraps a key.
    pub fn parse(value: impl AsRef<str>) -> Result<Self, Error> {
        let value = value.as_ref();
        if value.is_empty() || value.len() > Self::MAX_LEN {
            return Err(Error::Invalid(format!(
                "Idempotency-Key must be 1 to {} characters",
                Self::MAX_LEN
            )));
        }
        if !value.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(Error::Invalid(
                "Idempotency-Key must contain only visible ASCII characters".into(),
            ));
        }
        Ok(Self(Arc::from(value)))
    }

    /// The key as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl TryFrom<String> for IdempotencyKey {
    type Error = Error;
    fn try_from(value: String) -> Result<Self, Error> {
        Self::parse(value)
    }
}

impl From<IdempotencyKey> for String {
    fn from(value: IdempotencyKey) -> String {
        value.0.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_id_accepts_transport_formats() {
        for ok in [
            "my-call-123",
            "+15551234567",
            "room:42",
            "UPPER_lower.dots",
            "ü-call",
        ] {
            assert_eq!(CallId::parse(ok).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn call_id_rejects_empty_long_control_and_slash() {
        assert!(CallId::parse("").is_err());
        assert!(CallId::parse("a".repeat(257)).is_err());
        assert!(CallId::parse("a".repeat(256)).is_ok());
        assert!(CallId::parse("a\nb").is_err());
        assert!(CallId::parse("a\u{7f}b").is_err());
        assert!(CallId::parse("a/b").is_err());
        let err = CallType::parse("x/y").unwrap_err().to_string();
        assert_eq!(err, "call_type must not contain '/'");
    }

    #[test]
    fn unparsable_session_id_is_not_found() {
        assert!(matches!(SessionId::parse("some-id"), Err(Error::NotFound)));
        let id = SessionId::generate();
        assert_eq!(SessionId::parse(&id.to_string()).unwrap(), id);
    }

    #[test]
    fn generated_session_ids_sort_by_creation() {
        let ids: Vec<_> = (0..100).map(|_| SessionId::generate()).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, sorted);
    }

    #[test]
    fn idempotency_key_is_visible_ascii() {
        assert!(IdempotencyKey::parse("abc-123_XYZ").is_ok());
        assert!(IdempotencyKey::parse("").is_err());
        assert!(IdempotencyKey::parse("has space").is_err());
        assert!(IdempotencyKey::parse("k".repeat(256)).is_err());
    }
}
