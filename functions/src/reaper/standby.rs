//! A warm standby's STOPPED event, and the re-dispatch of a session whose claimed standby
//! is gone before its agent joined.
use super::*;

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
