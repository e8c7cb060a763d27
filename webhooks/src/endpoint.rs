//! One delivery attempt to one receiver.

use std::time::Duration;

use switchboard_core::events::SessionEvent;

use crate::signature::{Secret, WEBHOOK_ID, WEBHOOK_SIGNATURE, WEBHOOK_TIMESTAMP};

/// How long one attempt may take (connect, send, answer) before it counts as failed.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where webhooks go and how they are signed. Its `Debug` shows only the receiver's origin
/// (the path may hold a token, as Slack's and Discord's do).
#[derive(Clone)]
pub struct Endpoint {
    url: reqwest::Url,
    secret: Secret,
    client: reqwest::Client,
}

/// A configuration that is not an endpoint.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    /// The URL does not parse, or is not http(s). The URL itself is not repeated (it may
    /// hold a token).
    #[error("the webhook URL is not an http:// or https:// URL with a host ({why})")]
    Url {
        /// What is wrong with it.
        why: String,
    },
    /// The secret is not one.
    #[error(transparent)]
    Secret(#[from] crate::signature::SecretError),
    /// The HTTP client could not be built (TLS roots).
    #[error("the webhook HTTP client could not be built: {0}")]
    Client(String),
}

/// Why an attempt failed. Every failure is retried while the retry time lasts.
#[derive(Debug, thiserror::Error)]
pub enum AttemptError {
    /// The receiver answered something else than 2xx.
    #[error("the receiver answered {0}")]
    Status(u16),
    /// No answer: refused, reset, timed out.
    #[error("no answer from the receiver: {0}")]
    Transport(String),
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("origin", &self.shown_url())
            .finish_non_exhaustive()
    }
}

impl Endpoint {
    /// An endpoint at `url` (http or https) signing with `secret` (`whsec_...`).
    pub fn new(url: &str, secret: &str) -> Result<Self, EndpointError> {
        let parsed = match reqwest::Url::parse(url) {
            Ok(u) if !matches!(u.scheme(), "http" | "https") => {
                return Err(EndpointError::Url {
                    why: format!("its scheme is {}", u.scheme()),
                });
            }
            Ok(u) if !u.has_host() => {
                return Err(EndpointError::Url {
                    why: "it has no host".into(),
                });
            }
            Ok(u) => u,
            Err(e) => return Err(EndpointError::Url { why: e.to_string() }),
        };
        let secret = Secret::parse(secret)?;
        let client = reqwest::Client::builder()
            .timeout(ATTEMPT_TIMEOUT)
            .connect_timeout(Duration::from_secs(5))
            // A receiver's redirect is an answer to fix, not to follow with the signature.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| EndpointError::Client(e.to_string()))?;
        Ok(Self {
            url: parsed,
            secret,
            client,
        })
    }

    /// The receiver's URL.
    pub fn url(&self) -> &reqwest::Url {
        &self.url
    }

    /// The receiver's origin (`https://host:port`), for logs: user info, path and query may
    /// hold a credential.
    pub fn shown_url(&self) -> String {
        self.url.origin().ascii_serialization()
    }

    /// One signed POST of `event`, timestamped now.
    pub async fn attempt(&self, event: &SessionEvent) -> Result<(), AttemptError> {
        self.attempt_raw(event.id(), event.to_json()).await
    }

    /// One signed POST of an event already serialized (`body`, whose id is `id`): the AWS
    /// delivery function sends each queued message as it was queued.
    pub async fn attempt_raw(&self, id: &str, body: String) -> Result<(), AttemptError> {
        let timestamp = switchboard_core::Timestamp::now_system().unix_seconds();
        let signature = self.secret.sign(id, timestamp, body.as_bytes());
        let answer = self
            .client
            .post(self.url.clone())
            .header(WEBHOOK_ID, id)
            .header(WEBHOOK_TIMESTAMP, timestamp.to_string())
            .header(WEBHOOK_SIGNATURE, signature)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| AttemptError::Transport(without_url(&e)))?;
        let status = answer.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(AttemptError::Status(status.as_u16()))
        }
    }
}

/// The error's text without the URL (its query may carry a token).
fn without_url(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else {
        "the request failed"
    };
    let mut source = std::error::Error::source(e);
    let mut detail = String::new();
    while let Some(s) = source {
        detail = s.to_string();
        source = s.source();
    }
    if detail.is_empty() {
        kind.to_owned()
    } else {
        format!("{kind}: {detail}")
    }
}
