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
mod fleet;
pub mod metadata;
mod process;
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
use fleet::{Inner, Phase, Signal};
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
