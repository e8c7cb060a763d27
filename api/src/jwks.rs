//! [`JwksKeys`]: the rotating public keys an identity provider (Cognito, Auth0, Okta, Entra)
//! publishes at a JWKS URL (`AUTH_JWT_JWKS_URL`), selected by each token's `kid`.
//!
//! - **Start-up fails closed**: the URL is read once before the policy exists; if it cannot
//!   be read within [`FETCH_TIMEOUT`] (or holds no usable key), there is no policy and no
//!   server.
//! - **HTTPS only** (a key set over plain HTTP could be swapped by anyone on the path),
//!   except on loopback, for tests and local identity providers.
//! - **Cached** for the response's `Cache-Control: max-age`, bounded to
//!   [`MIN_CACHE`]..[`MAX_CACHE`] ([`DEFAULT_CACHE`] without one); an expired set is
//!   refetched on the next token, and kept (with a warning) when the refetch fails, so an
//!   identity provider's blip does not lock everyone out.
//! - **Rotation**: a token whose `kid` is not in the set refetches it, at most once per
//!   [`UNKNOWN_KID_REFETCH`] (a stream of forged `kid`s cannot turn into a stream of
//!   requests to the identity provider).
//! - **One algorithm**: only keys that suit the policy's pinned algorithm (RS256: RSA keys;
//!   ES256: P-256 keys; a JWK's own `alg`, when given, must be it) are used. A `kid` that
//!   names a key of another kind is refused at once (401), never tried with the wrong
//!   algorithm and never a reason to refetch.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use tokio::sync::{Mutex, RwLock};
use tokio::time::Instant;

use crate::auth::AuthConfigError;

/// How long reading the key set may take (at start-up and on each refetch).
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(2);
/// The shortest time a key set is cached, whatever the server says (`no-cache` included).
pub const MIN_CACHE: Duration = Duration::from_secs(60);
/// The longest time a key set is cached.
pub const MAX_CACHE: Duration = Duration::from_secs(24 * 3600);
/// How long a key set without `Cache-Control: max-age` is cached.
pub const DEFAULT_CACHE: Duration = Duration::from_secs(600);
/// At most one refetch for an unknown `kid` per this long.
pub const UNKNOWN_KID_REFETCH: Duration = Duration::from_secs(60);

/// Why no key verifies a token (the policy answers 401 with it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyRefusal {
    /// The token names no `kid` (a key set needs it to choose).
    NoKid,
    /// No key of the set has this `kid`, even after a refetch.
    UnknownKid,
    /// The `kid` names a key of another algorithm.
    WrongAlgorithm,
}

struct KeySet {
    keys: HashMap<String, DecodingKey>,
    /// `kid`s of keys that do not suit the algorithm.
    other: HashSet<String>,
    expires: Instant,
}

/// The keys at one JWKS URL (see the module docs).
pub struct JwksKeys {
    url: String,
    algorithm: Algorithm,
    client: reqwest::Client,
    set: RwLock<KeySet>,
    /// Serializes refetches; holds when the last unknown-`kid` refetch happened.
    refetch: Mutex<Option<Instant>>,
}

impl std::fmt::Debug for JwksKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwksKeys")
            .field("url", &self.url)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

fn invalid(url: &str, reason: impl Into<String>) -> AuthConfigError {
    AuthConfigError::Jwks {
        url: url.to_owned(),
        reason: reason.into(),
    }
}

/// HTTPS, or HTTP to a loopback host.
fn check_url(url: &str) -> Result<(), AuthConfigError> {
    let parsed: http::Uri = url.parse().map_err(|_| invalid(url, "is not a URL"))?;
    let host = parsed.host().unwrap_or_default();
    let loopback = host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    match parsed.scheme_str() {
        Some("https") => Ok(()),
        Some("http") if loopback => Ok(()),
        _ => Err(invalid(url, "must be https:// (http:// only on loopback)")),
    }
}

/// `max-age` of a `Cache-Control` value, bounded.
fn cache_for(cache_control: Option<&str>) -> Duration {
    let Some(value) = cache_control else {
        return DEFAULT_CACHE;
    };
    let max_age = value.split(',').find_map(|part| {
        let (name, seconds) = part.trim().split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("max-age")
            .then(|| seconds.trim().trim_matches('"').parse::<u64>().ok())
            .flatten()
    });
    match max_age {
        Some(seconds) => Duration::from_secs(seconds).clamp(MIN_CACHE, MAX_CACHE),
        // no-cache, no-store: as short as allowed.
        None if value.split(',').any(|part| {
            let part = part.trim().to_ascii_lowercase();
            part == "no-cache" || part == "no-store"
        }) =>
        {
            MIN_CACHE
        }
        None => DEFAULT_CACHE,
    }
}

/// Whether `jwk` may verify `algorithm` tokens.
fn suits(jwk: &Jwk, algorithm: Algorithm) -> bool {
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        return false;
    }
    let declared = match jwk.common.key_algorithm {
        None => true,
        Some(KeyAlgorithm::RS256) => algorithm == Algorithm::RS256,
        Some(KeyAlgorithm::ES256) => algorithm == Algorithm::ES256,
        Some(_) => false,
    };
    let kind = match (&jwk.algorithm, algorithm) {
        (AlgorithmParameters::RSA(_), Algorithm::RS256) => true,
        (AlgorithmParameters::EllipticCurve(ec), Algorithm::ES256) => {
            ec.curve == EllipticCurve::P256
        }
        _ => false,
    };
    declared && kind
}

impl JwksKeys {
    /// Reads the key set at `url` for `algorithm` (RS256 or ES256) within [`FETCH_TIMEOUT`]:
    /// an error (the caller fails closed) if it cannot, or if no key suits the algorithm.
    pub async fn load(url: &str, algorithm: Algorithm) -> Result<Self, AuthConfigError> {
        check_url(url)?;
        if !matches!(algorithm, Algorithm::RS256 | Algorithm::ES256) {
            return Err(invalid(url, "key sets are for RS256 or ES256"));
        }
        let client = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .connect_timeout(FETCH_TIMEOUT)
            // Fetches are minutes apart, and `serve` reads the set at start-up on a runtime
            // of its own: no connection outlives a fetch.
            .pool_max_idle_per_host(0)
            .build()
            .map_err(|e| invalid(url, format!("no HTTP client: {e}")))?;
        let keys = Self {
            url: url.to_owned(),
            algorithm,
            client,
            set: RwLock::new(KeySet {
                keys: HashMap::new(),
                other: HashSet::new(),
                expires: Instant::now(),
            }),
            refetch: Mutex::new(None),
        };
        let set = keys.fetch().await.map_err(|reason| invalid(url, reason))?;
        if set.keys.is_empty() {
            return Err(invalid(
                url,
                format!("holds no {algorithm:?} signing key with a kid"),
            ));
        }
        *keys.set.write().await = set;
        Ok(keys)
    }

    async fn fetch(&self) -> Result<KeySet, String> {
        let response = tokio::time::timeout(FETCH_TIMEOUT, async {
            let response = self
                .client
                .get(&self.url)
                .header(http::header::ACCEPT, "application/json")
                .send()
                .await
                .map_err(|e| format!("could not be read: {e}"))?;
            if !response.status().is_success() {
                return Err(format!("answered {}", response.status()));
            }
            let cache = cache_for(
                response
                    .headers()
                    .get(http::header::CACHE_CONTROL)
                    .and_then(|v| v.to_str().ok()),
            );
            let body = response
                .bytes()
                .await
                .map_err(|e| format!("could not be read: {e}"))?;
            Ok((cache, body))
        })
        .await
        .map_err(|_| format!("did not answer within {FETCH_TIMEOUT:?}"))??;
        let (cache, body) = response;
        let doc: serde_json::Value =
            serde_json::from_slice(&body).map_err(|_| "is not a JSON key set".to_owned())?;
        let entries = doc["keys"]
            .as_array()
            .ok_or_else(|| "is not a key set (no \"keys\" array)".to_owned())?;
        let mut set = KeySet {
            keys: HashMap::new(),
            other: HashSet::new(),
            expires: Instant::now() + cache,
        };
        for entry in entries {
            // A key of a kind this build does not know is skipped, not fatal.
            let Ok(jwk) = serde_json::from_value::<Jwk>(entry.clone()) else {
                if let Some(kid) = entry["kid"].as_str() {
                    set.other.insert(kid.to_owned());
                }
                continue;
            };
            let Some(kid) = jwk.common.key_id.clone() else {
                continue;
            };
            match DecodingKey::from_jwk(&jwk) {
                Ok(key) if suits(&jwk, self.algorithm) => {
                    set.keys.insert(kid, key);
                }
                _ => {
                    set.other.insert(kid);
                }
            }
        }
        Ok(set)
    }

    /// Replaces the set with a fresh one; keeps the old one if the refetch fails.
    async fn refresh(&self) {
        match self.fetch().await {
            Ok(set) => *self.set.write().await = set,
            Err(reason) => {
                tracing::warn!(url = %self.url, %reason, "could not refetch the JWT key set; keeping the cached keys");
                // Try again after the shortest cache time, not on every token.
                self.set.write().await.expires = Instant::now() + MIN_CACHE;
            }
        }
    }

    /// The key for a token whose header names `kid`.
    pub async fn key(&self, kid: Option<&str>) -> Result<DecodingKey, KeyRefusal> {
        let kid = kid.ok_or(KeyRefusal::NoKid)?;
        if self.set.read().await.expires <= Instant::now() {
            let _one = self.refetch.lock().await;
            // Another token may have refreshed it while this one waited.
            if self.set.read().await.expires <= Instant::now() {
                self.refresh().await;
            }
        }
        if let Some(found) = self.lookup(kid).await {
            return found;
        }
        {
            let mut last = self.refetch.lock().await;
            let due = last.is_none_or(|at| at.elapsed() >= UNKNOWN_KID_REFETCH);
            if due {
                *last = Some(Instant::now());
                tracing::info!(url = %self.url, "a token names an unknown kid: refetching the key set");
                self.refresh().await;
            }
        }
        self.lookup(kid)
            .await
            .unwrap_or(Err(KeyRefusal::UnknownKid))
    }

    async fn lookup(&self, kid: &str) -> Option<Result<DecodingKey, KeyRefusal>> {
        let set = self.set.read().await;
        if let Some(key) = set.keys.get(kid) {
            return Some(Ok(key.clone()));
        }
        set.other
            .contains(kid)
            .then_some(Err(KeyRefusal::WrongAlgorithm))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_https_or_loopback_http() {
        assert!(check_url("https://idp.example/.well-known/jwks.json").is_ok());
        assert!(check_url("http://127.0.0.1:8080/jwks").is_ok());
        assert!(check_url("http://[::1]:8080/jwks").is_ok());
        assert!(check_url("http://localhost/jwks").is_ok());
        assert!(check_url("http://idp.example/jwks").is_err());
        assert!(check_url("ftp://idp.example/jwks").is_err());
        assert!(check_url("not a url").is_err());
    }

    #[test]
    fn cache_control_is_honoured_within_bounds() {
        assert_eq!(cache_for(None), DEFAULT_CACHE);
        assert_eq!(
            cache_for(Some("public, max-age=3600")),
            Duration::from_secs(3600)
        );
        assert_eq!(cache_for(Some("max-age=5")), MIN_CACHE);
        assert_eq!(cache_for(Some("max-age=999999999")), MAX_CACHE);
        assert_eq!(cache_for(Some("no-cache")), MIN_CACHE);
        assert_eq!(cache_for(Some("public")), DEFAULT_CACHE);
        assert_eq!(cache_for(Some("public, no-transform")), DEFAULT_CACHE);
        assert_eq!(cache_for(Some("no-store")), MIN_CACHE);
    }
}
