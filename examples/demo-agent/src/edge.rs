//! The demo's call: the one the runner offers (the local call, where people join from the
//! demo page: `serve`, `run`), else [`ScriptedEdge`], an in-memory call with a scripted
//! participant, for where no person can join (an ECS task, `run --no-demo`, load tests).
//! The participant joins, asks a question, stays a while and leaves, so the agent's idle
//! clock is really exercised.

use std::sync::Arc;
use std::time::Duration;

use switchboard::async_trait;
use switchboard::edge::{Call, CallEvent, Connection, Edge, EventQueue, User};
use switchboard::{CreateContext, Presence};
use tokio::task::JoinHandle;
use tracing::debug;

/// What the scripted participant does after the agent joins.
#[derive(Debug, Clone, PartialEq)]
pub struct ParticipantScript {
    /// How long the transport takes to put the agent in the call (a slow connect).
    pub connect_after: Duration,
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
            connect_after: Duration::ZERO,
            join_after: Duration::from_millis(200),
            question: Some("What's the weather in Paris?".into()),
            ask_after: Duration::from_secs(1),
            stay_for: Duration::from_secs(30),
        }
    }
}

/// The in-memory call transport.
#[derive(Debug, Clone, Default)]
pub struct ScriptedEdge {
    script: ParticipantScript,
}

impl ScriptedEdge {
    /// Calls whose participant follows `script`.
    pub fn new(script: ParticipantScript) -> Self {
        Self { script }
    }
}

#[async_trait]
impl Edge for ScriptedEdge {
    async fn join(
        &self,
        call: &Call,
        agent_user: &User,
        presence: Presence,
    ) -> anyhow::Result<Box<dyn Connection>> {
        let events = Arc::new(EventQueue::default());
        tokio::time::sleep(self.script.connect_after).await;
        presence.agent_joined();
        debug!(call_id = %call.call_id, agent = %agent_user.id, "agent joined the scripted call");
        let script = tokio::spawn(run_script(
            self.script.clone(),
            presence.clone(),
            events.clone(),
        ));
        Ok(Box::new(ScriptedConnection {
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
pub struct ScriptedConnection {
    events: Arc<EventQueue>,
    script: JoinHandle<()>,
    presence: Presence,
}

#[async_trait]
impl Connection for ScriptedConnection {
    async fn send_message(&self, text: &str) -> anyhow::Result<()> {
        debug!(text, "agent said");
        Ok(())
    }

    async fn next_event(&self) -> Option<CallEvent> {
        self.events.recv().await
    }

    async fn leave(&self) {
        self.leave_now();
    }

    fn leave_now(&self) -> bool {
        self.script.abort();
        self.presence.agent_left();
        true
    }
}

impl Drop for ScriptedConnection {
    fn drop(&mut self) {
        self.script.abort();
    }
}

/// Seconds from the session's metadata `field`, else the variable `var`.
fn seconds(ctx: &CreateContext, field: &str, var: &str) -> Option<f64> {
    ctx.metadata
        .as_ref()
        .and_then(|m| m.as_map().get(field))
        .and_then(serde_json::Value::as_f64)
        .or_else(|| std::env::var(var).ok().and_then(|v| v.parse().ok()))
        .filter(|s: &f64| s.is_finite() && *s >= 0.0)
}

/// The demo's call transport: the one the process offers (the local call under `serve` and
/// `run` with its demo page) unless a scripted participant was asked for; otherwise the
/// in-memory call with a scripted participant, as in an ECS task or `run --no-demo`. The
/// participant stays `participant_seconds` (metadata) or `DEMO_PARTICIPANT_SECONDS` (30 s
/// by default); `connect_seconds` or `DEMO_CONNECT_SECONDS` makes the scripted call slow to
/// put the agent in (0 by default: a transport that never connects in time, for the join
/// deadline).
pub fn call_edge(ctx: &CreateContext) -> Arc<dyn Edge> {
    let stay = seconds(ctx, "participant_seconds", "DEMO_PARTICIPANT_SECONDS");
    let connect = seconds(ctx, "connect_seconds", "DEMO_CONNECT_SECONDS");
    match (&ctx.edge, stay, connect) {
        (Some(edge), None, None) => edge.clone(),
        (_, stay, connect) => Arc::new(ScriptedEdge::new(ParticipantScript {
            stay_for: Duration::from_secs_f64(stay.unwrap_or(30.0)),
            connect_after: Duration::from_secs_f64(connect.unwrap_or(0.0)),
            ..Default::default()
        })),
    }
}
