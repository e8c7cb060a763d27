//! The world the fault and chaos tests run in: moto's DynamoDB and ECS, the API served
//! in-process over them, the local ECS as Fargate (it runs the real agent binary for every
//! task, repeats and reorders ECS's events, and cuts the agents off from the table on
//! demand), the reaper in-process as its event sink (the STOPPED-event path and the
//! schedule), and an observer that looks only at what is really there (live processes,
//! moto's tasks, the rows).

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

/// The reaper, in-process, as the local ECS's event sink: ECS's STOPPED events end their
/// session (an error leaves the event pending: EventBridge retries), and each Scheduled
/// Event runs one sweep. It counts what each did.
#[derive(Debug)]
struct Reaper {
    registry: Arc<DynamoRegistry>,
    standbys: StandbyRegistry,
    /// The pool the sweep keeps and re-dispatches to (swapped by a deploy).
    pool: Mutex<WarmPool>,
    tasks: EcsTasks,
    limits: Limits,
    outcomes: Mutex<BTreeMap<String, u32>>,
    ended_by_event: Mutex<HashMap<String, u32>>,
    sweeps: Mutex<BTreeMap<&'static str, u32>>,
}

#[async_trait::async_trait]
impl EventSink for Reaper {
    async fn deliver(&self, event: &Value) -> Result<(), String> {
        if event["detail-type"] == "Scheduled Event" {
            self.sweep().await;
            return Ok(());
        }
        let outcome = match parse_event(event, "agent") {
            Err(skipped) => format!("skipped ({})", skipped_kind(&skipped)),
            Ok(Stopped::Standby(stopped)) => {
                let pool = lock(&self.pool).clone();
                // Whose session it hosted, for the count of ends by events.
                let hosted = self
                    .standbys
                    .get(&stopped.task_arn, true)
                    .await
                    .ok()
                    .flatten()
                    .and_then(|s| s.session)
                    .map(|(_, id)| id.to_string());
                match end_standby(
                    &self.standbys,
                    &*self.registry,
                    Some(&pool),
                    &self.tasks,
                    &stopped,
                    &self.limits,
                    START_DEADLINE,
                    &SystemClock,
                )
                .await
                {
                    Ok(StandbyOutcome::Session(Outcome::Ended(reason))) => {
                        if let Some(session) = hosted {
                            *lock(&self.ended_by_event).entry(session).or_default() += 1;
                        }
                        format!("standby's session ended {reason}")
                    }
                    Ok(other) => format!("standby: {other:?}"),
                    Err(e) => return Err(e.to_string()),
                }
            }
            Ok(Stopped::Session(stopped)) => {
                match end_stopped(&*self.registry, &stopped, &self.limits).await {
                    Ok(Outcome::Ended(reason)) => {
                        *lock(&self.ended_by_event)
                            .entry(stopped.session_id.to_string())
                            .or_default() += 1;
                        format!("ended {reason}")
                    }
                    Ok(Outcome::AlreadyEnded) => "already ended".into(),
                    Ok(Outcome::Unknown) => "unknown session".into(),
                    Ok(Outcome::Redispatched(start)) => format!("re-dispatched {start}"),
                    Ok(Outcome::OtherTask) => "the session is on another task".into(),
                    Err(e) => return Err(e.to_string()),
                }
            }
        };
        *lock(&self.outcomes).entry(outcome).or_default() += 1;
        Ok(())
    }
}

impl Reaper {
    async fn sweep(&self) {
        let pool = lock(&self.pool).clone();
        let report = Sweeper {
            registry: &*self.registry,
            tasks: &self.tasks,
            limits: &self.limits,
            start_deadline: START_DEADLINE,
            clock: &SystemClock,
            pool: (pool.settings().size > 0).then_some(&pool),
        }
        .sweep(Duration::from_secs(5))
        .await;
        let mut sweeps = lock(&self.sweeps);
        match report {
            Ok(r) => {
                *sweeps.entry("runs").or_default() += 1;
                *sweeps.entry("lease_expired").or_default() += r.lease_expired;
                *sweeps.entry("start_failed").or_default() += r.start_failed;
                *sweeps.entry("tasks_stopped").or_default() += r.tasks_stopped;
                *sweeps.entry("failed").or_default() += r.failed;
                *sweeps.entry("redispatched").or_default() += r.redispatched;
                if let Some(p) = r.pool {
                    *sweeps.entry("standbys started").or_default() += p.started;
                    *sweeps.entry("standbys stopped").or_default() += p.stopped;
                }
            }
            Err(_) => *sweeps.entry("runs that failed").or_default() += 1,
        }
    }
}

/// What the observer saw.
#[derive(Debug, Default)]
pub struct Observations {
    pub samples: u32,
    /// The longest an agent process was seen alive after recording its own end.
    pub alive_after_own_end: Duration,
    pub max_agents: usize,
    pub max_running_tasks: usize,
    pub violations: Vec<String>,
}

/// A live agent process, read from /proc.
#[derive(Debug, Clone)]
pub struct Alive {
    pub pid: u32,
    pub session_id: String,
    pub call_id: String,
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

    async fn running_arns(&self) -> Option<HashSet<String>> {
        switchboard_local_ecs::running_task_arns(&self.ecs, &self.cluster)
            .await
            .ok()
    }

    /// SIGKILLs a running agent picked by `rng`; returns its session.
    pub fn kill_one(&self, rng: &mut fastrand::Rng) -> Option<String> {
        let running = self.local.running();
        if running.is_empty() {
            return None;
        }
        let task = &running[rng.usize(0..running.len())];
        self.local
            .kill(&task.task_arn)
            .then(|| task.session_id.clone())
            .flatten()
    }

    /// SIGKILLs an idle standby picked by `rng`; false if none runs.
    pub async fn kill_idle_standby(&self, rng: &mut fastrand::Rng) -> bool {
        let idle: HashSet<String> = self
            .standbys()
            .await
            .into_iter()
            .filter(|s| s.state == StandbyState::Idle)
            .map(|s| s.task_arn)
            .collect();
        let running: Vec<_> = self
            .local
            .running()
            .into_iter()
            .filter(|r| idle.contains(&r.task_arn))
            .collect();
        if running.is_empty() {
            return false;
        }
        self.local
            .kill(&running[rng.usize(0..running.len())].task_arn)
    }

    /// SIGKILLs the standby claimed for `session_id`, if one is (right after its start: most
    /// often before its agent joined).
    pub async fn kill_claimed_standby(&self, session_id: &str) -> bool {
        let standby = self.standbys().await.into_iter().find(|s| {
            s.session
                .as_ref()
                .is_some_and(|(_, id)| id.to_string() == session_id)
        });
        standby.is_some_and(|s| self.local.kill(&s.task_arn))
    }

    /// Where the agents' logs are (one file per task, its first line names the session).
    pub fn logs(&self) -> &std::path::Path {
        self.local.logs()
    }

    /// Deletes the agents' logs (kept when a test fails: its message names the folder).
    pub fn discard_logs(&self) {
        let _ = std::fs::remove_dir_all(self.local.logs());
    }

    /// How many agent processes the local ECS started.
    pub fn agents_started(&self) -> usize {
        self.local.started()
    }

    /// The exits so far.
    pub fn exits(&self) -> Vec<Exited> {
        self.local
            .exits()
            .into_iter()
            .map(|e| Exited {
                session_id: e.session_id.unwrap_or_default(),
                code: e.code,
                at: Timestamp::from_system(e.at),
            })
            .collect()
    }

    // ---- the event bus and the reaper ----

    /// Holds every event until [`World::release_events`].
    pub fn hold_events(&self) {
        self.local.hold_events();
    }

    pub fn release_events(&self) {
        self.local.release_events();
    }

    pub fn events_pending(&self) -> usize {
        self.local.events_pending()
    }

    /// Sends an already delivered event again, late (EventBridge delivers at least once).
    pub fn replay_event(&self, rng: &mut fastrand::Rng) -> bool {
        self.local.replay_event(rng)
    }

    pub fn event_outcomes(&self) -> BTreeMap<String, u32> {
        lock(&self.reaper.outcomes).clone()
    }

    /// Sessions the event path ended more than once (must be none).
    pub fn ended_twice_by_events(&self) -> Vec<String> {
        lock(&self.reaper.ended_by_event)
            .iter()
            .filter(|(_, n)| **n > 1)
            .map(|(s, _)| s.clone())
            .collect()
    }

    pub fn sweep_totals(&self) -> BTreeMap<&'static str, u32> {
        lock(&self.reaper.sweeps).clone()
    }

    // ---- the observer ----

    /// The warm pool's registrations (empty without a pool).
    pub async fn standbys(&self) -> Vec<switchboard_core::Standby> {
        if self.settings.pool == 0 {
            return Vec::new();
        }
        let pool = lock(&self.reaper.pool).clone();
        pool.standbys().list().await.unwrap_or_default()
    }

    /// The agent processes of this world that are alive now (not zombies), from /proc: a
    /// task started for a session (its environment names it), or a standby claimed for one
    /// (its registration names it). An idle standby is in no call and not listed.
    pub async fn alive_agents(&self) -> Vec<Alive> {
        // The registrations first: a standby claimed after this read is missed (never
        // counted twice).
        let claimed: HashMap<String, (String, String)> = self
            .standbys()
            .await
            .into_iter()
            .filter_map(|s| {
                let (call, id) = s.session?;
                Some((s.task_arn, (call.to_string(), id.to_string())))
            })
            .collect();
        let task_of: HashMap<u32, String> = self
            .local
            .running()
            .into_iter()
            .map(|r| (r.pid, r.task_arn))
            .collect();
        switchboard_testkit::procs::live(Some(&self.binary))
            .into_iter()
            .filter(|p| p.env.get("TABLE_NAME") == Some(&self.table))
            .filter_map(|p| {
                if p.env.get("STANDBY").map(String::as_str) == Some("1") {
                    let (call_id, session_id) = claimed.get(task_of.get(&p.pid)?)?.clone();
                    return Some(Alive {
                        pid: p.pid,
                        session_id,
                        call_id,
                    });
                }
                Some(Alive {
                    pid: p.pid,
                    session_id: p.env.get("SESSION_ID").cloned().unwrap_or_default(),
                    call_id: p.env.get("CALL_ID").cloned().unwrap_or_default(),
                })
            })
            .collect()
    }

    /// A deploy: a new revision of the agent's task definition, which the api's claims and
    /// cold starts and the reaper's pool use from now on (its sweep stops the old idle
    /// standbys). Returns the new ARN.
    pub async fn deploy(&self) -> String {
        let old = lock(&self.definition).clone();
        let described = self
            .ecs
            .describe_task_definition()
            .task_definition(&old)
            .send()
            .await
            .expect("describe the task definition");
        let d = described.task_definition().expect("a definition");
        let registered = self
            .ecs
            .register_task_definition()
            .family(d.family().unwrap_or_default())
            .set_requires_compatibilities(Some(d.requires_compatibilities().to_vec()))
            .set_network_mode(d.network_mode().cloned())
            .set_cpu(d.cpu().map(str::to_owned))
            .set_memory(d.memory().map(str::to_owned))
            .set_container_definitions(Some(d.container_definitions().to_vec()))
            .send()
            .await
            .expect("register a new revision");
        let new = registered
            .task_definition()
            .and_then(|d| d.task_definition_arn())
            .expect("its ARN")
            .to_owned();
        let limits = self.settings.limits;
        let pool = {
            let current = lock(&self.reaper.pool).clone();
            WarmPool::new(
                current.standbys().clone(),
                EcsLauncher::new(
                    self.ecs.clone(),
                    switchboard_testkit::ecs_settings(&self.cluster, &new, &self.table, limits),
                ),
                current.settings(),
                Arc::new(SystemClock),
            )
        };
        *lock(&self.definition) = new.clone();
        *lock(&self.launcher.0) = Arc::new(PooledLauncher::new(pool.clone()));
        *lock(&self.reaper.pool) = pool;
        new
    }

    /// The agents with their rows, for a violation's message.
    async fn describe(&self, agents: impl Iterator<Item = &Alive>, at: Timestamp) -> String {
        let mut out = Vec::new();
        for a in agents {
            let row = match (CallId::parse(&a.call_id), SessionId::parse(&a.session_id)) {
                (Ok(call), Ok(id)) => self.registry.get(&call, id).await.ok().flatten(),
                _ => None,
            };
            out.push(match row {
                Some(r) => format!(
                    "pid {} session {} {:?} joined={} end {:?} {:?} ended {:?} before the sample",
                    a.pid,
                    a.session_id,
                    r.status,
                    r.joined(),
                    r.end_reason,
                    r.end_detail,
                    r.ended_at.map(|e| at.saturating_since(e)),
                ),
                None => format!("pid {} session {} (no row)", a.pid, a.session_id),
            });
        }
        out.join("; ")
    }

    async fn observe(&self) {
        let before = Timestamp::now_system();
        let alive = self.alive_agents().await;
        let running_tasks = self.running_arns().await.map_or(0, |a| a.len());
        let mut violations = Vec::new();
        let limits = self.settings.limits;
        if let Some(max) = limits.max_concurrent_sessions()
            && alive.len() > max as usize
        {
            violations.push(format!(
                "{} live agents, over the limit {max}: {}",
                alive.len(),
                self.describe(alive.iter(), before).await
            ));
        }
        let mut per_call: HashMap<&str, usize> = HashMap::new();
        let mut per_session: HashMap<&str, usize> = HashMap::new();
        for a in &alive {
            *per_call.entry(&a.call_id).or_default() += 1;
            *per_session.entry(&a.session_id).or_default() += 1;
        }
        if let Some(max) = limits.max_sessions_per_call() {
            for (call, n) in &per_call {
                if *n > max as usize {
                    violations.push(format!(
                        "{n} live agents in {call}, over the limit {max}: {}",
                        self.describe(alive.iter().filter(|a| a.call_id == *call), before)
                            .await
                    ));
                }
            }
        }
        for (session, n) in &per_session {
            if *n > 1 {
                violations.push(format!("{n} live agents for session {session}"));
            }
        }
        // No session is ended by the reaper while its agent is still alive.
        let mut after_own_end = Duration::ZERO;
        for a in &alive {
            let (Ok(call), Ok(id)) = (CallId::parse(&a.call_id), SessionId::parse(&a.session_id))
            else {
                continue;
            };
            let Ok(Some(row)) = self.registry.get(&call, id).await else {
                continue;
            };
            let Some(ended_at) = row.ended_at.filter(|at| *at < before) else {
                continue;
            };
            if ended_by_reaper(&row) {
                violations.push(format!(
                    "agent pid {} of {} alive after the reaper ended it {:?} ({:?})",
                    a.pid, a.session_id, row.end_reason, row.end_detail
                ));
            } else {
                after_own_end = after_own_end.max(before.saturating_since(ended_at));
            }
        }
        let mut obs = lock(&self.observations);
        obs.samples += 1;
        obs.alive_after_own_end = obs.alive_after_own_end.max(after_own_end);
        obs.max_agents = obs.max_agents.max(alive.len());
        obs.max_running_tasks = obs.max_running_tasks.max(running_tasks);
        obs.violations.extend(violations);
    }

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

    /// Every row of the table (ended ones too).
    pub async fn rows(&self) -> Vec<Session> {
        let mut rows = Vec::new();
        let mut next_token = None;
        loop {
            let page = self
                .registry
                .list(ListQuery {
                    call_id: None,
                    include_ended: true,
                    limit: 0,
                    next_token,
                    with_metrics: false,
                })
                .await
                .expect("list the rows");
            rows.extend(page.sessions.into_iter().map(|l| l.session));
            next_token = page.next_token;
            if next_token.is_none() {
                return rows;
            }
        }
    }

    /// The sessions of moto's RUNNING tasks (from `startedBy`; a standby's from its
    /// registration), and the RUNNING standby tasks hosting none.
    pub async fn running_task_sessions(&self) -> (Vec<String>, Vec<String>) {
        let claimed: HashMap<String, String> = self
            .standbys()
            .await
            .into_iter()
            .filter_map(|s| Some((s.task_arn, s.session?.1.to_string())))
            .collect();
        let mut idle_standbys = Vec::new();
        let arns: Vec<String> = self
            .running_arns()
            .await
            .unwrap_or_default()
            .into_iter()
            .collect();
        let mut out = Vec::new();
        for chunk in arns.chunks(100) {
            let described = self
                .ecs
                .describe_tasks()
                .cluster(&self.cluster)
                .set_tasks(Some(chunk.to_vec()))
                .send()
                .await
                .expect("describe tasks");
            for task in described.tasks() {
                let arn = task.task_arn().unwrap_or_default();
                if task.started_by() == Some(switchboard_aws::pool::STANDBY_STARTED_BY) {
                    match claimed.get(arn) {
                        Some(session) => out.push(session.clone()),
                        None => idle_standbys.push(arn.to_owned()),
                    }
                } else {
                    out.push(task.started_by().unwrap_or_default().to_owned());
                }
            }
        }
        out.sort();
        idle_standbys.sort();
        (out, idle_standbys)
    }

    /// What the state is, with everything that disagrees; `None` when consistent: every
    /// live row is `running` and has exactly one live agent and one RUNNING task, no agent or
    /// task lacks a live row, and every counter equals the live rows counted from the rows.
    pub async fn inconsistencies(&self, calls: &[&str]) -> Option<String> {
        let mut problems = Vec::new();
        if self.ops_in_flight.load(Ordering::SeqCst) > 0 {
            problems.push("operations in flight".to_owned());
        }
        if !self.local.settled() {
            problems.push("tasks provisioning or stopping".to_owned());
        }
        if self.events_pending() > 0 && !self.local.events_held() {
            problems.push(format!("{} events pending", self.events_pending()));
        }
        let rows = self.rows().await;
        let live: Vec<&Session> = rows.iter().filter(|r| !r.is_ended()).collect();
        let mut live_ids: Vec<String> = live.iter().map(|r| r.id.to_string()).collect();
        live_ids.sort();
        for r in &live {
            if r.status != SessionStatus::Running {
                problems.push(format!("{} is {:?}", r.id, r.status));
            }
        }
        let mut agents: Vec<String> = self
            .alive_agents()
            .await
            .into_iter()
            .map(|a| a.session_id)
            .collect();
        agents.sort();
        if agents != live_ids {
            problems.push(format!("live rows {live_ids:?} but agents {agents:?}"));
        }
        let (tasks, idle_tasks) = self.running_task_sessions().await;
        if tasks != live_ids {
            problems.push(format!(
                "live rows {live_ids:?} but RUNNING tasks {tasks:?}"
            ));
        }
        if self.settings.pool > 0 {
            // The pool is full, of the current definition only, and every idle standby's
            // task runs (no stale registration, no orphan task).
            let task_definition = lock(&self.definition).clone();
            let status = PoolStatus {
                target_size: self.settings.pool,
                task_definition,
                standbys: self.standbys().await,
                at: Timestamp::now_system(),
            };
            let mut idle: Vec<String> = status
                .standbys
                .iter()
                .filter(|s| s.state != StandbyState::Claimed)
                .map(|s| s.task_arn.clone())
                .collect();
            idle.sort();
            let current_idle = status
                .standbys
                .iter()
                .filter(|s| {
                    s.state == StandbyState::Idle
                        && s.task_definition == status.task_definition
                        && s.lease_expires_at > status.at
                })
                .count();
            if current_idle != self.settings.pool as usize || idle != idle_tasks {
                problems.push(format!(
                    "pool: {current_idle} idle of {} (of {}); registered unclaimed {idle:?}, RUNNING unclaimed standby tasks {idle_tasks:?}",
                    self.settings.pool, status.task_definition
                ));
            }
        }
        for call in calls {
            let call_id = CallId::parse(call).unwrap();
            let counts = self.registry.counts(&call_id).await.expect("counts");
            let per_call = live.iter().filter(|r| r.call_id == call_id).count() as u64;
            if counts.per_call != per_call {
                problems.push(format!(
                    "{call}: counter {} but {per_call} live rows",
                    counts.per_call
                ));
            }
            if counts.global != live.len() as u64 {
                problems.push(format!(
                    "global counter {} but {} live rows",
                    counts.global,
                    live.len()
                ));
            }
        }
        for r in &rows {
            if r.is_ended() && r.end_reason.is_none() {
                problems.push(format!("{} ended without a reason", r.id));
            }
        }
        problems.dedup();
        (!problems.is_empty()).then(|| problems.join("\n"))
    }

    /// Waits until [`World::inconsistencies`] finds none; panics with them after `within`.
    pub async fn await_consistent(&self, calls: &[&str], within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let Some(problems) = self.inconsistencies(calls).await else {
                return;
            };
            assert!(
                Instant::now() < deadline,
                "not consistent after {within:?}:\n{problems}\nagent logs: {}",
                self.logs().display()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

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

fn skipped_kind(s: &switchboard_functions::reaper::Skipped) -> &'static str {
    use switchboard_functions::reaper::Skipped;
    match s {
        Skipped::NotTaskStateChange => "not a task state change",
        Skipped::NotStopped(_) => "not STOPPED",
        Skipped::OtherGroup(_) => "other group",
        Skipped::NoSession(_) => "no session",
    }
}

/// Ended by the reaper (an event or a sweep), not by its own agent: the agent writes
/// `lease_expired` itself without a detail when it gives up, the sweep with one.
fn ended_by_reaper(row: &Session) -> bool {
    match row.end_reason {
        Some(EndReason::TaskStopped | EndReason::StartFailed) => true,
        Some(EndReason::LeaseExpired) => row.end_detail.is_some(),
        _ => false,
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
