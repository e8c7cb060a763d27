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
    let idempotency = request
        .idempotency_key
        .map(|key| Idempotency::new(key, &request.call_type, request.metadata.as_ref()));
    let outcome = registry
        .start(StartRequest {
            session_id: SessionId::generate(),
            call_id,
            call_type: request.call_type,
            metadata: request.metadata,
            idempotency,
            max_concurrent_sessions: limits.max_concurrent_sessions(),
            max_sessions_per_call: limits.max_sessions_per_call(),
            lease: limits.session_lease(),
        })
        .await?;
    let session = match outcome {
        StartOutcome::Replayed(receipt) => {
            return Ok(Started {
                receipt,
                session: None,
            });
        }
        StartOutcome::Created(session) => session,
    };
    match launcher.launch(&session).await {
        Ok(launched) => {
            let mut session = session;
            if let Some(arn) = launched.task_arn {
                // The task runs either way; the ARN only lets the reaper stop it sooner. The
                // agent task also reports it, and the reaper finds tasks by `startedBy`.
                match registry
                    .attach_task(&session.call_id, session.id, &arn)
                    .await
                {
                    Ok(()) => {}
                    Err(e) => {
                        warn!(session_id = %session.id, task_arn = %arn, error = %e, "could not record the task ARN");
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
            let detail = format!("{err:#}");
            let end = EndRequest::new(EndReason::StartFailed)
                .detail(detail)
                .retention(limits.session_retention());
            if let Err(end_err) = registry.end(&session.call_id, session.id, end).await {
                // The lease will expire and a sweep will release the slots.
                error!(session_id = %session.id, error = %end_err, "could not end a session whose launch failed");
            }
            match err {
                LaunchError::NoCapacity {
                    retry_after,
                    source,
                } => Err(Error::Unavailable {
                    retry_after,
                    source,
                }),
                LaunchError::Rejected(source) => Err(Error::LaunchFailed(source)),
                LaunchError::Ambiguous { .. } => unreachable!("handled above"),
            }
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
