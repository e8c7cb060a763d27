//! A STOPPED event: which task it is about, and the end of the session whose task it was.
use super::*;

/// What a STOPPED event says about a session's task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskStopped {
    /// The task.
    pub task_arn: String,
    /// The session it hosted, from the container override.
    pub call_id: CallId,
    /// The session id.
    pub session_id: SessionId,
    /// ECS's `stoppedReason`, `stopCode` and the agent container's exit code, in words.
    pub detail: String,
}

/// Why an event was not a STOPPED event of one of our sessions.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Skipped {
    /// Not an ECS Task State Change event at all.
    #[error("not an ECS Task State Change event")]
    NotTaskStateChange,
    /// A state change other than STOPPED (events arrive out of order: ignored).
    #[error("lastStatus is {0}, not STOPPED")]
    NotStopped(String),
    /// A task of another group (the rule filters on the group; checked again).
    #[error("group {0:?} is not switchboard's")]
    OtherGroup(Option<String>),
    /// No usable `CALL_ID`/`SESSION_ID` in the override.
    #[error("the task's override names no session: {0}")]
    NoSession(String),
}

fn str_at<'a>(value: &'a Value, key: &str) -> Option<&'a str> {
    value.get(key).and_then(Value::as_str)
}

/// What a STOPPED event says about a standby's task (its override has `STANDBY=1` and no
/// session ids; its registration says whether it was claimed, and for which session).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StandbyStopped {
    /// The task.
    pub task_arn: String,
    /// ECS's `stoppedReason`, `stopCode` and the exit code, in words.
    pub detail: String,
}

/// A STOPPED event of one of our tasks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stopped {
    /// A task started for a session.
    Session(TaskStopped),
    /// A warm standby.
    Standby(StandbyStopped),
}

/// Reads an EventBridge event; `container` is the agent container's name.
pub fn parse_stopped(event: &Value, container: &str) -> Result<TaskStopped, Skipped> {
    match parse_event(event, container)? {
        Stopped::Session(stopped) => Ok(stopped),
        Stopped::Standby(_) => Err(Skipped::NoSession("a standby's task".into())),
    }
}

/// Reads an EventBridge event, a session's task or a standby's.
pub fn parse_event(event: &Value, container: &str) -> Result<Stopped, Skipped> {
    if str_at(event, "source") != Some("aws.ecs")
        || str_at(event, "detail-type") != Some("ECS Task State Change")
    {
        return Err(Skipped::NotTaskStateChange);
    }
    let detail = &event["detail"];
    let status = str_at(detail, "lastStatus").unwrap_or_default();
    if status != "STOPPED" {
        return Err(Skipped::NotStopped(status.to_owned()));
    }
    let group = str_at(detail, "group");
    if group != Some(switchboard_aws::ecs::TASK_GROUP) {
        return Err(Skipped::OtherGroup(group.map(str::to_owned)));
    }
    let overrides = detail["overrides"]["containerOverrides"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let env = overrides
        .iter()
        .find(|o| str_at(o, "name") == Some(container))
        .or_else(|| overrides.first())
        .and_then(|o| o["environment"].as_array().cloned())
        .unwrap_or_default();
    let var = |name: &str| {
        env.iter()
            .find(|kv| str_at(kv, "name") == Some(name))
            .and_then(|kv| str_at(kv, "value"))
    };
    let standby = var(switchboard_aws::ecs::env::STANDBY) == Some("1")
        && var(switchboard_aws::ecs::env::SESSION_ID).is_none();
    let detail_words = |detail: &Value| {
        let exit_code = detail["containers"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| str_at(c, "name") == Some(container)))
            .and_then(|c| c["exitCode"].as_i64());
        let mut words = vec![format!(
            "task stopped: {}",
            str_at(detail, "stoppedReason").unwrap_or("no reason given")
        )];
        if let Some(code) = str_at(detail, "stopCode") {
            words.push(format!("stop code {code}"));
        }
        match exit_code {
            Some(code) => words.push(format!("exit code {code}")),
            None => words.push("no exit code".into()),
        }
        words.join("; ")
    };
    let task_arn = str_at(detail, "taskArn").unwrap_or_default().to_owned();
    if standby {
        return Ok(Stopped::Standby(StandbyStopped {
            task_arn,
            detail: detail_words(detail),
        }));
    }
    let call_id = var(switchboard_aws::ecs::env::CALL_ID)
        .ok_or_else(|| Skipped::NoSession("no CALL_ID".into()))
        .and_then(|c| CallId::parse(c).map_err(|e| Skipped::NoSession(e.to_string())))?;
    let session_id = var(switchboard_aws::ecs::env::SESSION_ID)
        .ok_or_else(|| Skipped::NoSession("no SESSION_ID".into()))
        .and_then(|s| {
            SessionId::parse(s).map_err(|_| Skipped::NoSession(format!("SESSION_ID {s:?}")))
        })?;
    Ok(Stopped::Session(TaskStopped {
        task_arn,
        call_id,
        session_id,
        detail: detail_words(detail),
    }))
}

/// What ending a stopped task's session came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Ended now, with this reason.
    Ended(EndReason),
    /// Already ended (by the agent, a repeated event, a sweep): nothing to do.
    AlreadyEnded,
    /// No such row (past retention, or another table's task).
    Unknown,
    /// Its agent was started again elsewhere (its claimed standby stopped before it joined).
    Redispatched(StartType),
    /// The session is on another task now: the stopped one was not (or no longer) its host.
    OtherTask,
}

/// Ends the session of a stopped task: `start_failed` if it was still `starting`, else
/// `task_stopped`. Idempotent; a row that moves from `starting` to `running` meanwhile is
/// read again.
pub async fn end_stopped(
    registry: &dyn SessionRegistry,
    stopped: &TaskStopped,
    limits: &Limits,
) -> Result<Outcome, Error> {
    for _ in 0..3 {
        let Some(row) = registry.get(&stopped.call_id, stopped.session_id).await? else {
            return Ok(Outcome::Unknown);
        };
        // Another task hosts it now (a re-dispatch, or a claim that committed before a
        // cold fallback): this task's stop says nothing about the session.
        if !row.is_ended()
            && !stopped.task_arn.is_empty()
            && row
                .task_arn
                .as_deref()
                .is_some_and(|arn| arn != stopped.task_arn)
        {
            return Ok(Outcome::OtherTask);
        }
        let (reason, guard) = match row.status {
            SessionStatus::Ended => return Ok(Outcome::AlreadyEnded),
            SessionStatus::Starting => (EndReason::StartFailed, EndGuard::Starting),
            // Closed before its agent joined: it never can now, and its task is gone.
            SessionStatus::Closing if !row.joined() => (EndReason::StartFailed, EndGuard::Always),
            SessionStatus::Running | SessionStatus::Closing => {
                (EndReason::TaskStopped, EndGuard::Always)
            }
        };
        let request = EndRequest::new(reason)
            .detail(stopped.detail.clone())
            .guard(guard)
            .retention(limits.session_retention());
        match registry
            .end(&stopped.call_id, stopped.session_id, request)
            .await
        {
            Ok(EndOutcome::Ended(_)) => return Ok(Outcome::Ended(reason)),
            Ok(EndOutcome::AlreadyEnded(_)) => return Ok(Outcome::AlreadyEnded),
            Err(Error::NotFound) => return Ok(Outcome::Unknown),
            // The row changed under us (marked running, or ended): read it again.
            Err(Error::Conflict(_)) => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(Outcome::AlreadyEnded)
}
