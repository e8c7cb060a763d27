//! [`Assistant`]: a batteries-included agent, the anchor's `Agent` in Rust. A call transport
//! (an [`Edge`]), a model (an [`Llm`]), instructions, registered functions and the
//! conversation's history; it joins a call, answers what people say (running the tools the
//! model asks for), and records its metrics in the session's recorder.
//!
//! ```no_run
//! # use std::sync::Arc;
//! # use switchboard_agent::{Assistant, CreateContext, JoinContext};
//! # use switchboard_agent::llm::{Llm, ToolSpec};
//! # fn model() -> Arc<dyn Llm> { unimplemented!() }
//! async fn create_agent(ctx: CreateContext) -> anyhow::Result<Assistant> {
//!     Assistant::builder(&ctx)
//!         .instructions("You are a helpful voice assistant.")
//!         .llm(model())
//!         .function(
//!             ToolSpec::new("get_weather", "Get the current weather for a location")
//!                 .string_param("location"),
//!             |args| async move { Ok(format!("The weather in {} is sunny.", args["location"])) },
//!         )
//!         .build()
//! }
//!
//! async fn join_call(agent: Arc<Assistant>, ctx: JoinContext) -> anyhow::Result<()> {
//!     let call = agent.create_call(&ctx.call_type, &ctx.call_id).await?;
//!     let _in_call = agent.join(&call).await?; // leaves on drop
//!     agent.simple_response("Hello! How can I help you today?").await?;
//!     agent.finish().await
//! }
//! ```
//!
//! No lock is held across an await on the call: the connection is shared (`Arc`), and the
//! history's lock is held only by the turn that is answering (turns run one at a time).

use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex};

use switchboard_core::{CallId, CallType, MetricsRecorder};
use tracing::info;

use crate::agent::{Agent, CreateContext, Presence};
use crate::edge::{Call, CallEvent, Connection, Edge, User};
use crate::llm::{ChatMessage, FunctionRegistry, Llm, Role, ToolSpec, respond};

/// The instructions an [`Assistant`] follows unless told otherwise.
pub const DEFAULT_INSTRUCTIONS: &str = "You are a helpful voice assistant.";

/// Builds an [`Assistant`] for one session (see [`Assistant::builder`]).
pub struct AssistantBuilder {
    edge: Option<Arc<dyn Edge>>,
    llm: Option<Arc<dyn Llm>>,
    functions: Arc<FunctionRegistry>,
    user: User,
    instructions: String,
    greeting: Option<String>,
    presence: Presence,
    metrics: MetricsRecorder,
}

impl fmt::Debug for AssistantBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AssistantBuilder")
            .field("user", &self.user)
            .field("functions", &self.functions)
            .finish_non_exhaustive()
    }
}

impl AssistantBuilder {
    /// The call transport (default: the one the process offers, `CreateContext::edge`).
    pub fn edge(mut self, edge: Arc<dyn Edge>) -> Self {
        self.edge = Some(edge);
        self
    }
    /// The model (required).
    pub fn llm(mut self, llm: Arc<dyn Llm>) -> Self {
        self.llm = Some(llm);
        self
    }
    /// Who the agent is in the call (default: id `agent`, name `Assistant`).
    pub fn user(mut self, user: User) -> Self {
        self.user = user;
        self
    }
    /// What the model is told first (default: [`DEFAULT_INSTRUCTIONS`]).
    pub fn instructions(mut self, instructions: impl Into<String>) -> Self {
        self.instructions = instructions.into();
        self
    }
    /// What the agent adds when it welcomes someone who joins ("Welcome, Ada! {greeting}").
    pub fn greeting(mut self, greeting: impl Into<String>) -> Self {
        self.greeting = Some(greeting.into());
        self
    }
    /// Registers a function the model may call (the anchor's `llm.register_function`).
    pub fn function<F, Fut>(mut self, spec: ToolSpec, handler: F) -> Self
    where
        F: Fn(serde_json::Value) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = anyhow::Result<String>> + Send + 'static,
    {
        Arc::make_mut(&mut self.functions).register(spec, handler);
        self
    }
    /// Uses an already built set of functions (shared by every agent of the process).
    pub fn functions(mut self, functions: Arc<FunctionRegistry>) -> Self {
        self.functions = functions;
        self
    }

    /// The assistant; an error names what is missing.
    pub fn build(self) -> anyhow::Result<Assistant> {
        let edge = self.edge.ok_or_else(|| {
            anyhow::anyhow!(
                "the Assistant has no call transport: this process offers none (an ECS task, `run --no-demo`), so give it one with `.edge(...)`"
            )
        })?;
        let llm = self.llm.ok_or_else(|| {
            anyhow::anyhow!("the Assistant has no model: give it one with `.llm(...)`")
        })?;
        Ok(Assistant {
            edge,
            llm,
            functions: self.functions,
            user: self.user,
            greeting: self.greeting,
            presence: self.presence,
            metrics: self.metrics,
            connection: Mutex::new(None),
            leaving: Mutex::new(Vec::new()),
            history: tokio::sync::Mutex::new(vec![ChatMessage::new(
                Role::System,
                self.instructions,
            )]),
            said: Mutex::new(Vec::new()),
        })
    }
}

/// An agent with a call transport, a model, instructions and registered functions.
pub struct Assistant {
    edge: Arc<dyn Edge>,
    llm: Arc<dyn Llm>,
    functions: Arc<FunctionRegistry>,
    user: User,
    greeting: Option<String>,
    presence: Presence,
    metrics: MetricsRecorder,
    connection: Mutex<Option<Arc<dyn Connection>>>,
    /// Leaves begun by dropped [`InCall`]s, which `close` waits for.
    leaving: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    history: tokio::sync::Mutex<Vec<ChatMessage>>,
    said: Mutex<Vec<String>>,
}

impl fmt::Debug for Assistant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Assistant")
            .field("user", &self.user)
            .field("functions", &self.functions)
            .finish_non_exhaustive()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Assistant {
    /// A builder for the session `ctx` is for: the assistant reports to the session's
    /// presence and metrics, and joins through the edge the process offers unless given one.
    pub fn builder(ctx: &CreateContext) -> AssistantBuilder {
        AssistantBuilder {
            edge: ctx.edge.clone(),
            llm: None,
            functions: Arc::default(),
            user: User::new("agent", "Assistant"),
            instructions: DEFAULT_INSTRUCTIONS.to_owned(),
            greeting: None,
            presence: ctx.presence.clone(),
            metrics: ctx.metrics.clone(),
        }
    }

    /// Creates the call (the anchor's `agent.create_call`).
    pub async fn create_call(
        &self,
        call_type: &CallType,
        call_id: &CallId,
    ) -> anyhow::Result<Call> {
        self.edge.create_call(call_type, call_id).await
    }

    /// Joins `call` (the anchor's `async with agent.join(call)`): presence then follows who
    /// comes and goes. The guard leaves the call when dropped (or with [`InCall::leave`]).
    /// One call at a time: joining again before leaving is an error.
    pub async fn join(&self, call: &Call) -> anyhow::Result<InCall<'_>> {
        anyhow::ensure!(
            lock(&self.connection).is_none(),
            "the Assistant is already in a call: leave it (drop its InCall) before joining another"
        );
        let connection: Arc<dyn Connection> = self
            .edge
            .join(call, &self.user, self.presence.clone())
            .await?
            .into();
        let raced = {
            let mut current = lock(&self.connection);
            match current.as_ref() {
                Some(_) => Some(connection),
                None => {
                    *current = Some(connection);
                    None
                }
            }
        };
        if let Some(extra) = raced {
            // Another join of this agent won meanwhile: this connection is not kept.
            extra.leave().await;
            anyhow::bail!("the Assistant joined another call meanwhile");
        }
        Ok(InCall { agent: self })
    }

    fn connection(&self) -> Option<Arc<dyn Connection>> {
        lock(&self.connection).clone()
    }

    /// Answers `text` (as if a participant said it) through the model, calling tools as
    /// needed, and says the answer in the call.
    pub async fn simple_response(&self, text: &str) -> anyhow::Result<String> {
        let answer = {
            let mut history = self.history.lock().await;
            history.push(ChatMessage::new(Role::User, text));
            // Boxed: a turn's futures (the model call, the tools) exist while it runs, not in
            // the waiting agent's state.
            Box::pin(respond(
                &*self.llm,
                &self.functions,
                &mut history,
                &self.metrics,
            ))
            .await?
        };
        self.say(&answer).await?;
        Ok(answer)
    }

    /// Says `text` in the call as it is (no model turn).
    pub async fn say(&self, text: &str) -> anyhow::Result<()> {
        if let Some(connection) = self.connection() {
            connection.send_message(text).await?;
        }
        lock(&self.said).push(text.to_owned());
        Ok(())
    }

    /// Converses until the call ends (the anchor's `agent.finish()`): answers every message
    /// and welcomes everyone who joins.
    pub async fn finish(&self) -> anyhow::Result<()> {
        let Some(connection) = self.connection() else {
            return Ok(());
        };
        while let Some(event) = connection.next_event().await {
            match event {
                CallEvent::Message { from, text } => {
                    info!(from = %from.id, %text, "participant said");
                    let answer = self.simple_response(&text).await?;
                    info!(%answer, "agent answered");
                }
                CallEvent::ParticipantJoined(user) => {
                    info!(participant = %user.id, "participant joined");
                    let welcome = match &self.greeting {
                        Some(greeting) => format!("Welcome, {}! {greeting}", user.name),
                        None => format!("Welcome, {}!", user.name),
                    };
                    self.say(&welcome).await?;
                }
                CallEvent::ParticipantLeft(user) => {
                    info!(participant = %user.id, "participant left");
                }
                CallEvent::Ended => break,
            }
        }
        Ok(())
    }

    /// Everything the agent said, in order.
    pub fn said(&self) -> Vec<String> {
        lock(&self.said).clone()
    }

    /// Who the agent is in the call.
    pub fn user(&self) -> &User {
        &self.user
    }

    /// Leaves the call it is in, if any (idempotent), and waits for a leave a dropped
    /// [`InCall`] began.
    pub async fn leave(&self) {
        let connection = lock(&self.connection).take();
        if let Some(connection) = connection {
            connection.leave().await;
        }
        let leaving = std::mem::take(&mut *lock(&self.leaving));
        for leave in leaving {
            let _ = leave.await;
        }
    }

    /// Leaves without waiting (a guard's drop cannot wait): at once when the transport can,
    /// else on a task of its own that [`leave`](Self::leave) waits for.
    fn leave_later(&self) {
        let Some(connection) = lock(&self.connection).take() else {
            return;
        };
        if connection.leave_now() {
            return;
        }
        // Outside a runtime, the connection leaves when it is dropped, here.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let task = runtime.spawn(async move { connection.leave().await });
            lock(&self.leaving).push(task);
        }
    }
}

impl Agent for Assistant {
    async fn close(&self) {
        self.leave().await;
    }
}

/// The agent in a call: it leaves when this is dropped.
#[must_use = "the agent leaves the call when the guard is dropped"]
pub struct InCall<'a> {
    agent: &'a Assistant,
}

impl fmt::Debug for InCall<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InCall")
            .field("agent", &self.agent.user)
            .finish()
    }
}

impl InCall<'_> {
    /// Leaves now, waiting for the transport to confirm.
    pub async fn leave(self) {
        self.agent.leave().await;
        std::mem::forget(self);
    }
}

impl Drop for InCall<'_> {
    fn drop(&mut self) {
        self.agent.leave_later();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use async_trait::async_trait;
    use futures::stream::BoxStream;

    use super::*;
    use crate::llm::LlmEvent;

    /// A transport that counts its open connections.
    #[derive(Default)]
    struct Counting(Arc<AtomicUsize>);

    struct Open(Arc<AtomicUsize>, Presence);

    #[async_trait]
    impl Connection for Open {
        async fn send_message(&self, _text: &str) -> anyhow::Result<()> {
            Ok(())
        }
        async fn next_event(&self) -> Option<CallEvent> {
            None
        }
        async fn leave(&self) {
            self.leave_now();
        }
        fn leave_now(&self) -> bool {
            self.0.fetch_sub(1, Ordering::SeqCst);
            self.1.agent_left();
            true
        }
    }

    #[async_trait]
    impl Edge for Counting {
        async fn join(
            &self,
            _call: &Call,
            _user: &User,
            presence: Presence,
        ) -> anyhow::Result<Box<dyn Connection>> {
            self.0.fetch_add(1, Ordering::SeqCst);
            presence.agent_joined();
            Ok(Box::new(Open(self.0.clone(), presence)))
        }
    }

    struct Silent;

    #[async_trait]
    impl Llm for Silent {
        async fn stream(
            &self,
            _messages: &[ChatMessage],
            _tools: &[ToolSpec],
        ) -> anyhow::Result<BoxStream<'static, anyhow::Result<LlmEvent>>> {
            anyhow::bail!("not used")
        }
    }

    fn ctx() -> CreateContext {
        CreateContext {
            session: None,
            metadata: None,
            video_track_override: None,
            edge: None,
            presence: Presence::new(),
            metrics: MetricsRecorder::new(),
            cache: Arc::default(),
        }
    }

    #[tokio::test]
    async fn one_call_at_a_time_and_the_guard_leaves_on_drop() {
        let open = Arc::new(AtomicUsize::new(0));
        let ctx = ctx();
        let agent = Assistant::builder(&ctx)
            .edge(Arc::new(Counting(open.clone())))
            .llm(Arc::new(Silent))
            .build()
            .unwrap();
        let call = agent
            .create_call(&CallType::default(), &CallId::parse("c").unwrap())
            .await
            .unwrap();
        let in_call = agent.join(&call).await.unwrap();
        assert!(ctx.presence.state().joined);
        let again = agent
            .join(&call)
            .await
            .expect_err("a second join is refused");
        assert!(again.to_string().contains("already in a call"), "{again}");
        assert_eq!(
            open.load(Ordering::SeqCst),
            1,
            "the refused join opened nothing"
        );
        drop(in_call);
        assert_eq!(open.load(Ordering::SeqCst), 0, "the guard left on drop");
        assert!(!ctx.presence.state().joined);
        // Left, it can join again; close leaves that call too.
        let _in_call = agent.join(&call).await.unwrap();
        agent.close().await;
        assert_eq!(open.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn without_an_edge_or_a_model_the_build_says_what_is_missing() {
        let no_edge = Assistant::builder(&ctx()).llm(Arc::new(Silent)).build();
        assert!(
            no_edge
                .unwrap_err()
                .to_string()
                .contains("no call transport")
        );
        let no_model = Assistant::builder(&ctx())
            .edge(Arc::new(Counting::default()))
            .build();
        assert!(no_model.unwrap_err().to_string().contains("no model"));
    }
}
