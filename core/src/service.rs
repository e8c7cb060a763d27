//! Use cases shared by the HTTP API (both modes) and the Rust `AgentLauncher` API.

use tracing::{error, warn};

use crate::launcher::LaunchError;
use crate::registry::{EndRequest, Idempotency, SessionReceipt, StartOutcome, StartRequest};
use crate::{
    CallId, CallType, EndReason, Error, IdempotencyKey, Limits, Metadata, Result, Session,
    SessionId, SessionRegistry, TaskLauncher,
};

/// What a client asks for when starting a session.
#[derive(Debug, Clone, Default)]
pub struct StartSession {
    /// The call's type.
    pub call_type: CallType,
    /// Metadata for `create_agent`.
    pub metadata: Option<Metadata>,
    /// The Idempotency-Key header.
    pub idempotency_key: Option<IdempotencyKey>,
    /// When set, every phase of the start (the admission transaction, the launch, the task
    /// ARN's write, a failed launch's end) finishes by this instant: what is still in flight
    /// then is cancelled, and the start is `Unavailable` (503 + `Retry-After`) with its row
    /// left to the reaper. Lambda needs this: it freezes the environment once the response is
    /// sent, so nothing of a start may run after it. `None` (serve, the Rust API) lets a slow
    /// start go on.
    pub deadline: Option<tokio::time::Instant>,
}

/// Time kept from a start's deadline for ending it `start_failed` after a definite launch
/// failure (one conditional write), so that the slots come back now rather than at a sweep.
pub const END_RESERVE: std::time::Duration = std::time::Duration::from_secs(1);

/// `future`, cut off at `deadline` (`None` when it was), with the deadline set for the
/// adapters it calls ([`crate::deadline`]): their SDK timeouts come from what is left, so the
/// cut is the last resort.
async fn by<F: std::future::Future>(
    deadline: Option<tokio::time::Instant>,
    future: F,
) -> Option<F::Output> {
    match deadline {
        Some(deadline) => {
            tokio::time::timeout_at(deadline, crate::deadline::within(Some(deadline), future))
                .await
                .ok()
        }
        None => Some(future.await),
    }
}

fn past_deadline(phase: &str) -> Error {
    Error::Unavailable {
        retry_after: std::time::Duration::from_secs(1),
        source: anyhow::anyhow!(
            "the start did not finish within its deadline ({phase}); its row, if any, is left to the reaper"
        ),
    }
}

/// The result of [`start_session`].
#[derive(Debug, Clone)]
pub struct Started {
    /// What to answer with.
    pub receipt: SessionReceipt,
    /// The new session, or `None` for a replay.
    pub session: Option<Session>,
}

/// Admits a session under `limits`, then launches its agent.
///
/// A definite launch failure ends the session `start_failed` (releasing its slots and its
/// Idempotency-Key) and is [`Error::LaunchFailed`] (500) or [`Error::Unavailable`] (503) for a
/// capacity refusal. An ambiguous launch leaves the session `starting` for the reaper and is
/// `Unavailable` (503 + `Retry-After`).
#[tracing::instrument(skip_all, fields(call_id = %call_id), err(level = "debug"))]
pub async fn start_session(
    registry: &dyn SessionRegistry,
    launcher: &dyn TaskLauncher,
    limits: &Limits,
    call_id: CallId,
    request: StartSession,
) -> Result<Started> {
    let deadline = request.deadline;
    let idempotency = request
        .idempotency_key
        .map(|key| Idempotency::new(key, &request.call_type, request.metadata.as_ref()));
    let admitted = by(
        deadline,
        registry.start(StartRequest {
            session_id: SessionId::generate(),
            call_id,
            call_type: request.call_type,
            metadata: request.metadata,
            idempotency,
            max_concurrent_sessions: limits.max_concurrent_sessions(),
            max_sessions_per_call: limits.max_sessions_per_call(),
            lease: limits.session_lease(),
        }),
    )
    .await;
    // Cut off mid-transaction: it may have committed (a `starting` row without a task, which
    // the reaper ends once its admission lease expires) or not.
    let outcome = admitted.ok_or_else(|| past_deadline("admission"))??;
    let session = match outcome {
        StartOutcome::Replayed(receipt) => {
            return Ok(Started {
                receipt,
                session: None,
            });
        }
        StartOutcome::Created(session) => session,
    };
    let launch_by = deadline.map(|d| d - END_RESERVE);
    if launch_by.is_some_and(|at| tokio::time::Instant::now() >= at) {
        // No time left to launch: nothing was sent, so the start definitely failed. Spend the
        // reserve on ending it (its slots and its Idempotency-Key come back now).
        warn!(session_id = %session.id, "admitted too late to launch within the deadline; ending it start_failed");
        end_failed_start(
            registry,
            &session,
            "no time left to launch the agent within the request deadline".into(),
            limits,
            deadline,
        )
        .await;
        return Err(past_deadline("admission took the launch's time"));
    }
    let Some(launched) = by(launch_by, launcher.launch(&session)).await else {
        // A launch cut off in flight is ambiguous: ECS may have accepted it (the reaper finds
        // the task by `startedBy`) or not (the reaper ends the row `start_failed`).
        warn!(session_id = %session.id, "agent launch cut off at the start's deadline; left for the reaper");
        return Err(past_deadline("launch"));
    };
    match launched {
        Ok(launched) => {
            let mut session = session;
            session.start_type = launched.start_type;
            if launched.recorded {
                session.task_arn = launched.task_arn;
            } else if let Some(arn) = launched.task_arn {
                // The task runs either way; the ARN only lets the reaper stop it sooner. The
                // agent task also reports it, and the reaper finds tasks by `startedBy`.
                match by(
                    deadline,
                    registry.attach_task(&session.call_id, session.id, &arn, launched.start_type),
                )
                .await
                {
                    Some(Ok(())) => {}
                    Some(Err(e)) => {
                        warn!(session_id = %session.id, task_arn = %arn, error = %e, "could not record the task ARN");
                    }
                    None => {
                        warn!(session_id = %session.id, task_arn = %arn, "no time left to record the task ARN (the task reports it)");
                    }
                }
                session.task_arn = Some(arn);
            }
            Ok(Started {
                receipt: session.receipt(),
                session: Some(session),
            })
        }
        Err(LaunchError::Ambiguous {
            retry_after,
            source,
        }) => {
            warn!(session_id = %session.id, error = %source, "agent launch outcome unknown; left for the reaper");
            Err(Error::Unavailable {
                retry_after,
                source,
            })
        }
        Err(err) => {
            end_failed_start(registry, &session, format!("{err:#}"), limits, deadline).await;
            Err(err.into_error())
        }
    }
}

/// Ends a start that definitely failed `start_failed` (its slots and its Idempotency-Key come
/// back), within the start's deadline; if that cannot be written, the lease expires and a
/// sweep releases the slots.
async fn end_failed_start(
    registry: &dyn SessionRegistry,
    session: &Session,
    detail: String,
    limits: &Limits,
    deadline: Option<tokio::time::Instant>,
) {
    let end = EndRequest::new(EndReason::StartFailed)
        .detail(detail)
        .retention(limits.session_retention());
    match by(deadline, registry.end(&session.call_id, session.id, end)).await {
        Some(Ok(_)) => {}
        Some(Err(e)) => {
            error!(session_id = %session.id, error = %e, "could not end a start that failed; left for the reaper");
        }
        None => {
            error!(session_id = %session.id, "no time left to end a start that failed; left for the reaper");
        }
    }
}

/// Sets a session's close flag and tells its agent at once when it runs here.
///
/// A missing or already ended session is [`Error::NotFound`] (the API's 404).
#[tracing::instrument(skip_all, fields(call_id = %call_id, session_id = %session_id), err(level = "debug"))]
pub async fn request_close(
    registry: &dyn SessionRegistry,
    launcher: &dyn TaskLauncher,
    call_id: &CallId,
    session_id: SessionId,
) -> Result<Session> {
    let session = match registry.request_close(call_id, session_id).await {
        Ok(session) => session,
        Err(Error::Conflict(_)) => return Err(Error::NotFound),
        Err(e) => return Err(e),
    };
    launcher.notify_close(&session).await;
    Ok(session)
}
