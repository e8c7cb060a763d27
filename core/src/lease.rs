//! The lease rules behind "never K+1": one file for what an agent's supervisor and every sweep
//! must agree on, so that a slot is freed only once nothing can still be using it.
//!
//! A session's row carries a lease (`lease_expires_at`) that its supervisor renews once per
//! maintenance interval. The rules:
//! - **stop deadline**: a supervisor that cannot renew stops its agent one interval before
//!   the lease would expire ([`Lease::stop_deadline`]), leaving at least two intervals of
//!   retries (the lease is at least three intervals);
//! - **end give-up**: a supervisor stops trying to record its end half an interval before
//!   the lease expires ([`Lease::end_give_up`]): past it, the row belongs to the sweeps;
//! - **expiry**: a sweep (`serve`'s maintenance loop, the reaper) ends only a row whose lease
//!   has expired, with a guarded write ([`expired_end`]: the lease must still be expired when
//!   the write lands), as `lease_expired` when the agent had joined and `start_failed` when it
//!   never did ([`expired_reason`]).
//!
//! [`sweep_expired`] is the sweep both callers run; what each does with a row before ending it
//! (the reaper asks ECS first) is its [`ExpiredResolver`].

use std::time::Duration;

use async_trait::async_trait;
use tracing::{info, warn};

use crate::registry::{EndGuard, EndOutcome, EndRequest};
use crate::{EndReason, Error, Limits, Result, Session, SessionRegistry, Timestamp};

/// How many expired rows one page of a sweep reads.
pub const SWEEP_PAGE: usize = 100;

/// A supervisor's view of its session's lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// When the lease expires unless renewed.
    pub expires_at: Timestamp,
    /// The maintenance interval (one heartbeat per interval).
    pub interval: Duration,
}

impl Lease {
    /// A lease expiring at `expires_at`, renewed every `interval`.
    pub fn new(expires_at: Timestamp, interval: Duration) -> Self {
        Self {
            expires_at,
            interval,
        }
    }

    /// When a supervisor that could not renew stops its agent: one interval before expiry.
    pub fn stop_deadline(&self) -> Timestamp {
        self.expires_at - self.interval
    }

    /// When a supervisor stops trying to record its end: half an interval before expiry.
    pub fn end_give_up(&self) -> Timestamp {
        self.expires_at - self.interval / 2
    }
}

/// Why a session whose lease expired ends: `lease_expired` once its agent had joined,
/// `start_failed` when it never did.
pub fn expired_reason(session: &Session) -> EndReason {
    if session.joined() {
        EndReason::LeaseExpired
    } else {
        EndReason::StartFailed
    }
}

/// The end of a session whose lease expired: guarded ([`EndGuard::LeaseExpired`]: a row
/// renewed meanwhile is left alone), with the ended rows' retention.
pub fn expired_end(reason: EndReason, detail: impl Into<String>, limits: &Limits) -> EndRequest {
    EndRequest::new(reason)
        .detail(detail)
        .guard(EndGuard::LeaseExpired)
        .retention(limits.session_retention())
}

/// What a sweep does with one expired row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    /// Leave it for a later sweep (its agent is still coming up).
    Leave,
    /// The resolver took care of it (e.g. handed the session to another agent).
    Handled,
    /// End it for `reason`, with `detail` for the operator.
    End {
        /// Why.
        reason: EndReason,
        /// What the operator reads.
        detail: String,
    },
}

/// Decides what a sweep does with an expired row, before the sweep's guarded end.
#[async_trait]
pub trait ExpiredResolver: Send + Sync {
    /// The resolution for `session`, whose lease has expired. An error leaves the row for
    /// the next sweep and is counted in [`SweepTotals::failed`].
    async fn resolve(&self, session: &Session) -> Result<Resolution>;
}

/// The resolver of a sweep with nothing to ask first (`serve`): the node that hosted the
/// session stopped renewing its lease, so it ends by [`expired_reason`].
#[derive(Debug, Clone, Copy, Default)]
pub struct NodeGone;

#[async_trait]
impl ExpiredResolver for NodeGone {
    async fn resolve(&self, session: &Session) -> Result<Resolution> {
        Ok(Resolution::End {
            reason: expired_reason(session),
            detail: "its node stopped renewing the lease".to_owned(),
        })
    }
}

/// What one sweep did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweepTotals {
    /// Ended `lease_expired`.
    pub lease_expired: u32,
    /// Ended `start_failed`.
    pub start_failed: u32,
    /// Left for a later sweep ([`Resolution::Leave`]).
    pub left: u32,
    /// Taken care of by the resolver ([`Resolution::Handled`]).
    pub handled: u32,
    /// Rows that could not be resolved or ended this time (found again by the next sweep).
    pub failed: u32,
    /// Whether it stopped early (`keep_going` said no) with work left.
    pub incomplete: bool,
}

/// Ends the sessions whose lease expired, in pages of [`SWEEP_PAGE`], until none is left,
/// a page made no progress (every row left alone), or `keep_going` says no. One row's
/// failure never blocks the others; listing the expired rows failing is the sweep's error.
pub async fn sweep_expired(
    registry: &dyn SessionRegistry,
    limits: &Limits,
    resolver: &dyn ExpiredResolver,
    keep_going: &(dyn Fn() -> bool + Send + Sync),
) -> Result<SweepTotals> {
    let mut totals = SweepTotals::default();
    loop {
        let expired = registry.expired_leases(SWEEP_PAGE).await?;
        let page = expired.len();
        let mut progressed = false;
        for session in expired {
            if !keep_going() {
                totals.incomplete = true;
                return Ok(totals);
            }
            match end_expired(registry, limits, resolver, &session, &mut totals).await {
                Ok(done) => progressed |= done,
                Err(e) => {
                    warn!(session_id = %session.id, error = %e, "could not resolve an expired session; left for the next sweep");
                    totals.failed += 1;
                }
            }
        }
        // A page of rows all left alone is no progress: they stay for the next sweep
        // (otherwise the same page would come back forever).
        if page < SWEEP_PAGE || !progressed {
            return Ok(totals);
        }
    }
}

/// Resolves one expired row and ends it when so resolved; true when it made progress.
async fn end_expired(
    registry: &dyn SessionRegistry,
    limits: &Limits,
    resolver: &dyn ExpiredResolver,
    session: &Session,
    totals: &mut SweepTotals,
) -> Result<bool> {
    let (reason, detail) = match resolver.resolve(session).await? {
        Resolution::Leave => {
            totals.left += 1;
            return Ok(false);
        }
        Resolution::Handled => {
            totals.handled += 1;
            return Ok(true);
        }
        Resolution::End { reason, detail } => (reason, detail),
    };
    let request = expired_end(reason, detail, limits);
    match registry.end(&session.call_id, session.id, request).await {
        Ok(EndOutcome::Ended(_)) => {
            info!(session_id = %session.id, call_id = %session.call_id, end_reason = %reason, "ended a session whose lease expired");
            match reason {
                EndReason::StartFailed => totals.start_failed += 1,
                _ => totals.lease_expired += 1,
            }
        }
        Ok(EndOutcome::AlreadyEnded(_)) => {}
        // Renewed or ended meanwhile: nothing to do.
        Err(Error::Conflict(_) | Error::NotFound) => {}
        Err(e) => return Err(e),
    }
    Ok(true)
}
