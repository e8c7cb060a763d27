//! What a supervisor does on its timers: renew the lease (which also returns the close
//! flag), flush the metrics when they changed, and keep the idle and duration clocks. The
//! lease rules themselves are [`switchboard_core::lease`]'s.

use std::sync::Arc;
use std::time::Duration;

use switchboard_core::fleet::FleetObserver;
use switchboard_core::lease::Lease;
use switchboard_core::registry::SessionRegistry;
use switchboard_core::{
    CallId, Clock, EndReason, Error, Limits, MetricsRecorder, SessionId, Timestamp,
};
use tracing::{debug, warn};

use super::Record;
use crate::agent::PresenceState;

/// Why a maintenance step says the session must end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Lapse {
    /// The close flag was set elsewhere (`requested`).
    CloseRequested,
    /// The session already ended elsewhere (a sweep, the reaper, another writer).
    EndedElsewhere,
    /// The lease could not be renewed in time.
    LeaseLost,
}

impl Lapse {
    /// The end this lapse means, and whether this supervisor records it.
    pub(super) fn end(self) -> (EndReason, Record) {
        match self {
            Self::CloseRequested => (EndReason::Requested, Record::Yes),
            Self::EndedElsewhere => (EndReason::Requested, Record::No),
            Self::LeaseLost => (EndReason::LeaseExpired, Record::Yes),
        }
    }
}

/// Lease renewal, close-flag polling and metrics flushes, one heartbeat per interval.
pub(super) struct Maintenance {
    registry: Arc<dyn SessionRegistry>,
    fleet: Arc<dyn FleetObserver>,
    clock: Arc<dyn Clock>,
    limits: Limits,
    call_id: CallId,
    session_id: SessionId,
    pub(super) lease: Lease,
    pub(super) next_heartbeat: Timestamp,
    flushed_version: u64,
}

impl Maintenance {
    /// The maintenance of a session whose lease expires at `lease_expires_at`. Hosted after
    /// admission (an ECS task coming up), the first heartbeat leaves at least an interval of
    /// retries before the stop deadline.
    pub(super) fn new(
        registry: Arc<dyn SessionRegistry>,
        fleet: Arc<dyn FleetObserver>,
        clock: Arc<dyn Clock>,
        limits: Limits,
        call_id: CallId,
        session_id: SessionId,
        lease_expires_at: Timestamp,
    ) -> Self {
        let interval = limits.maintenance_interval();
        let lease = Lease::new(lease_expires_at, interval);
        let next_heartbeat = (clock.now() + interval).min(lease.stop_deadline() - interval);
        Self {
            registry,
            fleet,
            clock,
            limits,
            call_id,
            session_id,
            lease,
            next_heartbeat,
            flushed_version: 0,
        }
    }

    /// When the agent must be stopped unless the lease is renewed first.
    pub(super) fn lease_deadline(&self) -> Timestamp {
        self.lease.stop_deadline()
    }

    /// Whether so little of the lease is left that it must be renewed before anything else
    /// (or the agent would find it spent and give up at once).
    pub(super) fn must_renew_first(&self) -> bool {
        self.lease_deadline() <= self.clock.now() + self.limits.maintenance_interval()
    }

    /// The earliest of the next heartbeat, the lease deadline and the `others` that are set:
    /// when the supervisor must wake next.
    pub(super) fn wake_at<const N: usize>(&self, others: [Option<Timestamp>; N]) -> Timestamp {
        others.into_iter().flatten().fold(
            self.next_heartbeat.min(self.lease_deadline()),
            Timestamp::min,
        )
    }

    fn retry_delay(&self) -> Duration {
        (self.limits.maintenance_interval() / 5).max(Duration::from_millis(50))
    }

    fn renewed(&mut self, lease_expires_at: Timestamp, now: Timestamp) {
        self.lease.expires_at = lease_expires_at;
        self.next_heartbeat = now + self.limits.maintenance_interval();
    }

    /// Heartbeats when due; flushes `metrics` after a successful heartbeat.
    pub(super) async fn tick(&mut self, metrics: Option<&MetricsRecorder>) -> Option<Lapse> {
        let now = self.clock.now();
        if now >= self.next_heartbeat {
            let lease = self.limits.session_lease();
            // Bounded by the lease deadline: a store that hangs (SDK timeouts and retries can
            // add up to seconds) must not keep the agent in the call past it.
            let budget = self.lease_deadline().saturating_since(now);
            let heartbeat = tokio::time::timeout(
                budget,
                self.registry
                    .heartbeat(&self.call_id, self.session_id, lease),
            )
            .await
            .unwrap_or_else(|_| {
                Err(Error::Unavailable {
                    retry_after: Duration::ZERO,
                    source: anyhow::anyhow!(
                        "the heartbeat did not answer before the lease deadline"
                    ),
                })
            });
            match heartbeat {
                Ok(hb) => {
                    self.renewed(hb.lease_expires_at, now);
                    if hb.close_requested {
                        return Some(Lapse::CloseRequested);
                    }
                    if let Some(metrics) = metrics {
                        self.flush(metrics).await;
                    }
                }
                Err(Error::NotFound | Error::Conflict(_)) => return Some(Lapse::EndedElsewhere),
                Err(e) => {
                    self.fleet.heartbeat_failed();
                    warn!(session_id = %self.session_id, error = %e, "heartbeat failed; retrying");
                    self.next_heartbeat = now + self.retry_delay();
                }
            }
        }
        (self.clock.now() >= self.lease_deadline()).then_some(Lapse::LeaseLost)
    }

    /// Renews the lease before anything else, for a session hosted long after its admission
    /// (an ECS task: Fargate provisioning can outlast the lease). Retried for up to a lease
    /// less an interval; meanwhile the reaper leaves a `starting` row alone while its task
    /// exists, and a row it ended makes the heartbeat fail (`EndedElsewhere`).
    pub(super) async fn renew_first(&mut self) -> Result<(), Lapse> {
        let interval = self.limits.maintenance_interval();
        let give_up = self.clock.now() + self.limits.session_lease().saturating_sub(interval);
        let mut backoff = Duration::from_millis(100);
        loop {
            let now = self.clock.now();
            let attempt = tokio::time::timeout(
                give_up.saturating_since(now),
                self.registry.heartbeat(
                    &self.call_id,
                    self.session_id,
                    self.limits.session_lease(),
                ),
            )
            .await;
            match attempt {
                Ok(Ok(hb)) => {
                    self.renewed(hb.lease_expires_at, now);
                    return Ok(());
                }
                Ok(Err(Error::NotFound | Error::Conflict(_))) => {
                    return Err(Lapse::EndedElsewhere);
                }
                Ok(Err(e)) if self.clock.now() + backoff < give_up => {
                    self.fleet.heartbeat_failed();
                    warn!(session_id = %self.session_id, error = %e, "could not renew the lease at startup; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(interval);
                }
                _ => {
                    self.fleet.heartbeat_failed();
                    return Err(Lapse::LeaseLost);
                }
            }
        }
    }

    async fn flush(&mut self, metrics: &MetricsRecorder) {
        let version = metrics.version();
        if version == self.flushed_version {
            return;
        }
        let snapshot = metrics.snapshot();
        // Bounded by the lease deadline like the heartbeat: a store that stops answering
        // right after a heartbeat must not keep the agent in the call past it.
        let budget = self.lease_deadline().saturating_since(self.clock.now());
        let flush = tokio::time::timeout(
            budget,
            self.registry
                .flush_metrics(&self.call_id, self.session_id, &snapshot),
        )
        .await;
        match flush {
            Ok(Ok(())) => self.flushed_version = version,
            Ok(Err(e)) => {
                debug!(session_id = %self.session_id, error = %e, "metrics flush failed; next interval")
            }
            Err(_) => {
                debug!(session_id = %self.session_id, "metrics flush did not answer before the lease deadline")
            }
        }
    }
}

/// The idle and duration clocks, fed by presence changes.
#[derive(Debug, Default)]
pub(super) struct CallClock {
    joined_at: Option<Timestamp>,
    alone_since: Option<Timestamp>,
}

impl CallClock {
    /// Returns true when the agent has just joined for the first time.
    pub(super) fn observe(&mut self, state: &PresenceState, now: Timestamp) -> bool {
        let first_join = state.joined && self.joined_at.is_none();
        if first_join {
            self.joined_at = Some(now);
        }
        if state.is_alone() {
            self.alone_since.get_or_insert(now);
        } else {
            self.alone_since = None;
        }
        first_join
    }

    /// Whether the agent has joined at least once.
    pub(super) fn joined(&self) -> bool {
        self.joined_at.is_some()
    }

    pub(super) fn idle_deadline(&self, limits: &Limits) -> Option<Timestamp> {
        Some(self.alone_since? + limits.agent_idle_timeout()?)
    }

    pub(super) fn duration_deadline(&self, limits: &Limits) -> Option<Timestamp> {
        Some(self.joined_at? + limits.max_session_duration()?)
    }
}
