//! Session events as [Standard Webhooks](https://www.standardwebhooks.com/).
//!
//! - [`signature`]: the `webhook-*` headers and [`Secret`] (`whsec_...`), signing and
//!   verifying.
//! - [`endpoint`]: [`Endpoint`], one signed delivery attempt (the AWS delivery function makes
//!   one per SQS message; SQS retries).
//! - [`queue`]: [`WebhookQueue`], `serve`'s bounded queue: in order per session, retried with
//!   backoff for a bounded time, counted in the fleet metrics.
//!
//! The body is the event's JSON ([`switchboard_core::events::SessionEvent`]): `type`,
//! `timestamp` and `data`, the payload shape the specification recommends.

pub mod endpoint;
pub mod queue;
pub mod signature;

pub use endpoint::{AttemptError, Endpoint, EndpointError};
pub use queue::{QueueOptions, WebhookQueue};
pub use signature::{Secret, SecretError};

/// The variable naming the receiver's URL (`serve`, `run`, `task` under `serve`).
pub const SWITCHBOARD_WEBHOOK_URL: &str = "SWITCHBOARD_WEBHOOK_URL";
/// The variable holding the signing secret (`whsec_...`).
pub const SWITCHBOARD_WEBHOOK_SECRET: &str = "SWITCHBOARD_WEBHOOK_SECRET";

/// The endpoint the environment configures: `None` without `SWITCHBOARD_WEBHOOK_URL`; an error
/// naming the variable when the URL or the secret is bad, or the secret is missing (webhooks
/// are never sent unsigned).
pub fn endpoint_from_lookup(
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<Option<Endpoint>, String> {
    let Some(url) = lookup(SWITCHBOARD_WEBHOOK_URL).filter(|u| !u.trim().is_empty()) else {
        return Ok(None);
    };
    let Some(secret) = lookup(SWITCHBOARD_WEBHOOK_SECRET).filter(|s| !s.trim().is_empty()) else {
        return Err(format!(
            "{SWITCHBOARD_WEBHOOK_SECRET} is required with {SWITCHBOARD_WEBHOOK_URL} (webhooks are signed; a secret is whsec_ followed by at least 24 bytes in base64)"
        ));
    };
    Endpoint::new(url.trim(), &secret)
        .map(Some)
        .map_err(|e| match e {
            EndpointError::Secret(e) => format!("{SWITCHBOARD_WEBHOOK_SECRET} is invalid: {e}"),
            EndpointError::Url { .. } => format!("{SWITCHBOARD_WEBHOOK_URL}: {e}"),
            EndpointError::Client(_) => e.to_string(),
        })
}
