//! Session events: one per state change a user acts on, derived from the change itself.
//!
//! A registry reports each write of a session row as a [`Change`] (the status before, the row
//! after); [`Change::event`] turns it into at most one [`SessionEvent`]:
//!
//! | change | event | `sequence` |
//! |---|---|---|
//! | (none) → `starting` | `session.started` | 1 |
//! | `starting` → `running` | `session.running` | 2 |
//! | anything live → `ended` | `session.ended` | 3 |
//!
//! Everything in an event comes from the row, so the same change always gives the same event,
//! byte for byte: the event id (`evt_<session id>_<sequence>`) is stable across redeliveries and
//! receivers dedupe on it. The sequence is fixed per type, so a session's events order by it
//! even when one is missing (an agent that never joined has no `session.running`).
//!
//! The JSON is the Standard Webhooks payload shape (`type`, `timestamp`, `data`); the same
//! object is the `detail` of the EventBridge event. Its schema is `docs/events.schema.json`.

use serde::Serialize;

use crate::metrics::AgentMetrics;
use crate::{Session, SessionStatus, Timestamp};

/// Which state change an event reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum EventType {
    /// Admitted: the session exists and holds its slots.
    #[serde(rename = "session.started")]
    Started,
    /// The agent joined its call.
    #[serde(rename = "session.running")]
    Running,
    /// Over, with its reason, detail, duration and final metrics.
    #[serde(rename = "session.ended")]
    Ended,
}

impl EventType {
    /// Every type, in sequence order.
    pub const ALL: [EventType; 3] = [Self::Started, Self::Running, Self::Ended];

    /// The wire name (`session.started`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Started => "session.started",
            Self::Running => "session.running",
            Self::Ended => "session.ended",
        }
    }

    /// The per-session sequence number of this type.
    pub fn sequence(self) -> u32 {
        match self {
            Self::Started => 1,
            Self::Running => 2,
            Self::Ended => 3,
        }
    }
}

impl std::fmt::Display for EventType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One write of a session row, as a registry reports it.
#[derive(Debug, Clone, Copy)]
pub struct Change<'a> {
    /// The status before the write; `None` for the admission that created the row.
    pub before: Option<SessionStatus>,
    /// The row after the write.
    pub session: &'a Session,
    /// The session's last metrics after the write (the final ones on an end), if any.
    pub metrics: Option<&'a AgentMetrics>,
}

impl Change<'_> {
    /// The event this change is, if it is one (a heartbeat, a close request or a metrics flush
    /// is not).
    pub fn event_type(&self) -> Option<EventType> {
        let after = self.session.status;
        match (self.before, after) {
            (None, SessionStatus::Starting) => Some(EventType::Started),
            (Some(SessionStatus::Starting), SessionStatus::Running) => Some(EventType::Running),
            (Some(before), SessionStatus::Ended) if before != SessionStatus::Ended => {
                Some(EventType::Ended)
            }
            _ => None,
        }
    }

    /// The event this change is, built.
    pub fn event(&self) -> Option<SessionEvent> {
        self.event_type()
            .map(|kind| SessionEvent::new(kind, self.session, self.metrics))
    }
}

/// A session event: what a webhook receives and what EventBridge carries as `detail`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SessionEvent {
    /// `session.started`, `session.running` or `session.ended`.
    #[serde(rename = "type")]
    pub kind: EventType,
    /// When the change happened (the row's `created_at`, `running_at` or `ended_at`).
    pub timestamp: Timestamp,
    /// The session.
    pub data: EventData,
}

/// The session an event is about.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventData {
    /// `evt_<session id>_<sequence>`: unique per event, the same on every redelivery (the
    /// webhook's `webhook-id`).
    pub event_id: String,
    /// 1, 2, 3 for started, running, ended: a session's events in order.
    pub sequence: u32,
    /// The session's id.
    pub session_id: String,
    /// Its call.
    pub call_id: String,
    /// Its call's type.
    pub call_type: String,
    /// Its status after the change.
    pub status: SessionStatus,
    /// When it was admitted.
    pub created_at: Timestamp,
    /// When its agent joined.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub running_at: Option<Timestamp>,
    /// `cold` or `warm` on ECS, once known (absent under `serve`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_type: Option<crate::StartType>,
    /// Admission to joined, in milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_latency_ms: Option<u64>,
    /// When it ended (`session.ended`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<Timestamp>,
    /// Why it ended (`session.ended`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_reason: Option<crate::EndReason>,
    /// The end's detail, if it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_detail: Option<String>,
    /// Admission to end, in milliseconds (`session.ended`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// Close requested to ended, in milliseconds, when a close was requested.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub close_latency_ms: Option<u64>,
    /// The final metrics (`session.ended`), in the wire form of the metrics route without
    /// its empty entries.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics: Option<serde_json::Map<String, serde_json::Value>>,
}

fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl SessionEvent {
    /// The event of type `kind` for `session` (as it is after the change).
    pub fn new(kind: EventType, session: &Session, metrics: Option<&AgentMetrics>) -> Self {
        let sequence = kind.sequence();
        let ended = kind == EventType::Ended;
        let timestamp = match kind {
            EventType::Started => session.created_at,
            EventType::Running => session.running_at.unwrap_or(session.created_at),
            EventType::Ended => session.ended_at.unwrap_or(session.created_at),
        };
        let metrics = metrics
            .filter(|_| ended)
            .map(|m| match serde_json::to_value(m.compact()) {
                Ok(serde_json::Value::Object(map)) => map,
                _ => serde_json::Map::new(),
            });
        let start_latency_ms = match kind {
            EventType::Started => None,
            _ => session.start_latency().map(millis),
        };
        Self {
            kind,
            timestamp,
            data: EventData {
                event_id: format!("evt_{}_{sequence}", session.id),
                sequence,
                session_id: session.id.to_string(),
                call_id: session.call_id.to_string(),
                call_type: session.call_type.to_string(),
                status: session.status,
                created_at: session.created_at,
                running_at: session.running_at.filter(|_| kind != EventType::Started),
                start_type: session.start_type.filter(|_| kind != EventType::Started),
                start_latency_ms,
                ended_at: session.ended_at.filter(|_| ended),
                end_reason: session.end_reason.filter(|_| ended),
                end_detail: session.end_detail.clone().filter(|_| ended),
                duration_ms: session
                    .ended_at
                    .filter(|_| ended)
                    .map(|at| millis(at.saturating_since(session.created_at))),
                close_latency_ms: match (ended, session.close_requested_at, session.ended_at) {
                    (true, Some(asked), Some(at)) => Some(millis(at.saturating_since(asked))),
                    _ => None,
                },
                metrics,
            },
        }
    }

    /// The event's id (`webhook-id`).
    pub fn id(&self) -> &str {
        &self.data.event_id
    }

    /// The JSON body, as sent.
    pub fn to_json(&self) -> String {
        // Every field serializes (strings, numbers, timestamps): this cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Where a registry reports its writes. Called while the write's lock is held (in the order of
/// the writes), so it must not block: count, clone what it needs and hand it on.
pub trait ChangeObserver: Send + Sync + std::fmt::Debug {
    /// One write of a session row. `live` is the number of live (counted) sessions after it.
    fn changed(&self, change: &Change<'_>, live: u64);
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::registry::{Idempotency, StartRequest};
    use crate::{CallId, CallType, EndReason, MetricsRecorder, SessionId};

    fn admitted() -> Session {
        let request = StartRequest {
            session_id: SessionId::generate(),
            call_id: CallId::parse("call-1").unwrap(),
            call_type: CallType::default(),
            metadata: None,
            idempotency: None::<Idempotency>,
            max_concurrent_sessions: None,
            max_sessions_per_call: None,
            lease: Duration::from_secs(30),
        };
        Session::admitted(&request, Timestamp::from_unix_micros(1_000_000))
    }

    #[test]
    fn each_transition_is_one_event_with_its_fixed_sequence() {
        let mut session = admitted();
        let started = Change {
            before: None,
            session: &session,
            metrics: None,
        };
        assert_eq!(started.event_type(), Some(EventType::Started));
        session.status = SessionStatus::Running;
        session.running_at = Some(Timestamp::from_unix_micros(1_250_000));
        let running = Change {
            before: Some(SessionStatus::Starting),
            session: &session,
            metrics: None,
        };
        let event = running.event().unwrap();
        assert_eq!((event.kind, event.data.sequence), (EventType::Running, 2));
        assert_eq!(event.data.start_latency_ms, Some(250));
        assert_eq!(event.timestamp, Timestamp::from_unix_micros(1_250_000));
        // A heartbeat (running → running) and a close request (running → closing) are not events.
        assert_eq!(
            Change {
                before: Some(SessionStatus::Running),
                ..running
            }
            .event_type(),
            None
        );
        session.status = SessionStatus::Closing;
        session.close_requested_at = Some(Timestamp::from_unix_micros(5_000_000));
        assert_eq!(
            Change {
                before: Some(SessionStatus::Running),
                session: &session,
                metrics: None
            }
            .event_type(),
            None
        );
        session.status = SessionStatus::Ended;
        session.ended_at = Some(Timestamp::from_unix_micros(5_400_000));
        session.end_reason = Some(EndReason::Requested);
        let recorder = MetricsRecorder::new();
        recorder.on_tool_call(Duration::from_millis(12));
        let metrics = recorder.snapshot();
        let ended = Change {
            before: Some(SessionStatus::Closing),
            session: &session,
            metrics: Some(&metrics),
        };
        let event = ended.event().unwrap();
        assert_eq!(event.data.sequence, 3);
        assert_eq!(event.data.event_id, format!("evt_{}_3", session.id));
        assert_eq!(event.data.duration_ms, Some(4_400));
        assert_eq!(event.data.close_latency_ms, Some(400));
        assert_eq!(event.data.end_reason, Some(EndReason::Requested));
        let json: serde_json::Value = serde_json::from_str(&event.to_json()).unwrap();
        assert_eq!(json["type"], "session.ended");
        assert_eq!(json["data"]["metrics"]["llm_tool_calls__total"], 1);
        assert_eq!(json["data"]["end_reason"], "requested");
        // Ending twice is one event: an already ended row does not change.
        assert_eq!(
            Change {
                before: Some(SessionStatus::Ended),
                ..ended
            }
            .event_type(),
            None
        );
    }

    #[test]
    fn the_same_change_is_the_same_event_byte_for_byte() {
        let session = admitted();
        let change = Change {
            before: None,
            session: &session,
            metrics: None,
        };
        assert_eq!(
            change.event().unwrap().to_json(),
            change.event().unwrap().to_json()
        );
        let json: serde_json::Value =
            serde_json::from_str(&change.event().unwrap().to_json()).unwrap();
        // The Standard Webhooks shape: these three members and no others (in any order: a
        // build may preserve serde_json's insertion order).
        let mut keys: Vec<_> = json.as_object().unwrap().keys().collect();
        keys.sort();
        assert_eq!(keys, ["data", "timestamp", "type"]);
        assert!(json["data"].get("ended_at").is_none());
    }
}
