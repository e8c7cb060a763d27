//! Request and response bodies, with their OpenAPI schemas. Field names are the wire
//! contract: never rename or remove one; only add.

use serde::Serialize;
use serde_json::Value;
use switchboard_core::registry::{ListedSession, MetricsReport};
use switchboard_core::{AgentMetrics, Session};
use utoipa::ToSchema;

/// `POST /calls/{call_id}/sessions` body. Both fields are optional; a missing or empty body
/// means the defaults.
#[derive(Debug, ToSchema)]
#[allow(dead_code)] // documents the request schema; parsed by hand for precise 422s
pub struct StartSessionRequest {
    /// The call's type (1–256 bytes, no control characters, no `/`).
    #[schema(default = "default", example = "default")]
    pub call_type: Option<String>,
    /// A JSON object (≤ 4 KiB) stored on the session and handed to `create_agent`.
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
}

/// A started session.
#[derive(Debug, Serialize, ToSchema)]
pub struct StartSessionResponse {
    /// The new session's id.
    pub session_id: String,
    /// The call.
    pub call_id: String,
    /// When the session was admitted (RFC 3339, UTC).
    #[schema(format = DateTime)]
    pub session_started_at: String,
    /// The call's type.
    pub call_type: String,
    /// Always `starting` here: the agent is being created or launched.
    pub status: String,
}

/// A session.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionResponse {
    /// The session's id.
    pub session_id: String,
    /// The call.
    pub call_id: String,
    /// When the session was admitted.
    #[schema(format = DateTime)]
    pub session_started_at: String,
    /// `starting`, `running`, `closing` or `ended`.
    pub status: String,
    /// The call's type.
    pub call_type: String,
    /// When a close was requested, if it was.
    #[schema(format = DateTime)]
    pub close_requested_at: Option<String>,
}

impl From<&Session> for SessionResponse {
    fn from(s: &Session) -> Self {
        Self {
            session_id: s.id.to_string(),
            call_id: s.call_id.to_string(),
            session_started_at: s.created_at.to_rfc3339(),
            status: s.status.to_string(),
            call_type: s.call_type.to_string(),
            close_requested_at: s.close_requested_at.map(|t| t.to_rfc3339()),
        }
    }
}

/// A session's metrics: all 25 anchor names and the percentile fields, always present.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionMetricsResponse {
    /// The session's id.
    pub session_id: String,
    /// The call.
    pub call_id: String,
    /// When the session was admitted.
    #[schema(format = DateTime)]
    pub session_started_at: String,
    /// When the metrics were last flushed (the start time before the first flush).
    #[schema(format = DateTime)]
    pub metrics_generated_at: String,
    /// The session's status.
    pub status: String,
    /// `<name>__total` (integers), `<name>__avg|__p50|__p95|__p99|__max` (numbers or null),
    /// `<name>__count` (integers).
    #[schema(value_type = Object)]
    #[serde(serialize_with = "wire")]
    pub metrics: AgentMetrics,
}

/// Metrics go out in their wire form, streamed (no map is built per response).
fn wire<S: serde::Serializer>(metrics: &AgentMetrics, serializer: S) -> Result<S::Ok, S::Error> {
    metrics.wire().serialize(serializer)
}

fn wire_if_any<S: serde::Serializer>(
    metrics: &Option<AgentMetrics>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match metrics {
        Some(metrics) => serializer.serialize_some(&metrics.wire()),
        None => serializer.serialize_none(),
    }
}

impl SessionMetricsResponse {
    pub(crate) fn new(session: &Session, report: Option<&MetricsReport>) -> Self {
        let (metrics, generated_at) = match report {
            Some(r) => (r.metrics.clone(), r.generated_at),
            None => (AgentMetrics::default(), session.created_at),
        };
        Self {
            session_id: session.id.to_string(),
            call_id: session.call_id.to_string(),
            session_started_at: session.created_at.to_rfc3339(),
            metrics_generated_at: generated_at.to_rfc3339(),
            status: session.status.to_string(),
            metrics,
        }
    }
}

/// A listed session; ended ones carry `ended_at`, `end_reason` and their final `metrics`.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionListItem {
    /// The session.
    #[serde(flatten)]
    pub session: SessionResponse,
    /// When it ended.
    #[schema(format = DateTime)]
    pub ended_at: Option<String>,
    /// Why it ended: `requested`, `idle`, `max_duration`, `agent_finished`, `agent_failed`,
    /// `task_stopped`, `lease_expired`, `start_failed` or `shutdown`.
    pub end_reason: Option<String>,
    /// The final metrics of an ended session; with `include_metrics=true`, a live session's
    /// latest (every name, empty before its first flush).
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "wire_if_any"
    )]
    #[schema(value_type = Option<Object>)]
    pub metrics: Option<AgentMetrics>,
}

impl SessionListItem {
    /// The item for `listed`; `with_metrics` when the list was asked for live metrics.
    pub(crate) fn new(listed: &ListedSession, with_metrics: bool) -> Self {
        let s = &listed.session;
        Self {
            session: SessionResponse::from(s),
            ended_at: s.ended_at.map(|t| t.to_rfc3339()),
            end_reason: s.end_reason.map(|r| r.to_string()),
            metrics: if s.is_ended() {
                Some(
                    listed
                        .final_metrics
                        .as_ref()
                        .map_or_else(AgentMetrics::default, |r| r.metrics.clone()),
                )
            } else {
                with_metrics.then(|| {
                    listed
                        .live_metrics
                        .as_ref()
                        .map_or_else(AgentMetrics::default, |r| r.metrics.clone())
                })
            },
        }
    }
}

/// A page of sessions.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionListResponse {
    /// The sessions, in creation order.
    pub sessions: Vec<SessionListItem>,
    /// Pass as `?next_token=` for the next page; null on the last page.
    pub next_token: Option<String>,
}
