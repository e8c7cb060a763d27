//! The world the fault and chaos tests run in: moto's DynamoDB and ECS, the API served
//! in-process over them, the reaper (its STOPPED-event path and its schedule), a player of
//! Fargate that runs the real agent binary for every RUNNING task, an event bus that repeats
//! and reorders ECS events, a proxy that can cut the agents off from the table, and an
//! observer that looks only at what is really there (live processes, moto's tasks, the rows).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use switchboard_aws::ecs_tasks::EcsTasks;
use switchboard_aws::{DynamoRegistry, EcsLauncher};
use switchboard_core::registry::{ListQuery, StartOutcome, StartRequest};
use switchboard_core::{
    CallId, CallType, EndReason, Limits, Session, SessionId, SessionRegistry, SessionStatus,
    SystemClock, TaskLauncher, Timestamp,
};
use switchboard_functions::reaper::{Outcome, Sweeper, end_stopped, parse_stopped};
use switchboard_testkit::proxy::Proxy;
use tokio::process::Command;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Fargate takes tens of seconds from RunTask to a running container; the player waits 3 s.
/// An agent frees its slot with its own end write and exits right after, but with the
/// emulator answering that write late under load, "right after" was seen at up to 2.5 s
/// here: a successor's container must not start sooner than any real Fargate would, or the
/// process count would see both. (It also means every task comes up with its admission
/// lease nearly spent, as on Fargate.)
const PROVISIONING: Duration = Duration::from_secs(3);
/// SIGTERM, then SIGKILL after this long (the task definition's stop timeout, shortened).
const STOP_TIMEOUT: Duration = Duration::from_secs(2);
/// The player's and the event bus's pace.
const TICK: Duration = Duration::from_millis(100);
/// The reaper's schedule (every minute in AWS).
const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// The observer's pace.
const SAMPLE_EVERY: Duration = Duration::from_millis(200);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A ECS Task State Change event in the real shape, for one of our tasks.
fn task_event(
    arn: &str,
    env: &HashMap<String, String>,
    last_status: &str,
    exit_code: Option<i32>,
    stop: Option<(&str, &str)>,
) -> Value {
    let text = include_str!("../../../../infra/events/ecs-task-state-change-stopped.json")
        .replace(
            "SESSION_ID_HERE",
            env.get("SESSION_ID").map_or("", String::as_str),
        )
        .replace(
            "CALL_ID_HERE",
            env.get("CALL_ID").map_or("", String::as_str),
        );
    let mut event: Value = serde_json::from_str(&text).expect("the fixture");
    let detail = &mut event["detail"];
    detail["taskArn"] = Value::from(arn);
    detail["lastStatus"] = Value::from(last_status);
    detail["desiredStatus"] = Value::from(if stop.is_some() { "STOPPED" } else { "RUNNING" });
    detail["containers"][0]["lastStatus"] = Value::from(last_status);
    detail["containers"][0]["exitCode"] = exit_code.map_or(Value::Null, Value::from);
    match stop {
        Some((code, reason)) => {
            detail["stopCode"] = Value::from(code);
            detail["stoppedReason"] = Value::from(reason);
        }
        None => {
            for key in ["stopCode", "stoppedReason", "stoppedAt", "stoppingAt"] {
                detail.as_object_mut().expect("detail").remove(key);
            }
        }
    }
    event
}

/// Settings of one world.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub limits: Limits,
    /// Seeds the event bus's choices (which event goes next, how often it repeats).
    pub seed: u64,
}

/// One agent process, as Fargate would run it.
#[derive(Debug)]
enum Phase {
    Provisioning(Instant),
    Running,
    Stopping(Instant),
}

/// A signal for an agent process (its waiter holds the child).
#[derive(Debug, Clone, Copy)]
enum Signal {
    Term,
    Kill,
}

/// How an agent process ended (128 + signal for a signal, as ECS reports it), and when.
type ExitRecord = (Option<i32>, Timestamp);

#[derive(Debug)]
struct Task {
    env: HashMap<String, String>,
    /// The running process's waiter; `None` while provisioning.
    control: Option<mpsc::UnboundedSender<Signal>>,
    phase: Phase,
    /// The reaper (or anyone) stopped it in ECS before its container exited.
    stopped_by_ecs: bool,
}

/// An agent process that exited.
#[derive(Debug, Clone)]
pub struct Exited {
    pub session_id: String,
    /// 128 + signal for a signal, as ECS reports it; `None` if it never started.
    pub code: Option<i32>,
    pub at: Timestamp,
}

#[derive(Debug, Default)]
struct Fleet {
    tasks: HashMap<String, Task>,
    done: HashSet<String>,
    /// Exited containers whose tasks are still RUNNING in moto (StopTask retried each tick).
    to_stop: HashSet<String>,
    exits: Vec<Exited>,
    started: usize,
}

/// ECS events on their way to the reaper: each STOPPED event 1–3 times, in random order.
#[derive(Debug)]
struct Bus {
    pending: Mutex<Vec<Value>>,
    delivered: Mutex<Vec<Value>>,
    rng: Mutex<fastrand::Rng>,
    held: AtomicBool,
    outcomes: Mutex<BTreeMap<String, u32>>,
    ended_by_event: Mutex<HashMap<String, u32>>,
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
    definition: String,
    pub proxy: Proxy,
    /// The API's `host:port`.
    pub api: String,
    binary: PathBuf,
    logs: PathBuf,
    fleet: Mutex<Fleet>,
    /// Exits as their waiters saw them, by task ARN, at the instant of the exit.
    exited: Arc<Mutex<HashMap<String, ExitRecord>>>,
    bus: Bus,
    pub observations: Mutex<Observations>,
    sweeps: Mutex<BTreeMap<&'static str, u32>>,
    stopping: AtomicBool,
    background: Mutex<Vec<JoinHandle<()>>>,
    ops_in_flight: AtomicUsize,
}

impl World {
    /// Starts the API, the player, the bus, the reaper's schedule and the observer.
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
        let endpoint = switchboard_testkit::endpoint();
        let proxy = Proxy::start(endpoint.trim_start_matches("http://")).await;

        let limits = settings.limits;
        let mut vars: HashMap<&str, String> = HashMap::from([
            ("TABLE_NAME", table.clone()),
            ("ECS_CLUSTER", cluster.clone()),
            ("TASK_DEFINITION", definition.clone()),
            ("SUBNETS", switchboard_testkit::subnet()),
            ("SECURITY_GROUPS", "sg-0123456789abcdef0".into()),
        ]);
        vars.extend(limits.supervisor_env());
        use switchboard_core::limits::env;
        if let Some(n) = limits.max_concurrent_sessions() {
            vars.insert(env::MAX_CONCURRENT_SESSIONS, n.to_string());
        }
        if let Some(n) = limits.max_sessions_per_call() {
            vars.insert(env::MAX_SESSIONS_PER_CALL, n.to_string());
        }
        let config = switchboard_functions::ApiConfig::from_lookup(|k| vars.get(k).cloned())
            .expect("the API's configuration");
        let router =
            switchboard_functions::api_router(&config, &switchboard_testkit::sdk_config().await)
                .expect("the router");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let api = listener.local_addr().unwrap().to_string();

        let binary = crate::lambda_watch::agent_binary()
            .canonicalize()
            .expect("the agent binary");
        let logs = std::env::temp_dir().join(format!("switchboard-chaos-{table}"));
        std::fs::create_dir_all(&logs).unwrap();
        let world = Arc::new(World {
            settings,
            table,
            cluster,
            registry,
            ecs,
            definition,
            proxy,
            api,
            binary,
            logs,
            fleet: Mutex::default(),
            exited: Arc::default(),
            bus: Bus {
                pending: Mutex::default(),
                delivered: Mutex::default(),
                rng: Mutex::new(fastrand::Rng::with_seed(settings.seed)),
                held: AtomicBool::new(false),
                outcomes: Mutex::default(),
                ended_by_event: Mutex::default(),
            },
            observations: Mutex::default(),
            sweeps: Mutex::default(),
            stopping: AtomicBool::new(false),
            background: Mutex::default(),
            ops_in_flight: AtomicUsize::new(0),
        });
        let server = tokio::spawn(async move {
            axum::serve(listener, router).await.unwrap();
        });
        let mut jobs = vec![server];
        for job in [Job::Player, Job::Bus, Job::Sweeper, Job::Observer] {
            let w = world.clone();
            jobs.push(tokio::spawn(async move { w.run(job).await }));
        }
        *lock(&world.background) = jobs;
        world
    }

    async fn run(self: Arc<Self>, job: Job) {
        let every = match job {
            Job::Player | Job::Bus => TICK,
            Job::Sweeper => SWEEP_EVERY,
            Job::Observer => SAMPLE_EVERY,
        };
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while !self.stopping.load(Ordering::SeqCst) {
            ticks.tick().await;
            match job {
                Job::Player => self.play().await,
                Job::Bus => {
                    for _ in 0..2 {
                        self.deliver_one().await;
                    }
                }
                Job::Sweeper => self.sweep().await,
                Job::Observer => self.observe().await,
            }
        }
    }

    // ---- the player of Fargate ----

    async fn running_arns(&self) -> Option<HashSet<String>> {
        let mut arns = HashSet::new();
        let mut token = None;
        loop {
            let page = self
                .ecs
                .list_tasks()
                .cluster(&self.cluster)
                .desired_status(aws_sdk_ecs::types::DesiredStatus::Running)
                .set_next_token(token)
                .send()
                .await
                .ok()?;
            arns.extend(page.task_arns().iter().cloned());
            token = page.next_token().map(str::to_owned);
            if token.is_none() {
                return Some(arns);
            }
        }
    }

    /// Starts the agent process for a task; a waiter records its exit the moment it happens
    /// and forwards signals.
    fn spawn_agent(
        &self,
        arn: &str,
        env: &HashMap<String, String>,
    ) -> mpsc::UnboundedSender<Signal> {
        let session = env.get("SESSION_ID").cloned().unwrap_or_default();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.logs.join(format!("{session}.log")))
            .expect("the agent's log file");
        let mut child = Command::new(&self.binary)
            .arg("task")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("AWS_ENDPOINT_URL", &self.proxy.url)
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("SWITCHBOARD_LOG_FORMAT", "json")
            .env("DEMO_PARTICIPANT_SECONDS", "3600")
            .envs(env)
            .envs(switchboard_testkit::recording_env())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("the agent binary");
        let (control, mut signals) = mpsc::unbounded_channel();
        let (arn, exited) = (arn.to_owned(), self.exited.clone());
        tokio::spawn(async move {
            let pid = child.id().map(|p| p.to_string()).unwrap_or_default();
            let status = loop {
                tokio::select! {
                    status = child.wait() => break status,
                    Some(signal) = signals.recv() => match signal {
                        Signal::Term => {
                            let _ = Command::new("kill").args(["-TERM", &pid]).status().await;
                        }
                        Signal::Kill => {
                            let _ = child.start_kill();
                        }
                    },
                }
            };
            let code = status
                .ok()
                .and_then(|s| s.code().or_else(|| s.signal().map(|n| 128 + n)));
            lock(&exited).insert(arn, (code, Timestamp::now_system()));
        });
        control
    }

    async fn play(&self) {
        let Some(running) = self.running_arns().await else {
            return;
        };
        let new: Vec<String> = {
            let fleet = lock(&self.fleet);
            running
                .iter()
                .filter(|a| !fleet.tasks.contains_key(*a) && !fleet.done.contains(*a))
                .cloned()
                .collect()
        };
        for arn in new {
            let env = switchboard_testkit::task_environment(&self.ecs, &self.cluster, &arn).await;
            self.bus
                .publish(task_event(&arn, &env, "PROVISIONING", None, None), 1);
            lock(&self.fleet).tasks.insert(
                arn,
                Task {
                    env,
                    control: None,
                    phase: Phase::Provisioning(Instant::now()),
                    stopped_by_ecs: false,
                },
            );
        }

        let now = Instant::now();
        let mut events = Vec::new();
        let to_stop: Vec<String> = {
            let mut fleet = lock(&self.fleet);
            let mut finished = Vec::new();
            let mut started = 0;
            let exited = lock(&self.exited).clone();
            for (arn, task) in &mut fleet.tasks {
                if let Some((code, at)) = exited.get(arn) {
                    finished.push((arn.clone(), *code, Some(*at)));
                    continue;
                }
                let in_ecs = running.contains(arn);
                task.stopped_by_ecs |= !in_ecs;
                match task.phase {
                    Phase::Provisioning(_) if !in_ecs => finished.push((arn.clone(), None, None)),
                    Phase::Provisioning(since) if now - since >= PROVISIONING => {
                        task.control = Some(self.spawn_agent(arn, &task.env));
                        task.phase = Phase::Running;
                        started += 1;
                        events.push((task_event(arn, &task.env, "RUNNING", None, None), 1));
                    }
                    Phase::Running if !in_ecs => {
                        // ECS stops a task with SIGTERM, then SIGKILL after the stop timeout.
                        if let Some(control) = &task.control {
                            let _ = control.send(Signal::Term);
                        }
                        task.phase = Phase::Stopping(now);
                    }
                    Phase::Stopping(since) if now - since >= STOP_TIMEOUT => {
                        if let Some(control) = &task.control {
                            let _ = control.send(Signal::Kill);
                        }
                    }
                    _ => {}
                }
            }
            fleet.started += started;
            for (arn, code, at) in finished {
                let task = fleet.tasks.remove(&arn).expect("known");
                let stop = if task.stopped_by_ecs {
                    ("UserInitiated", "switchboard reaper stopped the task")
                } else {
                    (
                        "EssentialContainerExited",
                        "Essential container in task exited",
                    )
                };
                let copies = 1 + lock(&self.bus.rng).usize(0..3);
                events.push((
                    task_event(&arn, &task.env, "STOPPED", code, Some(stop)),
                    copies,
                ));
                fleet.exits.push(Exited {
                    session_id: task.env.get("SESSION_ID").cloned().unwrap_or_default(),
                    code,
                    at: at.unwrap_or_else(Timestamp::now_system),
                });
                if !task.stopped_by_ecs {
                    fleet.to_stop.insert(arn.clone());
                }
                fleet.done.insert(arn);
            }
            fleet.to_stop.iter().cloned().collect()
        };
        for (event, copies) in events {
            self.bus.publish(event, copies);
        }
        for arn in to_stop {
            let stopped = self
                .ecs
                .stop_task()
                .cluster(&self.cluster)
                .task(&arn)
                .reason("Essential container in task exited")
                .send()
                .await;
            if stopped.is_ok() {
                lock(&self.fleet).to_stop.remove(&arn);
            }
        }
    }

    /// SIGKILLs a running agent picked by `rng`; returns its session.
    pub fn kill_one(&self, rng: &mut fastrand::Rng) -> Option<String> {
        let mut fleet = lock(&self.fleet);
        let mut running: Vec<&mut Task> = fleet
            .tasks
            .values_mut()
            .filter(|t| matches!(t.phase, Phase::Running))
            .collect();
        running.sort_by(|a, b| a.env.get("SESSION_ID").cmp(&b.env.get("SESSION_ID")));
        if running.is_empty() {
            return None;
        }
        let i = rng.usize(0..running.len());
        let task = &mut running[i];
        task.control.as_ref()?.send(Signal::Kill).ok()?;
        task.env.get("SESSION_ID").cloned()
    }

    /// Where the agents' logs are (one file per session).
    pub fn logs(&self) -> &std::path::Path {
        &self.logs
    }

    /// Deletes the agents' logs (kept when a test fails: its message names the folder).
    pub fn discard_logs(&self) {
        let _ = std::fs::remove_dir_all(&self.logs);
    }

    /// How many agent processes the player started.
    pub fn agents_started(&self) -> usize {
        lock(&self.fleet).started
    }

    /// The exits so far.
    pub fn exits(&self) -> Vec<Exited> {
        lock(&self.fleet).exits.clone()
    }

    /// Whether every task the player knows is settled (none provisioning or stopping, no
    /// exited container whose task is still RUNNING in moto).
    fn fleet_settled(&self) -> bool {
        let fleet = lock(&self.fleet);
        fleet.to_stop.is_empty()
            && fleet
                .tasks
                .values()
                .all(|t| matches!(t.phase, Phase::Running))
    }

    // ---- the event bus and the reaper ----

    /// Holds every event until [`World::release_events`].
    pub fn hold_events(&self) {
        self.bus.held.store(true, Ordering::SeqCst);
    }

    pub fn release_events(&self) {
        self.bus.held.store(false, Ordering::SeqCst);
    }

    pub fn events_pending(&self) -> usize {
        lock(&self.bus.pending).len()
    }

    /// Sends an already delivered event again, late (EventBridge delivers at least once).
    pub fn replay_event(&self, rng: &mut fastrand::Rng) -> bool {
        let old = {
            let delivered = lock(&self.bus.delivered);
            if delivered.is_empty() {
                return false;
            }
            delivered[rng.usize(0..delivered.len())].clone()
        };
        self.bus.publish(old, 1);
        true
    }

    async fn deliver_one(&self) {
        if self.bus.held.load(Ordering::SeqCst) {
            return;
        }
        let event = {
            let mut pending = lock(&self.bus.pending);
            if pending.is_empty() {
                return;
            }
            let i = lock(&self.bus.rng).usize(0..pending.len());
            pending.swap_remove(i)
        };
        let limits = self.settings.limits;
        let outcome = match parse_stopped(&event, "agent") {
            Err(skipped) => format!("skipped ({})", skipped_kind(&skipped)),
            Ok(stopped) => match end_stopped(&*self.registry, &stopped, &limits).await {
                Ok(Outcome::Ended(reason)) => {
                    *lock(&self.bus.ended_by_event)
                        .entry(stopped.session_id.to_string())
                        .or_default() += 1;
                    format!("ended {reason}")
                }
                Ok(Outcome::AlreadyEnded) => "already ended".into(),
                Ok(Outcome::Unknown) => "unknown session".into(),
                Err(_) => {
                    // Lambda failed: EventBridge retries the event.
                    lock(&self.bus.pending).push(event);
                    return;
                }
            },
        };
        *lock(&self.bus.outcomes).entry(outcome).or_default() += 1;
        lock(&self.bus.delivered).push(event);
    }

    pub fn event_outcomes(&self) -> BTreeMap<String, u32> {
        lock(&self.bus.outcomes).clone()
    }

    /// Sessions the event path ended more than once (must be none).
    pub fn ended_twice_by_events(&self) -> Vec<String> {
        lock(&self.bus.ended_by_event)
            .iter()
            .filter(|(_, n)| **n > 1)
            .map(|(s, _)| s.clone())
            .collect()
    }

    async fn sweep(&self) {
        let tasks = EcsTasks::new(self.ecs.clone(), self.cluster.clone());
        let report = Sweeper {
            registry: &*self.registry,
            tasks: &tasks,
            limits: &self.settings.limits,
            start_deadline: Duration::from_secs(60),
            clock: &SystemClock,
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
            }
            Err(_) => *sweeps.entry("runs that failed").or_default() += 1,
        }
    }

    pub fn sweep_totals(&self) -> BTreeMap<&'static str, u32> {
        lock(&self.sweeps).clone()
    }

    // ---- the observer ----

    /// The agent processes of this world that are alive now (not zombies), from /proc.
    pub fn alive_agents(&self) -> Vec<Alive> {
        let mut out = Vec::new();
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return out;
        };
        for entry in dir.flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let base = entry.path();
            if std::fs::read_link(base.join("exe")).ok().as_ref() != Some(&self.binary) {
                continue;
            }
            let Ok(stat) = std::fs::read_to_string(base.join("stat")) else {
                continue;
            };
            let state = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.trim_start().chars().next());
            if matches!(state, Some('Z' | 'X') | None) {
                continue;
            }
            let Ok(environ) = std::fs::read(base.join("environ")) else {
                continue;
            };
            let vars: HashMap<String, String> = environ
                .split(|b| *b == 0)
                .filter_map(|kv| {
                    let kv = String::from_utf8_lossy(kv);
                    kv.split_once('=')
                        .map(|(k, v)| (k.to_owned(), v.to_owned()))
                })
                .collect();
            if vars.get("TABLE_NAME") != Some(&self.table) {
                continue;
            }
            out.push(Alive {
                pid,
                session_id: vars.get("SESSION_ID").cloned().unwrap_or_default(),
                call_id: vars.get("CALL_ID").cloned().unwrap_or_default(),
            });
        }
        out
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
        let alive = self.alive_agents();
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
            switchboard_testkit::ecs_settings(&self.cluster, &self.definition, &self.table, limits),
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

    /// The sessions of moto's RUNNING tasks (from `startedBy`).
    pub async fn running_task_sessions(&self) -> Vec<String> {
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
            out.extend(
                described
                    .tasks()
                    .iter()
                    .map(|t| t.started_by().unwrap_or_default().to_owned()),
            );
        }
        out.sort();
        out
    }

    /// What the state is, with everything that disagrees; `None` when consistent: every
    /// live row is `running` and has exactly one live agent and one RUNNING task, no agent or
    /// task lacks a live row, and every counter equals the live rows counted from the rows.
    pub async fn inconsistencies(&self, calls: &[&str]) -> Option<String> {
        let mut problems = Vec::new();
        if self.ops_in_flight.load(Ordering::SeqCst) > 0 {
            problems.push("operations in flight".to_owned());
        }
        if !self.fleet_settled() {
            problems.push("tasks provisioning or stopping".to_owned());
        }
        if self.events_pending() > 0 && !self.bus.held.load(Ordering::SeqCst) {
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
            .into_iter()
            .map(|a| a.session_id)
            .collect();
        agents.sort();
        if agents != live_ids {
            problems.push(format!("live rows {live_ids:?} but agents {agents:?}"));
        }
        let tasks = self.running_task_sessions().await;
        if tasks != live_ids {
            problems.push(format!(
                "live rows {live_ids:?} but RUNNING tasks {tasks:?}"
            ));
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
                self.logs.display()
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
        let tasks = std::mem::take(&mut lock(&self.fleet).tasks);
        for (_, task) in tasks {
            if let Some(control) = &task.control {
                let _ = control.send(Signal::Kill);
            }
        }
        // The waiters reap them.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.alive_agents().is_empty() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Job {
    Player,
    Bus,
    Sweeper,
    Observer,
}

/// Marks an operation in flight.
#[derive(Debug)]
pub struct OpGuard<'a>(&'a World);

impl Drop for OpGuard<'_> {
    fn drop(&mut self) {
        self.0.ops_in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Bus {
    fn publish(&self, event: Value, copies: usize) {
        let mut pending = lock(&self.pending);
        for _ in 0..copies {
            pending.push(event.clone());
        }
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
