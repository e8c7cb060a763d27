//! Fargate on this machine, for an emulator that records ECS tasks but runs none (moto).
//!
//! [`LocalEcs`] watches a cluster's RUNNING tasks in the emulator. For each task `RunTask`
//! created it waits the provisioning time (Fargate's image pull and ENI attach), then starts
//! the agent binary with the task definition's command and exactly its container's
//! environment (the definition's, then the container override's), plus the emulator's
//! endpoint and credentials and an ECS task metadata endpoint v4
//! (`ECS_CONTAINER_METADATA_URI_V4`) that names the task's ARN. `StopTask` sends the process
//! SIGTERM, then SIGKILL after the definition's `stopTimeout`. A process that exits has its
//! task stopped in the emulator (`EssentialContainerExited`). Every state change becomes an
//! ECS Task State Change event in EventBridge's shape, with the exit code and `stopCode`
//! (kept here: moto records only the reason); the events that match the reaper rule's
//! pattern go to the reaper (an [`EventSink`]: the Lambda Invoke API of `cargo lambda watch`),
//! and so does a Scheduled Event every sweep interval.
//!
//! Each task's output goes to its own log file, named by task id; each state change is one
//! line of this process's log. Fault knobs for tests: the bus's [`Faults`], holding and
//! replaying events, killing a task, cutting a task (or all) from the emulator.

pub mod bus;
pub mod event;
pub mod metadata;
pub mod proxy;

use std::collections::{HashMap, HashSet};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use aws_sdk_ecs::Client;
use tokio::process::Command;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use bus::Bus;
pub use bus::{BusStats, EventSink, Faults, InvokeSink, LogSink};
use metadata::MetadataServer;
use proxy::Proxy;

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// ECS's default stop timeout when the task definition gives none (Fargate: 30 s).
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// How a [`LocalEcs`] runs.
#[derive(Debug, Clone)]
pub struct Config {
    /// The cluster (name or ARN) whose tasks it runs.
    pub cluster: String,
    /// The binary every task's container runs (the image's entry point).
    pub agent: PathBuf,
    /// The emulator's endpoint (`AWS_ENDPOINT_URL` for the tasks, through their proxies).
    pub endpoint: String,
    /// The region the tasks are told.
    pub region: String,
    /// From `RunTask` to a started process (Fargate: 30–60 s).
    pub provisioning: Duration,
    /// How often the emulator's tasks are listed.
    pub poll: Duration,
    /// Whether state changes become events for the sink (`LOCAL_ECS_EVENTS`).
    pub events: bool,
    /// The reaper's schedule; `None`: no Scheduled Events.
    pub sweep_every: Option<Duration>,
    /// Where each task's log file goes.
    pub logs: PathBuf,
    /// More environment for every task, under the definition's and the override's.
    pub env: Vec<(String, String)>,
    /// The bus's faults.
    pub faults: Faults,
}

impl Config {
    /// Defaults for a cluster and an agent binary: no provisioning delay, events on, a sweep
    /// every 60 s (the template's `rate(1 minute)`), logs under `target/local-ecs`.
    pub fn new(cluster: &str, agent: &Path, endpoint: &str) -> Self {
        Self {
            cluster: cluster.to_owned(),
            agent: agent.to_owned(),
            endpoint: endpoint.to_owned(),
            region: "us-east-1".to_owned(),
            provisioning: Duration::ZERO,
            poll: Duration::from_millis(100),
            events: true,
            sweep_every: Some(Duration::from_secs(60)),
            logs: PathBuf::from("target/local-ecs"),
            env: Vec::new(),
            faults: Faults::default(),
        }
    }
}

/// What one task is, from the emulator (DescribeTasks and its task definition).
#[derive(Debug, Clone)]
pub struct TaskInfo {
    pub arn: String,
    /// The last part of the ARN.
    pub id: String,
    pub cluster_arn: String,
    pub definition_arn: String,
    pub family: String,
    pub revision: String,
    pub group: String,
    pub started_by: String,
    pub created_at: String,
    pub region: String,
    pub account: String,
    /// The essential container's name.
    pub container: String,
    /// A made-up container id (Docker's, on Fargate).
    pub container_id: String,
    /// The command (the override's, else the definition's).
    pub command: Vec<String>,
    /// The definition's environment for the container.
    pub definition_env: Vec<(String, String)>,
    /// The container override's environment, exactly.
    pub override_env: Vec<(String, String)>,
    pub stop_timeout: Duration,
}

impl TaskInfo {
    /// The override's value of `name`.
    pub fn env(&self, name: &str) -> Option<&str> {
        self.override_env
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A task's process that exited.
#[derive(Debug, Clone)]
pub struct Exit {
    pub task_arn: String,
    pub session_id: Option<String>,
    /// The exit code, 128 + the signal for a signal (as ECS reports it); `None` if the task
    /// stopped before its process started.
    pub code: Option<i32>,
    pub at: SystemTime,
}

/// A task whose process runs.
#[derive(Debug, Clone)]
pub struct Running {
    pub task_arn: String,
    pub session_id: Option<String>,
    pub pid: u32,
}

#[derive(Debug, Clone, Copy)]
enum Phase {
    Provisioning(Instant),
    Running,
    Stopping(Instant),
}

#[derive(Debug, Clone, Copy)]
enum Signal {
    Term,
    Kill,
}

#[derive(Debug)]
struct Task {
    info: Arc<TaskInfo>,
    phase: Phase,
    control: Option<mpsc::UnboundedSender<Signal>>,
    pid: Option<u32>,
    proxy: Option<Proxy>,
    /// Why ECS stopped it (StopTask's reason), if it did before the process exited.
    stopped_by_ecs: Option<String>,
    started_at: Option<String>,
    version: u64,
    /// Why its process could not start (`TaskFailedToStart`).
    failed_to_start: Option<String>,
}

/// A finished task whose STOPPED event waits for its StopTask in the emulator.
#[derive(Debug)]
struct Stopping {
    task: Task,
    code: Option<i32>,
}

#[derive(Debug, Default)]
struct Fleet {
    tasks: HashMap<String, Task>,
    done: HashSet<String>,
    to_stop: HashMap<String, Stopping>,
    exits: Vec<Exit>,
    started: usize,
    definitions: HashMap<String, Definition>,
}

#[derive(Debug, Clone)]
struct Definition {
    family: String,
    revision: String,
    container: String,
    command: Vec<String>,
    env: Vec<(String, String)>,
    stop_timeout: Duration,
}

#[derive(Debug)]
struct Inner {
    config: Config,
    ecs: Client,
    cluster_arn: String,
    pattern: serde_json::Value,
    sink: Arc<dyn EventSink>,
    bus: Bus,
    metadata: MetadataServer,
    fleet: Mutex<Fleet>,
    /// Exits as the waiters saw them, by task ARN, at the instant of the exit.
    exited: Mutex<HashMap<String, (Option<i32>, SystemTime)>>,
    all_cut: AtomicBool,
    stopping: AtomicBool,
}

/// Fargate for one cluster of the emulator; see the crate's documentation.
#[derive(Debug)]
pub struct LocalEcs {
    inner: Arc<Inner>,
    jobs: Mutex<Vec<JoinHandle<()>>>,
}

impl LocalEcs {
    /// Starts watching the cluster; events and sweeps go to `sink`.
    ///
    /// # Errors
    /// When the cluster cannot be described or the metadata endpoint cannot listen.
    pub async fn start(
        config: Config,
        ecs: Client,
        sink: Arc<dyn EventSink>,
    ) -> anyhow::Result<Self> {
        let described = ecs
            .describe_clusters()
            .clusters(&config.cluster)
            .send()
            .await
            .with_context(|| format!("describing the cluster {}", config.cluster))?;
        let cluster_arn = described
            .clusters()
            .iter()
            .find(|c| c.status() == Some("ACTIVE"))
            .and_then(|c| c.cluster_arn())
            .with_context(|| format!("no active cluster {} in the emulator", config.cluster))?
            .to_owned();
        std::fs::create_dir_all(&config.logs)
            .with_context(|| format!("creating {}", config.logs.display()))?;
        let metadata = MetadataServer::start()
            .await
            .context("the task metadata endpoint")?;
        let inner = Arc::new(Inner {
            pattern: event::reaper_pattern(&cluster_arn),
            cluster_arn,
            bus: Bus::new(config.faults),
            config,
            ecs,
            sink,
            metadata,
            fleet: Mutex::default(),
            exited: Mutex::default(),
            all_cut: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
        });
        let mut jobs = Vec::new();
        let watcher = inner.clone();
        jobs.push(tokio::spawn(async move {
            let mut ticks = tokio::time::interval(watcher.config.poll);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while !watcher.stopping.load(Ordering::SeqCst) {
                ticks.tick().await;
                watcher.tick().await;
            }
        }));
        let deliverer = inner.clone();
        jobs.push(tokio::spawn(async move {
            let mut ticks = tokio::time::interval(deliverer.config.poll);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while !deliverer.stopping.load(Ordering::SeqCst) {
                ticks.tick().await;
                deliverer.bus.deliver_due(&*deliverer.sink).await;
            }
        }));
        if let Some(every) = inner.config.sweep_every {
            let sweeper = inner.clone();
            jobs.push(tokio::spawn(async move {
                let rule = format!(
                    "arn:aws:events:{}:123456789012:rule/local-ecs-sweep",
                    sweeper.config.region
                );
                let start = tokio::time::Instant::now() + every;
                let mut ticks = tokio::time::interval_at(start, every);
                ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                while !sweeper.stopping.load(Ordering::SeqCst) {
                    ticks.tick().await;
                    match sweeper.sink.deliver(&event::scheduled(&rule)).await {
                        Ok(()) => info!("sweep delivered"),
                        Err(error) => warn!(%error, "the sweep failed"),
                    }
                }
            }));
        }
        info!(
            cluster = %inner.cluster_arn,
            agent = %inner.config.agent.display(),
            provisioning_s = inner.config.provisioning.as_secs_f64(),
            events = inner.config.events,
            sweep_s = inner.config.sweep_every.map(|d| d.as_secs_f64()),
            logs = %inner.config.logs.display(),
            "local ECS watching"
        );
        Ok(Self {
            inner,
            jobs: Mutex::new(jobs),
        })
    }

    /// Stops watching, then stops every task's process as ECS would (SIGTERM, SIGKILL after
    /// at most `grace`), and waits for them to exit.
    pub async fn shutdown(&self, grace: Duration) {
        self.inner.stopping.store(true, Ordering::SeqCst);
        let jobs = std::mem::take(&mut *lock(&self.jobs));
        for job in jobs {
            job.abort();
            let _ = job.await;
        }
        let controls: Vec<_> = lock(&self.inner.fleet)
            .tasks
            .values()
            .filter_map(|t| t.control.clone())
            .collect();
        for c in &controls {
            let _ = c.send(Signal::Term);
        }
        // As ECS: the exits are handled (their tasks stopped in the emulator, their STOPPED
        // events delivered) while the processes drain; SIGKILL after the grace.
        let kill_at = Instant::now() + grace;
        let give_up = kill_at + Duration::from_secs(5);
        let mut killed = false;
        loop {
            self.inner.advance().await;
            self.inner.bus.deliver_due(&*self.inner.sink).await;
            let done = {
                let fleet = lock(&self.inner.fleet);
                fleet.to_stop.is_empty() && fleet.tasks.values().all(|t| t.control.is_none())
            } && self.inner.bus.pending() == 0;
            let now = Instant::now();
            if done || now >= give_up {
                return;
            }
            if now >= kill_at && !killed {
                killed = true;
                for c in &controls {
                    let _ = c.send(Signal::Kill);
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The cluster's ARN.
    pub fn cluster_arn(&self) -> &str {
        &self.inner.cluster_arn
    }

    /// Where the tasks' log files are.
    pub fn logs(&self) -> &Path {
        &self.inner.config.logs
    }

    /// The log file of a task.
    pub fn log_of(&self, task_arn: &str) -> PathBuf {
        self.inner
            .config
            .logs
            .join(format!("{}.log", task_id(task_arn)))
    }

    /// How many processes it started.
    pub fn started(&self) -> usize {
        lock(&self.inner.fleet).started
    }

    /// The exits so far.
    pub fn exits(&self) -> Vec<Exit> {
        lock(&self.inner.fleet).exits.clone()
    }

    /// The tasks whose process runs now.
    pub fn running(&self) -> Vec<Running> {
        let fleet = lock(&self.inner.fleet);
        let mut out: Vec<Running> = fleet
            .tasks
            .values()
            .filter(|t| matches!(t.phase, Phase::Running))
            .filter_map(|t| {
                Some(Running {
                    task_arn: t.info.arn.clone(),
                    session_id: t.info.env("SESSION_ID").map(str::to_owned),
                    pid: t.pid?,
                })
            })
            .collect();
        out.sort_by(|a, b| a.session_id.cmp(&b.session_id));
        out
    }

    /// Whether every task is settled: none provisioning or stopping, no exited process whose
    /// task is still RUNNING in the emulator.
    pub fn settled(&self) -> bool {
        if !lock(&self.inner.exited).is_empty() {
            return false;
        }
        let fleet = lock(&self.inner.fleet);
        fleet.to_stop.is_empty()
            && fleet
                .tasks
                .values()
                .all(|t| matches!(t.phase, Phase::Running))
    }

    /// SIGKILLs a task's process (the container dies: OOM, a crash); false if none runs.
    pub fn kill(&self, task_arn: &str) -> bool {
        let fleet = lock(&self.inner.fleet);
        fleet
            .tasks
            .get(task_arn)
            .and_then(|t| t.control.as_ref())
            .is_some_and(|c| c.send(Signal::Kill).is_ok())
    }

    /// Cuts one task from the emulator (its connections refused); false if it has no proxy.
    pub fn cut(&self, task_arn: &str) -> bool {
        self.with_proxy(task_arn, Proxy::cut)
    }

    /// Reconnects one task.
    pub fn restore(&self, task_arn: &str) -> bool {
        self.with_proxy(task_arn, Proxy::restore)
    }

    /// Cuts every task from the emulator, and the tasks that start while cut.
    pub fn cut_all(&self) {
        self.set_all_cut(true);
    }

    /// Reconnects every task.
    pub fn restore_all(&self) {
        self.set_all_cut(false);
    }

    fn with_proxy(&self, task_arn: &str, act: fn(&Proxy)) -> bool {
        let fleet = lock(&self.inner.fleet);
        fleet
            .tasks
            .get(task_arn)
            .and_then(|t| t.proxy.as_ref())
            .map(act)
            .is_some()
    }

    fn set_all_cut(&self, cut: bool) {
        self.inner.all_cut.store(cut, Ordering::SeqCst);
        let act = if cut { Proxy::cut } else { Proxy::restore };
        for p in lock(&self.inner.fleet)
            .tasks
            .values()
            .filter_map(|t| t.proxy.as_ref())
        {
            act(p);
        }
    }

    /// Holds every event until [`LocalEcs::release_events`].
    pub fn hold_events(&self) {
        self.inner.bus.hold(true);
    }

    pub fn release_events(&self) {
        self.inner.bus.hold(false);
    }

    /// Whether events are held.
    pub fn events_held(&self) -> bool {
        self.inner.bus.is_held()
    }

    /// Events not yet delivered.
    pub fn events_pending(&self) -> usize {
        self.inner.bus.pending()
    }

    /// Sends an already delivered event again, late (EventBridge delivers at least once).
    pub fn replay_event(&self, rng: &mut fastrand::Rng) -> bool {
        self.inner.bus.replay_random(rng)
    }

    pub fn bus_stats(&self) -> BusStats {
        self.inner.bus.stats()
    }
}

impl Drop for LocalEcs {
    fn drop(&mut self) {
        self.inner.stopping.store(true, Ordering::SeqCst);
        for job in lock(&self.jobs).iter() {
            job.abort();
        }
        // The processes die with their waiters (kill_on_drop) as the runtime drops them;
        // a SIGKILL now makes that certain.
        for t in lock(&self.inner.fleet).tasks.values() {
            if let Some(c) = &t.control {
                let _ = c.send(Signal::Kill);
            }
        }
    }
}

/// The ARNs of a cluster's tasks whose desired status is RUNNING, every page.
///
/// # Errors
/// When a ListTasks call fails.
pub async fn running_task_arns(
    ecs: &Client,
    cluster: &str,
) -> Result<
    HashSet<String>,
    aws_sdk_ecs::error::SdkError<aws_sdk_ecs::operation::list_tasks::ListTasksError>,
> {
    let mut arns = HashSet::new();
    let mut token = None;
    loop {
        let page = ecs
            .list_tasks()
            .cluster(cluster)
            .desired_status(aws_sdk_ecs::types::DesiredStatus::Running)
            .set_next_token(token)
            .send()
            .await?;
        arns.extend(page.task_arns().iter().cloned());
        token = page.next_token().map(str::to_owned);
        if token.is_none() {
            return Ok(arns);
        }
    }
}

fn task_id(arn: &str) -> &str {
    arn.rsplit('/').next().unwrap_or(arn)
}

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

impl Inner {
    async fn running_arns(&self) -> Option<HashSet<String>> {
        running_task_arns(&self.ecs, &self.config.cluster)
            .await
            .inspect_err(
                |e| warn!(error = %aws_sdk_ecs::error::DisplayErrorContext(e), "ListTasks failed"),
            )
            .ok()
    }

    async fn definition(&self, arn: &str) -> Option<Definition> {
        if let Some(d) = lock(&self.fleet).definitions.get(arn) {
            return Some(d.clone());
        }
        let described = self
            .ecs
            .describe_task_definition()
            .task_definition(arn)
            .send()
            .await
            .inspect_err(|e| warn!(error = %aws_sdk_ecs::error::DisplayErrorContext(e), definition = arn, "DescribeTaskDefinition failed"))
            .ok()?;
        let def = described.task_definition()?;
        let containers = def.container_definitions();
        let container = containers
            .iter()
            .find(|c| c.essential() != Some(false))
            .or(containers.first())?;
        let d = Definition {
            family: def.family().unwrap_or_default().to_owned(),
            revision: def.revision().to_string(),
            container: container.name().unwrap_or("agent").to_owned(),
            command: container.command().to_vec(),
            env: container
                .environment()
                .iter()
                .filter_map(|kv| Some((kv.name()?.to_owned(), kv.value()?.to_owned())))
                .collect(),
            stop_timeout: container
                .stop_timeout()
                .and_then(|s| u64::try_from(s).ok())
                .map_or(DEFAULT_STOP_TIMEOUT, Duration::from_secs),
        };
        lock(&self.fleet)
            .definitions
            .insert(arn.to_owned(), d.clone());
        Some(d)
    }

    async fn describe(&self, arns: &[String]) -> Vec<aws_sdk_ecs::types::Task> {
        let mut out = Vec::new();
        for chunk in arns.chunks(100) {
            match self
                .ecs
                .describe_tasks()
                .cluster(&self.config.cluster)
                .set_tasks(Some(chunk.to_vec()))
                .send()
                .await
            {
                Ok(d) => out.extend(d.tasks().iter().cloned()),
                Err(e) => {
                    warn!(error = %aws_sdk_ecs::error::DisplayErrorContext(&e), "DescribeTasks failed")
                }
            }
        }
        out
    }

    async fn task_info(&self, task: &aws_sdk_ecs::types::Task) -> Option<TaskInfo> {
        let arn = task.task_arn()?.to_owned();
        let definition_arn = task.task_definition_arn()?.to_owned();
        let def = self.definition(&definition_arn).await?;
        let overrides = task
            .overrides()
            .map(|o| o.container_overrides())
            .unwrap_or_default();
        let ours = overrides
            .iter()
            .find(|o| o.name() == Some(def.container.as_str()));
        let override_env: Vec<(String, String)> = ours
            .map(|o| {
                o.environment()
                    .iter()
                    .filter_map(|kv| Some((kv.name()?.to_owned(), kv.value()?.to_owned())))
                    .collect()
            })
            .unwrap_or_default();
        let command = ours
            .map(|o| o.command().to_vec())
            .filter(|c| !c.is_empty())
            .unwrap_or_else(|| def.command.clone());
        // arn:aws:ecs:REGION:ACCOUNT:task/CLUSTER/ID
        let mut parts = arn.split(':');
        let region = parts.nth(3).unwrap_or(&self.config.region).to_owned();
        let account = parts.next().unwrap_or("123456789012").to_owned();
        Some(TaskInfo {
            id: task_id(&arn).to_owned(),
            cluster_arn: task.cluster_arn().unwrap_or(&self.cluster_arn).to_owned(),
            definition_arn,
            family: def.family,
            revision: def.revision,
            group: task.group().unwrap_or_default().to_owned(),
            started_by: task.started_by().unwrap_or_default().to_owned(),
            created_at: task
                .created_at()
                .and_then(|t| {
                    t.fmt(aws_sdk_ecs::primitives::DateTimeFormat::DateTime)
                        .ok()
                })
                .unwrap_or_else(now_rfc3339),
            region,
            account,
            container: def.container,
            container_id: uuid::Uuid::now_v7().simple().to_string(),
            command,
            definition_env: def.env,
            override_env,
            stop_timeout: def.stop_timeout,
            arn,
        })
    }

    /// Hands a state change to the bus if it matches the reaper's pattern.
    fn emit(
        &self,
        task: &Task,
        last_status: &'static str,
        code: Option<i32>,
        stop: Option<(&str, &str)>,
    ) {
        let session = task.info.env("SESSION_ID").unwrap_or("");
        info!(
            task = %task.info.id,
            session,
            pid = task.pid,
            status = last_status,
            exit_code = code,
            stop_code = stop.map(|s| s.0),
            "task state"
        );
        if !self.config.events {
            return;
        }
        let event = event::task_state_change(&event::TaskState {
            task: &task.info,
            last_status,
            exit_code: code,
            stop,
            started_at: task.started_at.as_deref(),
            version: task.version,
        });
        if event::matches(&self.pattern, &event) {
            self.bus.publish(event);
        }
    }

    async fn tick(self: &Arc<Self>) {
        // A failed listing (the emulator down or slow) skips only what needs it: exits,
        // timers and StopTask retries go on with what is known.
        if let Some(running) = self.running_arns().await {
            self.adopt_and_notice_stops(&running).await;
        }
        self.advance().await;
    }

    /// New RUNNING tasks start PROVISIONING; known ones no longer RUNNING were stopped by ECS.
    async fn adopt_and_notice_stops(self: &Arc<Self>, running: &HashSet<String>) {
        let new: Vec<String> = {
            let fleet = lock(&self.fleet);
            running
                .iter()
                .filter(|a| {
                    !fleet.tasks.contains_key(*a)
                        && !fleet.done.contains(*a)
                        && !fleet.to_stop.contains_key(*a)
                })
                .cloned()
                .collect()
        };
        for described in self.describe(&new).await {
            let Some(info) = self.task_info(&described).await else {
                continue;
            };
            let task = Task {
                info: Arc::new(info),
                phase: Phase::Provisioning(Instant::now()),
                control: None,
                pid: None,
                proxy: None,
                stopped_by_ecs: None,
                started_at: None,
                version: 1,
                failed_to_start: None,
            };
            self.emit(&task, "PROVISIONING", None, None);
            lock(&self.fleet).tasks.insert(task.info.arn.clone(), task);
        }

        // Tasks ECS stopped: their reason, from the emulator.
        let gone: Vec<String> = {
            let fleet = lock(&self.fleet);
            fleet
                .tasks
                .iter()
                .filter(|(arn, t)| !running.contains(*arn) && t.stopped_by_ecs.is_none())
                .map(|(arn, _)| arn.clone())
                .collect()
        };
        if !gone.is_empty() {
            let reasons: HashMap<String, String> = self
                .describe(&gone)
                .await
                .iter()
                .filter_map(|t| {
                    Some((
                        t.task_arn()?.to_owned(),
                        t.stopped_reason()
                            .unwrap_or("Task stopped by user")
                            .to_owned(),
                    ))
                })
                .collect();
            let mut fleet = lock(&self.fleet);
            for arn in gone {
                if let Some(t) = fleet.tasks.get_mut(&arn) {
                    t.stopped_by_ecs = Some(
                        reasons
                            .get(&arn)
                            .cloned()
                            .unwrap_or_else(|| "Task stopped by user".to_owned()),
                    );
                }
            }
        }
    }

    /// Timers, exits, spawns and the StopTask of exited tasks.
    async fn advance(self: &Arc<Self>) {
        let now = Instant::now();
        let exited = lock(&self.exited).clone();
        let mut to_spawn = Vec::new();
        let mut finished = Vec::new();
        {
            let mut fleet = lock(&self.fleet);
            for (arn, task) in &mut fleet.tasks {
                if let Some((code, _)) = exited.get(arn) {
                    finished.push((arn.clone(), *code));
                    continue;
                }
                let stopped = task.stopped_by_ecs.is_some();
                match task.phase {
                    Phase::Provisioning(_) if stopped => finished.push((arn.clone(), None)),
                    // Nothing new starts once the local ECS is stopping.
                    Phase::Provisioning(since)
                        if now.duration_since(since) >= self.config.provisioning
                            && !self.stopping.load(Ordering::SeqCst) =>
                    {
                        to_spawn.push(arn.clone());
                    }
                    Phase::Running if stopped => {
                        if let Some(c) = &task.control {
                            let _ = c.send(Signal::Term);
                        }
                        task.phase = Phase::Stopping(now);
                    }
                    Phase::Stopping(since)
                        if now.duration_since(since) >= task.info.stop_timeout =>
                    {
                        if let Some(c) = &task.control {
                            let _ = c.send(Signal::Kill);
                        }
                    }
                    _ => {}
                }
            }
        }
        for arn in to_spawn {
            let info = lock(&self.fleet).tasks.get(&arn).map(|t| t.info.clone());
            let Some(info) = info else { continue };
            match self.spawn(&info).await {
                Ok((control, pid, proxy)) => {
                    let mut fleet = lock(&self.fleet);
                    fleet.started += 1;
                    if let Some(task) = fleet.tasks.get_mut(&arn) {
                        task.control = Some(control);
                        task.pid = Some(pid);
                        task.proxy = Some(proxy);
                        task.phase = Phase::Running;
                        task.started_at = Some(now_rfc3339());
                        task.version += 1;
                        self.emit(task, "RUNNING", None, None);
                    }
                }
                Err(error) => {
                    warn!(task = %info.id, error = %format!("{error:#}"), "the task's process did not start");
                    // As ECS stops a task whose container cannot start.
                    if let Some(task) = lock(&self.fleet).tasks.get_mut(&arn) {
                        task.failed_to_start =
                            Some(format!("CannotStartContainerError: {error:#}"));
                    }
                    lock(&self.exited).insert(arn.clone(), (None, SystemTime::now()));
                }
            }
        }
        {
            let mut fleet = lock(&self.fleet);
            for (arn, code) in finished {
                let Some(mut task) = fleet.tasks.remove(&arn) else {
                    continue;
                };
                self.metadata.unregister(&task.info.id);
                lock(&self.exited).remove(&arn);
                task.proxy = None;
                let at = exited.get(&arn).map_or_else(SystemTime::now, |e| e.1);
                fleet.exits.push(Exit {
                    task_arn: arn.clone(),
                    session_id: task.info.env("SESSION_ID").map(str::to_owned),
                    code,
                    at,
                });
                task.version += 1;
                if let Some(reason) = task.stopped_by_ecs.clone() {
                    self.emit(&task, "STOPPED", code, Some(("UserInitiated", &reason)));
                    fleet.done.insert(arn);
                } else {
                    fleet.to_stop.insert(arn, Stopping { task, code });
                }
            }
        }
        // Exited processes: their tasks stopped in the emulator, then the event.
        let to_stop: Vec<(String, Option<String>)> = lock(&self.fleet)
            .to_stop
            .iter()
            .map(|(arn, s)| (arn.clone(), s.task.failed_to_start.clone()))
            .collect();
        for (arn, failed) in to_stop {
            let (code, reason) = match &failed {
                Some(why) => ("TaskFailedToStart", why.as_str()),
                None => (
                    "EssentialContainerExited",
                    "Essential container in task exited",
                ),
            };
            let stopped = self
                .ecs
                .stop_task()
                .cluster(&self.config.cluster)
                .task(&arn)
                .reason(reason)
                .send()
                .await;
            let gone = match &stopped {
                Ok(_) => true,
                // The emulator no longer knows the task (restarted, its cluster deleted):
                // nothing is left to stop.
                Err(e) => e.as_service_error().is_some_and(|e| {
                    e.is_client_exception()
                        || e.is_invalid_parameter_exception()
                        || e.is_cluster_not_found_exception()
                }),
            };
            if let Err(e) = &stopped {
                warn!(task = task_id(&arn), error = %aws_sdk_ecs::error::DisplayErrorContext(e), gone, "StopTask failed");
            }
            if gone {
                let mut fleet = lock(&self.fleet);
                if let Some(s) = fleet.to_stop.remove(&arn) {
                    self.emit(&s.task, "STOPPED", s.code, Some((code, reason)));
                    fleet.done.insert(arn);
                }
            }
        }
    }

    /// Starts a task's process; a waiter records its exit the moment it happens and
    /// forwards signals to its process group.
    async fn spawn(
        self: &Arc<Self>,
        info: &Arc<TaskInfo>,
    ) -> anyhow::Result<(mpsc::UnboundedSender<Signal>, u32, Proxy)> {
        let target = self
            .config
            .endpoint
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned();
        let proxy = Proxy::start(&target).await.context("the task's proxy")?;
        if self.all_cut.load(Ordering::SeqCst) {
            proxy.cut();
        }
        let metadata_uri = self.metadata.register(info);
        let log_path = self.config.logs.join(format!("{}.log", info.id));
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("opening {}", log_path.display()))?;
        {
            use std::io::Write;
            let session = info.env("SESSION_ID").unwrap_or("(none yet)");
            writeln!(
                log,
                "local-ecs: task {} of session {session}, started {}",
                info.arn,
                now_rfc3339()
            )
            .context("writing the task's log")?;
        }
        let stderr = log.try_clone().context("the task's log")?;
        let mut command = Command::new(&self.config.agent);
        command
            .args(&info.command)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(self.config.env.iter().cloned())
            .envs(info.definition_env.iter().cloned())
            .envs(info.override_env.iter().cloned())
            .env("AWS_ENDPOINT_URL", &proxy.url)
            .env("AWS_REGION", &info.region)
            .env("AWS_DEFAULT_REGION", &info.region)
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("ECS_CONTAINER_METADATA_URI_V4", &metadata_uri)
            .env("AWS_EXECUTION_ENV", "AWS_ECS_FARGATE")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(stderr)
            // Its own process group: a Ctrl-C in the terminal reaches the local ECS, which
            // stops the tasks as ECS does, not the tasks directly.
            .process_group(0)
            .kill_on_drop(true);
        let mut child = command
            .spawn()
            .with_context(|| format!("starting {}", self.config.agent.display()))?;
        let pid = child.id().context("the process's id")?;
        let (control, mut signals) = mpsc::unbounded_channel();
        let (arn, inner) = (info.arn.clone(), Arc::downgrade(self));
        tokio::spawn(async move {
            let group = format!("-{pid}");
            let status = loop {
                tokio::select! {
                    status = child.wait() => break status,
                    Some(signal) = signals.recv() => {
                        let name = match signal {
                            Signal::Term => "TERM",
                            Signal::Kill => "KILL",
                        };
                        let sent = Command::new("kill")
                            .args(["-s", name, "--", &group])
                            .stderr(Stdio::null())
                            .status()
                            .await;
                        if let Err(error) = &sent {
                            warn!(%error, "`kill` did not run; SIGKILL to the agent alone");
                        }
                        if sent.is_err() || matches!(signal, Signal::Kill) {
                            let _ = child.start_kill();
                        }
                    }
                }
            };
            let at = SystemTime::now();
            let code = status
                .ok()
                .and_then(|s| s.code().or_else(|| s.signal().map(|n| 128 + n)));
            // Whatever the agent left in its group goes with it, as with its container.
            let _ = Command::new("kill")
                .args(["-s", "KILL", "--", &group])
                .stderr(Stdio::null())
                .status()
                .await;
            if let Some(inner) = inner.upgrade() {
                lock(&inner.exited).insert(arn, (code, at));
            }
            drop(signals);
        });
        Ok((control, pid, proxy))
    }
}
