//! The `Edge` port: the call transport an agent joins (Stream, LiveKit, a local WebSocket
//! call, an in-memory stand-in). It creates and joins calls, reports who comes and goes
//! through [`Presence`], and carries messages.

use async_trait::async_trait;
use switchboard_core::{CallId, CallType};

use crate::Presence;

/// A participant of a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Stable id.
    pub id: String,
    /// Display name.
    pub name: String,
}

impl User {
    /// A user with `id` and `name`.
    pub fn new(id: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            name: name.into(),
        }
    }
}

/// A call an agent can join.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// The call's type.
    pub call_type: CallType,
    /// The call's id.
    pub call_id: CallId,
}

/// Something that happens in a joined call.
#[derive(Debug, Clone, PartialEq)]
pub enum CallEvent {
    /// A participant joined.
    ParticipantJoined(User),
    /// A participant left.
    ParticipantLeft(User),
    /// A participant sent a text message.
    Message {
        /// Who sent it.
        from: User,
        /// What they said.
        text: String,
    },
    /// The call ended for everyone.
    Ended,
}

/// A call transport.
#[async_trait]
pub trait Edge: Send + Sync {
    /// Creates the call if needed and returns it.
    async fn create_call(&self, call_type: &CallType, call_id: &CallId) -> anyhow::Result<Call>;

    /// Joins `call` as `agent_user`. The connection keeps `presence` up to date (agent joined,
    /// participants joining and leaving) for as long as it is open.
    async fn join(
        &self,
        call: &Call,
        agent_user: &User,
        presence: Presence,
    ) -> anyhow::Result<Box<dyn Connection>>;
}

/// The agent's side of a joined call.
#[async_trait]
pub trait Connection: Send + Sync {
    /// Sends a text message to the call.
    async fn send_message(&self, text: &str) -> anyhow::Result<()>;

    /// The next event, or `None` once the connection is closed.
    async fn next_event(&mut self) -> Option<CallEvent>;

    /// Leaves the call (idempotent). Presence then reports the agent as not joined.
    async fn leave(&mut self);
}
