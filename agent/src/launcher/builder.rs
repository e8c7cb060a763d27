//! [`AgentLauncherBuilder`]: the user's two functions and the launcher's options, validated
//! once by [`build`](AgentLauncherBuilder::build). The runner applies its command line's
//! flags to a builder before building, so a program's `main` never handles a build error
//! itself.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use switchboard_core::fleet::{FleetMetrics, FleetObserver};
use switchboard_core::{
    Clock, LimitOptions, Limits, MemoryRegistry, Result, SessionRegistry, SystemClock,
};

use super::{AgentLauncher, LauncherState};
use crate::agent::{Agent, WarmupCache};
use crate::supervisor::{CreateFn, Factory, JoinFn, SupervisorContext};

/// How long `Agent::close` may take before the session is ended anyway.
pub const DEFAULT_AGENT_CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// Builds an [`AgentLauncher`].
pub struct AgentLauncherBuilder<A> {
    pub(super) create_agent: CreateFn<A>,
    pub(super) join_call: JoinFn<A>,
    pub(super) options: LimitOptions,
    pub(super) registry: Option<Arc<dyn SessionRegistry>>,
    pub(super) clock: Arc<dyn Clock>,
    pub(super) agent_close_timeout: Duration,
    pub(super) video_track_override: Option<PathBuf>,
    pub(super) fleet_observer: Option<Arc<dyn FleetObserver>>,
}

impl<A> fmt::Debug for AgentLauncherBuilder<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentLauncherBuilder")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl<A: Agent> AgentLauncherBuilder<A> {
    pub(super) fn new(create_agent: CreateFn<A>, join_call: JoinFn<A>) -> Self {
        Self {
            create_agent,
            join_call,
            options: LimitOptions::default(),
            registry: None,
            clock: Arc::new(SystemClock),
            agent_close_timeout: DEFAULT_AGENT_CLOSE_TIMEOUT,
            video_track_override: None,
            fleet_observer: None,
        }
    }

    /// All launcher options at once (validated by [`build`](Self::build)).
    pub fn options(mut self, options: LimitOptions) -> Self {
        self.options = options;
        self
    }
    /// Changes the options set so far (a command line's flags over the values set in code).
    pub fn update_options(mut self, change: impl FnOnce(&mut LimitOptions)) -> Self {
        change(&mut self.options);
        self
    }
    /// The options set so far (not yet validated).
    pub fn limit_options(&self) -> &LimitOptions {
        &self.options
    }
    /// The options set so far, validated with the anchor's messages ([`build`](Self::build)
    /// fails exactly when this does).
    pub fn limits(&self) -> Result<Limits> {
        Limits::new(self.options.clone())
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
    /// `agent_join_timeout` in seconds, counted from `create_agent` (0 disables): an agent
    /// not in its call by then ends `start_failed` and its slots come back.
    pub fn agent_join_timeout(mut self, seconds: f64) -> Self {
        self.options.agent_join_timeout = seconds;
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
        self.clock = clock;
        self
    }
    /// The clock the launcher will read (for a registry built beside it).
    pub fn configured_clock(&self) -> Arc<dyn Clock> {
        self.clock.clone()
    }
    /// How long `Agent::close` may take (default 10 s).
    pub fn agent_close_timeout(mut self, timeout: Duration) -> Self {
        self.agent_close_timeout = timeout;
        self
    }
    /// A local video file the agents play instead of incoming video (the anchor's
    /// `--video-track-override`; agents find it in their `CreateContext`).
    pub fn video_track_override(mut self, path: Option<PathBuf>) -> Self {
        self.video_track_override = path;
        self
    }

    /// Where the supervisors and the sweep report heartbeat failures and reclaims (default:
    /// the launcher's [`FleetMetrics`](AgentLauncher::fleet_metrics); an ECS task writes
    /// CloudWatch's Embedded Metric Format instead).
    pub fn fleet_observer(mut self, observer: Arc<dyn FleetObserver>) -> Self {
        self.fleet_observer = Some(observer);
        self
    }

    /// Validates the options (with the anchor's messages) and builds the launcher.
    pub fn build(self) -> Result<AgentLauncher<A>> {
        let limits = Limits::new(self.options.clone())?;
        let clock = self.clock;
        let fleet = Arc::new(FleetMetrics::new(
            clock.clone(),
            limits.max_concurrent_sessions(),
        ));
        // The default registry reports its changes to the fleet metrics; a registry given
        // (DynamoDB) reports through its table's stream instead.
        let registry = self.registry.unwrap_or_else(|| {
            Arc::new(MemoryRegistry::new(clock.clone()).observed(fleet.clone()))
        });
        let ctx = SupervisorContext {
            registry,
            clock,
            limits,
            fleet: self.fleet_observer.unwrap_or_else(|| fleet.clone()),
            factory: Factory {
                create_agent: self.create_agent,
                join_call: self.join_call,
                cache: Arc::new(WarmupCache::default()),
                video_track_override: self.video_track_override,
                call_edge: Default::default(),
            },
            agent_close_timeout: self.agent_close_timeout,
        };
        Ok(AgentLauncher {
            state: Arc::new(LauncherState::new(ctx, self.options, fleet)),
        })
    }
}
