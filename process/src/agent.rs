//! Process agents as the runtime's [`Agent`]: `create_agent` takes a prewarmed child (or
//! starts one and waits for its `ready`) and hands it the session; `join_call` lasts as long
//! as the child (its exit, its `finished`, or its memory limit); `close_for` tells it why it
//! must leave, then SIGTERM, then SIGKILL. Every limit, the lease, the close flag and the
//! metrics flushes are the supervisor's, as for any agent.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context;
use switchboard_agent::agent::SessionRef;
use switchboard_agent::{Agent, AgentLauncher, AgentLauncherBuilder, CreateContext, JoinContext};
use switchboard_core::EndReason;
use tokio::sync::OnceCell;
use tracing::info;

use crate::child::{AgentCommand, Child, describe};
use crate::memory::MemorySampler;
use crate::pool::Pool;
use crate::protocol::{PROTOCOL_VERSION, ToChild};

/// How often the memory limit samples the children's RSS.
pub const MEMORY_SAMPLE_PERIOD: Duration = Duration::from_millis(500);

/// How process agents run.
#[derive(Debug, Clone)]
pub struct ProcessOptions {
    /// The command each child runs.
    pub command: AgentCommand,
    /// Children kept started and ready (`--prewarm`).
    pub prewarm: usize,
    /// Whether a taken prewarmed child is replaced (not in a task: one session per process).
    pub refill: bool,
    /// The RSS limit of a child's process tree, in bytes (`--agent-memory-limit-mb`).
    pub memory_limit_bytes: Option<u64>,
    /// From `close` to SIGTERM.
    pub close_grace: Duration,
    /// From SIGTERM to SIGKILL.
    pub term_grace: Duration,
}

impl ProcessOptions {
    /// The options for `command` with the defaults: no prewarm, no memory limit, 5 s of close
    /// grace and 2 s from SIGTERM to SIGKILL.
    pub fn new(command: AgentCommand) -> Self {
        Self {
            command,
            prewarm: 0,
            refill: true,
            memory_limit_bytes: None,
            close_grace: Duration::from_secs(5),
            term_grace: Duration::from_secs(2),
        }
    }

    /// The longest a close can take: grace, SIGTERM's grace, and SIGKILL's reaping.
    pub fn close_bound(&self) -> Duration {
        self.close_grace + self.term_grace + Duration::from_secs(3)
    }
}

/// What runs on the tokio runtime once the first agent is made.
#[derive(Debug)]
struct Running {
    pool: Option<Arc<Pool>>,
    sampler: Option<MemorySampler>,
}

/// The process agents of one program: their options (set once the command line is read),
/// the prewarmed pool and the memory sampler.
#[derive(Debug, Default)]
pub struct ProcessAgents {
    options: OnceLock<ProcessOptions>,
    running: OnceCell<Running>,
}

impl ProcessAgents {
    /// Agents without options yet ([`configure`](Self::configure) sets them).
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Sets the options (once; a second call is an error).
    pub fn configure(&self, options: ProcessOptions) -> anyhow::Result<()> {
        self.options
            .set(options)
            .map_err(|_| anyhow::anyhow!("process agents are already configured"))
    }

    fn options(&self) -> anyhow::Result<&ProcessOptions> {
        self.options
            .get()
            .context("process agents have no command (switchboard serve -- <command>)")
    }

    /// A launcher builder whose agents are these.
    pub fn launcher_builder(self: &Arc<Self>) -> AgentLauncherBuilder<ProcessAgent> {
        let (create, join) = (self.clone(), self.clone());
        AgentLauncher::builder(
            move |ctx| {
                let agents = create.clone();
                async move { agents.create(ctx).await }
            },
            move |agent, ctx| {
                let agents = join.clone();
                async move { agents.join(agent, ctx).await }
            },
        )
    }

    /// Kills the prewarmed children that wait, with their process groups (when the program
    /// stops).
    pub fn stop_prewarmed(&self) {
        if let Some(pool) = self.running.get().and_then(|r| r.pool.as_ref()) {
            pool.clear();
        }
    }

    async fn running(&self) -> anyhow::Result<&Running> {
        let options = self.options()?;
        self.running
            .get_or_try_init(|| async {
                let pool = (options.prewarm > 0).then(|| {
                    let pool = Pool::new(options.command.clone(), options.prewarm, options.refill);
                    pool.fill();
                    pool
                });
                let sampler = options
                    .memory_limit_bytes
                    .map(|_| MemorySampler::start(MEMORY_SAMPLE_PERIOD));
                Ok::<_, anyhow::Error>(Running { pool, sampler })
            })
            .await
    }

    /// `create_agent`: for the launcher's warmup, the prewarmed children ready; for a
    /// session, a child ready and told its session.
    async fn create(self: Arc<Self>, ctx: CreateContext) -> anyhow::Result<ProcessAgent> {
        let options = self.options()?.clone();
        let running = self.running().await?;
        let Some(session) = ctx.session.clone() else {
            if let Some(pool) = &running.pool {
                pool.full()
                    .await
                    .context("the prewarmed agent processes could not start")?;
            }
            return Ok(ProcessAgent {
                child: None,
                options,
            });
        };
        // A prewarmed child that died between its last check and the handover is dropped
        // (and killed); the session then gets a fresh one.
        let mut child = None;
        if let Some((pool, warm)) = running.pool.as_ref().and_then(|p| p.take().map(|c| (p, c))) {
            match hand_over(&warm, &session, &ctx).await {
                Ok(()) => {
                    pool.served();
                    child = Some(warm);
                }
                Err(e) => {
                    tracing::warn!(session_id = %session.session_id, pid = warm.pid(), error = %format!("{e:#}"), "a prewarmed agent process could not take the session; starting a fresh one");
                }
            }
        }
        let prewarmed = child.is_some();
        let child = match child {
            Some(child) => child,
            None => {
                let fresh = Child::spawn(&options.command)?;
                fresh.ready().await?;
                hand_over(&fresh, &session, &ctx).await?;
                fresh
            }
        };
        info!(session_id = %session.session_id, pid = child.pid(), prewarmed, "agent process assigned to the session");
        Ok(ProcessAgent {
            child: Some(child),
            options,
        })
    }

    /// `join_call`: until the child finishes, exits, breaks the protocol or its tree
    /// exceeds the memory limit.
    async fn join(
        self: Arc<Self>,
        agent: Arc<ProcessAgent>,
        _ctx: JoinContext,
    ) -> anyhow::Result<()> {
        let Some(child) = agent.child.as_ref() else {
            anyhow::bail!("a warmup agent has no process");
        };
        let running = self.running().await?;
        let limit = agent.options.memory_limit_bytes;
        let mut memory = running
            .sampler
            .as_ref()
            .filter(|_| limit.is_some())
            .map(MemorySampler::subscribe);
        let mut state = child.state();
        loop {
            tokio::select! {
                seen = async {
                    state
                        .wait_for(|s| s.finished || s.fatal.is_some() || s.exit.is_some())
                        .await
                        .map(|s| s.clone())
                        .unwrap_or_default()
                } => {
                    return ended(child, seen).await;
                }
                sample = next_sample(&mut memory) => {
                    let used = sample.and_then(|s| s.get(&child.pid()).copied()).unwrap_or(0);
                    if let Some(limit) = limit.filter(|&l| used > l) {
                        child.kill();
                        anyhow::bail!(
                            "the agent's process tree used {} MB of resident memory, over its limit of {} MB (--agent-memory-limit-mb); it was killed",
                            used >> 20,
                            limit >> 20
                        );
                    }
                }
            }
        }
    }
}

/// How `join_call` ends once the child finished, exited or broke the protocol.
async fn ended(child: &Child, seen: crate::child::State) -> anyhow::Result<()> {
    if let Some(why) = seen.fatal {
        anyhow::bail!("{why}");
    }
    if seen.finished {
        return Ok(());
    }
    // Its last messages (final metrics) before the exit are the session's.
    child.settled().await;
    match seen.exit {
        Some(status) if !status.success() => {
            Err(anyhow::anyhow!("the agent process {}", describe(status)))
        }
        _ => Ok(()),
    }
}

/// Binds `child` to the session and sends it `session`.
async fn hand_over(child: &Child, session: &SessionRef, ctx: &CreateContext) -> anyhow::Result<()> {
    let message = ToChild::Session {
        protocol: PROTOCOL_VERSION,
        session_id: session.session_id.to_string(),
        call_id: session.call_id.to_string(),
        call_type: session.call_type.to_string(),
        metadata: ctx.metadata.clone(),
    };
    child
        .assign(
            session.session_id,
            message,
            ctx.presence.clone(),
            ctx.metrics.clone(),
        )
        .await
}

/// The next memory sample; pending forever without a sampler (or once it stopped).
async fn next_sample(
    rx: &mut Option<tokio::sync::watch::Receiver<crate::memory::Sample>>,
) -> Option<crate::memory::Sample> {
    let Some(receiver) = rx.as_mut() else {
        return std::future::pending().await;
    };
    if receiver.changed().await.is_ok() {
        return Some(receiver.borrow_and_update().clone());
    }
    *rx = None;
    None
}

/// One session's child (none for the launcher's warmup agent).
#[derive(Debug)]
pub struct ProcessAgent {
    child: Option<Child>,
    options: ProcessOptions,
}

impl Agent for ProcessAgent {
    async fn close(&self) {
        self.close_for(EndReason::Shutdown).await;
    }

    async fn close_for(&self, reason: EndReason) {
        if let Some(child) = &self.child {
            child
                .close(
                    reason.as_str(),
                    self.options.close_grace,
                    self.options.term_grace,
                )
                .await;
        }
    }
}
