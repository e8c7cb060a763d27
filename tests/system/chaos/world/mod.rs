//! The world the fault and chaos tests run in: moto's DynamoDB and ECS, the API served
//! in-process over them, the local ECS as Fargate (it runs the real agent binary for every
//! task, repeats and reorders ECS's events, and cuts the agents off from the table on
//! demand), the reaper in-process as its event sink (the STOPPED-event path and the
//! schedule), and an observer that looks only at what is really there (live processes,
//! moto's tasks, the rows).
//!
//! One module per actor: `fargate` (tasks, processes and their faults), `reaper` (events
//! and sweeps), `observer` (samples and invariants); this file starts and stops the world
//! and admits sessions into it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use switchboard_aws::dynamodb::StandbyRegistry;
use switchboard_aws::ecs_tasks::EcsTasks;
use switchboard_aws::pool::{PoolSettings, PooledLauncher, WarmPool};
use switchboard_aws::{DynamoRegistry, EcsLauncher};
use switchboard_core::registry::{ListQuery, StartOutcome, StartRequest};
use switchboard_core::{
    CallId, CallType, EndReason, Limits, Session, SessionId, SessionRegistry, SessionStatus,
    SystemClock, TaskLauncher, Timestamp,
};
use switchboard_core::{PoolStatus, StandbyState};
use switchboard_functions::reaper::{
    Outcome, StandbyOutcome, Stopped, Sweeper, end_standby, end_stopped, parse_event,
};
use switchboard_local_ecs::{EventSink, Faults, LocalEcs};
use tokio::task::JoinHandle;

/// Fargate takes tens of seconds from RunTask to a running container; the local ECS waits
/// 3 s here. An agent frees its slot with its own end write and exits right after, but with
/// the emulator answering that write late under load, "right after" was seen at up to 2.5 s
/// here: a successor's container must not start sooner than any real Fargate would, or the
/// process count would see both. (It also means every task comes up with its admission
/// lease nearly spent, as on Fargate.) SIGKILL follows SIGTERM after the test task
/// definition's `stopTimeout` (2 s, switchboard_testkit::ecs_cluster).
mod fargate;
mod observer;
mod reaper;

use observer::Observations;
use reaper::{Reaper, ended_by_reaper};

const PROVISIONING: Duration = Duration::from_secs(3);
/// How long a start may take before the sweep gives up on it.
const START_DEADLINE: Duration = Duration::from_secs(60);
/// The reaper's schedule (every minute in AWS).
const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// The observer's pace.
const SAMPLE_EVERY: Duration = Duration::from_millis(200);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Settings of one world.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub limits: Limits,
    /// Warm standbys to keep (0: none, every start cold).
    pub pool: u32,
    /// Seeds the event bus's choices (which event goes next, how often it repeats).
    pub seed: u64,
}

/// An agent process that exited.
#[derive(Debug, Clone)]
pub struct Exited {
    pub session_id: String,
    /// 128 + signal for a signal, as ECS reports it; `None` if it never started.
    pub code: Option<i32>,
    pub at: Timestamp,
}

#[derive(Debug)]
pub struct World {
    pub settings: Settings,
    pub table: String,
    pub cluster: String,
    pub registry: Arc<DynamoRegistry>,
    pub ecs: aws_sdk_ecs::Client,
    definition: Mutex<String>,
    /// The api's launcher, swapped by [`World::deploy`] as a deploy replaces the function.
    launcher: Arc<Current>,
    /// Fargate: the local ECS, with its fault knobs.
    pub local: LocalEcs,
    reaper: Arc<Reaper>,
    /// The API's `host:port`.
    pub api: String,
    binary: PathBuf,
    pub observations: Mutex<Observations>,
    stopping: AtomicBool,
    background: Mutex<Vec<JoinHandle<()>>>,
    ops_in_flight: AtomicUsize,
}

impl World {
    /// Starts the API, the local ECS (its events and the reaper's schedule to the reaper)
    /// and the observer.
    pub async fn start(settings: Settings) -> Arc<World> {
        let client = switchboard_testkit::client().await;
        let table = switchboard_testkit::table(&client).await;
        let ecs = switchboard_testkit::ecs_client();
        let (cluster, definition) = switchboard_testkit::ecs_cluster(&ecs).await;
        let registry = Arc::new(DynamoRegistry::new(
            client,
            table.clone(),
            Arc::new(SystemClock),
        ));

        let limits = settings.limits;
        let mut vars: HashMap<&str, String> = HashMap::from([
            ("TABLE_NAME", table.clone()),
            ("ECS_CLUSTER", cluster.clone()),
            ("TASK_DEFINITION", definition.clone()),
            ("SUBNETS", switchboard_testkit::subnet()),
            ("SECURITY_GROUPS", "sg-0123456789abcdef0".into()),
        ]);
        vars.extend(limits.supervisor_env());
        vars.insert("WARM_POOL_SIZE", settings.pool.to_string());
        use switchboard_core::limits::env;
        if let Some(n) = limits.max_concurrent_sessions() {
            vars.insert(env::MAX_CONCURRENT_SESSIONS, n.to_string());
        }
        if let Some(n) = limits.max_sessions_per_call() {
            vars.insert(env::MAX_SESSIONS_PER_CALL, n.to_string());
        }
        let config = switchboard_functions::ApiConfig::from_lookup(|k| vars.get(k).cloned())
            .expect("the API's configuration");
        let pool = |definition: &str| {
            switchboard_functions::warm_pool(
                (*registry).clone(),
                EcsLauncher::new(
                    ecs.clone(),
                    switchboard_testkit::ecs_settings(&cluster, definition, &table, limits),
                ),
                PoolSettings {
                    size: settings.pool,
                    ..config.pool
                },
            )
        };
        // The API as `api_router` builds it, its launcher swappable (a deploy).
        let launcher = Arc::new(Current(Mutex::new(Arc::new(PooledLauncher::new(pool(
            &definition,
        ))))));
        let state = switchboard_api::AppState::new(registry.clone(), launcher.clone(), limits)
            .with_bounded_starts();
        let router = switchboard_api::router(state, switchboard_api::ServeOptions::default())
            .expect("the router");
        let _ = config;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let api = listener.local_addr().unwrap().to_string();

        let reaper = Arc::new(Reaper {
            registry: registry.clone(),
            standbys: StandbyRegistry::new((*registry).clone()),
            pool: Mutex::new(pool(&definition)),
            tasks: EcsTasks::new(ecs.clone(), cluster.clone()),
            limits,
            outcomes: Mutex::default(),
            ended_by_event: Mutex::default(),
            sweeps: Mutex::default(),
        });
        let local = crate::local_ecs(&cluster, reaper.clone(), |c| {
            c.provisioning = PROVISIONING;
            c.sweep_every = Some(SWEEP_EVERY);
            // ECS events: each 1–3 times, in random order.
            c.faults = Faults {
                max_copies: 3,
                reorder: true,
                seed: settings.seed,
                ..Faults::default()
            };
        })
        .await;
        let binary = switchboard_testkit::bins::bin("demo-agent")
            .canonicalize()
            .expect("the agent binary");
        let world = Arc::new(World {
            settings,
            table,
            cluster,
            registry,
            ecs,
            definition: Mutex::new(definition),
            launcher,
            local,
            reaper,
            api,
            binary,
            observations: Mutex::default(),
            stopping: AtomicBool::new(false),
            background: Mutex::default(),
            ops_in_flight: AtomicUsize::new(0),
        });
        let server = tokio::spawn(async move {
            axum::serve(listener, router).await.unwrap();
        });
        let w = world.clone();
        let observer = tokio::spawn(async move {
            let mut ticks = tokio::time::interval(SAMPLE_EVERY);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while !w.stopping.load(Ordering::SeqCst) {
                ticks.tick().await;
                w.observe().await;
            }
        });
        *lock(&world.background) = vec![server, observer];
        world
    }

    /// Where the agents' logs are (one file per task, its first line names the session).
    pub fn logs(&self) -> &std::path::Path {
        self.local.logs()
    }

    /// Deletes the agents' logs (kept when a test fails: its message names the folder).
    pub fn discard_logs(&self) {
        let _ = std::fs::remove_dir_all(self.local.logs());
    }

    // ---- the event bus and the reaper ----

    // ---- the observer ----

    // ---- operations ----

    /// Admits a row as the API's first step does, then "crashes": no RunTask.
    pub async fn admit_only(&self, call: &str, lease: Duration) -> Option<Session> {
        let limits = self.settings.limits;
        let request = StartRequest {
            session_id: SessionId::generate(),
            call_id: CallId::parse(call).unwrap(),
            call_type: CallType::default(),
            metadata: None,
            idempotency: None,
            max_concurrent_sessions: limits.max_concurrent_sessions(),
            max_sessions_per_call: limits.max_sessions_per_call(),
            lease,
        };
        match self.registry.start(request).await {
            Ok(StartOutcome::Created(s)) => Some(s),
            _ => None,
        }
    }

    /// Admits and runs the task, then "crashes" before recording its ARN.
    pub async fn admit_and_run_task(&self, call: &str) -> Option<Session> {
        let session = self
            .admit_only(call, self.settings.limits.session_lease())
            .await?;
        // A failed RunTask here is the launcher's business (its own tests): the row stays
        // starting either way and the sweep resolves it.
        let _ = self
            .launcher_for(self.settings.limits)
            .launch(&session)
            .await;
        Some(session)
    }

    /// A launcher whose tasks get these limits (the lease and interval in their override).
    pub fn launcher_for(&self, limits: Limits) -> EcsLauncher {
        EcsLauncher::new(
            self.ecs.clone(),
            switchboard_testkit::ecs_settings(
                &self.cluster,
                &lock(&self.definition),
                &self.table,
                limits,
            ),
        )
    }

    /// Counts an operation in flight (quiescence waits for none).
    pub fn op(&self) -> OpGuard<'_> {
        self.ops_in_flight.fetch_add(1, Ordering::SeqCst);
        OpGuard(self)
    }

    // ---- quiescence ----

    /// Stops the background jobs and every agent process.
    pub async fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        let jobs = std::mem::take(&mut *lock(&self.background));
        for job in jobs {
            job.abort();
            let _ = job.await;
        }
        self.local.shutdown(Duration::ZERO).await;
    }
}

/// Marks an operation in flight.
#[derive(Debug)]
pub struct OpGuard<'a>(&'a World);

impl Drop for OpGuard<'_> {
    fn drop(&mut self) {
        self.0.ops_in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The api's launcher, replaceable (a deploy replaces the function with its new settings).
#[derive(Debug)]
struct Current(Mutex<Arc<PooledLauncher>>);

#[async_trait::async_trait]
impl TaskLauncher for Current {
    async fn launch(
        &self,
        session: &Session,
    ) -> Result<switchboard_core::Launched, switchboard_core::LaunchError> {
        let launcher = lock(&self.0).clone();
        launcher.launch(session).await
    }

    async fn pool(&self) -> Option<switchboard_core::Result<PoolStatus>> {
        let launcher = lock(&self.0).clone();
        launcher.pool().await
    }
}
