//! Standard Webhooks signatures: `webhook-id`, `webhook-timestamp` and `webhook-signature`
//! (`v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`), keyed by the base64 bytes of a
//! `whsec_` secret.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// The header carrying the event's id (the same on every redelivery).
pub const WEBHOOK_ID: &str = "webhook-id";
/// The header carrying the attempt's Unix time in seconds.
pub const WEBHOOK_TIMESTAMP: &str = "webhook-timestamp";
/// The header carrying the signature(s).
pub const WEBHOOK_SIGNATURE: &str = "webhook-signature";

/// The prefix of a secret's text form.
pub const SECRET_PREFIX: &str = "whsec_";

/// A signing secret: at least 24 random bytes (the specification asks for 24 to 64).
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Why a secret's text is not one.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretError {
    /// Missing `whsec_`.
    #[error(
        "a webhook secret starts with whsec_ followed by base64 (e.g. whsec_{example})",
        example = "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    )]
    Prefix,
    /// Not base64 after the prefix.
    #[error("the webhook secret after whsec_ is not base64")]
    Base64,
    /// Too short.
    #[error("the webhook secret has {0} bytes; it needs at least 24")]
    Short(usize),
}

impl Secret {
    /// Parses `whsec_<base64>`.
    pub fn parse(text: &str) -> Result<Self, SecretError> {
        let encoded = text
            .trim()
            .strip_prefix(SECRET_PREFIX)
            .ok_or(SecretError::Prefix)?;
        let bytes = STANDARD.decode(encoded).map_err(|_| SecretError::Base64)?;
        if bytes.len() < 24 {
            return Err(SecretError::Short(bytes.len()));
        }
        Ok(Self(bytes))
    }

    /// `v1,<signature>` of one attempt.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        // HMAC takes a key of any length: this cannot fail.
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }

    /// Whether `header` (space-separated `v1,<sig>` entries) holds this attempt's signature,
    /// compared in constant time. For receivers written in Rust (docs/events.md).
    pub fn verify(&self, id: &str, timestamp: i64, body: &[u8], header: &str) -> bool {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
        mac.update(format!("{id}.{timestamp}.").as_bytes());
        mac.update(body);
        header.split(' ').any(|entry| {
            entry
                .strip_prefix("v1,")
                .and_then(|sig| STANDARD.decode(sig).ok())
                .is_some_and(|sig| mac.clone().verify_slice(&sig).is_ok())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // 24 bytes, the shortest secret the specification allows.
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    #[test]
    fn a_short_or_malformed_secret_is_refused_with_its_reason() {
        assert_eq!(
            Secret::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap_err(),
            SecretError::Prefix
        );
        assert_eq!(Secret::parse("whsec_***").unwrap_err(), SecretError::Base64);
        assert_eq!(
            Secret::parse("whsec_c2hvcnQ=").unwrap_err(),
            SecretError::Short(5)
        );
        assert!(format!("{:?}", Secret::parse(SECRET).unwrap()).contains("redacted"));
    }

    #[test]
    fn a_signature_verifies_and_a_changed_byte_does_not() {
        let secret = Secret::parse(SECRET).unwrap();
        let body = br#"{"type":"session.started"}"#;
        let sig = secret.sign("evt_1", 1_700_000_000, body);
        assert!(sig.starts_with("v1,"));
        assert!(secret.verify("evt_1", 1_700_000_000, body, &format!("v1,bogus {sig}")));
        assert!(!secret.verify("evt_1", 1_700_000_001, body, &sig));
        assert!(!secret.verify("evt_2", 1_700_000_000, body, &sig));
        assert!(!secret.verify("evt_1", 1_700_000_000, b"{}", &sig));
    }
}
