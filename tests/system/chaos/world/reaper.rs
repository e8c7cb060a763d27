//! The reaper, in-process: the local ECS's event sink (the STOPPED-event path) and the
//! schedule's sweep, with what each did.

use super::*;

/// The reaper, in-process, as the local ECS's event sink: ECS's STOPPED events end their
/// session (an error leaves the event pending: EventBridge retries), and each Scheduled
/// Event runs one sweep. It counts what each did.
#[derive(Debug)]
pub(super) struct Reaper {
    pub(super) registry: Arc<DynamoRegistry>,
    pub(super) standbys: StandbyRegistry,
    /// The pool the sweep keeps and re-dispatches to (swapped by a deploy).
    pub(super) pool: Mutex<WarmPool>,
    pub(super) tasks: EcsTasks,
    pub(super) limits: Limits,
    pub(super) outcomes: Mutex<BTreeMap<String, u32>>,
    pub(super) ended_by_event: Mutex<HashMap<String, u32>>,
    pub(super) sweeps: Mutex<BTreeMap<&'static str, u32>>,
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
    pub(super) async fn sweep(&self) {
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

pub(super) fn skipped_kind(s: &switchboard_functions::reaper::Skipped) -> &'static str {
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
pub(super) fn ended_by_reaper(row: &Session) -> bool {
    match row.end_reason {
        Some(EndReason::TaskStopped | EndReason::StartFailed) => true,
        Some(EndReason::LeaseExpired) => row.end_detail.is_some(),
        _ => false,
    }
}

impl World {
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
}
