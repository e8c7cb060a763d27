//! The reaper function's dispatch: a scheduled event sweeps within the invocation's budget;
//! a STOPPED event ends its session (or deregisters, or re-dispatches, a standby's); anything
//! else is ignored. The binary (`bin/reaper.rs`) only builds a [`Reaper`] and hands it each
//! event, so this is what its tests drive.

use std::time::SystemTime;

use serde_json::json;
use switchboard_aws::DynamoRegistry;
use switchboard_aws::emf::{EmfFleet, Metric, Unit};
use switchboard_core::fleet::FleetObserver;
use switchboard_core::lease::SweepTotals;
use switchboard_core::{CallId, SessionRegistry, SystemClock};

use super::*;
use crate::ReaperConfig;

/// The reaper's configuration and clients, built once per Lambda environment.
#[derive(Debug)]
pub struct Reaper {
    /// Its configuration.
    pub config: ReaperConfig,
    /// The sessions.
    pub registry: DynamoRegistry,
    /// The warm pool's registrations.
    pub standbys: StandbyRegistry,
    /// The agents' tasks.
    pub tasks: EcsTasks,
    /// The warm pool, when there is one.
    pub pool: Option<WarmPool>,
    /// The fleet metrics (EMF on stdout).
    pub fleet: EmfFleet,
}

/// How long a sweep may take: what is left until the invocation's `deadline` less a 5 s
/// margin. A deadline already past is no real one (`cargo lambda watch` sends a constant
/// 600000, i.e. 1970, and Lambda would have stopped the invocation): then the template's
/// 60 s timeout less the margin applies.
pub fn sweep_budget(deadline: SystemTime, now: SystemTime) -> Duration {
    match deadline.duration_since(now) {
        Ok(left) => left.saturating_sub(Duration::from_secs(5)),
        Err(_) => {
            tracing::warn!("the invocation's deadline is past; sweeping for 55 s at most");
            Duration::from_secs(55)
        }
    }
}

impl Reaper {
    /// The sweep's figures as EMF: reclaims, failures, and (once a minute, with the schedule)
    /// the live sessions from the table's counters, the share of the concurrency limit they
    /// take, and the pool's idle standbys.
    async fn fleet_figures(&self, report: &SweepReport) {
        self.fleet.swept(&SweepTotals {
            lease_expired: report.lease_expired,
            start_failed: report.start_failed,
            failed: report.failed,
            ..SweepTotals::default()
        });
        let mut metrics = vec![Metric::one(
            "SweepFailures",
            Unit::Count,
            f64::from(report.failed),
        )];
        // Any call: the global count is what is read.
        let call = CallId::parse("fleet").expect("a valid call id");
        match self.registry.counts(&call).await {
            Ok(counts) => {
                let live = counts.global as f64;
                metrics.push(Metric::one("LiveSessions", Unit::Count, live));
                if let Some(max) = self.config.limits.max_concurrent_sessions() {
                    let used = 100.0 * live / f64::from(max.max(1));
                    metrics.push(Metric::one("ConcurrencyUsed", Unit::Percent, used));
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not read the live count for the fleet metrics");
            }
        }
        // Only with a pool to keep (its alarm exists only then).
        let keeps_pool = self.pool.as_ref().is_some_and(|p| p.settings().size > 0);
        if let Some(pool) = report.pool.filter(|_| keeps_pool) {
            metrics.push(Metric::one("PoolIdle", Unit::Count, f64::from(pool.idle)));
        }
        self.fleet.0.emit(None, &metrics);
    }

    /// Handles one event; `deadline` is the invocation's. The reply says what was done.
    pub async fn handle(&self, payload: Value, deadline: SystemTime) -> Result<Value, Error> {
        if payload.get("detail-type").and_then(Value::as_str) == Some("Scheduled Event") {
            let sweeper = Sweeper {
                registry: &self.registry,
                tasks: &self.tasks,
                limits: &self.config.limits,
                start_deadline: self.config.start_deadline,
                clock: &SystemClock,
                pool: self.pool.as_ref(),
            };
            let report = sweeper
                .sweep(sweep_budget(deadline, SystemTime::now()))
                .await?;
            let pool = report.pool.unwrap_or_default();
            // Fields, not a debug string: the template's metric filter counts `failed`.
            tracing::info!(
                lease_expired = report.lease_expired,
                start_failed = report.start_failed,
                still_starting = report.still_starting,
                tasks_stopped = report.tasks_stopped,
                failed = report.failed,
                incomplete = report.incomplete,
                redispatched = report.redispatched,
                standbys_started = pool.started,
                standbys_stopped = pool.stopped,
                standbys_idle = pool.idle,
                "sweep done"
            );
            self.fleet_figures(&report).await;
            return Ok(json!({ "sweep": format!("{report:?}") }));
        }
        match parse_event(&payload, &self.config.container) {
            Ok(Stopped::Session(stopped)) => {
                let outcome = end_stopped(&self.registry, &stopped, &self.config.limits).await?;
                tracing::info!(session_id = %stopped.session_id, task_arn = %stopped.task_arn, ?outcome, "task stopped");
                Ok(json!({ "outcome": format!("{outcome:?}") }))
            }
            Ok(Stopped::Standby(stopped)) => {
                let outcome = end_standby(
                    &self.standbys,
                    &self.registry,
                    self.pool.as_ref(),
                    &self.tasks,
                    &stopped,
                    &self.config.limits,
                    self.config.start_deadline,
                    &SystemClock,
                )
                .await?;
                tracing::info!(task_arn = %stopped.task_arn, ?outcome, "standby task stopped");
                Ok(json!({ "outcome": format!("{outcome:?}") }))
            }
            Err(skipped @ (Skipped::NotStopped(_) | Skipped::OtherGroup(_))) => {
                tracing::debug!(%skipped, "ignored");
                Ok(json!({ "ignored": skipped.to_string() }))
            }
            Err(skipped) => {
                tracing::warn!(%skipped, "an event the reaper cannot use");
                Ok(json!({ "ignored": skipped.to_string() }))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sweep_keeps_a_5_s_margin_and_treats_a_past_deadline_as_none() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(
            sweep_budget(now + Duration::from_secs(60), now),
            Duration::from_secs(55)
        );
        assert_eq!(
            sweep_budget(now + Duration::from_secs(3), now),
            Duration::ZERO,
            "less than the margin left: no sweep work"
        );
        assert_eq!(
            sweep_budget(SystemTime::UNIX_EPOCH + Duration::from_secs(600), now),
            Duration::from_secs(55),
            "cargo lambda watch's constant deadline"
        );
    }
}
