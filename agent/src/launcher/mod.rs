//! [`AgentLauncher`]: the anchor's AgentLauncher in Rust, and [`InProcessLauncher`], the
//! [`TaskLauncher`] that runs each session's agent as a supervised tokio task here.
//!
//! Starts never serialize: admission is one atomic registry operation, and each agent is
//! created inside its own supervisor task (the anchor holds one lock across `create_agent` and
//! warmup, so one slow factory blocks every start).
//!
//! # Layout
//! - `mod.rs`: [`AgentLauncher`] and the state its clones share (`LauncherState`).
//! - `builder`: [`AgentLauncherBuilder`], options validated once.
//! - `session`: a session on this node ([`AgentSession`], [`SessionEnd`]).
//! - `in_process`: [`InProcessLauncher`] and the spawning of a session's supervisor.

mod builder;
mod in_process;
mod session;

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use switchboard_core::lease::{self, NodeGone};
use switchboard_core::service::{self, StartSession};
use switchboard_core::{
    CallId, CallType, Clock, EndReason, Error, LaunchError, LimitOptions, Limits, Metadata,
    MetricsRecorder, Result, Session, SessionId, SessionRegistry, SessionStatus, TaskLauncher,
};
use tokio::sync::OnceCell;
use tokio::task::JoinHandle;
use tracing::{info, warn};

pub use self::builder::{AgentLauncherBuilder, DEFAULT_AGENT_CLOSE_TIMEOUT};
use self::in_process::CapturingLauncher;
pub use self::in_process::InProcessLauncher;
pub(crate) use self::session::SessionSignals;
pub use self::session::{AgentSession, SessionEnd};
use crate::agent::{Agent, CreateContext, JoinContext, Presence};
use crate::edge::Edge;
use crate::supervisor::SupervisorContext;
use switchboard_core::fleet::FleetMetrics;

/// What every clone of a launcher shares: its sessions' supervisors' context, the sessions on
/// this node, and its run state.
pub(crate) struct LauncherState<A> {
    ctx: Arc<SupervisorContext<A>>,
    /// The options as given (before validation).
    options: LimitOptions,
    sessions: Mutex<HashMap<SessionId, AgentSession<A>>>,
    warmed_up: OnceCell<()>,
    running: AtomicBool,
    draining: AtomicBool,
    maintenance: Mutex<Option<JoinHandle<()>>>,
    /// The fleet metrics of this node's registry (when it is the default one) and API.
    fleet: Arc<FleetMetrics>,
}

impl<A> LauncherState<A> {
    fn new(ctx: SupervisorContext<A>, options: LimitOptions, fleet: Arc<FleetMetrics>) -> Self {
        Self {
            ctx: Arc::new(ctx),
            options,
            fleet,
            sessions: Mutex::new(HashMap::new()),
            warmed_up: OnceCell::new(),
            running: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            maintenance: Mutex::new(None),
        }
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, HashMap<SessionId, AgentSession<A>>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn forget(&self, id: SessionId) {
        self.sessions().remove(&id);
    }

    fn node_session(&self, id: SessionId) -> Option<AgentSession<A>> {
        self.sessions().get(&id).cloned()
    }

    /// Warmed up, running and not draining.
    fn ready(&self) -> bool {
        self.warmed_up.initialized()
            && self.running.load(Ordering::SeqCst)
            && !self.draining.load(Ordering::SeqCst)
    }

    /// Ends the sessions whose lease expired (their node or supervisor is gone).
    async fn sweep(&self) {
        let ctx = &self.ctx;
        match lease::sweep_expired(&*ctx.registry, &ctx.limits, &NodeGone, &|| true).await {
            Ok(totals) => ctx.fleet.swept(&totals),
            Err(e) => warn!(error = %e, "lease sweep could not list expired leases"),
        }
    }
}

/// Runs agents on demand: admission under the limits, one supervised task per session, and a
/// maintenance loop that ends sessions whose lease expired.
pub struct AgentLauncher<A> {
    state: Arc<LauncherState<A>>,
}

impl<A> Clone for AgentLauncher<A> {
    fn clone(&self) -> Self {
        Self {
            state: self.state.clone(),
        }
    }
}

impl<A> fmt::Debug for AgentLauncher<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentLauncher")
            .field("limits", &self.state.ctx.limits)
            .field("registry", &self.state.ctx.registry)
            .field("sessions", &self.state.sessions().len())
            .finish()
    }
}

impl<A: Agent> AgentLauncher<A> {
    /// A builder from the two user functions: `create_agent` makes an agent for a session
    /// (or a throw-away one for the process warmup, see [`CreateContext::is_warmup`]), and
    /// `join_call` runs it in its call until it is done.
    pub fn builder<C, CF, J, JF>(create_agent: C, join_call: J) -> AgentLauncherBuilder<A>
    where
        C: Fn(CreateContext) -> CF + Send + Sync + 'static,
        CF: Future<Output = anyhow::Result<A>> + Send + 'static,
        J: Fn(Arc<A>, JoinContext) -> JF + Send + Sync + 'static,
        JF: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        AgentLauncherBuilder::new(
            Arc::new(move |ctx| Box::pin(create_agent(ctx))),
            Arc::new(move |agent, ctx| Box::pin(join_call(agent, ctx))),
        )
    }

    /// The options as given (before validation).
    pub fn options(&self) -> &LimitOptions {
        &self.state.options
    }

    /// The validated options.
    pub fn limits(&self) -> &Limits {
        &self.state.ctx.limits
    }

    /// The registry sessions are recorded in.
    pub fn registry(&self) -> Arc<dyn SessionRegistry> {
        self.state.ctx.registry.clone()
    }

    /// The clock every rule reads.
    pub fn clock(&self) -> Arc<dyn Clock> {
        self.state.ctx.clock.clone()
    }

    /// Offers `edge` as this process's call transport: every agent created afterwards finds
    /// it in [`CreateContext::edge`]. The runner offers the local call's `HubEdge` under
    /// `serve` and `run` with its demo page; nothing is offered in an ECS task or the
    /// console `run --no-demo`, where agents get `None` and use their own transport. A later
    /// offer replaces an earlier one.
    pub fn offer_edge(&self, edge: Arc<dyn Edge>) {
        *self
            .state
            .ctx
            .factory
            .call_edge
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Some(edge);
    }

    /// The [`TaskLauncher`] to hand to the HTTP API.
    pub fn task_launcher(&self) -> Arc<dyn TaskLauncher> {
        Arc::new(InProcessLauncher {
            state: self.state.clone(),
        })
    }

    /// Whether the process warmup has succeeded.
    pub fn warmed_up(&self) -> bool {
        self.state.warmed_up.initialized()
    }

    /// Whether [`start`](Self::start) ran and [`stop`](Self::stop) did not.
    pub fn running(&self) -> bool {
        self.state.running.load(Ordering::SeqCst)
    }

    /// Warmed up, running and not draining: new sessions can start (`/ready`).
    pub fn ready(&self) -> bool {
        self.state.ready()
    }

    /// Warms up the process once: creates a throw-away agent and runs its warmup against the
    /// shared cache, so models load before the first session. Concurrent callers wait for the
    /// same warmup; a failed warmup can be retried.
    pub async fn warmup(&self) -> Result<()> {
        let state = &self.state;
        let factory = &state.ctx.factory;
        state
            .warmed_up
            .get_or_try_init(|| async {
                // A throw-away agent: its presence and metrics are nobody's.
                let agent = (factory.create_agent)(CreateContext {
                    session: None,
                    metadata: None,
                    video_track_override: None,
                    edge: None,
                    presence: Presence::new(),
                    metrics: MetricsRecorder::new(),
                    cache: factory.cache.clone(),
                })
                .await
                .map_err(|e| Error::Unexpected(e.context("create_agent failed during warmup")))?;
                let result = agent.warmup(&factory.cache).await;
                agent.close().await;
                result.map_err(|e| Error::Unexpected(e.context("agent warmup failed")))
            })
            .await
            .map(|_| ())
    }

    /// Warms up, then starts the maintenance loop. Errors if already running or if the warmup
    /// fails (and then stays stopped).
    pub async fn start(&self) -> Result<()> {
        if self.running() {
            return Err(Error::Conflict("AgentLauncher is already running".into()));
        }
        self.warmup().await?;
        if self.state.running.swap(true, Ordering::SeqCst) {
            return Err(Error::Conflict("AgentLauncher is already running".into()));
        }
        self.state.draining.store(false, Ordering::SeqCst);
        let state = self.state.clone();
        let interval = state.ctx.limits.maintenance_interval();
        let loop_handle = tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                state.sweep().await;
            }
        });
        *self
            .state
            .maintenance
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(loop_handle);
        info!(limits = ?self.state.ctx.limits, "agent launcher started");
        Ok(())
    }

    /// Stops accepting sessions, closes every local session with `shutdown` and waits for
    /// them to end, then stops the maintenance loop.
    pub async fn stop(&self) {
        self.state.draining.store(true, Ordering::SeqCst);
        let sessions: Vec<_> = self.state.sessions().values().cloned().collect();
        for session in &sessions {
            session.request_stop(EndReason::Shutdown);
        }
        futures::future::join_all(sessions.iter().map(AgentSession::wait)).await;
        if let Some(handle) = self
            .state
            .maintenance
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            handle.abort();
        }
        self.state.running.store(false, Ordering::SeqCst);
        info!(closed = sessions.len(), "agent launcher stopped");
    }

    /// Marks the launcher as draining: `/ready` turns false and new starts are refused, while
    /// running sessions continue until [`stop`](Self::stop).
    pub fn drain(&self) {
        self.state.draining.store(true, Ordering::SeqCst);
    }

    /// Starts a session: admission under the limits (cluster-wide with a shared registry),
    /// then the agent is created and warmed up in its own task. Returns once the agent exists;
    /// `join_call` runs in the background. It runs the HTTP API's own use case
    /// (`service::start_session`), whose handle comes back through a `CapturingLauncher`.
    pub async fn start_session(
        &self,
        call_id: CallId,
        call_type: CallType,
        metadata: Option<Metadata>,
    ) -> Result<AgentSession<A>> {
        let capture = CapturingLauncher {
            state: self.state.clone(),
            handle: Mutex::new(None),
        };
        let started = service::start_session(
            &*self.state.ctx.registry,
            &capture,
            &self.state.ctx.limits,
            call_id,
            StartSession {
                call_type,
                metadata,
                idempotency_key: None,
                deadline: None,
            },
        )
        .await?;
        let handle = capture
            .handle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        handle.ok_or_else(|| {
            Error::Unexpected(anyhow::anyhow!(
                "session {} started without a local agent",
                started.receipt.session_id
            ))
        })
    }

    /// Hosts one session admitted elsewhere — the ECS task hosting the session the API
    /// admitted: warms up, then creates the agent and supervises it exactly like a local
    /// session (heartbeats, close flag, idle, max duration, metrics, the end), but without
    /// this launcher's lease sweeps (in AWS that is the reaper's job). Returns once the agent
    /// exists. The session must still be `starting`; a create or warmup failure ends it
    /// `start_failed` and is [`Error::LaunchFailed`].
    pub async fn host_session(&self, session: Session) -> Result<AgentSession<A>> {
        if session.status != SessionStatus::Starting {
            return Err(Error::Conflict(format!("session is {}", session.status)));
        }
        self.warmup().await?;
        self.state.draining.store(false, Ordering::SeqCst);
        self.state.running.store(true, Ordering::SeqCst);
        self.state
            .spawn_session(&session)
            .await
            .map_err(LaunchError::into_error)
    }

    /// Closes a session running on this node now (the anchor's local `close_session`), ending
    /// it `requested`. Returns false if it does not run here. With `wait`, returns after the
    /// agent has closed and the end is recorded.
    pub async fn close_session(&self, session_id: SessionId, wait: bool) -> bool {
        let Some(session) = self.state.node_session(session_id) else {
            return false;
        };
        session.request_stop(EndReason::Requested);
        if wait {
            session.wait().await;
        }
        true
    }

    /// A session running on this node.
    pub fn get_session(&self, session_id: SessionId) -> Option<AgentSession<A>> {
        self.state.node_session(session_id)
    }

    /// The sessions running on this node.
    pub fn node_sessions(&self) -> Vec<AgentSession<A>> {
        self.state.sessions().values().cloned().collect()
    }

    /// A session from the registry (any node; ended sessions within retention included).
    pub async fn get_session_info(
        &self,
        call_id: &CallId,
        session_id: SessionId,
    ) -> Result<Option<Session>> {
        self.state.ctx.registry.get(call_id, session_id).await
    }

    /// Sets a session's close flag (any node). A local agent closes at once; a remote one at
    /// its next heartbeat. A missing or ended session is [`Error::NotFound`].
    pub async fn request_close_session(
        &self,
        call_id: &CallId,
        session_id: SessionId,
    ) -> Result<()> {
        let launcher = InProcessLauncher {
            state: self.state.clone(),
        };
        service::request_close(&*self.state.ctx.registry, &launcher, call_id, session_id).await?;
        Ok(())
    }

    /// The fleet metrics: this node's sessions by status, admissions, ends, latencies (from
    /// the default in-memory registry), refusals (from the API state that reports to it),
    /// sweeps and heartbeat failures. `serve` renders them at `GET /metrics`.
    pub fn fleet_metrics(&self) -> &Arc<FleetMetrics> {
        &self.state.fleet
    }

    /// Runs one lease sweep now (the maintenance loop does this every interval).
    pub async fn sweep_expired_leases(&self) {
        self.state.sweep().await;
    }
}
