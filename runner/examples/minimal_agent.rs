//! The smallest agent program (the README's "Write your own agent"):
//! `cargo run -p switchboard-runner --example minimal_agent -- serve`.

use std::sync::Arc;

use switchboard_agent::{Agent, AgentLauncher, CreateContext, JoinContext, Presence};
use switchboard_core::MetricsRecorder;
use switchboard_runner::Runner;

struct MyAgent {
    presence: Presence,
    metrics: MetricsRecorder,
}

#[async_trait::async_trait]
impl Agent for MyAgent {
    fn presence(&self) -> &Presence {
        &self.presence
    }
    fn metrics(&self) -> &MetricsRecorder {
        &self.metrics
    }
    async fn close(&self) { /* leave the call, release resources */
    }
}

// Called for every session (and once with ctx.session = None to warm the process up).
async fn create_agent(_ctx: CreateContext) -> anyhow::Result<MyAgent> {
    Ok(MyAgent {
        presence: Presence::new(),
        metrics: MetricsRecorder::new(),
    })
}

// Runs until the agent is done; the session ends `agent_finished` when it returns.
async fn join_call(agent: Arc<MyAgent>, _ctx: JoinContext) -> anyhow::Result<()> {
    agent.presence.agent_joined(); // your call transport reports joins/leaves
    agent.metrics.on_llm_response(245.0, Some(120.0), 1500, 800); // record what really happened
    std::future::pending().await
}

fn main() -> std::process::ExitCode {
    let launcher = match AgentLauncher::builder(create_agent, join_call)
        .max_concurrent_sessions(10)
        .max_sessions_per_call(1)
        .build()
    {
        Ok(launcher) => launcher,
        Err(e) => {
            eprintln!("error: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    Runner::new(launcher).cli() // `serve` and `run`
}
