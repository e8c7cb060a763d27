//! [`ApiError`]: the single table from outcomes to status codes. Every body is
//! `{"detail": ...}`: a string, or for 422 FastAPI's list of `{loc, msg, type}`.

use std::time::Duration;

use axum::Json;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use serde::Serialize;
use serde_json::{Value, json};
use switchboard_core::{Error, LimitKind};
use utoipa::ToSchema;

use crate::hooks::Rejection;

/// One step of a 422 item's `loc`: a name (`body`, `path`, a field) or a position (the column
/// of a JSON syntax error). Only describes the document; `loc` holds JSON values.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(untagged)]
pub enum LocStep {
    /// A name.
    Name(String),
    /// A position.
    Position(u64),
}

/// One item of a 422 body, FastAPI's shape.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct ValidationIssue {
    /// Where: e.g. `["body", "call_type"]`, `["path", "call_id"]`, `["query", "limit"]`.
    #[schema(value_type = Vec<LocStep>)]
    pub loc: Vec<Value>,
    /// What is wrong.
    pub msg: String,
    /// A machine-readable kind (`json_invalid`, `string_type`, `value_error`, ...).
    #[serde(rename = "type")]
    pub kind: String,
}

impl ValidationIssue {
    /// An issue at `loc`.
    pub fn new(loc: &[&str], msg: impl Into<String>, kind: &str) -> Self {
        Self {
            loc: loc.iter().map(|s| Value::from(*s)).collect(),
            msg: msg.into(),
            kind: kind.to_owned(),
        }
    }
}

/// An error body with a string detail.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong.
    pub detail: String,
}

/// A 422 body.
#[derive(Debug, Serialize, ToSchema)]
pub struct ValidationErrorBody {
    /// Every problem found.
    pub detail: Vec<ValidationIssue>,
}

/// Detail of 503 `/ready`.
pub const NOT_READY: &str = "Server is not ready to accept requests";
/// Detail of 429 on the global limit.
pub const MAX_CONCURRENT: &str = "Reached maximum number of concurrent sessions";
/// Detail of 429 on the per-call limit.
pub const MAX_PER_CALL: &str = "Reached maximum number of sessions for this call";
/// Detail of 500 when the agent could not start.
pub const FAILED_TO_START: &str = "Failed to start agent";

/// Everything a handler can answer besides success.
#[derive(Debug)]
pub enum ApiError {
    /// 422 with FastAPI's list shape.
    Validation(Vec<ValidationIssue>),
    /// 404 `Session with id '<id>' not found`.
    SessionNotFound(String),
    /// A permission hook's refusal.
    Rejected(Box<Rejection>),
    /// 413.
    PayloadTooLarge,
    /// 414: the path and query are longer than [`crate::MAX_URI_BYTES`].
    UriTooLong,
    /// 431: a header, or all of them, are larger than the limits.
    HeadersTooLarge,
    /// 429.
    LimitReached(LimitKind),
    /// 503 `/ready`.
    NotReady,
    /// 503 + `Retry-After`.
    Unavailable {
        /// Retry hint.
        retry_after: Duration,
        /// The cause (logged, never sent).
        source: anyhow::Error,
    },
    /// 500 `Failed to start agent`.
    LaunchFailed(anyhow::Error),
    /// 404 for an unknown route.
    RouteNotFound,
    /// 404 `GET /pool` where no warm pool is kept.
    NoPool,
    /// 405.
    MethodNotAllowed,
    /// 500 with a generic detail; the cause is logged.
    Internal(anyhow::Error),
}

impl ApiError {
    /// A single 422 issue.
    pub fn invalid(loc: &[&str], msg: impl Into<String>, kind: &str) -> Self {
        Self::Validation(vec![ValidationIssue::new(loc, msg, kind)])
    }

    /// Maps a domain error; `NotFound` needs the session id for its detail.
    pub fn from_domain(error: Error, session_id: &str) -> Self {
        match error {
            Error::NotFound => Self::SessionNotFound(session_id.to_owned()),
            Error::Conflict(_) => Self::SessionNotFound(session_id.to_owned()),
            Error::LimitReached(kind) => Self::LimitReached(kind),
            Error::IdempotencyMismatch => Self::invalid(
                &["header", "idempotency-key"],
                "This Idempotency-Key was already used with a different request body",
                "idempotency_mismatch",
            ),
            Error::Invalid(msg) => Self::invalid(&["body"], msg, "value_error"),
            Error::Unavailable {
                retry_after,
                source,
            } => Self::Unavailable {
                retry_after,
                source,
            },
            Error::LaunchFailed(source) => Self::LaunchFailed(source),
            Error::Unexpected(source) => Self::Internal(source),
        }
    }

    /// The status code.
    pub fn status_code(&self) -> StatusCode {
        match self {
            Self::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::SessionNotFound(_) | Self::RouteNotFound | Self::NoPool => StatusCode::NOT_FOUND,
            Self::Rejected(r) => r.status,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UriTooLong => StatusCode::URI_TOO_LONG,
            Self::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::LimitReached(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::NotReady | Self::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::LaunchFailed(_) | Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<Rejection> for ApiError {
    fn from(rejection: Rejection) -> Self {
        Self::Rejected(Box::new(rejection))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status_code();
        let detail = match &self {
            Self::Validation(issues) => json!(issues),
            Self::SessionNotFound(id) => json!(format!("Session with id '{id}' not found")),
            Self::Rejected(r) => r.detail.clone(),
            Self::PayloadTooLarge => json!(format!(
                "Request body is larger than the limit of {} bytes",
                crate::MAX_BODY_BYTES
            )),
            Self::UriTooLong => json!(format!(
                "The request's path and query are longer than the limit of {} bytes",
                crate::MAX_URI_BYTES
            )),
            Self::HeadersTooLarge => json!(format!(
                "The request's headers are larger than the limits ({} bytes per header, {} in all)",
                crate::MAX_HEADER_BYTES,
                crate::MAX_HEADERS_BYTES
            )),
            Self::LimitReached(LimitKind::Global) => json!(MAX_CONCURRENT),
            Self::LimitReached(LimitKind::PerCall) => json!(MAX_PER_CALL),
            Self::NotReady => json!(NOT_READY),
            Self::Unavailable { source, .. } => {
                tracing::warn!(error.cause_chain = ?source, "service temporarily unavailable");
                json!("Service temporarily unavailable; retry later")
            }
            Self::LaunchFailed(source) => {
                tracing::error!(error.cause_chain = ?source, "failed to start agent");
                json!(FAILED_TO_START)
            }
            Self::RouteNotFound => json!("Not Found"),
            Self::NoPool => json!("No warm pool is kept here: agents run in this process (serve)"),
            Self::MethodNotAllowed => json!("Method Not Allowed"),
            Self::Internal(source) => {
                tracing::error!(error.cause_chain = ?source, "internal error");
                json!("Internal Server Error")
            }
        };
        let mut response = (status, Json(json!({ "detail": detail }))).into_response();
        if let Self::Rejected(rejection) = &self {
            response.headers_mut().extend(rejection.headers.clone());
        }
        if let Self::Unavailable { retry_after, .. } = &self {
            let secs = retry_after.as_secs_f64().ceil().max(1.0) as u64;
            if let Ok(value) = HeaderValue::from_str(&secs.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
        }
        response
    }
}
