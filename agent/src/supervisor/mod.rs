//! The supervisor: one tokio task per session that owns it from admission to its end.
//!
//! Its phases are explicit functions, and every way out of them is one `Ending` value
//! that `finish` carries out:
//! 1. `prepare`: renew a nearly spent lease first (a session hosted long after its
//!    admission), read the session's metadata, then create and warm up the agent;
//! 2. `watch`: run `join_call` and end the session exactly once:
//!    - at once when a close is requested in-process (`requested`), or at the next heartbeat
//!      when the flag was set elsewhere (within one maintenance interval);
//!    - when the agent has been alone for `agent_idle_timeout` (`idle`) or on the call for
//!      `max_session_duration` (`max_duration`), on precise timers rather than a polling tick;
//!    - when the agent has not joined within `agent_join_timeout` of `create_agent`
//!      (`start_failed`);
//!    - when `join_call` returns (`agent_finished`) or fails or panics (`agent_failed`);
//!    - when the launcher stops (`shutdown`);
//! 3. `finish`: stop `join_call`, close the agent (bounded), record the end.
//!
//! Lease: one heartbeat per interval renews it and returns the close flag, and the metrics are
//! flushed when they changed (`maintenance`). While the registry is unreachable the agent
//! keeps running and the heartbeat is retried, but one interval before the lease would expire
//! the agent is stopped ([`switchboard_core::lease`]), so a sweep that frees the slot after
//! expiry never frees a slot still in use.
//!
//! The supervisor sees its launcher only through a `SupervisorContext`: the registry, the
//! clock, the limits, the user's functions and two timeouts.

mod maintenance;

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::future::BoxFuture;
use switchboard_core::registry::{EndRequest, SessionRegistry};
use switchboard_core::{
    AgentMetrics, CallId, CallType, Clock, EndReason, Error, Limits, Metadata, Session, SessionId,
    Timestamp,
};
use tokio::sync::oneshot;
use tokio::task::{JoinError, JoinHandle};
use tracing::{debug, info, warn};

use self::maintenance::{CallClock, Lapse, Maintenance};
use crate::agent::{Agent, CreateContext, JoinContext, SessionRef, WarmupCache};
use crate::edge::Edge;
use crate::launcher::{SessionEnd, SessionSignals};

pub(crate) type CreateFn<A> =
    Arc<dyn Fn(CreateContext) -> BoxFuture<'static, anyhow::Result<A>> + Send + Sync>;
pub(crate) type JoinFn<A> =
    Arc<dyn Fn(Arc<A>, JoinContext) -> BoxFuture<'static, anyhow::Result<()>> + Send + Sync>;

/// The user's side of a session: the two functions, the process's warmup cache, and what
/// every agent of this process is offered.
pub(crate) struct Factory<A> {
    pub(crate) create_agent: CreateFn<A>,
    pub(crate) join_call: JoinFn<A>,
    pub(crate) cache: Arc<WarmupCache>,
    /// A local video file to play instead of incoming video (`run --video-track-override`).
    pub(crate) video_track_override: Option<PathBuf>,
    /// The call transport this process offers its agents, if any.
    pub(crate) call_edge: RwLock<Option<Arc<dyn Edge>>>,
}

impl<A> Factory<A> {
    /// The call transport offered to agents created now.
    pub(crate) fn call_edge(&self) -> Option<Arc<dyn Edge>> {
        self.call_edge
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// What a supervisor needs from its launcher, and nothing else.
pub(crate) struct SupervisorContext<A> {
    pub(crate) registry: Arc<dyn SessionRegistry>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) limits: Limits,
    /// Where heartbeat failures and sweeps are counted.
    pub(crate) fleet: Arc<dyn switchboard_core::fleet::FleetObserver>,
    pub(crate) factory: Factory<A>,
    /// How long `Agent::close` may take before the session is ended anyway.
    pub(crate) agent_close_timeout: Duration,
}

/// What the supervisor keeps of its session's row: only what it uses, since it is carried for
/// the session's whole life (a full [`Session`] is about 300 bytes).
#[derive(Debug)]
pub(crate) struct Hosted {
    pub(crate) id: SessionId,
    pub(crate) call_id: CallId,
    pub(crate) call_type: CallType,
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

/// Whether the supervisor writes the end to the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Record {
    /// Write it (retried until the lease's end give-up).
    Yes,
    /// Do not: the session already ended elsewhere.
    No,
}

/// How a session ends: what there is to stop, why, and whether to record it.
struct Ending<A> {
    agent: Option<Arc<A>>,
    join: Option<JoinHandle<anyhow::Result<()>>>,
    reason: EndReason,
    detail: Option<String>,
    record: Record,
}

impl<A> Ending<A> {
    /// An end before any agent exists.
    fn early(reason: EndReason, detail: Option<String>, record: Record) -> Self {
        Self {
            agent: None,
            join: None,
            reason,
            detail,
            record,
        }
    }

    fn from_lapse(lapse: Lapse) -> Self {
        let (reason, record) = lapse.end();
        Self::early(reason, None, record)
    }
}

/// Why `prepare` gave up: the ending, and what `start_session` hears (`None`: the start
/// itself succeeded, e.g. a close came first).
struct Refused<A> {
    ending: Ending<A>,
    error: Option<anyhow::Error>,
}

/// The join deadline's detail.
fn join_timeout_detail(timeout: Duration) -> String {
    format!(
        "the agent did not join its call within {}s of create_agent (agent_join_timeout)",
        timeout.as_secs_f64()
    )
}

/// Runs one session to its end. `created` is answered once the agent exists (or definitely
/// cannot).
pub(crate) async fn supervise<A: Agent>(
    ctx: Arc<SupervisorContext<A>>,
    session: Hosted,
    signals: Arc<SessionSignals<A>>,
    created: oneshot::Sender<anyhow::Result<()>>,
) -> SessionEnd {
    let mut maintenance = Maintenance::new(
        ctx.registry.clone(),
        ctx.fleet.clone(),
        ctx.clock.clone(),
        ctx.limits,
        session.call_id.clone(),
        session.id,
        session.lease_expires_at,
    );
    let ending = match Box::pin(prepare(&ctx, &session, &signals, &mut maintenance)).await {
        Ok((agent, metadata, join_deadline)) => {
            signals.set_agent(agent.clone());
            let _ = created.send(Ok(()));
            info!(session_id = %session.id, call_id = %session.call_id, "agent created; joining the call");
            Box::pin(watch(
                &ctx,
                &session,
                &signals,
                &mut maintenance,
                agent,
                metadata,
                join_deadline,
            ))
            .await
        }
        Err(refused) => {
            let _ = created.send(refused.error.map_or(Ok(()), Err));
            refused.ending
        }
    };
    Box::pin(finish(&ctx, &session, &signals, &maintenance, ending)).await
}

/// Phase 1: the lease, the metadata, then the agent created and warmed up (renewing the lease
/// meanwhile). Returns the agent, the metadata for `join_call`, and the join deadline.
async fn prepare<A: Agent>(
    ctx: &Arc<SupervisorContext<A>>,
    session: &Hosted,
    signals: &SessionSignals<A>,
    maintenance: &mut Maintenance,
) -> Result<(Arc<A>, Option<Metadata>, Option<Timestamp>), Refused<A>> {
    if maintenance.must_renew_first()
        && let Err(lapse) = maintenance.renew_first().await
    {
        return Err(match lapse {
            Lapse::EndedElsewhere => Refused {
                ending: Ending::from_lapse(lapse),
                error: None,
            },
            _ => {
                let detail = "could not renew the session's lease at startup";
                Refused {
                    ending: Ending::early(
                        EndReason::StartFailed,
                        Some(detail.to_owned()),
                        Record::Yes,
                    ),
                    error: Some(anyhow::anyhow!("{detail}")),
                }
            }
        });
    }
    let metadata = match read_metadata(ctx, session, maintenance.lease_deadline()).await {
        Ok(m) => m,
        Err(e) => {
            let err = anyhow::Error::new(e).context("could not read the session's metadata");
            return Err(Refused {
                ending: Ending::early(
                    EndReason::StartFailed,
                    Some(format!("{err:#}")),
                    Record::Yes,
                ),
                error: Some(err),
            });
        }
    };
    // The join deadline counts from here, in this process: Fargate's provisioning before it
    // is the reaper's start deadline's business.
    let join_deadline = ctx.limits.agent_join_timeout().map(|t| ctx.clock.now() + t);
    let create = {
        let ctx = ctx.clone();
        let create_ctx = CreateContext {
            session: Some(SessionRef {
                session_id: session.id,
                call_id: session.call_id.clone(),
                call_type: session.call_type.clone(),
            }),
            metadata: metadata.clone(),
            video_track_override: ctx.factory.video_track_override.clone(),
            edge: ctx.factory.call_edge(),
            presence: signals.presence.clone(),
            metrics: signals.metrics.clone(),
            cache: ctx.factory.cache.clone(),
        };
        async move {
            let agent = (ctx.factory.create_agent)(create_ctx)
                .await
                .map_err(|e| e.context("create_agent failed"))?;
            if let Err(e) = agent.warmup(&ctx.factory.cache).await {
                agent.close().await;
                return Err(e.context("agent warmup failed"));
            }
            Ok::<_, anyhow::Error>(Arc::new(agent))
        }
    };
    // Boxed, and dropped once done: the user's create and warmup futures live only during
    // this phase, so they do not inflate the supervisor's state for the whole session.
    let mut create = Box::pin(create);
    loop {
        let wake = maintenance.wake_at([join_deadline]);
        tokio::select! {
            biased;
            reason = signals.stop_requested() => {
                return Err(Refused { ending: Ending::early(reason, None, Record::Yes), error: None });
            }
            result = &mut create => return match result {
                Ok(agent) => Ok((agent, metadata, join_deadline)),
                Err(err) => {
                    let detail = format!("{err:#}");
                    warn!(session_id = %session.id, error = %detail, "agent could not be started");
                    Err(Refused { ending: Ending::early(EndReason::StartFailed, Some(detail), Record::Yes), error: Some(err) })
                }
            },
            () = sleep_until(&*ctx.clock, wake) => {
                if let (Some(deadline), Some(timeout)) = (join_deadline, ctx.limits.agent_join_timeout())
                    && ctx.clock.now() >= deadline
                    && !signals.presence.state().joined
                {
                    let detail = join_timeout_detail(timeout);
                    warn!(session_id = %session.id, "{detail}");
                    return Err(Refused {
                        ending: Ending::early(EndReason::StartFailed, Some(detail.clone()), Record::Yes),
                        error: Some(anyhow::anyhow!(detail)),
                    });
                }
                if let Some(lapse) = Box::pin(maintenance.tick(None)).await {
                    return Err(Refused { ending: Ending::from_lapse(lapse), error: None });
                }
            }
        }
    }
}

/// Phase 2: `join_call` runs; the session is watched until something ends it.
async fn watch<A: Agent>(
    ctx: &SupervisorContext<A>,
    session: &Hosted,
    signals: &SessionSignals<A>,
    maintenance: &mut Maintenance,
    agent: Arc<A>,
    metadata: Option<Metadata>,
    join_deadline: Option<Timestamp>,
) -> Ending<A> {
    let limits = ctx.limits;
    let join_ctx = JoinContext {
        session_id: session.id,
        call_id: session.call_id.clone(),
        call_type: session.call_type.clone(),
        metadata,
        presence: signals.presence.clone(),
        metrics: signals.metrics.clone(),
    };
    let mut join = tokio::spawn((ctx.factory.join_call)(agent.clone(), join_ctx));
    let mut presence_rx = signals.presence.subscribe();
    let mut presence_open = true;
    let mut call_clock = CallClock::default();
    let mut running_marked = false;
    let mut joined = call_clock.observe(&presence_rx.borrow_and_update(), ctx.clock.now());

    let (reason, detail, record, finished) = loop {
        if joined && !running_marked {
            match ctx
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
                    break (EndReason::Requested, None, Record::Yes, false);
                }
                Err(e) => {
                    warn!(session_id = %session.id, error = %e, "could not mark the session running; retrying at the next heartbeat")
                }
            }
        }
        let join_by = join_deadline.filter(|_| !call_clock.joined());
        let wake = maintenance.wake_at([
            call_clock.idle_deadline(&limits),
            call_clock.duration_deadline(&limits),
            join_by,
        ]);
        tokio::select! {
            biased;
            reason = signals.stop_requested() => break (reason, None, Record::Yes, false),
            result = &mut join => {
                let (r, d) = finished_reason(result);
                break (r, d, Record::Yes, true);
            }
            changed = presence_rx.changed(), if presence_open => {
                match changed {
                    Ok(()) => {
                        let state = presence_rx.borrow_and_update().clone();
                        joined |= call_clock.observe(&state, ctx.clock.now());
                    }
                    Err(_) => presence_open = false,
                }
            }
            () = sleep_until(&*ctx.clock, wake) => {
                let now = ctx.clock.now();
                if call_clock.idle_deadline(&limits).is_some_and(|d| now >= d) {
                    break (EndReason::Idle, None, Record::Yes, false);
                }
                if call_clock.duration_deadline(&limits).is_some_and(|d| now >= d) {
                    break (EndReason::MaxDuration, None, Record::Yes, false);
                }
                // Presence read again: a join that landed since the wake-up was computed counts.
                if join_by.is_some_and(|d| now >= d)
                    && !signals.presence.state().joined
                    && let Some(timeout) = limits.agent_join_timeout()
                {
                    let detail = join_timeout_detail(timeout);
                    warn!(session_id = %session.id, "{detail}");
                    break (EndReason::StartFailed, Some(detail), Record::Yes, false);
                }
                // Boxed: a heartbeat's futures exist once per interval, not in the
                // supervisor's state for the whole session.
                if let Some(lapse) = Box::pin(maintenance.tick(Some(&signals.metrics))).await {
                    if lapse == Lapse::LeaseLost {
                        warn!(session_id = %session.id, "lease could not be renewed; stopping the agent before it expires");
                    }
                    let (reason, record) = lapse.end();
                    break (reason, None, record, false);
                }
            }
        }
    };
    Ending {
        agent: Some(agent),
        join: (!finished).then_some(join),
        reason,
        detail,
        record,
    }
}

/// How a finished `join_call` ends the session.
fn finished_reason(result: Result<anyhow::Result<()>, JoinError>) -> (EndReason, Option<String>) {
    match result {
        Ok(Ok(())) => (EndReason::AgentFinished, None),
        Ok(Err(e)) => (EndReason::AgentFailed, Some(format!("{e:#}"))),
        Err(e) if e.is_panic() => (
            EndReason::AgentFailed,
            Some("join_call panicked".to_owned()),
        ),
        Err(_) => (
            EndReason::AgentFailed,
            Some("join_call was cancelled".to_owned()),
        ),
    }
}

/// Phase 3: stops `join_call`, closes the agent (bounded by the close timeout), and records
/// the end exactly once.
async fn finish<A: Agent>(
    ctx: &SupervisorContext<A>,
    session: &Hosted,
    signals: &SessionSignals<A>,
    maintenance: &Maintenance,
    ending: Ending<A>,
) -> SessionEnd {
    let Ending {
        agent,
        join,
        reason,
        detail,
        record,
    } = ending;
    if let Some(join) = join {
        join.abort();
        let _ = join.await;
    }
    let mut final_metrics = None;
    if let Some(agent) = &agent {
        let timeout = ctx.agent_close_timeout;
        if tokio::time::timeout(timeout, agent.close_for(reason))
            .await
            .is_err()
        {
            warn!(session_id = %session.id, ?timeout, "agent.close_for() timed out");
        }
        final_metrics = Some(signals.metrics.snapshot());
    }
    let recorded = match record {
        Record::Yes => {
            end_with_retry(
                ctx,
                session,
                reason,
                detail.clone(),
                final_metrics,
                maintenance,
            )
            .await
        }
        Record::No => false,
    };
    info!(session_id = %session.id, call_id = %session.call_id, end_reason = %reason, detail = detail.as_deref(), recorded, "session ended");
    SessionEnd {
        reason,
        detail,
        at: ctx.clock.now(),
        recorded,
    }
}

/// Ends the session in the registry, retrying transient failures until the lease's end
/// give-up (after which a sweep ends it `lease_expired`).
async fn end_with_retry<A>(
    ctx: &SupervisorContext<A>,
    session: &Hosted,
    reason: EndReason,
    detail: Option<String>,
    metrics: Option<AgentMetrics>,
    maintenance: &Maintenance,
) -> bool {
    let mut request = EndRequest::new(reason).retention(ctx.limits.session_retention());
    request.detail = detail;
    request.final_metrics = metrics;
    let give_up_at = maintenance.lease.end_give_up();
    let mut backoff = Duration::from_millis(100);
    loop {
        // Every attempt ends by the give-up: past it, the sweep or the reaper owns the row,
        // and this process must be gone.
        let budget = give_up_at.saturating_since(ctx.clock.now());
        let attempt = tokio::time::timeout(
            budget,
            ctx.registry
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
                if ctx.clock.now() + backoff >= give_up_at {
                    warn!(session_id = %session.id, error = %e, "could not record the end; a sweep will end it after the lease expires");
                    return false;
                }
                warn!(session_id = %session.id, error = %e, "could not record the end; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(ctx.limits.maintenance_interval());
            }
        }
    }
}

/// The session's metadata, retrying transient store failures until the lease deadline (a
/// slow store must not fail the start).
async fn read_metadata<A>(
    ctx: &SupervisorContext<A>,
    session: &Hosted,
    deadline: Timestamp,
) -> switchboard_core::Result<Option<Metadata>> {
    let mut backoff = Duration::from_millis(50);
    loop {
        match ctx
            .registry
            .get_metadata(&session.call_id, session.id)
            .await
        {
            Err(e @ Error::Unavailable { .. }) if ctx.clock.now() + backoff < deadline => {
                debug!(session_id = %session.id, error = %e, "metadata read failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
            other => return other,
        }
    }
}

fn sleep_until(clock: &dyn Clock, at: Timestamp) -> tokio::time::Sleep {
    tokio::time::sleep(at.saturating_since(clock.now()))
}
