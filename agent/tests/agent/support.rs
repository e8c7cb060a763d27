//! A scriptable test agent, a registry with an injectable outage, and launcher helpers.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use switchboard_agent::{
    Agent, AgentLauncher, AgentLauncherBuilder, CreateContext, JoinContext, Presence, WarmupCache,
};
use switchboard_core::{CallId, Clock, Metadata, MetricsRecorder, Timestamp, TokioClock};

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

impl TestAgent {
    /// The session's presence (the runtime's, from `CreateContext`).
    pub fn presence(&self) -> &Presence {
        &self.presence
    }
    /// The session's metrics (the runtime's, from `CreateContext`).
    pub fn metrics(&self) -> &MetricsRecorder {
        &self.metrics
    }
}

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
        presence: ctx.presence.clone(),
        metrics: ctx.metrics.clone(),
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
    switchboard_testkit::test_log();
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

/// A registry that is down while `outage` is set.
pub type FlakyRegistry = switchboard_core::testing::OutageRegistry;

/// Timestamp difference in seconds.
pub fn secs_between(a: Timestamp, b: Timestamp) -> f64 {
    (b.unix_micros() - a.unix_micros()) as f64 / 1e6
}
