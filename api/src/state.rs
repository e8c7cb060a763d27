//! [`AppState`]: what the handlers need, behind the core ports.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use switchboard_core::fleet::{FleetObserver, NoFleet};
use switchboard_core::{CallId, Limits, SessionRegistry, TaskLauncher};

use crate::hooks::PermissionHooks;

/// An extra readiness condition (e.g. the DynamoDB table answers), checked by `/ready` on top
/// of the launcher's own readiness.
pub type ReadinessCheck = Arc<dyn Fn() -> BoxFuture<'static, bool> + Send + Sync>;

/// `/ready` also requires the registry to answer (within 1 s): a node that cannot reach its
/// shared table must not receive traffic. The probe reads the counters of a call that never
/// exists (2 RCU on DynamoDB).
pub fn registry_readiness(registry: Arc<dyn SessionRegistry>) -> ReadinessCheck {
    let probe = CallId::parse("readiness-probe").expect("a valid call id");
    Arc::new(move || {
        let (registry, probe) = (registry.clone(), probe.clone());
        Box::pin(async move {
            let answered =
                tokio::time::timeout(Duration::from_secs(1), registry.counts(&probe)).await;
            match &answered {
                Ok(Err(e)) => tracing::warn!(error = %e, "readiness: the registry failed"),
                Err(_) => tracing::warn!("readiness: the registry did not answer within 1 s"),
                Ok(Ok(_)) => {}
            }
            matches!(answered, Ok(Ok(_)))
        })
    })
}

/// The handlers' shared state. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub(crate) registry: Arc<dyn SessionRegistry>,
    pub(crate) launcher: Arc<dyn TaskLauncher>,
    pub(crate) limits: Limits,
    pub(crate) hooks: Arc<PermissionHooks>,
    pub(crate) readiness: Option<ReadinessCheck>,
    pub(crate) request_deadline: Duration,
    pub(crate) bounded_starts: bool,
    pub(crate) fleet: Arc<dyn FleetObserver>,
}

/// How long a start may take before the API answers 503 + `Retry-After` (8 s; docs/api.md). The
/// start goes on in the background, the session `starting` until its agent exists, unless the
/// state has [`AppState::with_bounded_starts`] (Lambda).
pub const DEFAULT_REQUEST_DEADLINE: Duration = Duration::from_secs(8);

impl fmt::Debug for AppState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AppState")
            .field("registry", &self.registry)
            .field("launcher", &self.launcher)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl AppState {
    /// State over a registry and a launcher, enforcing `limits`.
    pub fn new(
        registry: Arc<dyn SessionRegistry>,
        launcher: Arc<dyn TaskLauncher>,
        limits: Limits,
    ) -> Self {
        Self {
            registry,
            launcher,
            limits,
            hooks: Arc::new(PermissionHooks::default()),
            readiness: None,
            request_deadline: DEFAULT_REQUEST_DEADLINE,
            bounded_starts: false,
            fleet: Arc::new(NoFleet),
        }
    }

    /// Reports refused starts (429s, 503) to `fleet` (the fleet metrics).
    pub fn with_fleet(mut self, fleet: Arc<dyn FleetObserver>) -> Self {
        self.fleet = fleet;
        self
    }

    /// Sets the start deadline (default 8 s).
    pub fn with_request_deadline(mut self, deadline: Duration) -> Self {
        self.request_deadline = deadline;
        self
    }

    /// Every phase of a start finishes within the request deadline, and nothing of it runs
    /// after the response (a 503 + `Retry-After` when it could not finish; its row is left to
    /// the reaper). For Lambda, which freezes the environment once the response is sent. By
    /// default (serve) a start slower than the deadline goes on in the background.
    pub fn with_bounded_starts(mut self) -> Self {
        self.bounded_starts = true;
        self
    }

    /// Adds a readiness condition.
    pub fn with_readiness(mut self, check: ReadinessCheck) -> Self {
        self.readiness = Some(check);
        self
    }

    pub(crate) fn with_hooks(mut self, hooks: PermissionHooks) -> Self {
        self.hooks = Arc::new(hooks);
        self
    }

    pub(crate) async fn is_ready(&self) -> bool {
        if !self.launcher.is_ready() {
            return false;
        }
        match &self.readiness {
            Some(check) => check().await,
            None => true,
        }
    }
}
