//! Switchboard for agent authors: the one crate an agent's program depends on.
//!
//! ```no_run
//! use switchboard::prelude::*;
//!
//! async fn create_agent(ctx: CreateContext) -> anyhow::Result<Assistant> {
//!     # let model: std::sync::Arc<dyn switchboard::llm::Llm> = unimplemented!();
//!     Assistant::builder(&ctx).llm(model).build()
//! }
//!
//! async fn join_call(agent: std::sync::Arc<Assistant>, ctx: JoinContext) -> anyhow::Result<()> {
//!     let call = agent.create_call(&ctx.call_type, &ctx.call_id).await?;
//!     let _in_call = agent.join(&call).await?;
//!     agent.simple_response("Hello! How can I help you today?").await?;
//!     agent.finish().await
//! }
//!
//! fn main() -> std::process::ExitCode {
//!     Runner::new(AgentLauncher::builder(create_agent, join_call)).cli()
//! }
//! ```
//!
//! # Layout
//! - The agent runtime (`switchboard-agent`): [`Agent`], [`AgentLauncher`], [`Assistant`],
//!   the contexts, and the ports an integration implements: [`edge`] (a call transport) and
//!   [`llm`] (a model).
//! - The program (`switchboard-runner`): [`Runner`], its `serve`, `run` and `task` commands.
//! - [`local_call`]: the call `serve` and `run` offer on this machine (`HubEdge`).
//! - `openai` (feature `openai`): `OpenAiLlm`.
//! - The domain's types agents meet (`switchboard-core`): ids, [`Metadata`], [`metrics`].
//!
//! # Features
//! - `aws`: the `task` command (the agent of an ECS task) and `serve --registry dynamodb`.
//! - `openai`: `openai::OpenAiLlm`.

pub use switchboard_agent::{
    Agent, AgentLauncher, AgentLauncherBuilder, AgentSession, Assistant, AssistantBuilder,
    CreateContext, InCall, JoinContext, Presence, PresenceState, SessionEnd, WarmupCache, edge,
    llm,
};
pub use switchboard_core::metrics::{self, MetricsRecorder, Usage};
pub use switchboard_core::{CallId, CallType, EndReason, Metadata, SessionId};
pub use switchboard_local_call as local_call;
#[cfg(feature = "openai")]
pub use switchboard_openai as openai;
pub use switchboard_runner::{Runner, ServeOptions};
pub use {anyhow, async_trait::async_trait};

/// What an agent's program needs in scope: `use switchboard::prelude::*;`.
pub mod prelude {
    pub use crate::edge::{Call, CallEvent, Connection, Edge, User};
    pub use crate::llm::{FunctionRegistry, Llm, ToolSpec};
    pub use crate::{
        Agent, AgentLauncher, Assistant, CreateContext, JoinContext, MetricsRecorder, Presence,
        Runner, Usage, anyhow,
    };
}
