//! `task`: the ECS entry point. One process hosts one agent for the session that
//! `EcsLauncher`'s container override names, against the DynamoDB registry.
//!
//! 1. The environment is validated (`SESSION_ID`, `CALL_ID`, `CALL_TYPE`, `TABLE_NAME`, the
//!    `SWITCHBOARD_*` supervisor settings); an error names the variable and exits 2. When the
//!    row can still be identified and is `starting`, it is ended `start_failed` first (its
//!    slots come back at once); otherwise the reaper resolves it.
//! 2. The row is read, riding out a store outage within a lease. A session closed while it
//!    was starting is ended `requested` here (the agent never joins); anything else but
//!    `starting` (a close already ended it, the reaper resolved it) exits 0 without joining.
//!    The task ARN comes from `ECS_CONTAINER_METADATA_URI_V4` when present; a row that
//!    names another task (a claimed standby hosts it, or it was re-dispatched) exits 0
//!    without joining.
//! 3. The launcher hosts the session: the metadata is read once, the agent is created and
//!    joins; the first write is the conditional `starting → running` (if it fails, the agent
//!    leaves without staying in the call); one heartbeat per interval renews the lease and
//!    reads the close flag; metrics are flushed when they changed; idle, max duration, the
//!    flag and `join_call` returning end it with their reason. A lease that cannot be renewed
//!    stops the agent before it expires.
//! 4. SIGTERM (StopTask, Spot, retirement) drains: the session ends `shutdown`, exit 0. The
//!    handler is the first thing the task installs: a SIGTERM while the row is still being
//!    read (a store blip can make that take most of a lease) exits 0 without joining, and
//!    the STOPPED event resolves the row (its agent never joined: `start_failed`).
//!
//! Exit codes: 0 when the session ended normally (or was not ours to run), 1 when the agent
//! failed or its lease was lost, 2 for a bad environment.

use std::sync::Arc;

use anyhow::Context;
use switchboard_agent::{Agent, AgentLauncher, AgentLauncherBuilder};
use switchboard_core::registry::{EndGuard, EndRequest};
use switchboard_core::{CallId, CallType, EndReason, SessionId, SessionRegistry, SessionStatus};
use tracing::{error, info, warn};

use crate::cli::TaskArgs;

/// The environment a task needs, validated.
#[derive(Debug)]
pub(crate) struct TaskEnv {
    pub(crate) session_id: SessionId,
    pub(crate) call_id: CallId,
    /// What the override says (a standby learns its session from its claim: `None`).
    pub(crate) call_type: Option<CallType>,
    pub(crate) table: String,
}

/// What went wrong with the environment, and what of the row can still be found.
#[derive(Debug)]
struct EnvError {
    message: String,
    row: Option<(String, CallId, SessionId)>,
}

fn validate(args: &TaskArgs) -> Result<TaskEnv, EnvError> {
    let table = args.table.clone().filter(|t| !t.trim().is_empty());
    let call_id = args
        .call_id
        .as_deref()
        .map(|c| CallId::parse(c).map_err(|e| format!("CALL_ID is invalid: {e}")));
    let session_id = args
        .session_id
        .as_deref()
        .map(|s| SessionId::parse(s).map_err(|_| format!("SESSION_ID {s:?} is not a session id")));
    let row = match (&table, &call_id, &session_id) {
        (Some(t), Some(Ok(c)), Some(Ok(s))) => Some((t.clone(), c.clone(), *s)),
        _ => None,
    };
    let fail = |message: String| EnvError {
        message,
        row: row.clone(),
    };
    let table = table.ok_or_else(|| fail("TABLE_NAME is not set (required)".into()))?;
    let call_id = call_id
        .ok_or_else(|| fail("CALL_ID is not set (required)".into()))?
        .map_err(&fail)?;
    let session_id = session_id
        .ok_or_else(|| fail("SESSION_ID is not set (required)".into()))?
        .map_err(&fail)?;
    let call_type =
        CallType::parse(&args.call_type).map_err(|e| fail(format!("CALL_TYPE is invalid: {e}")))?;
    Ok(TaskEnv {
        session_id,
        call_id,
        call_type: Some(call_type),
        table,
    })
}

/// Runs the task; returns the exit code.
pub(crate) async fn run<A: Agent>(
    configured: anyhow::Result<(AgentLauncherBuilder<A>, switchboard_core::Limits)>,
    args: TaskArgs,
) -> u8 {
    // Before anything else (see `shutdown_signal`).
    let shutdown = crate::serve::shutdown_signal();
    if args.standby {
        return crate::standby::run(configured, args, shutdown).await;
    }
    let failure = match (validate(&args), configured) {
        (Ok(env), Ok((builder, _))) => {
            let registry = registry(&env.table).await;
            // Heartbeat failures as EMF lines (CloudWatch's fleet metrics).
            let fleet = Arc::new(switchboard_aws::emf::EmfFleet(
                switchboard_aws::emf::Emf::from_env(),
            ));
            return match builder
                .registry(registry.clone())
                .fleet_observer(fleet)
                .build()
            {
                Ok(launcher) => host(launcher, registry, env, shutdown).await,
                Err(e) => fail_hosting(&anyhow::Error::new(e)),
            };
        }
        (Err(e), _) => e,
        (Ok(env), Err(e)) => EnvError {
            message: format!("{e:#} (check the SWITCHBOARD_* variables)"),
            row: Some((env.table, env.call_id, env.session_id)),
        },
    };
    error!(error = %failure.message, "the task's environment is invalid");
    eprintln!("error: {}", failure.message);
    if let Some((table, call_id, session_id)) = failure.row {
        let registry = registry(&table).await;
        let end = EndRequest::new(EndReason::StartFailed)
            .detail(format!("agent task: {}", failure.message))
            .guard(EndGuard::Starting);
        // A busy table (throttling, transaction conflicts) gets a few more tries: freeing the
        // slot now beats leaving it to the reaper's next sweep.
        let give_up = tokio::time::Instant::now() + END_RETRY_BUDGET;
        let mut backoff = std::time::Duration::from_millis(200);
        loop {
            match registry.end(&call_id, session_id, end.clone()).await {
                Ok(_) => {
                    info!(%session_id, "ended the session start_failed");
                    break;
                }
                Err(e @ switchboard_core::Error::Unavailable { .. })
                    if tokio::time::Instant::now() + backoff < give_up =>
                {
                    warn!(%session_id, error = %e, "could not end the session yet; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff *= 2;
                }
                Err(e) => {
                    warn!(%session_id, error = %e, "left the session to the reaper");
                    break;
                }
            }
        }
    }
    2
}

/// How long a task with a bad environment keeps trying to end its session before leaving it
/// to the reaper.
const END_RETRY_BUDGET: std::time::Duration = std::time::Duration::from_secs(10);

async fn registry(table: &str) -> Arc<dyn SessionRegistry> {
    Arc::new(dynamo_registry(table).await)
}

/// The task's registry on `table`, its calls recorded for the IAM test as the task role's.
pub(crate) async fn dynamo_registry(table: &str) -> switchboard_aws::DynamoRegistry {
    let client = switchboard_aws::dynamodb::client_for(
        &switchboard_aws::sdk_config_from_env().await,
        switchboard_aws::calls::Role::AgentTask,
    );
    switchboard_aws::DynamoRegistry::new(client, table, Arc::new(switchboard_core::SystemClock))
}

/// Reads the session's row, riding out a store outage for as long as a lease lasts (less an
/// interval): a task that comes up during a blip still hosts its session. A row whose lease
/// expired meanwhile may have been resolved by the reaper; that is read from the row.
async fn read_row(
    registry: &dyn SessionRegistry,
    env: &TaskEnv,
    limits: &switchboard_core::Limits,
) -> Result<Option<switchboard_core::Session>, switchboard_core::Error> {
    let give_up = tokio::time::Instant::now()
        + limits
            .session_lease()
            .saturating_sub(limits.maintenance_interval());
    let mut backoff = std::time::Duration::from_millis(100);
    loop {
        match registry.get(&env.call_id, env.session_id).await {
            Err(e @ switchboard_core::Error::Unavailable { .. })
                if tokio::time::Instant::now() + backoff < give_up =>
            {
                warn!(error = %e, "could not read the session row; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(limits.maintenance_interval());
            }
            other => return other,
        }
    }
}

/// Hosts the session `env` names with `launcher`, whose registry is `registry`.
pub(crate) async fn host<A: Agent>(
    launcher: AgentLauncher<A>,
    registry: Arc<dyn SessionRegistry>,
    env: TaskEnv,
    shutdown: impl std::future::Future<Output = ()>,
) -> u8 {
    match host_inner(launcher, registry, env, shutdown).await {
        Ok(code) => code,
        Err(e) => fail_hosting(&e),
    }
}

fn fail_hosting(e: &anyhow::Error) -> u8 {
    error!(error = %format!("{e:#}"), "the agent task failed");
    eprintln!("error: {e:#}");
    1
}

async fn host_inner<A: Agent>(
    launcher: AgentLauncher<A>,
    registry: Arc<dyn SessionRegistry>,
    env: TaskEnv,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<u8> {
    tokio::pin!(shutdown);
    let read = tokio::select! {
        read = read_row(&*registry, &env, launcher.limits()) => read,
        () = &mut shutdown => {
            info!(session_id = %env.session_id, "stopped before the session row was read: not joining (the STOPPED event resolves the row)");
            return Ok(0);
        }
    };
    let session = read.context("reading the session row")?.with_context(|| {
        format!(
            "session {} of call {} is not in table {}",
            env.session_id, env.call_id, env.table
        )
    })?;
    if session.status == SessionStatus::Closing && !session.joined() {
        // Closed before its agent came up: honour the close now (its slots come back with
        // this write) rather than leave it to the reaper as a failed start.
        info!(session_id = %session.id, "the session was closed before its agent joined; ending it requested");
        let request = EndRequest::new(EndReason::Requested)
            .detail("closed before its agent joined")
            .retention(launcher.limits().session_retention());
        if let Err(e) = registry.end(&session.call_id, session.id, request).await {
            warn!(error = %e, "could not end the closed session; the reaper will when this task stops");
        }
        return Ok(0);
    }
    if session.status != SessionStatus::Starting {
        info!(session_id = %session.id, status = %session.status, "the session is not starting; not joining");
        return Ok(0);
    }
    if let Some(env_type) = &env.call_type
        && session.call_type != *env_type
    {
        warn!(row = %session.call_type, env = %env_type, "CALL_TYPE differs from the row; the row wins");
    }
    let arn = tokio::select! {
        arn = task_arn() => arn,
        () = &mut shutdown => {
            info!(session_id = %session.id, "stopped before the agent was created: not joining (the STOPPED event resolves the row)");
            return Ok(0);
        }
    };
    if let Some(arn) = arn
        && session.task_arn.as_deref() != Some(arn.as_str())
    {
        match registry
            .attach_task(&session.call_id, session.id, &arn, None)
            .await
        {
            Ok(()) => {}
            // Another task hosts it (a claimed standby, or a re-dispatch): never a second
            // agent in the call.
            Err(switchboard_core::Error::Conflict(_)) => {
                info!(session_id = %session.id, task_arn = %arn, "the session is hosted by another task; not joining");
                return Ok(0);
            }
            Err(e) => warn!(error = %e, "could not record the task ARN"),
        }
    }
    // From here on SIGTERM drains through the launcher, also while the agent is created.
    let handle = tokio::select! {
        hosted = launcher.host_session(session) => match hosted {
            Ok(handle) => handle,
            // The supervisor is ending the row start_failed: wait for that write before the
            // process exits (the runtime's shutdown would cancel it).
            Err(e) => {
                launcher.stop().await;
                return Err(anyhow::Error::new(e).context("the agent could not start"));
            }
        },
        () = &mut shutdown => {
            info!("draining before the agent joined: ending the session shutdown");
            launcher.stop().await;
            return Ok(0);
        }
    };
    info!(session_id = %handle.id(), call_id = %handle.call_id(), "agent created; joining");
    let end = tokio::select! {
        end = handle.wait() => Some(end),
        () = &mut shutdown => {
            info!("draining: ending the session shutdown");
            launcher.stop().await;
            handle.end()
        }
    };
    let Some(end) = end else {
        return Ok(0);
    };
    info!(end_reason = %end.reason, detail = ?end.detail, "the session ended");
    Ok(match end.reason {
        // A lost lease (`written` false) is not a clean end either: the reaper finishes it.
        EndReason::AgentFailed | EndReason::StartFailed | EndReason::LeaseExpired => 1,
        _ => 0,
    })
}

/// The task's ARN from the ECS task metadata endpoint (v4), when running on ECS.
async fn task_arn() -> Option<String> {
    let metadata = task_metadata().await?;
    match metadata["TaskARN"].as_str() {
        Some(arn) => Some(arn.to_owned()),
        None => {
            warn!("ECS_CONTAINER_METADATA_URI_V4 is set but gave no task ARN");
            None
        }
    }
}

/// The task metadata (`${ECS_CONTAINER_METADATA_URI_V4}/task`), when running on ECS.
pub(crate) async fn task_metadata() -> Option<serde_json::Value> {
    let base = std::env::var("ECS_CONTAINER_METADATA_URI_V4").ok()?;
    let fetch = async {
        use http_body_util::BodyExt;
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<http_body_util::Empty<bytes::Bytes>>();
        let uri: http::Uri = format!("{base}/task").parse().ok()?;
        let response = client.get(uri).await.ok()?;
        let body = response.into_body().collect().await.ok()?.to_bytes();
        serde_json::from_slice::<serde_json::Value>(&body).ok()
    };
    match tokio::time::timeout(std::time::Duration::from_secs(2), fetch).await {
        Ok(Some(json)) => Some(json),
        _ => {
            warn!("ECS_CONTAINER_METADATA_URI_V4 is set but gave no task metadata");
            None
        }
    }
}
