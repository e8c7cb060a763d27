//! The reaper's first trigger: ECS "Task State Change" events with `lastStatus` STOPPED.
//!
//! The row is found from the event's container override (`CALL_ID`, `SESSION_ID`, exactly as
//! `EcsLauncher` set them). A row whose agent never joined (still `starting`, or closed while
//! starting) ends `start_failed`, any other live row `task_stopped`, with the stopped reason,
//! stop code and the agent container's exit code as the detail. Events repeat and arrive out
//! of order: anything but STOPPED is ignored, and an already ended row is left as it is, so a
//! session ends (and its slots are released) once.
//!
//! The second trigger, a schedule, runs [`sweep`]: live rows whose lease expired end
//! `lease_expired` (their agent stopped itself before that, or is gone) and any task still
//! attached is stopped; rows whose agent never joined (`starting`, or closed while starting)
//! past their lease are checked against ECS first (PROVISIONING can last minutes): while a
//! task exists and the start deadline has not passed they are left alone, otherwise their
//! tasks are stopped and they end `start_failed`. Every end is guarded (`LeaseExpired`), so a
//! row renewed meanwhile stays.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use serde_json::Value;
use switchboard_aws::dynamodb::StandbyRegistry;
use switchboard_aws::ecs_tasks::EcsTasks;
use switchboard_aws::pool::{PoolSweep, WarmPool};
use switchboard_core::lease::{self, ExpiredResolver, Resolution};
use switchboard_core::registry::{EndGuard, EndOutcome, EndRequest};
use switchboard_core::{
    CallId, Clock, EndReason, Error, LaunchError, Limits, Session, SessionId, SessionRegistry,
    SessionStatus, StandbyState, StartType, TaskLauncher,
};
use tracing::{info, warn};

/// What a STOPPED event says about a session's task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskStopped {
    /// The task.
    pub task_arn: String,
    /// The session it hosted, from the container override.
    pub call_id: CallId,
    /// The session id.
    pub session_id: SessionId,
    /// ECS's `stoppedReason`, `stopCode` and the agent container's exit code, in words.
    pub detail: String,
}

/// Why an event was not a STOPPED event of one of our sessions.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Skipped {
    /// Not an ECS Task State Change event at all.
    #[error("not an ECS Task State Change event")]
    NotTaskStateChange,
    /// A state change other than STOPPED (events arrive out of order: ignored).
    #[error("lastStatus is {0}, not STOPPED")]
    NotStopped(String),
    /// A task of another group (the rule filters on the group; checked again).
    #[error("group {0:?} is not switchboard's")]
    OtherGroup(Option<String>),
    /// No usable `CALL_ID`/`SESSION_ID` in the override.
    #[error("the task's override names no session: {0}")]
    NoSession(String),
}

fn str_at<'a>(value: &'a Value, key: &str) -> Option<&'a str> {
    value.get(key).and_then(Value::as_str)
}

/// What a STOPPED event says about a standby's task (its override has `STANDBY=1` and no
/// session ids; its registration says whether it was claimed, and for which session).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StandbyStopped {
    /// The task.
    pub task_arn: String,
    /// ECS's `stoppedReason`, `stopCode` and the exit code, in words.
    pub detail: String,
}

/// A STOPPED event of one of our tasks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stopped {
    /// A task started for a session.
    Session(TaskStopped),
    /// A warm standby.
    Standby(StandbyStopped),
}

/// Reads an EventBridge event; `container` is the agent container's name.
pub fn parse_stopped(event: &Value, container: &str) -> Result<TaskStopped, Skipped> {
    match parse_event(event, container)? {
        Stopped::Session(stopped) => Ok(stopped),
        Stopped::Standby(_) => Err(Skipped::NoSession("a standby's task".into())),
    }
}

/// Reads an EventBridge event, a session's task or a standby's.
pub fn parse_event(event: &Value, container: &str) -> Result<Stopped, Skipped> {
    if str_at(event, "source") != Some("aws.ecs")
        || str_at(event, "detail-type") != Some("ECS Task State Change")
    {
        return Err(Skipped::NotTaskStateChange);
    }
    let detail = &event["detail"];
    let status = str_at(detail, "lastStatus").unwrap_or_default();
    if status != "STOPPED" {
        return Err(Skipped::NotStopped(status.to_owned()));
    }
    let group = str_at(detail, "group");
    if group != Some(switchboard_aws::ecs::TASK_GROUP) {
        return Err(Skipped::OtherGroup(group.map(str::to_owned)));
    }
    let overrides = detail["overrides"]["containerOverrides"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let env = overrides
        .iter()
        .find(|o| str_at(o, "name") == Some(container))
        .or_else(|| overrides.first())
        .and_then(|o| o["environment"].as_array().cloned())
        .unwrap_or_default();
    let var = |name: &str| {
        env.iter()
            .find(|kv| str_at(kv, "name") == Some(name))
            .and_then(|kv| str_at(kv, "value"))
    };
    let standby = var(switchboard_aws::ecs::env::STANDBY) == Some("1")
        && var(switchboard_aws::ecs::env::SESSION_ID).is_none();
    let detail_words = |detail: &Value| {
        let exit_code = detail["containers"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| str_at(c, "name") == Some(container)))
            .and_then(|c| c["exitCode"].as_i64());
        let mut words = vec![format!(
            "task stopped: {}",
            str_at(detail, "stoppedReason").unwrap_or("no reason given")
        )];
        if let Some(code) = str_at(detail, "stopCode") {
            words.push(format!("stop code {code}"));
        }
        match exit_code {
            Some(code) => words.push(format!("exit code {code}")),
            None => words.push("no exit code".into()),
        }
        words.join("; ")
    };
    let task_arn = str_at(detail, "taskArn").unwrap_or_default().to_owned();
    if standby {
        return Ok(Stopped::Standby(StandbyStopped {
            task_arn,
            detail: detail_words(detail),
        }));
    }
    let call_id = var(switchboard_aws::ecs::env::CALL_ID)
        .ok_or_else(|| Skipped::NoSession("no CALL_ID".into()))
        .and_then(|c| CallId::parse(c).map_err(|e| Skipped::NoSession(e.to_string())))?;
    let session_id = var(switchboard_aws::ecs::env::SESSION_ID)
        .ok_or_else(|| Skipped::NoSession("no SESSION_ID".into()))
        .and_then(|s| {
            SessionId::parse(s).map_err(|_| Skipped::NoSession(format!("SESSION_ID {s:?}")))
        })?;
    Ok(Stopped::Session(TaskStopped {
        task_arn,
        call_id,
        session_id,
        detail: detail_words(detail),
    }))
}

/// What ending a stopped task's session came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Ended now, with this reason.
    Ended(EndReason),
    /// Already ended (by the agent, a repeated event, a sweep): nothing to do.
    AlreadyEnded,
    /// No such row (past retention, or another table's task).
    Unknown,
    /// Its agent was started again elsewhere (its claimed standby stopped before it joined).
    Redispatched(StartType),
    /// The session is on another task now: the stopped one was not (or no longer) its host.
    OtherTask,
}

/// Ends the session of a stopped task: `start_failed` if it was still `starting`, else
/// `task_stopped`. Idempotent; a row that moves from `starting` to `running` meanwhile is
/// read again.
pub async fn end_stopped(
    registry: &dyn SessionRegistry,
    stopped: &TaskStopped,
    limits: &Limits,
) -> Result<Outcome, Error> {
    for _ in 0..3 {
        let Some(row) = registry.get(&stopped.call_id, stopped.session_id).await? else {
            return Ok(Outcome::Unknown);
        };
        // Another task hosts it now (a re-dispatch, or a claim that committed before a
        // cold fallback): this task's stop says nothing about the session.
        if !row.is_ended()
            && !stopped.task_arn.is_empty()
            && row
                .task_arn
                .as_deref()
                .is_some_and(|arn| arn != stopped.task_arn)
        {
            return Ok(Outcome::OtherTask);
        }
        let (reason, guard) = match row.status {
            SessionStatus::Ended => return Ok(Outcome::AlreadyEnded),
            SessionStatus::Starting => (EndReason::StartFailed, EndGuard::Starting),
            // Closed before its agent joined: it never can now, and its task is gone.
            SessionStatus::Closing if !row.joined() => (EndReason::StartFailed, EndGuard::Always),
            SessionStatus::Running | SessionStatus::Closing => {
                (EndReason::TaskStopped, EndGuard::Always)
            }
        };
        let request = EndRequest::new(reason)
            .detail(stopped.detail.clone())
            .guard(guard)
            .retention(limits.session_retention());
        match registry
            .end(&stopped.call_id, stopped.session_id, request)
            .await
        {
            Ok(EndOutcome::Ended(_)) => return Ok(Outcome::Ended(reason)),
            Ok(EndOutcome::AlreadyEnded(_)) => return Ok(Outcome::AlreadyEnded),
            Err(Error::NotFound) => return Ok(Outcome::Unknown),
            // The row changed under us (marked running, or ended): read it again.
            Err(Error::Conflict(_)) => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(Outcome::AlreadyEnded)
}

/// What a standby's STOPPED event came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StandbyOutcome {
    /// An idle or provisioning standby: its registration is deleted.
    Deregistered,
    /// No registration (deleted already: the standby itself, a repeated event, the sweep).
    Unknown,
    /// A claimed standby whose session had not joined: the session was handed to another
    /// standby (`warm`) or to a task of its own (`cold`).
    Redispatched(StartType),
    /// A claimed standby: its session's end, as for a session's task.
    Session(Outcome),
}

/// Hands a `starting` session whose claimed standby is gone to another standby, or to a task
/// of its own (the cold path), within its start deadline; past it, or when the launch is
/// refused, the session ends `start_failed` (its slots come back).
#[allow(clippy::too_many_arguments)]
pub async fn redispatch(
    pool: &WarmPool,
    tasks: &EcsTasks,
    registry: &dyn SessionRegistry,
    session: &Session,
    detail: &str,
    limits: &Limits,
    start_deadline: Duration,
    clock: &dyn Clock,
) -> Result<Outcome, Error> {
    let age = clock.now().saturating_since(session.created_at);
    let fail = |why: String| {
        EndRequest::new(EndReason::StartFailed)
            .detail(why)
            .guard(EndGuard::Starting)
            .retention(limits.session_retention())
    };
    if age >= start_deadline {
        return end_outcome(
            registry,
            session,
            fail(format!(
                "{detail}; past the start deadline of {start_deadline:?}"
            )),
        )
        .await;
    }
    match pool.claim(session).await {
        Ok((Some(arn), listed)) => {
            info!(session_id = %session.id, task_arn = %arn, "re-dispatched to another standby");
            if let Err(e) = pool.top_up(&listed).await {
                warn!(error = %e, "could not top the warm pool up");
            }
            return Ok(Outcome::Redispatched(StartType::Warm));
        }
        Ok((None, _)) => {}
        Err(Error::Conflict(_)) => return Ok(Outcome::AlreadyEnded),
        Err(e) => {
            warn!(session_id = %session.id, error = %e, "could not claim another standby; starting cold")
        }
    }
    match pool.launcher().launch(session).await {
        Ok(launched) => {
            let Some(arn) = launched.task_arn else {
                return Ok(Outcome::Redispatched(StartType::Cold));
            };
            // Only if nobody moved it meanwhile (the event and the sweep may both try): else
            // this task is one too many, and stops.
            let moved = match &session.task_arn {
                Some(from) => {
                    pool.standbys()
                        .move_session(session, from, &arn, StartType::Cold)
                        .await?
                }
                None => {
                    registry
                        .attach_task(&session.call_id, session.id, &arn, Some(StartType::Cold))
                        .await?;
                    true
                }
            };
            if moved {
                info!(session_id = %session.id, task_arn = %arn, "re-dispatched to a task of its own");
                Ok(Outcome::Redispatched(StartType::Cold))
            } else if registry
                .get(&session.call_id, session.id)
                .await?
                .is_some_and(|row| row.task_arn.as_deref() == Some(arn.as_str()))
            {
                // The other re-dispatcher's RunTask, returned again for the same client token
                // (the session id): it is the session's task now.
                Ok(Outcome::AlreadyEnded)
            } else {
                warn!(session_id = %session.id, task_arn = %arn, "the session was moved meanwhile; stopping the task started for it");
                tasks
                    .stop(
                        &arn,
                        "switchboard reaper: the session was re-dispatched elsewhere",
                    )
                    .await?;
                Ok(Outcome::AlreadyEnded)
            }
        }
        // Unknown whether it started: the sweep finds the task by `startedBy` (the session
        // id) or ends the row.
        Err(LaunchError::Ambiguous { source, .. }) => Err(Error::unavailable(source)),
        Err(e) => {
            end_outcome(
                registry,
                session,
                fail(format!("{detail}; re-dispatch failed: {e:#}")),
            )
            .await
        }
    }
}

async fn end_outcome(
    registry: &dyn SessionRegistry,
    session: &Session,
    request: EndRequest,
) -> Result<Outcome, Error> {
    let reason = request.reason;
    match registry.end(&session.call_id, session.id, request).await {
        Ok(EndOutcome::Ended(_)) => Ok(Outcome::Ended(reason)),
        Ok(EndOutcome::AlreadyEnded(_)) | Err(Error::Conflict(_)) => Ok(Outcome::AlreadyEnded),
        Err(Error::NotFound) => Ok(Outcome::Unknown),
        Err(e) => Err(e),
    }
}

/// Handles a standby's STOPPED event: an idle (or provisioning) standby is deregistered; a
/// claimed one's session is re-dispatched when it had not joined (and `pool` can start
/// agents), or ended as for a session's task (`task_stopped`, or `start_failed` when it never
/// joined). Idempotent: a repeated event finds no registration.
#[allow(clippy::too_many_arguments)]
pub async fn end_standby(
    standbys: &StandbyRegistry,
    registry: &dyn SessionRegistry,
    pool: Option<&WarmPool>,
    tasks: &EcsTasks,
    stopped: &StandbyStopped,
    limits: &Limits,
    start_deadline: Duration,
    clock: &dyn Clock,
) -> Result<StandbyOutcome, Error> {
    for _ in 0..3 {
        let Some(standby) = standbys.get(&stopped.task_arn, true).await? else {
            return Ok(StandbyOutcome::Unknown);
        };
        let Some((call_id, session_id)) = standby.session.clone() else {
            if standbys
                .delete(
                    &stopped.task_arn,
                    Some(&[StandbyState::Idle, StandbyState::Provisioning]),
                )
                .await?
            {
                return Ok(StandbyOutcome::Deregistered);
            }
            // Claimed meanwhile: read it again.
            continue;
        };
        let row = registry.get(&call_id, session_id).await?;
        let outcome = match (&row, pool) {
            // Another task hosts it already (a repeated event after a re-dispatch).
            (Some(row), _) if row.task_arn.as_deref() != Some(stopped.task_arn.as_str()) => {
                StandbyOutcome::Session(Outcome::AlreadyEnded)
            }
            (Some(row), Some(pool)) if row.status == SessionStatus::Starting && !row.joined() => {
                match redispatch(
                    pool,
                    tasks,
                    registry,
                    row,
                    &stopped.detail,
                    limits,
                    start_deadline,
                    clock,
                )
                .await?
                {
                    Outcome::Redispatched(start) => StandbyOutcome::Redispatched(start),
                    other => StandbyOutcome::Session(other),
                }
            }
            _ => StandbyOutcome::Session(
                end_stopped(
                    registry,
                    &TaskStopped {
                        task_arn: stopped.task_arn.clone(),
                        call_id,
                        session_id,
                        detail: stopped.detail.clone(),
                    },
                    limits,
                )
                .await?,
            ),
        };
        standbys.delete(&stopped.task_arn, None).await?;
        return Ok(outcome);
    }
    Ok(StandbyOutcome::Unknown)
}

/// How long a `starting` session may wait for its task before the sweep gives up on it.
pub const DEFAULT_START_DEADLINE: Duration = Duration::from_secs(600);

/// What one sweep did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Ended `lease_expired`.
    pub lease_expired: u32,
    /// Ended `start_failed` (no task, or past the start deadline).
    pub start_failed: u32,
    /// `starting` rows left alone: their task is still coming up.
    pub still_starting: u32,
    /// Tasks stopped.
    pub tasks_stopped: u32,
    /// Sessions that could not be resolved this time (retried by the next run).
    pub failed: u32,
    /// Whether it stopped early (time budget) with work left for the next run.
    pub incomplete: bool,
    /// Sessions whose claimed standby was gone, handed to another agent.
    pub redispatched: u32,
    /// The warm pool's part (standbys stopped, started), when there is a pool.
    pub pool: Option<PoolSweep>,
}

/// The sweep's dependencies.
#[derive(Debug)]
pub struct Sweeper<'a> {
    /// The sessions.
    pub registry: &'a dyn SessionRegistry,
    /// The agents' tasks.
    pub tasks: &'a EcsTasks,
    /// Retention of the ended rows.
    pub limits: &'a Limits,
    /// How long a `starting` row may wait for its task.
    pub start_deadline: Duration,
    /// The time.
    pub clock: &'a dyn Clock,
    /// The warm pool to keep, and to re-dispatch to (`None`: no pool maintenance, and a
    /// warm start whose standby is gone ends `start_failed`).
    pub pool: Option<&'a WarmPool>,
}

impl Sweeper<'_> {
    /// Sweeps in pages of 100 until nothing is left or `budget` is spent (the next scheduled
    /// run resumes: the work is found again from the live index).
    pub async fn sweep(&self, budget: Duration) -> Result<SweepReport, Error> {
        let until = tokio::time::Instant::now() + budget;
        let mut report = self.sweep_sessions(until).await?;
        // The pool after the sessions (a re-dispatch may have claimed a standby), within the
        // budget; its failure is the next run's.
        if let Some(pool) = self.pool {
            let left = until.saturating_duration_since(tokio::time::Instant::now());
            match tokio::time::timeout(left, pool.sweep(self.tasks)).await {
                Ok(Ok(swept)) => report.pool = Some(swept),
                Ok(Err(e)) => {
                    warn!(error = %e, "could not sweep the warm pool; left for the next run");
                    report.failed += 1;
                }
                Err(_) => report.incomplete = true,
            }
        }
        Ok(report)
    }

    async fn sweep_sessions(&self, until: tokio::time::Instant) -> Result<SweepReport, Error> {
        let resolver = Resolver {
            sweeper: self,
            tasks_stopped: AtomicU32::new(0),
            redispatched: AtomicU32::new(0),
            redispatch_ended: AtomicU32::new(0),
        };
        let keep_going = move || tokio::time::Instant::now() < until;
        let totals =
            lease::sweep_expired(self.registry, self.limits, &resolver, &keep_going).await?;
        Ok(SweepReport {
            lease_expired: totals.lease_expired,
            start_failed: totals.start_failed + resolver.redispatch_ended.into_inner(),
            still_starting: totals.left,
            tasks_stopped: resolver.tasks_stopped.into_inner(),
            failed: totals.failed,
            incomplete: totals.incomplete,
            redispatched: resolver.redispatched.into_inner(),
            pool: None,
        })
    }
}

/// The reaper's side of [`lease::sweep_expired`]: an expired row is checked against ECS
/// first (a starting row's task may still be coming up; a gone standby's session is handed
/// on), and its task stopped before the row ends.
struct Resolver<'a> {
    sweeper: &'a Sweeper<'a>,
    tasks_stopped: AtomicU32,
    redispatched: AtomicU32,
    redispatch_ended: AtomicU32,
}

#[async_trait::async_trait]
impl ExpiredResolver for Resolver<'_> {
    async fn resolve(&self, session: &Session) -> Result<Resolution, Error> {
        let sweeper = self.sweeper;
        let id = session.id.to_string();
        let reason = lease::expired_reason(session);
        if reason == EndReason::LeaseExpired {
            if let Some(arn) = &session.task_arn {
                sweeper
                    .tasks
                    .stop(arn, "switchboard reaper: the session's lease expired")
                    .await?;
                self.tasks_stopped.fetch_add(1, Ordering::Relaxed);
            }
            return Ok(Resolution::End {
                reason,
                detail: "the agent stopped renewing its lease".to_owned(),
            });
        }
        // Never joined. A session closed while starting is still waiting for its task (whose
        // agent will see the close and leave): it is resolved like a starting one, against ECS.
        // A warm start's task is its claimed standby (started by the pool, not for the
        // session): found by its ARN.
        let warm = session.start_type == Some(StartType::Warm);
        let tasks = match (&session.task_arn, warm) {
            (Some(arn), true) => sweeper.tasks.live(std::slice::from_ref(arn)).await?,
            _ => sweeper.tasks.live_tasks_started_by(&id).await?,
        };
        let age = sweeper.clock.now().saturating_since(session.created_at);
        if !tasks.is_empty() && age < sweeper.start_deadline {
            return Ok(Resolution::Leave);
        }
        if warm
            && tasks.is_empty()
            && session.status == SessionStatus::Starting
            && let Some(pool) = sweeper.pool
        {
            // Its standby is gone and its STOPPED event was lost (or is late).
            let detail = "the claimed standby's task is gone before the agent joined";
            let outcome = redispatch(
                pool,
                sweeper.tasks,
                sweeper.registry,
                session,
                detail,
                sweeper.limits,
                sweeper.start_deadline,
                sweeper.clock,
            )
            .await?;
            match outcome {
                Outcome::Redispatched(_) => self.redispatched.fetch_add(1, Ordering::Relaxed),
                Outcome::Ended(_) => self.redispatch_ended.fetch_add(1, Ordering::Relaxed),
                _ => 0,
            };
            return Ok(Resolution::Handled);
        }
        for task in &tasks {
            sweeper
                .tasks
                .stop(
                    &task.arn,
                    "switchboard reaper: the agent did not start in time",
                )
                .await?;
            self.tasks_stopped.fetch_add(1, Ordering::Relaxed);
        }
        let detail = if tasks.is_empty() {
            "no agent task is running for this session".to_owned()
        } else {
            format!(
                "the agent task did not start within {:?}",
                sweeper.start_deadline
            )
        };
        Ok(Resolution::End {
            reason: EndReason::StartFailed,
            detail,
        })
    }
}
