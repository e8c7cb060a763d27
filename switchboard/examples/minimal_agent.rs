//! The smallest agent program: an agent with no call transport and no model, only to show
//! the shape. It joins (as far as the runtime can tell), records a model response, and
//! stays until its session is closed.
//!
//! `cargo run -p switchboard --example minimal_agent -- serve`

use std::sync::Arc;
use std::time::Duration;

use switchboard::prelude::*;

/// What your agent holds: clients, models, the call's connection.
struct MyAgent;

// `warmup` and `close` have defaults; implement them to load models or leave the call.
impl Agent for MyAgent {}

async fn create_agent(_ctx: CreateContext) -> anyhow::Result<MyAgent> {
    Ok(MyAgent)
}

async fn join_call(_agent: Arc<MyAgent>, ctx: JoinContext) -> anyhow::Result<()> {
    ctx.presence.agent_joined(); // your call transport reports joins and leaves
    ctx.metrics.on_llm_response(
        Duration::from_millis(245),
        Some(Duration::from_millis(120)),
        Usage::new(1500, 800),
    ); // record what really happened
    std::future::pending().await
}

fn main() -> std::process::ExitCode {
    Runner::new(
        AgentLauncher::builder(create_agent, join_call)
            .max_concurrent_sessions(10)
            .max_sessions_per_call(1),
    )
    .cli() // `serve`, `run`, and `task` (with the `aws` feature)
}
