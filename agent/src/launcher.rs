//! [`AgentLauncher`]: the anchor's AgentLauncher in Rust, and [`InProcessLauncher`], the
//! [`TaskLauncher`] that runs each session's agent as a supervised tokio task here.
//!
//! Starts never serialize: admission is one atomic registry operation, and each agent is
//! created inside its own supervisor task (the anchor holds one lock across `create_agent` and
//! warmup, so one slow factory blocks every start).

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use futures::future::BoxFuture;
use switchboard_core::registry::{EndGuard, EndRequest};
use switchboard_core::service::{self, StartSession};
use switchboard_core::{
    CallId, CallType, Clock, EndReason, Error, LaunchError, Launched, LimitOptions, Limits,
    MemoryRegistry, Metadata, Result, Session, SessionId, SessionRegistry, SessionStatus,
    SystemClock, TaskLauncher, Timestamp,
};
use tokio::sync::{Notify, OnceCell, oneshot};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::agent::{Agent, CreateContext, JoinContext, WarmupCache};
use crate::edge::Edge;
use crate::supervisor::{Hosted, supervise};

type CreateFn<A> =
    Arc<dyn Fn(CreateContext) -> BoxFuture<'static, anyhow::Result<A>> + Send + Sync>;
type JoinFn<A> =
    Arc<dyn Fn(Arc<A>, JoinContext) -> BoxFuture<'static, anyhow::Result<()>> + Send + Sync>;

/// How long `Agent::close` may take before the session is ended anyway.
pub const DEFAULT_AGENT_CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// How a session ended, as its supervisor saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionEnd {
    /// Why.
    pub reason: EndReason,
    /// Operator detail (an error message).
    pub detail: Option<String>,
    /// When the supervisor finished.
    pub at: Timestamp,
    /// Whether the end was written to the registry by this supervisor (false when it had
    /// already ended elsewhere, or the registry was unreachable until the lease expired).
    pub recorded: bool,
}

/// What a session's handles and its supervisor share: the agent once created, the first
/// stop request, and the end. One small allocation per session (no channels).
pub(crate) struct SessionSignals<A> {
    agent: OnceLock<Arc<A>>,
    stop: Mutex<Option<EndReason>>,
    stop_notify: Notify,
    done: Mutex<Option<SessionEnd>>,
    done_notify: Notify,
}

impl<A> SessionSignals<A> {
    fn new() -> Self {
        Self {
            agent: OnceLock::new(),
            stop: Mutex::new(None),
            stop_notify: Notify::new(),
            done: Mutex::new(None),
            done_notify: Notify::new(),
        }
    }

    /// Resolves with the first stop request (only the supervisor waits here).
    pub(crate) async fn stop_requested(&self) -> EndReason {
        loop {
            if let Some(reason) = *lock(&self.stop) {
                return reason;
            }
            // `notify_one` stores a permit, so a request between the check and here is kept.
            self.stop_notify.notified().await;
        }
    }

    /// Records the end and wakes every waiter.
    pub(crate) fn finish(&self, end: SessionEnd) {
        *lock(&self.done) = Some(end);
        self.done_notify.notify_waiters();
    }

    pub(crate) fn set_agent(&self, agent: Arc<A>) {
        let _ = self.agent.set(agent);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// A session running on this node (the anchor's `AgentSession`). Cheap to clone.
pub struct AgentSession<A> {
    id: SessionId,
    call_id: CallId,
    call_type: CallType,
    started_at: Timestamp,
    signals: Arc<SessionSignals<A>>,
}

impl<A> Clone for AgentSession<A> {
    fn clone(&self) -> Self {
        Self {
            id: self.id,
            call_id: self.call_id.clone(),
            call_type: self.call_type.clone(),
            started_at: self.started_at,
            signals: self.signals.clone(),
        }
    }
}

impl<A> fmt::Debug for AgentSession<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentSession")
            .field("id", &self.id)
            .field("call_id", &self.call_id)
            .field("started_at", &self.started_at)
            .field("finished", &self.finished())
            .finish()
    }
}

impl<A> AgentSession<A> {
    /// The session's id.
    pub fn id(&self) -> SessionId {
        self.id
    }
    /// The call.
    pub fn call_id(&self) -> &CallId {
        &self.call_id
    }
    /// The call's type.
    pub fn call_type(&self) -> &CallType {
        &self.call_type
    }
    /// When the session was admitted.
    pub fn started_at(&self) -> Timestamp {
        self.started_at
    }
    /// The agent, once created.
    pub fn agent(&self) -> Option<Arc<A>> {
        self.signals.agent.get().cloned()
    }
    /// Whether the session has ended.
    pub fn finished(&self) -> bool {
        lock(&self.signals.done).is_some()
    }
    /// How it ended, once it has.
    pub fn end(&self) -> Option<SessionEnd> {
        lock(&self.signals.done).clone()
    }
    /// Waits for the end.
    pub async fn wait(&self) -> SessionEnd {
        loop {
            let notified = self.signals.done_notify.notified();
            tokio::pin!(notified);
            // Register before checking, so an end in between is not missed.
            notified.as_mut().enable();
            if let Some(end) = self.end() {
                return end;
            }
            notified.await;
        }
    }
    /// Asks the supervisor to close for `reason`; false if a close was already asked.
    pub(crate) fn request_stop(&self, reason: EndReason) -> bool {
        let mut stop = lock(&self.signals.stop);
        if stop.is_some() {
            return false;
        }
        *stop = Some(reason);
        self.signals.stop_notify.notify_one();
        true
    }
}

/// State shared by the launcher, its sessions' supervisors and the maintenance loop.
pub(crate) struct Shared<A> {
    pub(crate) options: LimitOptions,
    pub(crate) video_track_override: Option<std::path::PathBuf>,
    pub(crate) create_agent: CreateFn<A>,
    pub(crate) join_call: JoinFn<A>,
    pub(crate) limits: Limits,
    pub(crate) registry: Arc<dyn SessionRegistry>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) cache: WarmupCache,
    /// The call transport this process offers its agents, if any (see
    /// [`AgentLauncher::offer_edge`]).
    pub(crate) call_edge: Arc<std::sync::RwLock<Option<Arc<dyn Edge>>>>,
    pub(crate) agent_close_timeout: Duration,
    sessions: Mutex<HashMap<SessionId, AgentSession<A>>>,
    warmed_up: OnceCell<()>,
    running: AtomicBool,
    draining: AtomicBool,
    maintenance: Mutex<Option<JoinHandle<()>>>,
}

impl<A> Shared<A> {
    /// The call transport offered to agents created now.
    pub(crate) fn call_edge(&self) -> Option<Arc<dyn Edge>> {
        self.call_edge
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, HashMap<SessionId, AgentSession<A>>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn forget(&self, id: SessionId) {
        self.sessions().remove(&id);
    }

    fn local(&self, id: SessionId) -> Option<AgentSession<A>> {
        self.sessions().get(&id).cloned()
    }
}

impl<A: Agent> Shared<A> {
    /// Registers the local session and spawns its supervisor; returns once the agent exists.
    async fn spawn_session(
        self: &Arc<Self>,
        session: &Session,
    ) -> Result<AgentSession<A>, LaunchError> {
        if !self.running.load(Ordering::SeqCst) || self.draining.load(Ordering::SeqCst) {
            return Err(LaunchError::NoCapacity {
                retry_after: Duration::from_secs(1),
                source: anyhow::anyhow!("the launcher is not running"),
            });
        }
        let handle = AgentSession {
            id: session.id,
            call_id: session.call_id.clone(),
            call_type: session.call_type.clone(),
            started_at: session.created_at,
            signals: Arc::new(SessionSignals::new()),
        };
        self.sessions().insert(session.id, handle.clone());
        let (created_tx, created_rx) = oneshot::channel();
        tokio::spawn(supervise(
            self.clone(),
            Hosted::from(session),
            handle.signals.clone(),
            created_tx,
        ));
        match created_rx.await {
            Ok(Ok(())) => Ok(handle),
            Ok(Err(e)) => Err(LaunchError::Rejected(e)),
            Err(_) => Err(LaunchError::Rejected(anyhow::anyhow!(
                "the session's supervisor exited before the agent was created"
            ))),
        }
    }

    /// Ends sessions whose lease expired (their node or supervisor is gone).
    async fn sweep(&self) {
        loop {
            let expired = match self.registry.expired_leases(100).await {
                Ok(expired) => expired,
                Err(e) => {
                    warn!(error = %e, "lease sweep could not list expired leases");
                    return;
                }
            };
            let batch = expired.len();
            for session in expired {
                // A session whose agent never joined failed to start; the others ran.
                let reason = if session.joined() {
                    EndReason::LeaseExpired
                } else {
                    EndReason::StartFailed
                };
                let request = EndRequest::new(reason)
                    .detail("its node stopped renewing the lease")
                    .guard(EndGuard::LeaseExpired)
                    .retention(self.limits.session_retention());
                match self
                    .registry
                    .end(&session.call_id, session.id, request)
                    .await
                {
                    Ok(_) => {
                        info!(session_id = %session.id, call_id = %session.call_id, end_reason = %reason, "ended a session whose lease expired")
                    }
                    // Renewed or ended meanwhile: nothing to do.
                    Err(Error::Conflict(_) | Error::NotFound) => {}
                    Err(e) => {
                        warn!(session_id = %session.id, error = %e, "lease sweep could not end a session");
                        return;
                    }
                }
            }
            if batch < 100 {
                return;
            }
        }
    }
}

/// Builds an [`AgentLauncher`].
pub struct AgentLauncherBuilder<A> {
    create_agent: CreateFn<A>,
    join_call: JoinFn<A>,
    options: LimitOptions,
    registry: Option<Arc<dyn SessionRegistry>>,
    clock: Option<Arc<dyn Clock>>,
    agent_close_timeout: Duration,
}

impl<A> fmt::Debug for AgentLauncherBuilder<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentLauncherBuilder")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl<A: Agent> AgentLauncherBuilder<A> {
    /// All launcher options at once (validated by [`build`](Self::build)).
    pub fn options(mut self, options: LimitOptions) -> Self {
        self.options = options;
        self
    }
    /// `max_concurrent_sessions` (None = unlimited).
    pub fn max_concurrent_sessions(mut self, value: impl Into<Option<i64>>) -> Self {
        self.options.max_concurrent_sessions = value.into();
        self
    }
    /// `max_sessions_per_call` (None = unlimited).
    pub fn max_sessions_per_call(mut self, value: impl Into<Option<i64>>) -> Self {
        self.options.max_sessions_per_call = value.into();
        self
    }
    /// `max_session_duration_seconds` (None = unlimited).
    pub fn max_session_duration_seconds(mut self, value: impl Into<Option<f64>>) -> Self {
        self.options.max_session_duration_seconds = value.into();
        self
    }
    /// `agent_idle_timeout` in seconds (0 disables).
    pub fn agent_idle_timeout(mut self, seconds: f64) -> Self {
        self.options.agent_idle_timeout = seconds;
        self
    }
    /// `maintenance_interval` in seconds.
    pub fn maintenance_interval(mut self, seconds: f64) -> Self {
        self.options.maintenance_interval = seconds;
        self
    }
    /// `session_lease_seconds` (None = max(30, 3 × interval)).
    pub fn session_lease_seconds(mut self, value: impl Into<Option<f64>>) -> Self {
        self.options.session_lease_seconds = value.into();
        self
    }
    /// The registry (default: a [`MemoryRegistry`] on the launcher's clock).
    pub fn registry(mut self, registry: Arc<dyn SessionRegistry>) -> Self {
        self.registry = Some(registry);
        self
    }
    /// The clock (default: the system clock).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }
    /// How long `Agent::close` may take (default 10 s).
    pub fn agent_close_timeout(mut self, timeout: Duration) -> Self {
        self.agent_close_timeout = timeout;
        self
    }

    /// Validates the options (with the anchor's messages) and builds the launcher.
    pub fn build(self) -> Result<AgentLauncher<A>> {
        let limits = Limits::new(self.options.clone())?;
        let clock = self.clock.unwrap_or_else(|| Arc::new(SystemClock));
        let registry = self
            .registry
            .unwrap_or_else(|| Arc::new(MemoryRegistry::new(clock.clone())));
        Ok(AgentLauncher {
            shared: Arc::new(Shared {
                options: self.options,
                video_track_override: None,
                create_agent: self.create_agent,
                join_call: self.join_call,
                limits,
                registry,
                clock,
                cache: WarmupCache::default(),
                call_edge: Arc::default(),
                agent_close_timeout: self.agent_close_timeout,
                sessions: Mutex::new(HashMap::new()),
                warmed_up: OnceCell::new(),
                running: AtomicBool::new(false),
                draining: AtomicBool::new(false),
                maintenance: Mutex::new(None),
            }),
        })
    }
}

/// Runs agents on demand: admission under the limits, one supervised task per session, and a
/// maintenance loop that ends sessions whose lease expired.
pub struct AgentLauncher<A> {
    shared: Arc<Shared<A>>,
}

impl<A> Clone for AgentLauncher<A> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl<A> fmt::Debug for AgentLauncher<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentLauncher")
            .field("limits", &self.shared.limits)
            .field("registry", &self.shared.registry)
            .field("sessions", &self.shared.sessions().len())
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
        AgentLauncherBuilder {
            create_agent: Arc::new(move |ctx| Box::pin(create_agent(ctx))),
            join_call: Arc::new(move |agent, ctx| Box::pin(join_call(agent, ctx))),
            options: LimitOptions::default(),
            registry: None,
            clock: None,
            agent_close_timeout: DEFAULT_AGENT_CLOSE_TIMEOUT,
        }
    }

    /// A launcher like this one (same functions, registry and clock) with its options changed
    /// by `change`, validated again. For command lines that override options set in code;
    /// call it before [`start`](Self::start).
    pub fn reconfigure(&self, change: impl FnOnce(&mut LimitOptions)) -> Result<Self> {
        let mut options = self.shared.options.clone();
        change(&mut options);
        self.rebuild(
            options,
            self.shared.video_track_override.clone(),
            self.shared.registry.clone(),
        )
    }

    /// A launcher like this one on another registry (e.g. a DynamoDB table shared by several
    /// nodes). Call it before [`start`](Self::start).
    pub fn with_registry(&self, registry: Arc<dyn SessionRegistry>) -> Result<Self> {
        self.rebuild(
            self.shared.options.clone(),
            self.shared.video_track_override.clone(),
            registry,
        )
    }

    /// A launcher like this one whose agents play `path` instead of incoming video (the
    /// anchor's `--video-track-override`; agents find it in [`CreateContext`]).
    pub fn with_video_track_override(&self, path: Option<std::path::PathBuf>) -> Result<Self> {
        self.rebuild(
            self.shared.options.clone(),
            path,
            self.shared.registry.clone(),
        )
    }

    fn rebuild(
        &self,
        options: LimitOptions,
        video_track_override: Option<std::path::PathBuf>,
        registry: Arc<dyn SessionRegistry>,
    ) -> Result<Self> {
        let old = &self.shared;
        Ok(Self {
            shared: Arc::new(Shared {
                limits: Limits::new(options.clone())?,
                options,
                video_track_override,
                create_agent: old.create_agent.clone(),
                join_call: old.join_call.clone(),
                registry,
                clock: old.clock.clone(),
                cache: WarmupCache::default(),
                call_edge: old.call_edge.clone(),
                agent_close_timeout: old.agent_close_timeout,
                sessions: Mutex::new(HashMap::new()),
                warmed_up: OnceCell::new(),
                running: AtomicBool::new(false),
                draining: AtomicBool::new(false),
                maintenance: Mutex::new(None),
            }),
        })
    }

    /// The options as given (before validation).
    pub fn options(&self) -> &LimitOptions {
        &self.shared.options
    }

    /// The validated options.
    pub fn limits(&self) -> &Limits {
        &self.shared.limits
    }

    /// The registry sessions are recorded in.
    pub fn registry(&self) -> Arc<dyn SessionRegistry> {
        self.shared.registry.clone()
    }

    /// The clock every rule reads.
    pub fn clock(&self) -> Arc<dyn Clock> {
        self.shared.clock.clone()
    }

    /// Offers `edge` as this process's call transport: every agent created afterwards finds
    /// it in [`CreateContext::edge`]. The runner offers the local call's `HubEdge` under
    /// `serve` and `run` with its demo page; nothing is offered in an ECS task or the
    /// console `run --no-demo`, where agents get `None` and use their own transport. A later
    /// offer replaces an earlier one.
    pub fn offer_edge(&self, edge: Arc<dyn Edge>) {
        *self
            .shared
            .call_edge
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Some(edge);
    }

    /// The [`TaskLauncher`] to hand to the HTTP API.
    pub fn task_launcher(&self) -> Arc<dyn TaskLauncher> {
        Arc::new(InProcessLauncher {
            shared: self.shared.clone(),
        })
    }

    /// Whether the process warmup has succeeded.
    pub fn warmed_up(&self) -> bool {
        self.shared.warmed_up.initialized()
    }

    /// Whether [`start`](Self::start) ran and [`stop`](Self::stop) did not.
    pub fn running(&self) -> bool {
        self.shared.running.load(Ordering::SeqCst)
    }

    /// Warmed up, running and not draining: new sessions can start (`/ready`).
    pub fn ready(&self) -> bool {
        self.warmed_up() && self.running() && !self.shared.draining.load(Ordering::SeqCst)
    }

    /// Warms up the process once: creates a throw-away agent and runs its warmup against the
    /// shared cache, so models load before the first session. Concurrent callers wait for the
    /// same warmup; a failed warmup can be retried.
    pub async fn warmup(&self) -> Result<()> {
        let shared = &self.shared;
        shared
            .warmed_up
            .get_or_try_init(|| async {
                let agent = (shared.create_agent)(CreateContext {
                    session: None,
                    metadata: None,
                    video_track_override: None,
                    edge: None,
                })
                .await
                .map_err(|e| Error::Unexpected(e.context("create_agent failed during warmup")))?;
                let result = agent.warmup(&shared.cache).await;
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
        if self.shared.running.swap(true, Ordering::SeqCst) {
            return Err(Error::Conflict("AgentLauncher is already running".into()));
        }
        self.shared.draining.store(false, Ordering::SeqCst);
        let shared = self.shared.clone();
        let interval = shared.limits.maintenance_interval();
        let loop_handle = tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                shared.sweep().await;
            }
        });
        *self
            .shared
            .maintenance
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(loop_handle);
        info!(limits = ?self.shared.limits, "agent launcher started");
        Ok(())
    }

    /// Stops accepting sessions, closes every local session with `shutdown` and waits for
    /// them to end, then stops the maintenance loop.
    pub async fn stop(&self) {
        self.shared.draining.store(true, Ordering::SeqCst);
        let sessions: Vec<_> = self.shared.sessions().values().cloned().collect();
        for session in &sessions {
            session.request_stop(EndReason::Shutdown);
        }
        futures::future::join_all(sessions.iter().map(AgentSession::wait)).await;
        if let Some(handle) = self
            .shared
            .maintenance
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            handle.abort();
        }
        self.shared.running.store(false, Ordering::SeqCst);
        info!(closed = sessions.len(), "agent launcher stopped");
    }

    /// Marks the launcher as draining: `/ready` turns false and new starts are refused, while
    /// running sessions continue until [`stop`](Self::stop).
    pub fn drain(&self) {
        self.shared.draining.store(true, Ordering::SeqCst);
    }

    /// Starts a session: admission under the limits (cluster-wide with a shared registry),
    /// then the agent is created and warmed up in its own task. Returns once the agent exists;
    /// `join_call` runs in the background.
    pub async fn start_session(
        &self,
        call_id: CallId,
        call_type: CallType,
        metadata: Option<Metadata>,
    ) -> Result<AgentSession<A>> {
        let capture = Capture {
            shared: self.shared.clone(),
            handle: Mutex::new(None),
        };
        let started = service::start_session(
            &*self.shared.registry,
            &capture,
            &self.shared.limits,
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
        self.shared.draining.store(false, Ordering::SeqCst);
        self.shared.running.store(true, Ordering::SeqCst);
        self.shared
            .spawn_session(&session)
            .await
            .map_err(|e| match e {
                LaunchError::Rejected(source) => Error::LaunchFailed(source),
                LaunchError::NoCapacity {
                    retry_after,
                    source,
                }
                | LaunchError::Ambiguous {
                    retry_after,
                    source,
                } => Error::Unavailable {
                    retry_after,
                    source,
                },
            })
    }

    /// Closes a session running on this node now (the anchor's local `close_session`), ending
    /// it `requested`. Returns false if it does not run here. With `wait`, returns after the
    /// agent has closed and the end is recorded.
    pub async fn close_session(&self, session_id: SessionId, wait: bool) -> bool {
        let Some(session) = self.shared.local(session_id) else {
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
        self.shared.local(session_id)
    }

    /// The sessions running on this node.
    pub fn local_sessions(&self) -> Vec<AgentSession<A>> {
        self.shared.sessions().values().cloned().collect()
    }

    /// A session from the registry (any node; ended sessions within retention included).
    pub async fn get_session_info(
        &self,
        call_id: &CallId,
        session_id: SessionId,
    ) -> Result<Option<Session>> {
        self.shared.registry.get(call_id, session_id).await
    }

    /// Sets a session's close flag (any node). A local agent closes at once; a remote one at
    /// its next heartbeat. A missing or ended session is [`Error::NotFound`].
    pub async fn request_close_session(
        &self,
        call_id: &CallId,
        session_id: SessionId,
    ) -> Result<()> {
        let launcher = InProcessLauncher {
            shared: self.shared.clone(),
        };
        service::request_close(&*self.shared.registry, &launcher, call_id, session_id).await?;
        Ok(())
    }

    /// Runs one lease sweep now (the maintenance loop does this every interval).
    pub async fn sweep_expired_leases(&self) {
        self.shared.sweep().await;
    }
}

/// The [`TaskLauncher`] that runs agents in this process, each under its own supervisor.
pub struct InProcessLauncher<A> {
    shared: Arc<Shared<A>>,
}

impl<A> fmt::Debug for InProcessLauncher<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InProcessLauncher")
            .field("sessions", &self.shared.sessions().len())
            .finish()
    }
}

#[async_trait]
impl<A: Agent> TaskLauncher for InProcessLauncher<A> {
    async fn launch(&self, session: &Session) -> Result<Launched, LaunchError> {
        self.shared
            .spawn_session(session)
            .await
            .map(|_| Launched::default())
    }

    async fn notify_close(&self, session: &Session) {
        if let Some(local) = self.shared.local(session.id) {
            local.request_stop(EndReason::Requested);
        }
    }

    fn is_ready(&self) -> bool {
        self.shared.warmed_up.initialized()
            && self.shared.running.load(Ordering::SeqCst)
            && !self.shared.draining.load(Ordering::SeqCst)
    }
}

/// A launcher that keeps the handle of the session it launched, for `start_session`.
struct Capture<A> {
    shared: Arc<Shared<A>>,
    handle: Mutex<Option<AgentSession<A>>>,
}

impl<A> fmt::Debug for Capture<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Capture")
    }
}

#[async_trait]
impl<A: Agent> TaskLauncher for Capture<A> {
    async fn launch(&self, session: &Session) -> Result<Launched, LaunchError> {
        let handle = self.shared.spawn_session(session).await?;
        *self.handle.lock().unwrap_or_else(|e| e.into_inner()) = Some(handle);
        Ok(Launched::default())
    }
}
