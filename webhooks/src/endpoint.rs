//! One delivery attempt to one receiver.

use std::time::Duration;

use switchboard_core::events::SessionEvent;

use crate::signature::{Secret, WEBHOOK_ID, WEBHOOK_SIGNATURE, WEBHOOK_TIMESTAMP};

/// How long one attempt may take (connect, send, answer) before it counts as failed.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where webhooks go and how they are signed.
#[derive(Debug, Clone)]
pub struct Endpoint {
    url: reqwest::Url,
    secret: Secret,
    client: reqwest::Client,
}

/// A configuration that is not an endpoint.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    /// The URL does not parse, or is not http(s).
    #[error("the webhook URL {url:?} is not an http:// or https:// URL")]
    Url {
        /// As given.
        url: String,
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

impl Endpoint {
    /// An endpoint at `url` (http or https) signing with `secret` (`whsec_...`).
    pub fn new(url: &str, secret: &str) -> Result<Self, EndpointError> {
        let parsed = reqwest::Url::parse(url)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.has_host())
            .ok_or_else(|| EndpointError::Url {
                url: url.to_owned(),
            })?;
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

    /// The URL without what may be a credential (user info, query), for logs.
    pub fn shown_url(&self) -> String {
        let mut shown = self.url.clone();
        let _ = shown.set_username("");
        let _ = shown.set_password(None);
        if shown.query().is_some() {
            shown.set_query(Some("…"));
        }
        shown.to_string()
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
