//! The protocol between the runtime and one child, version [`PROTOCOL_VERSION`]
//! (docs/process-agents.md is its document).
//!
//! One Unix stream socket, inherited by the child on file descriptor 3 (`SWITCHBOARD_AGENT_FD`)
//! and by nobody else; each message is one JSON object on one line (UTF-8, `\n`-terminated, at
//! most [`MAX_MESSAGE_BYTES`]), with its kind in `type`. A receiver ignores the fields and the
//! message types it does not know, so a version adds messages and fields without breaking the
//! other side; a change that would break is a new version.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use switchboard_core::Metadata;

/// The version this runtime speaks; the child says which it speaks in `ready`.
pub const PROTOCOL_VERSION: u32 = 1;

/// The environment variable that names the protocol's file descriptor in the child.
pub const FD_VARIABLE: &str = "SWITCHBOARD_AGENT_FD";

/// The environment variable that tells the child the protocol version the runtime speaks.
pub const VERSION_VARIABLE: &str = "SWITCHBOARD_AGENT_PROTOCOL";

/// The file descriptor the protocol's socket has in the child.
pub const CHILD_FD: i32 = 3;

/// The longest message either side may send, in bytes (newline excluded).
pub const MAX_MESSAGE_BYTES: usize = 1 << 20;

/// What the runtime sends.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ToChild {
    /// The session this child is for (sent once, after `ready`).
    Session {
        /// The protocol version of this runtime.
        protocol: u32,
        /// The session's id.
        session_id: String,
        /// Its call.
        call_id: String,
        /// The call's type.
        call_type: String,
        /// What the client attached to the session (`null` when nothing).
        metadata: Option<Metadata>,
    },
    /// Leave now: the session ends with `reason`. The child has `grace_seconds` to exit by
    /// itself before SIGTERM, then SIGKILL.
    Close {
        /// The session's end reason (`requested`, `idle`, `max_duration`, `shutdown`, ...).
        reason: String,
        /// Seconds until SIGTERM.
        grace_seconds: f64,
    },
}

/// What the child sends.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FromChild {
    /// Imports done, waiting for a session (the first message).
    Ready {
        /// The protocol version the child speaks.
        protocol: u32,
    },
    /// The agent is in its call: the session is `running` and its clocks start.
    Joined,
    /// Another participant joined the call (idempotent per id).
    ParticipantJoined {
        /// The participant's id.
        participant_id: String,
    },
    /// A participant left the call; when the last one leaves, the idle clock runs.
    ParticipantLeft {
        /// The participant's id.
        participant_id: String,
    },
    /// Measurements since the last `metrics` message: counter increments and latency samples
    /// in milliseconds, by base name (`llm_input_tokens`, `llm_latency_ms`, ...).
    Metrics {
        /// Increments, by counter name.
        #[serde(default)]
        counters: BTreeMap<String, f64>,
        /// Samples in milliseconds, by latency name.
        #[serde(default)]
        latencies: BTreeMap<String, Vec<f64>>,
    },
    /// The agent is done with its call and will exit: the session ends `agent_finished`.
    Finished,
    /// A message type this runtime does not know (a newer child's): ignored.
    #[serde(other)]
    Unknown,
}

impl ToChild {
    /// The message as one line, newline included.
    pub fn line(&self) -> String {
        let mut line = serde_json::to_string(self).unwrap_or_else(|_| "{}".to_owned());
        line.push('\n');
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_have_their_documented_shape() {
        let close = ToChild::Close {
            reason: "idle".into(),
            grace_seconds: 5.0,
        };
        assert_eq!(
            close.line(),
            "{\"type\":\"close\",\"reason\":\"idle\",\"grace_seconds\":5.0}\n"
        );
        let parsed: FromChild =
            serde_json::from_str(r#"{"type":"ready","protocol":1,"extra":true}"#).unwrap();
        assert_eq!(parsed, FromChild::Ready { protocol: 1 });
        let parsed: FromChild =
            serde_json::from_str(r#"{"type":"metrics","counters":{"llm_input_tokens":3}}"#)
                .unwrap();
        assert!(matches!(parsed, FromChild::Metrics { counters, latencies }
            if counters["llm_input_tokens"] == 3.0 && latencies.is_empty()));
        let parsed: FromChild = serde_json::from_str(r#"{"type":"from_the_future"}"#).unwrap();
        assert_eq!(parsed, FromChild::Unknown);
        assert!(serde_json::from_str::<FromChild>(r#"{"type":"participant_joined"}"#).is_err());
    }
}
