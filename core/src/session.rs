//! A session: one agent in one call, from admission to its end.
//!
//! Lifecycle: `starting` (row written; agent being created or task launched) → `running`
//! (agent joined) → `closing` (close requested) → `ended` (reason recorded, slots released
//! exactly once, kept for `session_retention`).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::{CallId, CallType, Error, IdempotencyKey, SessionId, Timestamp};

/// Where a session is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionStatus {
    /// Admitted; the agent is being created or its task launched.
    Starting,
    /// The agent has joined the call.
    Running,
    /// A close was requested; the agent is leaving.
    Closing,
    /// Over: `ended_at` and `end_reason` are set and the limit slots are released.
    Ended,
}

impl SessionStatus {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Running => "running",
            Self::Closing => "closing",
            Self::Ended => "ended",
        }
    }
}

impl fmt::Display for SessionStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SessionStatus {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Ok(match s {
            "starting" => Self::Starting,
            "running" => Self::Running,
            "closing" => Self::Closing,
            "ended" => Self::Ended,
            other => return Err(Error::Invalid(format!("unknown session status '{other}'"))),
        })
    }
}

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// A client asked (DELETE or the beacon's close).
    Requested,
    /// The agent was alone in the call for `agent_idle_timeout`.
    Idle,
    /// The session reached `max_session_duration_seconds`.
    MaxDuration,
    /// `join_call` returned.
    AgentFinished,
    /// `join_call` failed.
    AgentFailed,
    /// The agent's ECS task stopped.
    TaskStopped,
    /// Nobody renewed the lease before it expired (the node or task vanished).
    LeaseExpired,
    /// The agent could not be created, warmed up or launched.
    StartFailed,
    /// The server or task shut down.
    Shutdown,
}

impl EndReason {
    /// Every reason, in documentation order.
    pub const ALL: [EndReason; 9] = [
        Self::Requested,
        Self::Idle,
        Self::MaxDuration,
        Self::AgentFinished,
        Self::AgentFailed,
        Self::TaskStopped,
        Self::LeaseExpired,
        Self::StartFailed,
        Self::Shutdown,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Requested => "requested",
            Self::Idle => "idle",
            Self::MaxDuration => "max_duration",
            Self::AgentFinished => "agent_finished",
            Self::AgentFailed => "agent_failed",
            Self::TaskStopped => "task_stopped",
            Self::LeaseExpired => "lease_expired",
            Self::StartFailed => "start_failed",
            Self::Shutdown => "shutdown",
        }
    }
}

impl fmt::Display for EndReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EndReason {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Self::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| Error::Invalid(format!("unknown end reason '{s}'")))
    }
}

/// How a session's agent came to run: on a warm standby claimed for it, or on a task (or
/// process) started for it alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StartType {
    /// A standby, already past its warm-up, was claimed for the session.
    Warm,
    /// A task was started for the session (ECS: `RunTask`, with Fargate's cold start).
    Cold,
}

impl StartType {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Warm => "warm",
            Self::Cold => "cold",
        }
    }
}

impl fmt::Display for StartType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for StartType {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "warm" => Ok(Self::Warm),
            "cold" => Ok(Self::Cold),
            other => Err(Error::Invalid(format!("unknown start type '{other}'"))),
        }
    }
}

/// Which limit counters a session's start incremented, so its end decrements exactly those.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Counted {
    /// The global (all calls) counter.
    pub global: bool,
    /// This call's counter.
    pub per_call: bool,
}

impl Counted {
    /// Both counters.
    pub const BOTH: Counted = Counted {
        global: true,
        per_call: true,
    };
}

/// The optional JSON object a client attaches to a session (≤ 4 KiB serialized), handed to
/// `create_agent`. Cheap to clone: the registry, the supervisor and the agent share one copy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Metadata(std::sync::Arc<serde_json::Map<String, serde_json::Value>>);

impl Metadata {
    /// Maximum serialized size in bytes.
    pub const MAX_BYTES: usize = 4096;

    /// Accepts a JSON object of at most [`Metadata::MAX_BYTES`] when serialized.
    pub fn parse(value: serde_json::Value) -> Result<Self, Error> {
        match value {
            serde_json::Value::Object(map) => Self::from_map(map),
            _ => Err(Error::Invalid("metadata must be a JSON object".into())),
        }
    }

    /// Accepts a JSON object map, checking its size.
    pub fn from_map(map: serde_json::Map<String, serde_json::Value>) -> Result<Self, Error> {
        let metadata = Self(std::sync::Arc::new(map));
        if metadata.to_json().len() > Self::MAX_BYTES {
            return Err(Error::Invalid(format!(
                "metadata must be at most {} bytes when serialized",
                Self::MAX_BYTES
            )));
        }
        Ok(metadata)
    }

    /// The fields.
    pub fn as_map(&self) -> &serde_json::Map<String, serde_json::Value> {
        &self.0
    }

    /// Canonical compact JSON (keys sorted).
    pub fn to_json(&self) -> String {
        serde_json::to_string(&*self.0).unwrap_or_default()
    }
}

/// The registry's record of one session (without its metadata and metrics, which are stored
/// beside it and read on demand).
#[derive(Debug, Clone, PartialEq)]
pub struct Session {
    /// The session's id.
    pub id: SessionId,
    /// The call the agent joins.
    pub call_id: CallId,
    /// The call's type.
    pub call_type: CallType,
    /// Where it is in its lifecycle.
    pub status: SessionStatus,
    /// When it was admitted (`session_started_at` on the wire).
    pub created_at: Timestamp,
    /// When the agent joined (status became `running`).
    pub running_at: Option<Timestamp>,
    /// The last lease renewal.
    pub heartbeat_at: Option<Timestamp>,
    /// The lease: after this instant with no renewal, the session may be reaped.
    pub lease_expires_at: Timestamp,
    /// When a close was first requested.
    pub close_requested_at: Option<Timestamp>,
    /// When it ended.
    pub ended_at: Option<Timestamp>,
    /// Why it ended.
    pub end_reason: Option<EndReason>,
    /// Operator detail about the end (error message, stopped reason, exit code). Never secrets.
    pub end_detail: Option<String>,
    /// The ECS task running the agent, when there is one.
    pub task_arn: Option<String>,
    /// Whether the agent runs on a claimed warm standby or a task started for it (`None`
    /// where the launcher has no such choice: `serve`'s in-process agents).
    pub start_type: Option<StartType>,
    /// Which counters the start incremented.
    pub counted: Counted,
    /// The Idempotency-Key the start used, if any.
    pub idempotency_key: Option<IdempotencyKey>,
    /// When an ended session disappears (`ended_at + session_retention`).
    pub expires_at: Option<Timestamp>,
}

impl Session {
    /// Whether the session has ended.
    pub fn is_ended(&self) -> bool {
        self.status == SessionStatus::Ended
    }

    /// Whether its agent ever joined the call (marked it `running`). A session closed while
    /// `starting` never joins: its agent, if it comes up, leaves at once.
    pub fn joined(&self) -> bool {
        self.running_at.is_some()
    }

    /// Admission → `running`: how long the agent took to join, once it has.
    pub fn start_latency(&self) -> Option<std::time::Duration> {
        self.running_at
            .map(|running| running.saturating_since(self.created_at))
    }

    /// Whether a close has been requested and not yet carried out.
    pub fn close_requested(&self) -> bool {
        self.close_requested_at.is_some() && !self.is_ended()
    }

    /// Whether the row is past its retention at `now` (reads treat it as absent).
    pub fn is_expired(&self, now: Timestamp) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn end_reasons_round_trip_their_wire_names() {
        for reason in EndReason::ALL {
            assert_eq!(reason.as_str().parse::<EndReason>().unwrap(), reason);
            assert_eq!(serde_json::to_value(reason).unwrap(), reason.as_str());
        }
        assert!("nope".parse::<EndReason>().is_err());
    }

    #[test]
    fn start_types_round_trip_their_wire_names() {
        for start in [StartType::Warm, StartType::Cold] {
            assert_eq!(start.as_str().parse::<StartType>().unwrap(), start);
            assert_eq!(serde_json::to_value(start).unwrap(), start.as_str());
        }
        assert!("tepid".parse::<StartType>().is_err());
    }

    #[test]
    fn metadata_must_be_a_small_object() {
        assert!(Metadata::parse(serde_json::json!({"user": "u1"})).is_ok());
        assert!(Metadata::parse(serde_json::json!([1, 2])).is_err());
        let big = "x".repeat(Metadata::MAX_BYTES);
        let err = Metadata::parse(serde_json::json!({ "k": big })).unwrap_err();
        assert_eq!(
            err.to_string(),
            "metadata must be at most 4096 bytes when serialized"
        );
    }
}
