//! The scheduled sweep: `lease::sweep_expired` with the reaper's resolver (ECS first), then
//! the pool's upkeep.
use super::*;

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
