//! The demo agent: the Basic Example of Vision Agents' HTTP server docs, in Rust.
//!
//! An assistant with instructions and a registered `get_weather` tool greets the call on join,
//! welcomes each person who joins, and answers every message until it is closed. Its metrics
//! go through the `MetricsRecorder` and are measured from what it really does.
//!
//! Its call: under `serve` (and `run` with its demo page) the local call
//! (the edge the runner offers), where people join from the demo page over a WebSocket; the idle timeout runs
//! once the last person leaves. Elsewhere (an ECS task, `run --no-demo`), or when a scripted
//! participant is asked for, an in-memory call ([`edge::LocalEdge`]) with a participant who
//! asks about the weather and leaves after `DEMO_PARTICIPANT_SECONDS` (or the session
//! metadata's `participant_seconds`; default 30). Its model: [`llm::LocalLlm`], a
//! deterministic local responder, unless `OPENAI_MODEL` names an OpenAI-compatible model
//! (with `OPENAI_BASE_URL` and `OPENAI_API_KEY`; build with the `openai` feature).

pub mod edge;
pub mod llm;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::json;
use switchboard_agent::edge::{Call, CallEvent, Connection, Edge, User};
use switchboard_agent::llm::{ChatMessage, FunctionRegistry, Llm, Role, ToolSpec, respond};
use switchboard_agent::{Agent, CreateContext, JoinContext, Presence, WarmupCache};
use switchboard_core::{CallId, CallType, MetricsRecorder};
use tokio::sync::Mutex;
use tracing::info;

use crate::edge::{LocalEdge, ParticipantScript};
use crate::llm::LocalLlm;

/// The greeting the agent says when it joins.
pub const GREETING: &str = "Hello! How can I help you today?";
/// The agent's instructions.
pub const INSTRUCTIONS: &str = "You are a helpful voice assistant.";

/// An agent with a call transport, a model and registered functions.
pub struct DemoAgent {
    edge: Arc<dyn Edge>,
    llm: Arc<dyn Llm>,
    functions: Arc<FunctionRegistry>,
    user: User,
    presence: Presence,
    metrics: MetricsRecorder,
    connection: Mutex<Option<Box<dyn Connection>>>,
    history: Mutex<Vec<ChatMessage>>,
    said: std::sync::Mutex<Vec<String>>,
}

impl std::fmt::Debug for DemoAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DemoAgent")
            .field("user", &self.user)
            .field("functions", &self.functions)
            .finish_non_exhaustive()
    }
}

impl DemoAgent {
    /// An agent on `edge` with `llm`, following `instructions`.
    pub fn new(edge: Arc<dyn Edge>, llm: Arc<dyn Llm>, instructions: &str) -> Self {
        Self {
            edge,
            llm,
            functions: Arc::new(FunctionRegistry::new()),
            user: User::new("agent", "Assistant"),
            presence: Presence::new(),
            metrics: MetricsRecorder::new(),
            connection: Mutex::new(None),
            history: Mutex::new(vec![ChatMessage::new(Role::System, instructions)]),
            said: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// Registers a function the model may call (the anchor's `llm.register_function`).
    pub fn register_function<F, Fut>(&mut self, spec: ToolSpec, handler: F)
    where
        F: Fn(serde_json::Value) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = anyhow::Result<String>> + Send + 'static,
    {
        Arc::make_mut(&mut self.functions).register(spec, handler);
    }

    /// Uses an already built set of functions (shared by every agent of the process).
    pub fn with_functions(mut self, functions: Arc<FunctionRegistry>) -> Self {
        self.functions = functions;
        self
    }

    /// Creates the call.
    pub async fn create_call(
        &self,
        call_type: &CallType,
        call_id: &CallId,
    ) -> anyhow::Result<Call> {
        self.edge.create_call(call_type, call_id).await
    }

    /// Joins `call`; presence then follows who comes and goes.
    pub async fn join(&self, call: &Call) -> anyhow::Result<()> {
        let connection = self
            .edge
            .join(call, &self.user, self.presence.clone())
            .await?;
        *self.connection.lock().await = Some(connection);
        Ok(())
    }

    /// Answers `text` (as if a participant said it) through the model, calling tools as
    /// needed, and says the answer in the call.
    pub async fn simple_response(&self, text: &str) -> anyhow::Result<String> {
        let answer = {
            let mut history = self.history.lock().await;
            history.push(ChatMessage::new(Role::User, text));
            respond(&*self.llm, &self.functions, &mut history, &self.metrics).await?
        };
        self.say(&answer).await?;
        Ok(answer)
    }

    /// Says `text` in the call as it is (no model turn).
    pub async fn say(&self, text: &str) -> anyhow::Result<()> {
        if let Some(connection) = self.connection.lock().await.as_ref() {
            connection.send_message(text).await?;
        }
        if let Ok(mut said) = self.said.lock() {
            said.push(text.to_owned());
        }
        Ok(())
    }

    /// Converses until the call ends: answers every message.
    pub async fn finish(&self) -> anyhow::Result<()> {
        loop {
            let event = match self.connection.lock().await.as_mut() {
                Some(connection) => connection.next_event().await,
                None => None,
            };
            match event {
                Some(CallEvent::Message { from, text }) => {
                    info!(from = %from.id, %text, "participant said");
                    // Boxed: a turn's futures (the model call, the tools) exist while it
                    // runs, not in the waiting agent's state.
                    let answer = Box::pin(self.simple_response(&text)).await?;
                    info!(%answer, "agent answered");
                }
                Some(CallEvent::ParticipantJoined(user)) => {
                    info!(participant = %user.id, "participant joined");
                    self.say(&format!("Welcome, {}! {GREETING}", user.name))
                        .await?;
                }
                Some(CallEvent::ParticipantLeft(user)) => {
                    info!(participant = %user.id, "participant left")
                }
                Some(CallEvent::Ended) | None => return Ok(()),
            }
        }
    }

    /// Everything the agent said, in order.
    pub fn said(&self) -> Vec<String> {
        self.said.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

#[async_trait]
impl Agent for DemoAgent {
    async fn warmup(&self, _cache: &WarmupCache) -> anyhow::Result<()> {
        // The model is built once per process (its connection pool shared by every agent);
        // a configuration error stops the server at start-up, not at the first session.
        model().map(drop)
    }

    async fn close(&self) {
        if let Some(mut connection) = self.connection.lock().await.take() {
            connection.leave().await;
        }
    }

    fn presence(&self) -> &Presence {
        &self.presence
    }

    fn metrics(&self) -> &MetricsRecorder {
        &self.metrics
    }
}

/// How long a scripted participant stays, when one is asked for: the session's metadata
/// `participant_seconds`, else `DEMO_PARTICIPANT_SECONDS`.
fn participant_seconds(ctx: &CreateContext) -> Option<f64> {
    ctx.metadata
        .as_ref()
        .and_then(|m| m.as_map().get("participant_seconds"))
        .and_then(serde_json::Value::as_f64)
        .or_else(|| {
            std::env::var("DEMO_PARTICIPANT_SECONDS")
                .ok()
                .and_then(|v| v.parse().ok())
        })
        .filter(|s: &f64| s.is_finite() && *s >= 0.0)
}

/// The call transport: the local call when the process serves one (`serve`, `run` with its
/// demo page) and no scripted participant was asked for; otherwise the in-memory call with a
/// scripted participant (30 s unless asked otherwise), as in an ECS task or `run --no-demo`.
fn edge(ctx: &CreateContext) -> Arc<dyn Edge> {
    match (&ctx.edge, participant_seconds(ctx)) {
        (Some(edge), None) => edge.clone(),
        (_, seconds) => Arc::new(LocalEdge::new(ParticipantScript {
            stay_for: Duration::from_secs_f64(seconds.unwrap_or(30.0)),
            ..Default::default()
        })),
    }
}

/// The demo's model, built once per process from the environment: the OpenAI-compatible
/// model when `OPENAI_MODEL` is set (built with the `openai` feature), else [`LocalLlm`].
pub fn model() -> anyhow::Result<Arc<dyn Llm>> {
    static MODEL: std::sync::OnceLock<Result<Arc<dyn Llm>, String>> = std::sync::OnceLock::new();
    MODEL
        .get_or_init(|| build_model(|name| std::env::var(name).ok()).map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(anyhow::Error::msg)
}

/// The model the variables read through `var` configure (see [`model`]).
pub fn build_model(var: impl Fn(&str) -> Option<String>) -> anyhow::Result<Arc<dyn Llm>> {
    #[cfg(feature = "openai")]
    if let Some(config) = switchboard_openai::OpenAiConfig::from_vars(&var)? {
        info!(model = %config.model, base_url = %config.base_url, "the demo answers with an OpenAI-compatible model");
        return Ok(Arc::new(switchboard_openai::OpenAiLlm::new(config)?));
    }
    #[cfg(not(feature = "openai"))]
    anyhow::ensure!(
        var("OPENAI_MODEL").is_none_or(|m| m.trim().is_empty()),
        "OPENAI_MODEL is set but this demo-agent was built without the `openai` feature (cargo run -p demo-agent --features openai -- serve)"
    );
    Ok(Arc::new(LocalLlm))
}

/// The functions the demo registers (`get_weather`), built once and shared by every agent.
pub fn functions() -> Arc<FunctionRegistry> {
    static FUNCTIONS: std::sync::OnceLock<Arc<FunctionRegistry>> = std::sync::OnceLock::new();
    FUNCTIONS
        .get_or_init(|| {
            let mut functions = FunctionRegistry::new();
            functions.register(
                ToolSpec {
                    name: "get_weather".into(),
                    description: "Get the current weather for a location".into(),
                    parameters: json!({
                        "type": "object",
                        "properties": {"location": {"type": "string"}},
                        "required": ["location"]
                    }),
                },
                |args| async move {
                    let location = args["location"]
                        .as_str()
                        .unwrap_or("an unknown place")
                        .to_owned();
                    Ok(format!("The weather in {location} is sunny and 72°F."))
                },
            );
            Arc::new(functions)
        })
        .clone()
}

/// The anchor's `create_agent`: an assistant with a `get_weather` tool.
pub async fn create_agent(ctx: CreateContext) -> anyhow::Result<DemoAgent> {
    let agent = DemoAgent::new(edge(&ctx), model()?, INSTRUCTIONS).with_functions(functions());
    Ok(agent)
}

/// The anchor's `join_call`: create the call, join it, greet, and converse until it ends.
pub async fn join_call(agent: Arc<DemoAgent>, ctx: JoinContext) -> anyhow::Result<()> {
    let call = agent.create_call(&ctx.call_type, &ctx.call_id).await?;
    agent.join(&call).await?;
    Box::pin(agent.simple_response(GREETING)).await?;
    agent.finish().await
}
