//! The warm pool: standby agent tasks started ahead of demand, claimed by starts.
//!
//! - [`WarmPool`] keeps `size` idle standbys of the current task definition: it starts them
//!   with `RunTask` (`startedBy` [`STANDBY_STARTED_BY`], `group` switchboard, `STANDBY=1` and
//!   no session ids in the override), records each as `provisioning`, claims an idle one for a
//!   session, and (the reaper's sweep) stops the standbys of other task definitions and those
//!   whose lease lapsed.
//! - [`PooledLauncher`] is the api's `TaskLauncher`: a start claims a standby (warm) or runs
//!   a task for the session exactly as [`EcsLauncher`] does (cold), then tops the pool up.
//!
//! The standby's side (warm-up, registration, lease, wake-up poll) is `<agent> task` with
//! `STANDBY=1`; see `docs/warm-standby.md` for the whole design and its costs.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use switchboard_core::{
    Clock, Error, LaunchError, Launched, PoolStatus, Result, Session, Standby, StandbyState,
    StartType, TaskLauncher,
};
use tracing::{info, warn};

use crate::dynamodb::StandbyRegistry;
use crate::ecs::{EcsLauncher, RunSpec};
use crate::ecs_tasks::EcsTasks;

/// The `startedBy` of every standby task (ECS allows 36 characters).
pub const STANDBY_STARTED_BY: &str = "switchboard-standby";

/// `RunTask` starts at most 10 tasks per call.
const RUN_TASK_MAX_COUNT: u32 = 10;

/// How many idle standbys one start tries before it goes cold (each try is one transaction;
/// a loss means another start took that standby at the same instant).
const CLAIM_TRIES: usize = 3;

/// The most a start spends topping the pool up after its own launch (a `RunTask` and the
/// `provisioning` writes); what is left is the next start's or the sweep's.
const TOP_UP_BUDGET: Duration = Duration::from_secs(2);

/// What a pool keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolSettings {
    /// Idle standbys to keep (`WarmPoolSize`; 0: none, and starts never look for one).
    pub size: u32,
    /// An idle standby's lease: it renews it every maintenance interval; a standby past it is
    /// never claimed and the sweep stops it.
    pub standby_lease: Duration,
    /// How long a started standby may take to register (Fargate's provisioning and the
    /// agent's warm-up) before the sweep stops it.
    pub provisioning_deadline: Duration,
}

/// The task definition ARN of a task, from its ARN and the family and revision its task
/// metadata gives (`arn:aws:ecs:<region>:<account>:task/<cluster>/<id>` →
/// `arn:aws:ecs:<region>:<account>:task-definition/<family>:<revision>`).
pub fn task_definition_arn(task_arn: &str, family: &str, revision: &str) -> Option<String> {
    let (prefix, _) = task_arn.split_once(":task/")?;
    if family.is_empty() || revision.is_empty() {
        return None;
    }
    Some(format!("{prefix}:task-definition/{family}:{revision}"))
}

/// The warm pool of one api (or the reaper): its registrations and how to start standbys.
#[derive(Debug, Clone)]
pub struct WarmPool {
    standbys: StandbyRegistry,
    launcher: EcsLauncher,
    settings: PoolSettings,
    clock: Arc<dyn Clock>,
}

/// What a sweep of the pool did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolSweep {
    /// Standbys started to refill the pool.
    pub started: u32,
    /// Standbys stopped: of another task definition, their lease lapsed, or never registered.
    pub stopped: u32,
    /// Registrations deleted.
    pub deregistered: u32,
    /// Idle standbys of the current definition after the sweep (not counting the started).
    pub idle: u32,
}

impl WarmPool {
    /// A pool that starts standbys like `launcher` starts agents (same task definition,
    /// network and capacity; `launcher`'s task definition must be an ARN: see
    /// [`resolve_task_definition`]).
    pub fn new(
        standbys: StandbyRegistry,
        launcher: EcsLauncher,
        settings: PoolSettings,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            standbys,
            launcher,
            settings,
            clock,
        }
    }

    /// The registrations.
    pub fn standbys(&self) -> &StandbyRegistry {
        &self.standbys
    }

    /// The cold path's launcher.
    pub fn launcher(&self) -> &EcsLauncher {
        &self.launcher
    }

    /// What the pool keeps.
    pub fn settings(&self) -> PoolSettings {
        self.settings
    }

    /// The task definition claims accept.
    pub fn task_definition(&self) -> &str {
        &self.launcher.settings().task_definition
    }

    fn live(&self, standby: &Standby) -> bool {
        standby.lease_expires_at > self.clock.now()
    }

    /// Idle or provisioning standbys of the current definition with a live lease.
    fn supply(&self, listed: &[Standby]) -> u32 {
        listed
            .iter()
            .filter(|s| {
                s.task_definition == self.task_definition()
                    && matches!(s.state, StandbyState::Idle | StandbyState::Provisioning)
                    && self.live(s)
            })
            .count() as u32
    }

    /// Claims an idle standby for `session` (status `starting`): its task ARN, or `None`
    /// when none is claimable. Also returns the pool as listed, for the top-up.
    pub async fn claim(&self, session: &Session) -> Result<(Option<String>, Vec<Standby>)> {
        let mut listed = self.standbys.list().await?;
        let mut candidates: Vec<usize> = listed
            .iter()
            .enumerate()
            .filter(|(_, s)| {
                s.state == StandbyState::Idle
                    && s.task_definition == self.task_definition()
                    && self.live(s)
            })
            .map(|(i, _)| i)
            .collect();
        // Concurrent starts spread over the candidates instead of all racing for the first.
        for i in (1..candidates.len()).rev() {
            candidates.swap(i, rand::random_range(0..=i));
        }
        for index in candidates.into_iter().take(CLAIM_TRIES) {
            let arn = listed[index].task_arn.clone();
            if self
                .standbys
                .claim(&arn, self.task_definition(), session)
                .await?
            {
                listed[index].state = StandbyState::Claimed;
                info!(session_id = %session.id, task_arn = %arn, "claimed a warm standby");
                return Ok((Some(arn), listed));
            }
            // Lost: another start took it (its claimer tops up for it) or its lease lapsed
            // (not supply anyway): left as listed.
        }
        Ok((None, listed))
    }

    /// Starts `count` standbys (at most 10 per `RunTask`) and records them `provisioning`;
    /// their ARNs.
    pub async fn start_standbys(&self, count: u32) -> Result<Vec<String>> {
        let mut started = Vec::new();
        let mut left = count;
        while left > 0 {
            let batch = left.min(RUN_TASK_MAX_COUNT);
            let request = self
                .launcher
                .run_task(RunSpec {
                    environment: self.launcher.standby_environment(),
                    count: batch as i32,
                    // One set of tasks per call: a retry of an ambiguous attempt (the SDK's)
                    // never doubles it.
                    client_token: Some(uuid::Uuid::now_v7().to_string()),
                    started_by: STANDBY_STARTED_BY.to_owned(),
                    tags: vec![("switchboard:standby", "true".to_owned())],
                })
                .map_err(|e| {
                    Error::Unexpected(
                        anyhow::Error::new(e).context("building RunTask for standbys"),
                    )
                })?;
            let output = request.send().await.map_err(|e| Error::Unavailable {
                retry_after: Duration::from_secs(1),
                source: anyhow::Error::new(e).context("RunTask standbys"),
            })?;
            for failure in output.failures() {
                warn!(reason = ?failure.reason(), detail = ?failure.detail(), "RunTask could not start a standby");
            }
            let arns: Vec<String> = output
                .tasks()
                .iter()
                .filter_map(|t| t.task_arn().map(str::to_owned))
                .collect();
            if arns.is_empty() {
                break;
            }
            for arn in &arns {
                self.standbys
                    .provision(
                        arn,
                        self.task_definition(),
                        self.settings.provisioning_deadline,
                    )
                    .await?;
            }
            left -= batch;
            started.extend(arns);
        }
        if !started.is_empty() {
            info!(count = started.len(), "started warm standbys");
        }
        Ok(started)
    }

    /// Refills the pool to `size` idle-or-provisioning standbys of the current definition,
    /// given the pool as `listed`; how many were started.
    pub async fn top_up(&self, listed: &[Standby]) -> Result<u32> {
        let deficit = self.settings.size.saturating_sub(self.supply(listed));
        if deficit == 0 {
            return Ok(0);
        }
        Ok(self.start_standbys(deficit).await?.len() as u32)
    }

    /// Lists the pool and refills it (the api's init).
    pub async fn fill(&self) -> Result<u32> {
        let listed = self.standbys.list().await?;
        self.top_up(&listed).await
    }

    /// The pool for operators.
    pub async fn status(&self) -> Result<PoolStatus> {
        Ok(PoolStatus {
            target_size: self.settings.size,
            task_definition: self.task_definition().to_owned(),
            standbys: self.standbys.list().await?,
            at: self.clock.now(),
        })
    }

    /// The sweep's part: stops and deregisters the standbys that must not be claimed (of
    /// another task definition, lease lapsed, never registered in time), then refills.
    /// Claimed standbys are left to their sessions (the session sweep and the STOPPED events).
    pub async fn sweep(&self, tasks: &EcsTasks) -> Result<PoolSweep> {
        let listed = self.standbys.list().await?;
        let mut report = PoolSweep::default();
        let mut kept = Vec::new();
        for standby in listed {
            if standby.state == StandbyState::Claimed {
                kept.push(standby);
                continue;
            }
            let why = if standby.task_definition != self.task_definition() {
                "switchboard: a standby of another task definition"
            } else if !self.live(&standby) {
                match standby.state {
                    StandbyState::Provisioning => {
                        "switchboard: the standby did not register in time"
                    }
                    _ => "switchboard: the standby's lease lapsed",
                }
            } else {
                kept.push(standby);
                continue;
            };
            // Deregister first: a claim can no longer take it. Claimed meanwhile: keep it.
            if !self
                .standbys
                .delete(
                    &standby.task_arn,
                    Some(&[StandbyState::Idle, StandbyState::Provisioning]),
                )
                .await?
            {
                continue;
            }
            report.deregistered += 1;
            tasks.stop(&standby.task_arn, why).await?;
            report.stopped += 1;
            info!(task_arn = %standby.task_arn, task_definition = %standby.task_definition, reason = why, "stopped a standby");
        }
        // More than the target (concurrent top-ups, a smaller WarmPoolSize, 0 included): the
        // newest idle ones go.
        let mut excess = self.supply(&kept).saturating_sub(self.settings.size);
        let mut idle: Vec<Standby> = kept
            .iter()
            .filter(|s| {
                s.state == StandbyState::Idle && s.task_definition == self.task_definition()
            })
            .cloned()
            .collect();
        idle.sort_by_key(|s| std::cmp::Reverse(s.since));
        let mut trimmed = Vec::new();
        for standby in idle {
            if excess == 0 {
                break;
            }
            if self
                .standbys
                .delete(&standby.task_arn, Some(&[StandbyState::Idle]))
                .await?
            {
                tasks
                    .stop(
                        &standby.task_arn,
                        "switchboard: more standbys than WarmPoolSize",
                    )
                    .await?;
                report.deregistered += 1;
                report.stopped += 1;
                trimmed.push(standby.task_arn);
                excess -= 1;
            }
        }
        kept.retain(|s| !trimmed.contains(&s.task_arn));
        report.idle = kept
            .iter()
            .filter(|s| {
                s.state == StandbyState::Idle && s.task_definition == self.task_definition()
            })
            .count() as u32;
        report.started = self.top_up(&kept).await?;
        Ok(report)
    }
}

/// `TASK_DEFINITION` as an ARN: a family or `family:revision` is resolved once (the latest
/// active revision of a family), so that claims compare like with like and the cold path
/// runs exactly the revision the standbys run.
pub async fn resolve_task_definition(
    client: &aws_sdk_ecs::Client,
    task_definition: &str,
) -> Result<String> {
    if task_definition.starts_with("arn:") {
        return Ok(task_definition.to_owned());
    }
    let out = client
        .describe_task_definition()
        .task_definition(task_definition)
        .send()
        .await
        .map_err(|e| Error::Unavailable {
            retry_after: Duration::from_secs(1),
            source: anyhow::Error::new(e)
                .context(format!("DescribeTaskDefinition {task_definition}")),
        })?;
    out.task_definition()
        .and_then(|d| d.task_definition_arn())
        .map(str::to_owned)
        .ok_or_else(|| {
            Error::Unexpected(anyhow::anyhow!(
                "DescribeTaskDefinition {task_definition} gave no ARN"
            ))
        })
}

/// The api's launcher: warm when a standby can be claimed, cold otherwise; tops the pool up
/// after each start.
#[derive(Debug, Clone)]
pub struct PooledLauncher {
    pool: WarmPool,
}

impl PooledLauncher {
    /// Starts through `pool`.
    pub fn new(pool: WarmPool) -> Self {
        Self { pool }
    }

    /// The pool.
    pub fn warm_pool(&self) -> &WarmPool {
        &self.pool
    }

    /// Tops up when the start's deadline leaves [`TOP_UP_BUDGET`] (never at the cost of the
    /// start it follows). Not cut short once begun: a `RunTask` whose `provisioning` records
    /// were never written would be invisible to the next starts, which would start more.
    async fn top_up_within(&self, listed: &[Standby]) {
        if switchboard_core::deadline::remaining().is_some_and(|left| left < TOP_UP_BUDGET) {
            warn!(
                "too little of the start's deadline is left to top the warm pool up (the next start or sweep will)"
            );
            return;
        }
        if let Err(e) = self.pool.top_up(listed).await {
            warn!(error = %e, "could not top the warm pool up (the next start or sweep will)");
        }
    }
}

#[async_trait]
impl TaskLauncher for PooledLauncher {
    async fn launch(&self, session: &Session) -> std::result::Result<Launched, LaunchError> {
        if self.pool.settings.size == 0 {
            return self.pool.launcher.launch(session).await;
        }
        let listed = match self.pool.claim(session).await {
            Ok((Some(arn), listed)) => {
                self.top_up_within(&listed).await;
                return Ok(Launched {
                    task_arn: Some(arn),
                    start_type: Some(StartType::Warm),
                    recorded: true,
                });
            }
            Ok((None, listed)) => listed,
            // Closed meanwhile: the cold path, whose task then ends it `requested`.
            Err(Error::Conflict(_)) => return self.pool.launcher.launch(session).await,
            Err(e) => {
                // The claim may have committed (a timeout, a 5xx): the row says. Never a cold
                // task beside a claimed standby.
                return match self.pool.standbys.session_task(session).await {
                    Ok(Some(arn)) => Ok(Launched {
                        task_arn: Some(arn),
                        start_type: Some(StartType::Warm),
                        recorded: true,
                    }),
                    Ok(None) => {
                        warn!(session_id = %session.id, error = %e, "could not claim a warm standby; starting cold");
                        self.pool.launcher.launch(session).await
                    }
                    Err(read) => Err(LaunchError::Ambiguous {
                        retry_after: Duration::from_secs(1),
                        source: anyhow::anyhow!(
                            "a claim's outcome is unknown ({e}) and the row could not be read ({read})"
                        ),
                    }),
                };
            }
        };
        let (launched, ()) = tokio::join!(
            self.pool.launcher.launch(session),
            self.top_up_within(&listed)
        );
        launched
    }

    async fn pool(&self) -> Option<Result<PoolStatus>> {
        Some(self.pool.status().await)
    }
}
