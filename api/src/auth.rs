//! Built-in permission policies on the [`hooks`](crate::hooks): allow-all (no hooks, the
//! local default, as the anchor) and [`JwtPolicy`].
//!
//! # The JWT policy
//! - **Token**: `Authorization: Bearer <jwt>`. The sendBeacon close
//!   (`POST /calls/{call_id}/sessions/{session_id}/close`) and a browser's WebSocket join
//!   (`GET /calls/{call_id}/ws`) cannot send headers, so those two routes also take
//!   `?token=<jwt>`, with the same checks. Tokens are never logged (the trace
//!   layer records the path without its query) and never echoed in an error.
//! - **Keys**: HS256 (a shared secret of at least 32 bytes), RS256 or ES256 (a PEM public
//!   key), from configuration, read once at start-up ([`JwtPolicy::from_vars`]); or an
//!   identity provider's rotating keys at a JWKS URL (`AUTH_JWT_JWKS_URL`, the `jwks`
//!   feature, [`JwtPolicy::load`]), chosen by each token's `kid` (see [`crate::jwks`]).
//!   Keys an identity provider publishes sign tokens for all its applications, so a key set
//!   needs `AUTH_JWT_ISSUER` and `AUTH_JWT_AUDIENCE` (unless
//!   `AUTH_JWT_ALLOW_UNBOUND_TOKENS=true`).
//! - **Claims**: `sub` and `exp` are required (60 s of clock leeway); the scopes are read from
//!   `scope` (OAuth), `scp` (Okta, Entra) and `roles` (Entra's app roles), each a
//!   space-separated string or an array, of `sessions:start`, `sessions:close`,
//!   `sessions:view`, `metrics:view`, `calls:join` (others are ignored; with
//!   `AUTH_JWT_SCOPE_PREFIX`, e.g. Cognito's `switchboard/`, only prefixed ones count);
//!   `calls` (an array of call ids) and/or `call_prefix` restrict the calls the token may
//!   touch (neither: every call). With `AUTH_JWT_ISSUER` set `iss` must match; with
//!   `AUTH_JWT_AUDIENCE`, `aud` must include it, or a token without `aud` must name it as its
//!   `client_id` (Cognito's access tokens).
//! - **Answers**: no token, a malformed one, a bad signature, the wrong algorithm, an expired
//!   token or a missing claim → 401 with `WWW-Authenticate: Bearer`; a valid token without
//!   the action's scope or for another call → 403. Hooks run before any lookup, so the work
//!   and the answer do not depend on whether the session exists.
//! - **Actions**: start `sessions:start`; close (both routes) `sessions:close`; get one
//!   session and list one call `sessions:view`; metrics `metrics:view`; the fleet metrics
//!   (`GET /metrics` under `serve`) `metrics:view` with no call restriction; `GET /sessions`
//!   `sessions:view`, showing only the calls the token may view; joining the local call
//!   `calls:join`.

use std::fmt;
use std::sync::Arc;

use http::Method;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::hooks::{
    CallFilter, ListPermission, Permission, PermissionHooks, Rejection, RequestInfo,
};

/// `none` (default: allow all) or `jwt`.
pub const AUTH_MODE: &str = "AUTH_MODE";
/// `HS256`, `RS256` or `ES256`.
pub const AUTH_JWT_ALGORITHM: &str = "AUTH_JWT_ALGORITHM";
/// The key itself: the HS256 secret, or the RS256/ES256 public key as PEM.
pub const AUTH_JWT_KEY: &str = "AUTH_JWT_KEY";
/// A file holding the key (instead of `AUTH_JWT_KEY`).
pub const AUTH_JWT_KEY_FILE: &str = "AUTH_JWT_KEY_FILE";
/// When set, the `iss` every token must carry.
pub const AUTH_JWT_ISSUER: &str = "AUTH_JWT_ISSUER";
/// When set, an `aud` every token must include.
pub const AUTH_JWT_AUDIENCE: &str = "AUTH_JWT_AUDIENCE";
/// A prefix scopes carry (Cognito writes a resource server's scopes
/// `<resource-server-id>/<scope>`, e.g. `switchboard/sessions:start`): only scopes with it count,
/// read without it.
pub const AUTH_JWT_SCOPE_PREFIX: &str = "AUTH_JWT_SCOPE_PREFIX";
/// An identity provider's JWKS URL (instead of a key): its keys, chosen by `kid`, rotating.
pub const AUTH_JWT_JWKS_URL: &str = "AUTH_JWT_JWKS_URL";
/// `true` accepts tokens bound to no issuer or audience with an identity provider's keys (a
/// key set, or the api function's RS256/ES256 key); by default they are refused at start-up.
pub const AUTH_JWT_ALLOW_UNBOUND_TOKENS: &str = "AUTH_JWT_ALLOW_UNBOUND_TOKENS";

/// The shortest HS256 secret accepted (RFC 7518 §3.2: at least the hash's 256 bits).
pub const MIN_HS256_SECRET_BYTES: usize = 32;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// `POST /calls/{call_id}/sessions`.
    SessionsStart,
    /// `DELETE …/{session_id}` and `POST …/{session_id}/close`.
    SessionsClose,
    /// `GET …/{session_id}`, `GET /calls/{call_id}/sessions`, `GET /sessions`.
    SessionsView,
    /// `GET …/{session_id}/metrics`.
    MetricsView,
    /// `GET /calls/{call_id}/ws`: join the local call as a person.
    CallsJoin,
}

impl Scope {
    /// Every scope.
    pub const ALL: [Scope; 5] = [
        Scope::SessionsStart,
        Scope::SessionsClose,
        Scope::SessionsView,
        Scope::MetricsView,
        Scope::CallsJoin,
    ];

    /// The claim's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::SessionsStart => "sessions:start",
            Scope::SessionsClose => "sessions:close",
            Scope::SessionsView => "sessions:view",
            Scope::MetricsView => "metrics:view",
            Scope::CallsJoin => "calls:join",
        }
    }

    fn bit(self) -> u8 {
        1 << self as u8
    }

    fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|scope| scope.as_str() == s)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Invalid authentication configuration (start-up fails with it).
#[derive(Debug, thiserror::Error)]
pub enum AuthConfigError {
    /// `AUTH_MODE` is neither `none` nor `jwt`.
    #[error("{AUTH_MODE} must be 'none' or 'jwt', not '{0}'")]
    Mode(String),
    /// The algorithm is not one of the supported ones.
    #[error("{AUTH_JWT_ALGORITHM} must be HS256, RS256 or ES256, not '{0}'")]
    Algorithm(String),
    /// No key (or both sources) given.
    #[error("{AUTH_MODE}=jwt needs exactly one of {AUTH_JWT_KEY} and {AUTH_JWT_KEY_FILE}")]
    MissingKey,
    /// The key file could not be read.
    #[error("could not read {AUTH_JWT_KEY_FILE} {path}: {source}")]
    KeyFile {
        /// The path.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The HS256 secret is too short.
    #[error("the HS256 secret must be at least {MIN_HS256_SECRET_BYTES} bytes, not {0}")]
    ShortSecret(usize),
    /// The key is not a valid key for the algorithm (the key itself is never shown).
    #[error("the {algorithm:?} key is not a valid {expected}")]
    Key {
        /// The algorithm.
        algorithm: Algorithm,
        /// What was expected.
        expected: &'static str,
    },
    /// No cryptography provider is available in this build.
    #[error("jsonwebtoken has no crypto provider in this build")]
    NoCryptoProvider,
    /// The key set cannot be used (unreadable, not HTTPS, no usable key): start-up fails.
    #[error("{AUTH_JWT_JWKS_URL} {url} {reason}")]
    Jwks {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// A key set and a key were both given.
    #[error("give {AUTH_JWT_JWKS_URL} or a key ({AUTH_JWT_KEY}, {AUTH_JWT_KEY_FILE}), not both")]
    KeyAndJwks,
    /// This build cannot read key sets.
    #[error(
        "{AUTH_JWT_JWKS_URL} needs a build with the `jwks` feature (the api function and `--features aws` have it)"
    )]
    NoJwksSupport,
    /// A key set is read at start-up by [`JwtPolicy::load`], not [`JwtPolicy::from_vars`].
    #[error("{AUTH_JWT_JWKS_URL} is read by JwtPolicy::load")]
    JwksNeedsLoad,
    /// Tokens would not be bound to this deployment.
    #[error(
        "{name} is required with {why} (set {AUTH_JWT_ALLOW_UNBOUND_TOKENS}=true to accept tokens of any {what})"
    )]
    Unbound {
        /// The missing variable.
        name: &'static str,
        /// The claim.
        what: &'static str,
        /// Why it is required.
        why: &'static str,
    },
    /// A boolean variable with another value.
    #[error("{0} must be true or false")]
    NotBoolean(&'static str),
}

/// Whether `AUTH_JWT_ALLOW_UNBOUND_TOKENS` is set to true.
pub fn allows_unbound(var: impl Fn(&str) -> Option<String>) -> Result<bool, AuthConfigError> {
    match var(AUTH_JWT_ALLOW_UNBOUND_TOKENS)
        .map(|v| v.trim().to_ascii_lowercase())
        .filter(|v| !v.is_empty())
        .as_deref()
    {
        None | Some("false" | "0" | "no") => Ok(false),
        Some("true" | "1" | "yes") => Ok(true),
        Some(_) => Err(AuthConfigError::NotBoolean(AUTH_JWT_ALLOW_UNBOUND_TOKENS)),
    }
}

/// With an identity provider's keys, `iss` and `aud` must be pinned (unless allowed).
pub fn require_bound(
    var: impl Fn(&str) -> Option<String>,
    why: &'static str,
) -> Result<(), AuthConfigError> {
    if allows_unbound(&var)? {
        tracing::warn!(
            "{AUTH_JWT_ALLOW_UNBOUND_TOKENS} is set: tokens of any issuer and audience the keys sign are accepted"
        );
        return Ok(());
    }
    for (name, what) in [(AUTH_JWT_ISSUER, "issuer"), (AUTH_JWT_AUDIENCE, "audience")] {
        if var(name).is_none_or(|v| v.trim().is_empty()) {
            return Err(AuthConfigError::Unbound { name, what, why });
        }
    }
    Ok(())
}

/// The calls a token may touch.
#[derive(Debug, Clone)]
enum Calls {
    Any,
    Only {
        ids: Vec<String>,
        prefix: Option<String>,
    },
}

impl Calls {
    fn allows(&self, call_id: &str) -> bool {
        match self {
            Calls::Any => true,
            Calls::Only { ids, prefix } => {
                ids.iter().any(|id| id == call_id)
                    || prefix.as_deref().is_some_and(|p| call_id.starts_with(p))
            }
        }
    }
}

/// A verified token: who, what and where.
#[derive(Debug, Clone)]
pub struct Grant {
    /// The token's subject.
    pub subject: String,
    scopes: u8,
    calls: Calls,
}

impl Grant {
    /// Whether the token carries `scope`.
    pub fn has(&self, scope: Scope) -> bool {
        self.scopes & scope.bit() != 0
    }

    /// Whether the token may touch `call_id`.
    pub fn allows_call(&self, call_id: &str) -> bool {
        self.calls.allows(call_id)
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum ScopeClaim {
    Text(String),
    List(Vec<String>),
}

#[derive(Deserialize)]
#[serde(untagged)]
enum AudienceClaim {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
    /// OAuth's `scope` (space-separated or an array).
    #[serde(default)]
    scope: Option<ScopeClaim>,
    /// Okta's and Entra's delegated scopes.
    #[serde(default)]
    scp: Option<ScopeClaim>,
    /// Entra's application roles.
    #[serde(default)]
    roles: Option<ScopeClaim>,
    #[serde(default)]
    aud: Option<AudienceClaim>,
    /// Cognito's access tokens name their app client here and carry no `aud`.
    #[serde(default)]
    client_id: Option<String>,
    #[serde(default)]
    calls: Option<Vec<String>>,
    #[serde(default)]
    call_prefix: Option<String>,
}

/// Where the verifying key comes from.
enum Keys {
    /// One key, from configuration.
    One(DecodingKey),
    /// An identity provider's key set, by `kid`.
    #[cfg(feature = "jwks")]
    Set(crate::jwks::JwksKeys),
}

/// Verifies bearer tokens and turns them into [`PermissionHooks`]. Cheap to share: build it
/// once at start-up.
pub struct JwtPolicy {
    keys: Keys,
    validation: Validation,
    /// The `aud` (or, without one, `client_id`) every token must name.
    audience: Option<String>,
    /// See [`AUTH_JWT_SCOPE_PREFIX`].
    scope_prefix: Option<String>,
}

impl fmt::Debug for JwtPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the key.
        f.debug_struct("JwtPolicy")
            .field("algorithms", &self.validation.algorithms)
            .field("issuer", &self.validation.iss)
            .field("audience", &self.validation.aud)
            .finish_non_exhaustive()
    }
}

/// 403 unless `grant` carries `scope`.
fn require(grant: &Grant, scope: Scope) -> Result<(), Rejection> {
    if grant.has(scope) {
        Ok(())
    } else {
        Err(Rejection::forbidden(format!(
            "This token does not grant {scope}"
        )))
    }
}

fn unauthorized(detail: &str) -> Rejection {
    Rejection::unauthorized(detail).with_header(
        http::header::WWW_AUTHENTICATE,
        http::HeaderValue::from_static("Bearer"),
    )
}

impl JwtPolicy {
    /// A policy for `algorithm` (`HS256`, `RS256`, `ES256`) with `key`: the HS256 secret, or
    /// the PEM public key.
    pub fn new(algorithm: &str, key: &[u8]) -> Result<Self, AuthConfigError> {
        if jsonwebtoken::crypto::CryptoProvider::try_get_default().is_none() {
            return Err(AuthConfigError::NoCryptoProvider);
        }
        let (algorithm, key) = match algorithm.trim().to_ascii_uppercase().as_str() {
            "HS256" => {
                if key.len() < MIN_HS256_SECRET_BYTES {
                    return Err(AuthConfigError::ShortSecret(key.len()));
                }
                let key = DecodingKey::from_secret(key).map_err(|_| AuthConfigError::Key {
                    algorithm: Algorithm::HS256,
                    expected: "secret",
                })?;
                (Algorithm::HS256, key)
            }
            "RS256" => (
                Algorithm::RS256,
                DecodingKey::from_rsa_pem(key).map_err(|_| AuthConfigError::Key {
                    algorithm: Algorithm::RS256,
                    expected: "PEM RSA public key",
                })?,
            ),
            "ES256" => (
                Algorithm::ES256,
                DecodingKey::from_ec_pem(key).map_err(|_| AuthConfigError::Key {
                    algorithm: Algorithm::ES256,
                    expected: "PEM P-256 public key",
                })?,
            ),
            other => return Err(AuthConfigError::Algorithm(other.to_owned())),
        };
        Ok(Self {
            keys: Keys::One(key),
            validation: Self::validation(algorithm),
            audience: None,
            scope_prefix: None,
        })
    }

    fn validation(algorithm: Algorithm) -> Validation {
        let mut validation = Validation::new(algorithm);
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.validate_aud = false;
        validation
    }

    /// The policy the variables describe, as [`JwtPolicy::from_vars`], and with
    /// `AUTH_JWT_JWKS_URL` an identity provider's key set, read here once (within 2 s, or an
    /// error: fail closed). A key set needs RS256 or ES256 (default RS256) and, unless
    /// `AUTH_JWT_ALLOW_UNBOUND_TOKENS=true`, `AUTH_JWT_ISSUER` and `AUTH_JWT_AUDIENCE`.
    pub async fn load(
        var: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Self>, AuthConfigError> {
        let set = |name: &str| var(name).filter(|v| !v.trim().is_empty());
        let Some(url) = set(AUTH_JWT_JWKS_URL) else {
            return Self::from_vars(var);
        };
        match set(AUTH_MODE).as_deref().map(str::trim) {
            Some(mode) if mode.eq_ignore_ascii_case("jwt") => {}
            Some(mode) if !mode.eq_ignore_ascii_case("none") => {
                return Err(AuthConfigError::Mode(mode.to_owned()));
            }
            // A key set without AUTH_MODE=jwt would be silently unused: refuse.
            _ => return Err(AuthConfigError::Mode(set(AUTH_MODE).unwrap_or_default())),
        }
        if set(AUTH_JWT_KEY).is_some() || set(AUTH_JWT_KEY_FILE).is_some() {
            return Err(AuthConfigError::KeyAndJwks);
        }
        let algorithm = match set(AUTH_JWT_ALGORITHM)
            .unwrap_or_else(|| "RS256".to_owned())
            .trim()
            .to_ascii_uppercase()
            .as_str()
        {
            "RS256" => Algorithm::RS256,
            "ES256" => Algorithm::ES256,
            other => {
                return Err(AuthConfigError::Algorithm(format!(
                    "{other} (a key set needs RS256 or ES256)"
                )));
            }
        };
        require_bound(
            &var,
            "a key set (an identity provider signs tokens for all its applications)",
        )?;
        Self::with_key_set(&url, algorithm, &var).await.map(Some)
    }

    #[cfg(feature = "jwks")]
    async fn with_key_set(
        url: &str,
        algorithm: Algorithm,
        var: &impl Fn(&str) -> Option<String>,
    ) -> Result<Self, AuthConfigError> {
        if jsonwebtoken::crypto::CryptoProvider::try_get_default().is_none() {
            return Err(AuthConfigError::NoCryptoProvider);
        }
        let set = |name: &str| var(name).filter(|v| !v.trim().is_empty());
        let keys = crate::jwks::JwksKeys::load(url, algorithm).await?;
        let mut policy = Self {
            keys: Keys::Set(keys),
            validation: Self::validation(algorithm),
            audience: None,
            scope_prefix: set(AUTH_JWT_SCOPE_PREFIX),
        };
        if let Some(issuer) = set(AUTH_JWT_ISSUER) {
            policy = policy.with_issuer(&issuer);
        }
        if let Some(audience) = set(AUTH_JWT_AUDIENCE) {
            policy = policy.with_audience(&audience);
        }
        Ok(policy)
    }

    #[cfg(not(feature = "jwks"))]
    async fn with_key_set(
        _url: &str,
        _algorithm: Algorithm,
        _var: &impl Fn(&str) -> Option<String>,
    ) -> Result<Self, AuthConfigError> {
        Err(AuthConfigError::NoJwksSupport)
    }

    /// Tokens must carry this `iss`.
    pub fn with_issuer(mut self, issuer: &str) -> Self {
        self.validation.set_issuer(&[issuer]);
        self.validation.required_spec_claims.insert("iss".into());
        self
    }

    /// Tokens must include this `aud`, or, without an `aud`, name it as their `client_id`
    /// (Cognito's access tokens, as API Gateway's own JWT authorizer accepts them).
    pub fn with_audience(mut self, audience: &str) -> Self {
        self.audience = Some(audience.to_owned());
        self
    }

    /// Only scopes with this prefix count, read without it (see [`AUTH_JWT_SCOPE_PREFIX`]).
    pub fn with_scope_prefix(mut self, prefix: &str) -> Self {
        self.scope_prefix = Some(prefix.to_owned());
        self
    }

    /// The policy `AUTH_MODE` and the `AUTH_JWT_*` variables describe, read through `var`
    /// (the process environment in `serve` and the Lambda function); `None` for
    /// `AUTH_MODE=none` or unset. The key file is read here, once.
    pub fn from_vars(
        var: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Self>, AuthConfigError> {
        let set = |name: &str| var(name).filter(|v| !v.trim().is_empty());
        if set(AUTH_JWT_JWKS_URL).is_some() {
            return Err(AuthConfigError::JwksNeedsLoad);
        }
        match set(AUTH_MODE).as_deref().map(str::trim) {
            None => return Ok(None),
            Some(mode) if mode.eq_ignore_ascii_case("none") => return Ok(None),
            Some(mode) if mode.eq_ignore_ascii_case("jwt") => {}
            Some(other) => return Err(AuthConfigError::Mode(other.to_owned())),
        }
        let algorithm = set(AUTH_JWT_ALGORITHM).unwrap_or_else(|| "HS256".to_owned());
        let key = match (set(AUTH_JWT_KEY), set(AUTH_JWT_KEY_FILE)) {
            (Some(key), None) => key.into_bytes(),
            (None, Some(path)) => {
                std::fs::read(&path).map_err(|source| AuthConfigError::KeyFile { path, source })?
            }
            _ => return Err(AuthConfigError::MissingKey),
        };
        let mut policy = Self::new(&algorithm, &key)?;
        if let Some(issuer) = set(AUTH_JWT_ISSUER) {
            policy = policy.with_issuer(&issuer);
        }
        if let Some(audience) = set(AUTH_JWT_AUDIENCE) {
            policy = policy.with_audience(&audience);
        }
        if let Some(prefix) = set(AUTH_JWT_SCOPE_PREFIX) {
            policy = policy.with_scope_prefix(&prefix);
        }
        Ok(Some(policy))
    }

    /// Verifies `token`: its signature, algorithm, expiry and claims. The rejection never
    /// contains the token.
    pub async fn verify(&self, token: &str) -> Result<Grant, Rejection> {
        let key = match &self.keys {
            Keys::One(key) => std::borrow::Cow::Borrowed(key),
            #[cfg(feature = "jwks")]
            Keys::Set(set) => {
                // The header names the key; its algorithm is checked against the pinned one
                // by the decode below, the key's own kind by the set.
                let header = jsonwebtoken::decode_header(token)
                    .map_err(|_| unauthorized("Invalid token: malformed"))?;
                let key = set.key(header.kid.as_deref()).await.map_err(|refusal| {
                    use crate::jwks::KeyRefusal;
                    unauthorized(match refusal {
                        KeyRefusal::NoKid => "Invalid token: no kid to choose a key",
                        KeyRefusal::UnknownKid => "Invalid token: unknown key",
                        KeyRefusal::WrongAlgorithm => "Invalid token: bad signature or algorithm",
                    })
                })?;
                std::borrow::Cow::Owned(key)
            }
        };
        let data = jsonwebtoken::decode::<Claims>(token, &key, &self.validation).map_err(|e| {
            unauthorized(match e.kind() {
                ErrorKind::InvalidSignature | ErrorKind::InvalidAlgorithm => {
                    "Invalid token: bad signature or algorithm"
                }
                ErrorKind::ExpiredSignature => "Invalid token: expired",
                ErrorKind::ImmatureSignature => "Invalid token: not valid yet",
                ErrorKind::MissingRequiredClaim(_) => "Invalid token: a required claim is missing",
                ErrorKind::InvalidIssuer => "Invalid token: wrong issuer",
                ErrorKind::InvalidAudience => "Invalid token: wrong audience",
                _ => "Invalid token: malformed",
            })
        })?;
        let claims = data.claims;
        if let Some(audience) = &self.audience {
            let named = match &claims.aud {
                Some(AudienceClaim::One(aud)) => aud == audience,
                Some(AudienceClaim::Many(auds)) => auds.iter().any(|aud| aud == audience),
                None => claims.client_id.as_deref() == Some(audience.as_str()),
            };
            if !named {
                return Err(unauthorized("Invalid token: wrong audience"));
            }
        }
        let prefix = self.scope_prefix.as_deref();
        let parse = |value: &str| match prefix {
            Some(prefix) => value.strip_prefix(prefix).and_then(Scope::parse),
            None => Scope::parse(value),
        };
        let scopes = [&claims.scope, &claims.scp, &claims.roles]
            .into_iter()
            .flatten()
            .flat_map(|claim| match claim {
                ScopeClaim::Text(text) => text.split_whitespace().collect::<Vec<_>>(),
                ScopeClaim::List(list) => list.iter().map(String::as_str).collect(),
            })
            .filter_map(parse)
            .fold(0, |acc, s| acc | s.bit());
        let calls = match (claims.calls, claims.call_prefix) {
            (None, None) => Calls::Any,
            (ids, prefix) => Calls::Only {
                ids: ids.unwrap_or_default(),
                prefix,
            },
        };
        Ok(Grant {
            subject: claims.sub,
            scopes,
            calls,
        })
    }

    /// The token of a request: the bearer header, or `?token=` on the two routes a browser
    /// cannot send headers to (`query` is the action those routes need).
    fn token(request: &RequestInfo, query: Option<Scope>) -> Result<String, Rejection> {
        if let Some(value) = request.headers.get(http::header::AUTHORIZATION) {
            let value = value
                .to_str()
                .map_err(|_| unauthorized("Invalid token: malformed"))?;
            let (scheme, token) = value
                .split_once(' ')
                .ok_or_else(|| unauthorized("Not authenticated: use the Bearer scheme"))?;
            if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
                return Err(unauthorized("Not authenticated: use the Bearer scheme"));
            }
            return Ok(token.trim().to_owned());
        }
        let path = request.uri.path();
        let header_less = match query {
            Some(Scope::SessionsClose) => {
                request.method == Method::POST && path.ends_with("/close")
            }
            Some(Scope::CallsJoin) => request.method == Method::GET && path.ends_with("/ws"),
            _ => false,
        };
        if header_less
            && let Some(query) = request.uri.query()
            && let Some(token) = form_urlencoded::parse(query.as_bytes())
                .find(|(name, _)| name == "token")
                .map(|(_, value)| value.into_owned())
        {
            return Ok(token);
        }
        Err(unauthorized("Not authenticated"))
    }

    /// Authenticates the request and authorizes `scope` on `call_id`.
    pub async fn authorize(
        &self,
        request: &RequestInfo,
        scope: Scope,
        call_id: &str,
    ) -> Result<Grant, Rejection> {
        let token = Self::token(request, Some(scope))?;
        let grant = self.verify(&token).await?;
        require(&grant, scope)?;
        if !grant.allows_call(call_id) {
            return Err(Rejection::forbidden(
                "This token does not grant access to this call",
            ));
        }
        Ok(grant)
    }

    /// The hooks of this policy: each action needs its scope and its call.
    pub fn hooks(self: &Arc<Self>) -> PermissionHooks {
        let per_call = |scope: Scope| {
            let policy = self.clone();
            Some(Permission::new(
                move |call_id: String, request: RequestInfo| {
                    let policy = policy.clone();
                    async move { policy.authorize(&request, scope, &call_id).await.map(drop) }
                },
            ))
        };
        let policy = self.clone();
        let list = ListPermission::new(move |request: RequestInfo| {
            let policy = policy.clone();
            async move {
                let token = Self::token(&request, None)?;
                let grant = policy.verify(&token).await?;
                require(&grant, Scope::SessionsView)?;
                Ok(match grant.calls {
                    Calls::Any => CallFilter::All,
                    calls => CallFilter::Only(Arc::new(move |call| calls.allows(call.as_str()))),
                })
            }
        });
        let policy = self.clone();
        let fleet = Permission::new(move |_call_id: String, request: RequestInfo| {
            let policy = policy.clone();
            async move {
                let token = Self::token(&request, None)?;
                let grant = policy.verify(&token).await?;
                require(&grant, Scope::MetricsView)?;
                match grant.calls {
                    Calls::Any => Ok(()),
                    Calls::Only { .. } => Err(Rejection::forbidden(
                        "The fleet metrics span every call; this token is for some calls only",
                    )),
                }
            }
        });
        PermissionHooks {
            can_view_fleet_metrics: Some(fleet),
            can_start_session: per_call(Scope::SessionsStart),
            can_close_session: per_call(Scope::SessionsClose),
            can_view_session: per_call(Scope::SessionsView),
            can_view_metrics: per_call(Scope::MetricsView),
            can_list_sessions: Some(list),
            can_join_call: per_call(Scope::CallsJoin),
        }
    }
}
