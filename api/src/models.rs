//! Request and response bodies, with their OpenAPI schemas. Field names are the wire
//! contract: never rename or remove one; only add.

use serde::Serialize;
use serde_json::Value;
use switchboard_core::registry::{ListedSession, MetricsReport};
use switchboard_core::{AgentMetrics, PoolStatus, Session, StandbyState};
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
    /// `warm` (a standby of the warm pool was claimed for it) or `cold` (a task was started
    /// for it); null until its agent was launched, and in `serve` (in-process agents).
    pub start_type: Option<String>,
    /// Admission → `running` in milliseconds (how long the agent took to join); null until
    /// it has joined, and for sessions that never did.
    pub start_latency_ms: Option<u64>,
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
            start_type: s.start_type.map(|t| t.to_string()),
            start_latency_ms: s
                .start_latency()
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
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

/// One standby of the warm pool.
#[derive(Debug, Serialize, ToSchema)]
pub struct StandbyItem {
    /// Its ECS task.
    pub task_arn: String,
    /// The task definition it runs.
    pub task_definition: String,
    /// `provisioning` (started, not yet registered), `idle` (claimable) or `claimed`.
    pub state: String,
    /// Whether its lease has lapsed (an idle standby past it is never claimed).
    pub lease_lapsed: bool,
    /// Its lease.
    #[schema(format = DateTime)]
    pub lease_expires_at: String,
    /// When its task was started (provisioning) or it registered (idle) or was claimed.
    #[schema(format = DateTime)]
    pub since: String,
    /// The call of the session it hosts, once claimed.
    pub call_id: Option<String>,
    /// The session it hosts, once claimed.
    pub session_id: Option<String>,
}

/// The standbys of one task definition, by state (lapsed leases not counted).
#[derive(Debug, Serialize, ToSchema)]
pub struct PoolDefinition {
    /// The task definition ARN.
    pub task_definition: String,
    /// Whether claims take standbys of it (the api's `TASK_DEFINITION`); the others are
    /// stopped by the reaper's sweep.
    pub current: bool,
    /// Claimable standbys.
    pub idle: u32,
    /// Standbys hosting a session.
    pub claimed: u32,
    /// Standbys started but not yet registered.
    pub provisioning: u32,
}

/// `GET /pool`: the warm pool.
#[derive(Debug, Serialize, ToSchema)]
pub struct PoolResponse {
    /// The idle standbys the pool keeps (`WarmPoolSize`).
    pub target_size: u32,
    /// The task definition claims accept.
    pub task_definition: String,
    /// Counts per task definition, the current one first.
    pub definitions: Vec<PoolDefinition>,
    /// Every registered standby.
    pub standbys: Vec<StandbyItem>,
    /// When the pool was read.
    #[schema(format = DateTime)]
    pub generated_at: String,
}

impl From<&PoolStatus> for PoolResponse {
    fn from(pool: &PoolStatus) -> Self {
        let mut definitions: Vec<PoolDefinition> = vec![PoolDefinition {
            task_definition: pool.task_definition.clone(),
            current: true,
            idle: 0,
            claimed: 0,
            provisioning: 0,
        }];
        for standby in &pool.standbys {
            let lapsed = standby.lease_expires_at <= pool.at;
            let index = match definitions
                .iter()
                .position(|d| d.task_definition == standby.task_definition)
            {
                Some(i) => i,
                None => {
                    definitions.push(PoolDefinition {
                        task_definition: standby.task_definition.clone(),
                        current: false,
                        idle: 0,
                        claimed: 0,
                        provisioning: 0,
                    });
                    definitions.len() - 1
                }
            };
            let counts = &mut definitions[index];
            match standby.state {
                StandbyState::Claimed => counts.claimed += 1,
                StandbyState::Idle if !lapsed => counts.idle += 1,
                StandbyState::Provisioning if !lapsed => counts.provisioning += 1,
                _ => {}
            }
        }
        Self {
            target_size: pool.target_size,
            task_definition: pool.task_definition.clone(),
            definitions,
            standbys: pool
                .standbys
                .iter()
                .map(|s| StandbyItem {
                    task_arn: s.task_arn.clone(),
                    task_definition: s.task_definition.clone(),
                    state: s.state.as_str().to_owned(),
                    lease_lapsed: s.lease_expires_at <= pool.at,
                    lease_expires_at: s.lease_expires_at.to_rfc3339(),
                    since: s.since.to_rfc3339(),
                    call_id: s.session.as_ref().map(|(c, _)| c.to_string()),
                    session_id: s.session.as_ref().map(|(_, id)| id.to_string()),
                })
                .collect(),
            generated_at: pool.at.to_rfc3339(),
        }
    }
}
