//! `LocalEdge`: an in-memory call with a scripted participant, for where no person can join
//! (an ECS task, `run --no-demo`, load tests); under `serve` the demo joins the local call
//! (`HubEdge`) instead. The participant joins, asks a question, stays a while and leaves, so
//! the agent's idle clock is really exercised.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use switchboard_agent::Presence;
use switchboard_agent::edge::{Call, CallEvent, Connection, Edge, EventQueue, User};
use tokio::task::JoinHandle;
use tracing::debug;

/// What the scripted participant does after the agent joins.
#[derive(Debug, Clone, PartialEq)]
pub struct ParticipantScript {
    /// When the participant joins.
    pub join_after: Duration,
    /// What they ask, once joined.
    pub question: Option<String>,
    /// When they ask it (after joining).
    pub ask_after: Duration,
    /// How long they stay (after joining).
    pub stay_for: Duration,
}

impl Default for ParticipantScript {
    fn default() -> Self {
        Self {
            join_after: Duration::from_millis(200),
            question: Some("What's the weather in Paris?".into()),
            ask_after: Duration::from_secs(1),
            stay_for: Duration::from_secs(30),
        }
    }
}

/// The in-memory call transport.
#[derive(Debug, Clone, Default)]
pub struct LocalEdge {
    script: ParticipantScript,
}

impl LocalEdge {
    /// Calls whose participant follows `script`.
    pub fn new(script: ParticipantScript) -> Self {
        Self { script }
    }
}

#[async_trait]
impl Edge for LocalEdge {
    async fn join(
        &self,
        call: &Call,
        agent_user: &User,
        presence: Presence,
    ) -> anyhow::Result<Box<dyn Connection>> {
        let events = Arc::new(EventQueue::default());
        presence.agent_joined();
        debug!(call_id = %call.call_id, agent = %agent_user.id, "agent joined the local call");
        let script = tokio::spawn(run_script(
            self.script.clone(),
            presence.clone(),
            events.clone(),
        ));
        Ok(Box::new(LocalConnection {
            events,
            script,
            presence,
        }))
    }
}

async fn run_script(script: ParticipantScript, presence: Presence, events: Arc<EventQueue>) {
    let user = User::new("demo-user", "Demo User");
    tokio::time::sleep(script.join_after).await;
    presence.participant_joined(&user.id);
    events.send(CallEvent::ParticipantJoined(user.clone()));
    let mut stayed = Duration::ZERO;
    if let Some(question) = script.question
        && script.ask_after < script.stay_for
    {
        tokio::time::sleep(script.ask_after).await;
        stayed = script.ask_after;
        events.send(CallEvent::Message {
            from: user.clone(),
            text: question,
        });
    }
    tokio::time::sleep(script.stay_for.saturating_sub(stayed)).await;
    presence.participant_left(&user.id);
    events.send(CallEvent::ParticipantLeft(user));
}

/// The agent's side of a local call. The call stays open (`next_event` waits) until the
/// agent leaves, even after the scripted participant is gone: then the agent is alone and
/// its idle clock runs.
#[derive(Debug)]
pub struct LocalConnection {
    events: Arc<EventQueue>,
    script: JoinHandle<()>,
    presence: Presence,
}

#[async_trait]
impl Connection for LocalConnection {
    async fn send_message(&self, text: &str) -> anyhow::Result<()> {
        debug!(text, "agent said");
        Ok(())
    }

    async fn next_event(&mut self) -> Option<CallEvent> {
        self.events.recv().await
    }

    async fn leave(&mut self) {
        self.script.abort();
        self.presence.agent_left();
    }
}

impl Drop for LocalConnection {
    fn drop(&mut self) {
        self.script.abort();
    }
}
