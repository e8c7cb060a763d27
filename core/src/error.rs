//! The domain's error type: outcomes every adapter translates its own failures into.
//!
//! The HTTP layer owns the single mapping from these variants to status codes.

use std::time::Duration;

/// Which admission limit refused a start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitKind {
    /// `max_concurrent_sessions`, counted across every node.
    Global,
    /// `max_sessions_per_call`, counted across every node.
    PerCall,
}

/// A domain outcome that is not success.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The session does not exist (or has expired from retention) under this call.
    #[error("session not found")]
    NotFound,
    /// The session exists but is in a state that forbids the operation (e.g. it has ended).
    #[error("conflict: {0}")]
    Conflict(String),
    /// Admission refused by a limit.
    #[error("session limit reached: {0:?}")]
    LimitReached(LimitKind),
    /// The same Idempotency-Key was used with a different request body.
    #[error("the Idempotency-Key was already used with a different request")]
    IdempotencyMismatch,
    /// The input is invalid; the message is safe to show to the client.
    #[error("{0}")]
    Invalid(String),
    /// A dependency is transiently unavailable; retrying later may succeed.
    #[error("temporarily unavailable")]
    Unavailable {
        /// When the caller may retry.
        retry_after: Duration,
        /// What failed.
        #[source]
        source: anyhow::Error,
    },
    /// The agent could not be started (a definite failure of `create_agent`, warmup or the task launch).
    #[error("failed to start agent")]
    LaunchFailed(#[source] anyhow::Error),
    /// Anything else: a bug or an unexpected dependency failure.
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl Error {
    /// A transient failure with a default retry hint of one second.
    pub fn unavailable(source: impl Into<anyhow::Error>) -> Self {
        Self::Unavailable {
            retry_after: Duration::from_secs(1),
            source: source.into(),
        }
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
