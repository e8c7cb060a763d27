//! The agent runtime: how one agent lives in one call, supervised.
//!
//! # Layout
//! - [`agent`]: the [`Agent`] trait, [`Presence`] (who is in the call; drives the idle clock),
//!   [`WarmupCache`], and the contexts handed to `create_agent` and `join_call`.
//! - [`assistant`]: [`Assistant`], a batteries-included agent (edge, model, instructions,
//!   tools, history) with the anchor's `join`/`simple_response`/`finish`.
//! - [`edge`] and [`llm`]: the agent-side ports (a call transport, a model). Adapters live in
//!   their own crates: `switchboard-local-call` (`HubEdge`, the local call) and
//!   `switchboard-openai` (`OpenAiLlm`, an OpenAI-compatible streaming model).
//! - [`launcher`]: [`AgentLauncher`] (the anchor's API: start, stop, warmup, sessions) and
//!   [`InProcessLauncher`], the [`TaskLauncher`](switchboard_core::TaskLauncher) that runs
//!   agents as tokio tasks in this process.
//! - [`supervisor`]: the loop that owns one session: lease renewal, close flag, idle and
//!   duration limits, metrics flushes, and the exactly-once end.
//!
//! # Must not depend on
//! No `axum`, `aws-*` or `lambda_*` crate: the HTTP API and the AWS adapters build on this
//! crate, not the other way round. Time comes from the `Clock` port and tokio timers only.

pub mod agent;
pub mod assistant;
pub mod edge;
pub mod launcher;
pub mod llm;
pub mod supervisor;

pub use agent::{Agent, CreateContext, JoinContext, Presence, PresenceState, WarmupCache};
pub use assistant::{Assistant, AssistantBuilder, InCall};
pub use launcher::{
    AgentLauncher, AgentLauncherBuilder, AgentSession, InProcessLauncher, SessionEnd,
};
pub use switchboard_core::MetricsRecorder;
