//! The supervisor: one tokio task per session that owns it from admission to its end.
//!
//! It creates and warms up the agent, runs `join_call`, and ends the session exactly once:
//! - at once when a close is requested in-process (`requested`), or at the next heartbeat when
//!   the flag was set elsewhere (within one maintenance interval);
//! - when the agent has been alone for `agent_idle_timeout` (`idle`) or on the call for
//!   `max_session_duration` (`max_duration`), on precise timers rather than a polling tick;
//! - when `join_call` returns (`agent_finished`) or fails or panics (`agent_failed`);
//! - when the launcher stops (`shutdown`).
//!
//! Lease: one heartbeat per interval renews it and returns the close flag, and the metrics are
//! flushed when they changed. While the registry is unreachable the agent keeps running and
//! the heartbeat is retried, but one interval before the lease would expire the agent is
//! stopped, so a sweep that frees the slot after expiry never frees a slot still in use.

use std::sync::Arc;
use std::time::Duration;

use switchboard_core::registry::{EndRequest, SessionRegistry};
use switchboard_core::{
    CallId, Clock, EndReason, Error, Limits, MetricsRecorder, Session, SessionId, Timestamp,
};
use tokio::sync::oneshot;
use tokio::task::{JoinError, JoinHandle};
use tracing::{debug, info, warn};

use crate::agent::{Agent, CreateContext, JoinContext, SessionRef};
use crate::launcher::{SessionEnd, SessionSignals, Shared};

/// Why the supervisor leaves its main loop.
#[derive(Debug)]
enum Exit {
    /// Close for this reason (requested, idle, max duration, shutdown).
    Stop(EndReason),
    /// `join_call` completed.
    Finished(Result<anyhow::Result<()>, JoinError>),
    /// The session already ended elsewhere (a sweep, the reaper, another writer).
    EndedElsewhere,
    /// The lease could not be renewed in time.
    LeaseLost,
}

/// Lease renewal, close-flag polling and metrics flushes, one heartbeat per interval.
struct Maintenance {
    registry: Arc<dyn SessionRegistry>,
    clock: Arc<dyn Clock>,
    limits: Limits,
    call_id: CallId,
    session_id: SessionId,
    lease_expires_at: Timestamp,
    next_heartbeat: Timestamp,
    flushed_version: u64,
}

impl Maintenance {
    /// Stop the agent one interval before the lease would expire (≥ 2 intervals of retries).
    fn lease_deadline(&self) -> Timestamp {
        self.lease_expires_at - self.limits.maintenance_interval()
    }

    fn retry_delay(&self) -> Duration {
        (self.limits.maintenance_interval() / 5).max(Duration::from_millis(50))
    }

    /// Heartbeats when due; flushes metrics after a successful heartbeat.
    async fn tick(&mut self, metrics: Option<&MetricsRecorder>) -> Option<Exit> {
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
                    self.lease_expires_at = hb.lease_expires_at;
                    self.next_heartbeat = now + self.limits.maintenance_interval();
                    if hb.close_requested {
                        return Some(Exit::Stop(EndReason::Requested));
                    }
                    if let Some(metrics) = metrics {
                        self.flush(metrics).await;
                    }
                }
                Err(Error::NotFound | Error::Conflict(_)) => return Some(Exit::EndedElsewhere),
                Err(e) => {
                    warn!(session_id = %self.session_id, error = %e, "heartbeat failed; retrying");
                    self.next_heartbeat = now + self.retry_delay();
                }
            }
        }
        (self.clock.now() >= self.lease_deadline()).then_some(Exit::LeaseLost)
    }

    /// Renews the lease before anything else, for a session hosted long after its admission
    /// (an ECS task: Fargate provisioning can outlast the lease). Retried for up to a lease
    /// less an interval; meanwhile the reaper leaves a `starting` row alone while its task
    /// exists, and a row it ended makes the heartbeat fail (`EndedElsewhere`).
    async fn renew_first(&mut self) -> Result<(), Exit> {
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
                    self.lease_expires_at = hb.lease_expires_at;
                    self.next_heartbeat = now + interval;
                    return Ok(());
                }
                Ok(Err(Error::NotFound | Error::Conflict(_))) => return Err(Exit::EndedElsewhere),
                Ok(Err(e)) if self.clock.now() + backoff < give_up => {
                    warn!(session_id = %self.session_id, error = %e, "could not renew the lease at startup; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(interval);
                }
                _ => return Err(Exit::LeaseLost),
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
struct CallClock {
    joined_at: Option<Timestamp>,
    alone_since: Option<Timestamp>,
}

impl CallClock {
    /// Returns true when the agent has just joined for the first time.
    fn observe(&mut self, state: &crate::PresenceState, now: Timestamp) -> bool {
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

    fn idle_deadline(&self, limits: &Limits) -> Option<Timestamp> {
        Some(self.alone_since? + limits.agent_idle_timeout()?)
    }

    fn duration_deadline(&self, limits: &Limits) -> Option<Timestamp> {
        Some(self.joined_at? + limits.max_session_duration()?)
    }
}

fn sleep_until(clock: &dyn Clock, at: Timestamp) -> tokio::time::Sleep {
    tokio::time::sleep(at.saturating_since(clock.now()))
}

/// What the supervisor keeps of its session's row: only what it uses, since it is carried for
/// the session's whole life (a full [`Session`] is about 300 bytes).
#[derive(Debug)]
pub(crate) struct Hosted {
    pub(crate) id: SessionId,
    pub(crate) call_id: CallId,
    pub(crate) call_type: switchboard_core::CallType,
    pub(crate) created_at: Timestamp,
    pub(crate) lease_expires_at: Timestamp,
}

impl From<&Session> for Hosted {
    fn from(session: &Session) -> Self {
        Self {
            id: session.id,
            call_id: session.call_id.clone(),
            call_type: session.call_type.clone(),
            created_at: session.created_at,
            lease_expires_at: session.lease_expires_at,
        }
    }
}

/// Runs one session. `created` is answered once the agent exists (or definitely cannot).
pub(crate) async fn supervise<A: Agent>(
    shared: Arc<Shared<A>>,
    session: Hosted,
    signals: Arc<SessionSignals<A>>,
    created: oneshot::Sender<anyhow::Result<()>>,
) {
    let limits = shared.limits;
    let mut maintenance = Maintenance {
        registry: shared.registry.clone(),
        clock: shared.clock.clone(),
        limits,
        call_id: session.call_id.clone(),
        session_id: session.id,
        lease_expires_at: session.lease_expires_at,
        next_heartbeat: shared.clock.now() + limits.maintenance_interval(),
        flushed_version: 0,
    };
    let finisher = Finisher {
        shared: shared.clone(),
        session: &session,
        signals: signals.clone(),
    };

    // Hosted after admission (an ECS task coming up): the first heartbeat leaves at least an
    // interval of retries before the lease deadline, and a lease with less than that left is
    // renewed first (or the agent would find it spent and give up at once).
    let interval = limits.maintenance_interval();
    let now = shared.clock.now();
    maintenance.next_heartbeat = maintenance
        .next_heartbeat
        .min(maintenance.lease_deadline() - interval);
    if maintenance.lease_deadline() <= now + interval
        && let Err(exit) = maintenance.renew_first().await
    {
        let (reason, detail, write) = match exit {
            Exit::EndedElsewhere => (EndReason::Requested, None, false),
            _ => (
                EndReason::StartFailed,
                Some("could not renew the session's lease at startup".to_owned()),
                true,
            ),
        };
        let _ = created.send(match &detail {
            None => Ok(()),
            Some(d) => Err(anyhow::anyhow!("{d}")),
        });
        return Box::pin(finisher.finish(None, None, reason, detail, &maintenance, write)).await;
    }

    // Phase 1: create and warm up the agent, renewing the lease meanwhile.
    let metadata = match read_metadata(&shared, &session, maintenance.lease_deadline()).await {
        Ok(m) => m,
        Err(e) => {
            let err = anyhow::Error::new(e).context("could not read the session's metadata");
            let detail = format!("{err:#}");
            let _ = created.send(Err(err));
            return Box::pin(finisher.finish(
                None,
                None,
                EndReason::StartFailed,
                Some(detail),
                &maintenance,
                true,
            ))
            .await;
        }
    };
    let create = {
        let shared = shared.clone();
        let ctx = CreateContext {
            session: Some(SessionRef {
                session_id: session.id,
                call_id: session.call_id.clone(),
                call_type: session.call_type.clone(),
            }),
            metadata: metadata.clone(),
            video_track_override: shared.video_track_override.clone(),
            edge: shared.call_edge(),
        };
        async move {
            let agent = (shared.create_agent)(ctx)
                .await
                .map_err(|e| e.context("create_agent failed"))?;
            if let Err(e) = agent.warmup(&shared.cache).await {
                agent.close().await;
                return Err(e.context("agent warmup failed"));
            }
            Ok::<_, anyhow::Error>(Arc::new(agent))
        }
    };
    // Boxed, and dropped once done: the user's create and warmup futures live only during
    // this phase, so they do not inflate the supervisor's state for the whole session.
    let mut create = Box::pin(create);
    let agent = loop {
        let wake = maintenance.next_heartbeat.min(maintenance.lease_deadline());
        tokio::select! {
            biased;
            reason = signals.stop_requested() => {
                let _ = created.send(Ok(()));
                return Box::pin(finisher.finish(None, None, reason, None, &maintenance, true)).await;
            }
            result = &mut create => match result {
                Ok(agent) => break agent,
                Err(err) => {
                    let detail = format!("{err:#}");
                    warn!(session_id = %session.id, error = %detail, "agent could not be started");
                    let _ = created.send(Err(err));
                    return Box::pin(finisher.finish(None, None, EndReason::StartFailed, Some(detail), &maintenance, true)).await;
                }
            },
            () = sleep_until(&*shared.clock, wake) => {
                if let Some(exit) = Box::pin(maintenance.tick(None)).await {
                    let _ = created.send(Ok(()));
                    let (reason, write) = exit_reason(&exit);
                    return Box::pin(finisher.finish(None, None, reason, None, &maintenance, write)).await;
                }
            }
        }
    };
    drop(create);
    signals.set_agent(agent.clone());
    let _ = created.send(Ok(()));
    info!(session_id = %session.id, call_id = %session.call_id, "agent created; joining the call");

    // Phase 2: join the call and watch it.
    let join_ctx = JoinContext {
        session_id: session.id,
        call_id: session.call_id.clone(),
        call_type: session.call_type.clone(),
        metadata,
    };
    let mut join = tokio::spawn((shared.join_call)(agent.clone(), join_ctx));
    let mut presence_rx = agent.presence().subscribe();
    let mut presence_open = true;
    let mut call_clock = CallClock::default();
    let mut running_marked = false;
    let mut joined = call_clock.observe(&presence_rx.borrow_and_update(), shared.clock.now());

    let exit = loop {
        if joined && !running_marked {
            match shared
                .registry
                .mark_running(&session.call_id, session.id)
                .await
            {
                Ok(running) => {
                    running_marked = true;
                    // From admission (the row's creation) to the agent in the call.
                    let start_to_join_ms = running
                        .running_at
                        .map(|at| (at.unix_micros() - session.created_at.unix_micros()) / 1000);
                    info!(session_id = %session.id, start_to_join_ms, "agent joined the call");
                }
                // Closing or ended: leave rather than run unaccounted.
                Err(Error::Conflict(_) | Error::NotFound) => {
                    break Exit::Stop(EndReason::Requested);
                }
                Err(e) => {
                    warn!(session_id = %session.id, error = %e, "could not mark the session running; retrying at the next heartbeat")
                }
            }
        }
        let deadlines = [
            Some(maintenance.next_heartbeat),
            Some(maintenance.lease_deadline()),
            call_clock.idle_deadline(&limits),
            call_clock.duration_deadline(&limits),
        ];
        let wake = deadlines
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(maintenance.next_heartbeat);
        tokio::select! {
            biased;
            reason = signals.stop_requested() => break Exit::Stop(reason),
            result = &mut join => break Exit::Finished(result),
            changed = presence_rx.changed(), if presence_open => {
                match changed {
                    Ok(()) => {
                        let state = presence_rx.borrow_and_update().clone();
                        joined |= call_clock.observe(&state, shared.clock.now());
                    }
                    Err(_) => presence_open = false,
                }
            }
            () = sleep_until(&*shared.clock, wake) => {
                let now = shared.clock.now();
                if call_clock.idle_deadline(&limits).is_some_and(|d| now >= d) {
                    break Exit::Stop(EndReason::Idle);
                }
                if call_clock.duration_deadline(&limits).is_some_and(|d| now >= d) {
                    break Exit::Stop(EndReason::MaxDuration);
                }
                // Boxed: a heartbeat's futures exist once per interval, not in the
                // supervisor's state for the whole session.
                if let Some(exit) = Box::pin(maintenance.tick(Some(agent.metrics()))).await {
                    break exit;
                }
            }
        }
    };

    let (reason, detail, write) = match &exit {
        Exit::Finished(Ok(Ok(()))) => (EndReason::AgentFinished, None, true),
        Exit::Finished(Ok(Err(e))) => (EndReason::AgentFailed, Some(format!("{e:#}")), true),
        Exit::Finished(Err(e)) if e.is_panic() => (
            EndReason::AgentFailed,
            Some("join_call panicked".to_owned()),
            true,
        ),
        Exit::Finished(Err(_)) => (
            EndReason::AgentFailed,
            Some("join_call was cancelled".to_owned()),
            true,
        ),
        other => {
            let (reason, write) = exit_reason(other);
            (reason, None, write)
        }
    };
    if let Exit::LeaseLost = exit {
        warn!(session_id = %session.id, "lease could not be renewed; stopping the agent before it expires");
    }
    let join = (!matches!(exit, Exit::Finished(_))).then_some(join);
    Box::pin(finisher.finish(Some(agent), join, reason, detail, &maintenance, write)).await;
}

/// The session's metadata, retrying transient store failures until the lease deadline (a
/// slow store must not fail the start).
async fn read_metadata<A: Agent>(
    shared: &Shared<A>,
    session: &Hosted,
    deadline: Timestamp,
) -> switchboard_core::Result<Option<switchboard_core::Metadata>> {
    let mut backoff = Duration::from_millis(50);
    loop {
        match shared
            .registry
            .get_metadata(&session.call_id, session.id)
            .await
        {
            Err(e @ Error::Unavailable { .. }) if shared.clock.now() + backoff < deadline => {
                debug!(session_id = %session.id, error = %e, "metadata read failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
            other => return other,
        }
    }
}

fn exit_reason(exit: &Exit) -> (EndReason, bool) {
    match exit {
        Exit::Stop(reason) => (*reason, true),
        Exit::EndedElsewhere => (EndReason::Requested, false),
        Exit::LeaseLost => (EndReason::LeaseExpired, true),
        Exit::Finished(_) => (EndReason::AgentFinished, true),
    }
}

/// Stops the agent and records the end exactly once.
struct Finisher<'a, A: Agent> {
    shared: Arc<Shared<A>>,
    session: &'a Hosted,
    signals: Arc<SessionSignals<A>>,
}

impl<A: Agent> Finisher<'_, A> {
    async fn finish(
        self,
        agent: Option<Arc<A>>,
        join: Option<JoinHandle<anyhow::Result<()>>>,
        reason: EndReason,
        detail: Option<String>,
        maintenance: &Maintenance,
        write_end: bool,
    ) {
        let session = self.session;
        if let Some(join) = join {
            join.abort();
            let _ = join.await;
        }
        let mut final_metrics = None;
        if let Some(agent) = &agent {
            let timeout = self.shared.agent_close_timeout;
            if tokio::time::timeout(timeout, agent.close()).await.is_err() {
                warn!(session_id = %session.id, ?timeout, "agent.close() timed out");
            }
            final_metrics = Some(agent.metrics().snapshot());
        }
        let recorded = if write_end {
            self.end_with_retry(
                reason,
                detail.clone(),
                final_metrics,
                maintenance.lease_expires_at,
            )
            .await
        } else {
            false
        };
        info!(session_id = %session.id, call_id = %session.call_id, end_reason = %reason, recorded, "session ended");
        self.shared.forget(session.id);
        let end = SessionEnd {
            reason,
            detail,
            at: self.shared.clock.now(),
            recorded,
        };
        self.signals.finish(end);
    }

    /// Ends the session in the registry, retrying transient failures until half an interval
    /// before the lease expires (after which a sweep ends it `lease_expired`).
    async fn end_with_retry(
        &self,
        reason: EndReason,
        detail: Option<String>,
        metrics: Option<switchboard_core::AgentMetrics>,
        lease_expires_at: Timestamp,
    ) -> bool {
        let session = self.session;
        let mut request = EndRequest::new(reason).retention(self.shared.limits.session_retention());
        request.detail = detail;
        request.final_metrics = metrics;
        let give_up_at = lease_expires_at - self.shared.limits.maintenance_interval() / 2;
        let mut backoff = Duration::from_millis(100);
        loop {
            // Every attempt ends half an interval before the lease does: past it, the sweep
            // or the reaper owns the row, and this process must be gone.
            let budget = give_up_at.saturating_since(self.shared.clock.now());
            let attempt = tokio::time::timeout(
                budget,
                self.shared
                    .registry
                    .end(&session.call_id, session.id, request.clone()),
            )
            .await
            .unwrap_or_else(|_| {
                Err(Error::Unavailable {
                    retry_after: Duration::ZERO,
                    source: anyhow::anyhow!("the end was not recorded before the lease expired"),
                })
            });
            match attempt {
                Ok(_) => return true,
                Err(Error::NotFound | Error::Conflict(_)) => return false,
                Err(e) => {
                    let clock = &*self.shared.clock;
                    if clock.now() + backoff >= give_up_at {
                        warn!(session_id = %session.id, error = %e, "could not record the end; a sweep will end it after the lease expires");
                        return false;
                    }
                    warn!(session_id = %session.id, error = %e, "could not record the end; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(self.shared.limits.maintenance_interval());
                }
            }
        }
    }
}
