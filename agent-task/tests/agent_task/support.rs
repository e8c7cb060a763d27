//! A scriptable test agent, a registry with an injectable outage, and launcher helpers.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use switchboard_agent_task::{
    Agent, AgentLauncher, AgentLauncherBuilder, CreateContext, JoinContext, Presence, WarmupCache,
};
use switchboard_core::metrics::AgentMetrics;
use switchboard_core::registry::{
    Counts, EndOutcome, EndRequest, Heartbeat, ListQuery, SessionMetrics, SessionPage,
    StartOutcome, StartRequest,
};
use switchboard_core::{
    CallId, Clock, Error, MemoryRegistry, Metadata, MetricsRecorder, Result, Session, SessionId,
    SessionRegistry, Timestamp, TokioClock,
};

/// What the test agent does in its call, chosen by the call id's prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behavior {
    /// `alone-*`: joins and stays alone.
    Alone,
    /// `busy-*`: joins with a participant who never leaves.
    Busy,
    /// `visit-*`: a participant is there for 3 s, then leaves.
    Visit,
    /// `finish-*`: joins with a participant, returns after 2 s.
    Finish,
    /// `fail-*`: join_call fails.
    Fail,
    /// `panic-*`: join_call panics.
    Panic,
    /// `nojoin-*`: never joins.
    NeverJoin,
}

impl Behavior {
    fn of(call_id: &str) -> Self {
        let prefix = call_id.split('-').next().unwrap_or_default();
        match prefix {
            "busy" => Self::Busy,
            "visit" => Self::Visit,
            "finish" => Self::Finish,
            "fail" => Self::Fail,
            "panic" => Self::Panic,
            "nojoin" => Self::NeverJoin,
            _ => Self::Alone,
        }
    }
}

/// Counters shared by every agent of one launcher.
#[derive(Debug, Default)]
pub struct Probe {
    pub created: AtomicUsize,
    pub warmups: AtomicUsize,
    pub model_loads: AtomicUsize,
    pub closes: AtomicUsize,
}

#[derive(Debug)]
pub struct TestAgent {
    presence: Presence,
    metrics: MetricsRecorder,
    probe: Arc<Probe>,
    pub behavior: Behavior,
    pub metadata: Option<Metadata>,
    pub warmed: AtomicBool,
    fail_warmup: bool,
    pub closed_at: Mutex<Option<tokio::time::Instant>>,
}

#[async_trait]
impl Agent for TestAgent {
    async fn warmup(&self, cache: &WarmupCache) -> anyhow::Result<()> {
        self.probe.warmups.fetch_add(1, Ordering::SeqCst);
        if self.fail_warmup {
            anyhow::bail!("model weights missing");
        }
        let probe = self.probe.clone();
        cache
            .get_or_try_init("model", || async move {
                probe.model_loads.fetch_add(1, Ordering::SeqCst);
                Ok(42u32)
            })
            .await?;
        self.warmed.store(true, Ordering::SeqCst);
        Ok(())
    }

    async fn close(&self) {
        self.probe.closes.fetch_add(1, Ordering::SeqCst);
        *self.closed_at.lock().unwrap() = Some(tokio::time::Instant::now());
        self.presence.agent_left();
    }

    fn presence(&self) -> &Presence {
        &self.presence
    }

    fn metrics(&self) -> &MetricsRecorder {
        &self.metrics
    }
}

impl TestAgent {
    pub fn closed(&self) -> bool {
        self.closed_at.lock().unwrap().is_some()
    }
}

async fn create(probe: Arc<Probe>, ctx: CreateContext) -> anyhow::Result<TestAgent> {
    let call = ctx
        .session
        .as_ref()
        .map(|s| s.call_id.as_str().to_owned())
        .unwrap_or_default();
    if call.starts_with("stuck") {
        std::future::pending::<()>().await;
    }
    if call.starts_with("createfail") {
        anyhow::bail!("no credentials for the model");
    }
    probe.created.fetch_add(1, Ordering::SeqCst);
    Ok(TestAgent {
        presence: Presence::new(),
        metrics: MetricsRecorder::new(),
        probe,
        behavior: Behavior::of(&call),
        metadata: ctx.metadata,
        warmed: AtomicBool::new(false),
        fail_warmup: call.starts_with("warmfail"),
        closed_at: Mutex::new(None),
    })
}

async fn join(agent: Arc<TestAgent>, _ctx: JoinContext) -> anyhow::Result<()> {
    let presence = agent.presence().clone();
    match agent.behavior {
        Behavior::Alone => presence.agent_joined(),
        Behavior::Busy => {
            presence.agent_joined();
            presence.participant_joined("human");
        }
        Behavior::Visit => {
            presence.agent_joined();
            presence.participant_joined("human");
            tokio::time::sleep(Duration::from_secs(3)).await;
            presence.participant_left("human");
        }
        Behavior::Finish => {
            presence.agent_joined();
            presence.participant_joined("human");
            tokio::time::sleep(Duration::from_secs(2)).await;
            return Ok(());
        }
        Behavior::Fail => anyhow::bail!("call refused the agent"),
        Behavior::Panic => panic!("agent bug"),
        Behavior::NeverJoin => {}
    }
    std::future::pending().await
}

pub type Builder = AgentLauncherBuilder<TestAgent>;

/// A launcher of test agents on tokio's (paused) clock, with its probe.
pub fn launcher_with(
    configure: impl FnOnce(Builder) -> Builder,
) -> (AgentLauncher<TestAgent>, Arc<Probe>) {
    let probe = Arc::new(Probe::default());
    let p = probe.clone();
    let clock: Arc<dyn Clock> = Arc::new(TokioClock::new());
    let builder = AgentLauncher::builder(move |ctx| create(p.clone(), ctx), join).clock(clock);
    (configure(builder).build().expect("valid options"), probe)
}

/// A started launcher.
pub async fn started(
    configure: impl FnOnce(Builder) -> Builder,
) -> (AgentLauncher<TestAgent>, Arc<Probe>) {
    let (launcher, probe) = launcher_with(configure);
    launcher.start().await.expect("start");
    (launcher, probe)
}

pub fn call(name: &str) -> CallId {
    CallId::parse(name).unwrap()
}

/// A registry whose every operation fails while `outage` is set (a store that is down).
#[derive(Debug)]
pub struct FlakyRegistry {
    pub inner: MemoryRegistry,
    pub outage: AtomicBool,
}

impl FlakyRegistry {
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self {
            inner: MemoryRegistry::new(clock),
            outage: AtomicBool::new(false),
        }
    }

    fn check(&self) -> Result<()> {
        if self.outage.load(Ordering::SeqCst) {
            Err(Error::unavailable(anyhow::anyhow!(
                "injected registry outage"
            )))
        } else {
            Ok(())
        }
    }
}

#[async_trait]
impl SessionRegistry for FlakyRegistry {
    async fn start(&self, request: StartRequest) -> Result<StartOutcome> {
        self.check()?;
        self.inner.start(request).await
    }
    async fn mark_running(&self, call_id: &CallId, id: SessionId) -> Result<Session> {
        self.check()?;
        self.inner.mark_running(call_id, id).await
    }
    async fn heartbeat(
        &self,
        call_id: &CallId,
        id: SessionId,
        lease: Duration,
    ) -> Result<Heartbeat> {
        self.check()?;
        self.inner.heartbeat(call_id, id, lease).await
    }
    async fn flush_metrics(&self, call_id: &CallId, id: SessionId, m: &AgentMetrics) -> Result<()> {
        self.check()?;
        self.inner.flush_metrics(call_id, id, m).await
    }
    async fn request_close(&self, call_id: &CallId, id: SessionId) -> Result<Session> {
        self.check()?;
        self.inner.request_close(call_id, id).await
    }
    async fn end(
        &self,
        call_id: &CallId,
        id: SessionId,
        request: EndRequest,
    ) -> Result<EndOutcome> {
        self.check()?;
        self.inner.end(call_id, id, request).await
    }
    async fn get(&self, call_id: &CallId, id: SessionId) -> Result<Option<Session>> {
        self.check()?;
        self.inner.get(call_id, id).await
    }
    async fn get_metadata(&self, call_id: &CallId, id: SessionId) -> Result<Option<Metadata>> {
        self.check()?;
        self.inner.get_metadata(call_id, id).await
    }
    async fn get_metrics(&self, call_id: &CallId, id: SessionId) -> Result<Option<SessionMetrics>> {
        self.check()?;
        self.inner.get_metrics(call_id, id).await
    }
    async fn list(&self, query: ListQuery) -> Result<SessionPage> {
        self.check()?;
        self.inner.list(query).await
    }
    async fn expired_leases(&self, limit: usize) -> Result<Vec<Session>> {
        self.check()?;
        self.inner.expired_leases(limit).await
    }
    async fn counts(&self, call_id: &CallId) -> Result<Counts> {
        self.check()?;
        self.inner.counts(call_id).await
    }
}

/// Timestamp difference in seconds.
pub fn secs_between(a: Timestamp, b: Timestamp) -> f64 {
    (b.unix_micros() - a.unix_micros()) as f64 / 1e6
}
