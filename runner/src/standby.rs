//! `task` with `STANDBY=1`: a warm standby of the pool (see `docs/warm-standby.md`).
//!
//! 1. The task finds its task ARN and task definition from the task metadata endpoint (no
//!    endpoint: exit 2, a standby cannot be claimed without them).
//! 2. It warms the process up (`create_agent` with no session, then the agent's warm-up,
//!    filling the `WarmupCache`), exactly once.
//! 3. It registers `idle` in the pool with a lease (`session_lease_seconds`), renewed every
//!    maintenance interval; it holds no session and no limit slot.
//! 4. It polls its registration every [`WAKE_POLL`] (an eventually consistent GetItem) and
//!    renews its lease; a claim names the session, which it then hosts exactly like a task
//!    started for it (`task`'s steps 2-4: `create_agent` with the session and its metadata,
//!    `join_call`, the conditional `starting → running`, heartbeats, limits, the drain).
//! 5. One session per process: when it ends, the registration is deleted and the process
//!    exits. A registration that is gone (the sweep stopped it: lease lapsed, or another task
//!    definition is current) exits 0; SIGTERM while idle deregisters and exits 0.
//!
//! A store outage while idle: polls and renewals fail and are retried; the lease lapses, so
//! no start claims it meanwhile; once the store answers, a renewal revives it, unless the
//! sweep deregistered it (then it exits and the pool refills).

use std::sync::Arc;
use std::time::Duration;

use switchboard_agent::{Agent, AgentLauncherBuilder};
use switchboard_aws::dynamodb::{Renewal, StandbyRegistry};
use switchboard_core::{CallId, SessionId, StandbyState};
use tracing::{error, info, warn};

use crate::cli::TaskArgs;
use crate::task::{TaskEnv, host, task_metadata};

/// How often an idle standby reads its registration for a claim: the wake-up takes half of
/// it on average. 5 eventually consistent reads per second: 9,000 read units per
/// standby-hour.
pub(crate) const WAKE_POLL: Duration = Duration::from_millis(200);

/// Where a standby's idle wait ended.
enum Woken {
    Claimed(CallId, SessionId),
    Gone,
    Shutdown,
}

fn invalid(message: &str) -> u8 {
    error!(error = %message, "the standby's environment is invalid");
    eprintln!("error: {message}");
    2
}

/// Runs a standby; returns the exit code.
pub(crate) async fn run<A: Agent>(
    configured: anyhow::Result<(AgentLauncherBuilder<A>, switchboard_core::Limits)>,
    args: TaskArgs,
    shutdown: impl std::future::Future<Output = ()>,
) -> u8 {
    tokio::pin!(shutdown);
    if args.session_id.is_some() || args.call_id.is_some() {
        return invalid(
            "STANDBY=1 takes no SESSION_ID or CALL_ID (a standby learns its session from its claim)",
        );
    }
    let Some(table) = args.table.clone().filter(|t| !t.trim().is_empty()) else {
        return invalid("TABLE_NAME is not set (required)");
    };
    let builder = match configured {
        Ok((builder, _)) => builder,
        Err(e) => return invalid(&format!("{e:#} (check the SWITCHBOARD_* variables)")),
    };
    let identity = tokio::select! {
        identity = identity() => identity,
        () = &mut shutdown => return 0,
    };
    let Some((task_arn, task_definition)) = identity else {
        return invalid(
            "a standby needs the ECS task metadata endpoint (ECS_CONTAINER_METADATA_URI_V4) for its task ARN and task definition",
        );
    };
    let registry = crate::task::dynamo_registry(&table).await;
    let standbys = StandbyRegistry::new(registry.clone());
    let registry: std::sync::Arc<dyn switchboard_core::SessionRegistry> =
        std::sync::Arc::new(registry);
    let fleet = Arc::new(switchboard_aws::emf::EmfFleet(
        switchboard_aws::emf::Emf::from_env(),
    ));
    let launcher = match builder
        .registry(registry.clone())
        .fleet_observer(fleet)
        .build()
    {
        Ok(launcher) => launcher,
        Err(e) => return invalid(&format!("invalid launcher options (SWITCHBOARD_*): {e}")),
    };
    info!(%task_arn, %task_definition, "standby: warming up");
    tokio::select! {
        warmed = launcher.warmup() => if let Err(e) = warmed {
            // Its `provisioning` registration goes with the STOPPED event (or the sweep).
            error!(error = %format!("{e:#}"), "standby: the warm-up failed");
            eprintln!("error: {e:#}");
            return 1;
        },
        () = &mut shutdown => return 0,
    }
    let limits = *launcher.limits();
    let lease = limits.session_lease();
    let woken = tokio::select! {
        woken = idle(&standbys, &task_arn, &task_definition, lease, limits.maintenance_interval()) => woken,
        () = &mut shutdown => Woken::Shutdown,
    };
    let (call_id, session_id) = match woken {
        Woken::Claimed(call_id, session_id) => (call_id, session_id),
        Woken::Gone => {
            info!(%task_arn, "standby: deregistered (its lease lapsed or its task definition is no longer current); exiting");
            return 0;
        }
        Woken::Shutdown => {
            // Claimed at this very moment: the STOPPED event re-dispatches that session.
            match standbys
                .delete(&task_arn, Some(&[StandbyState::Idle]))
                .await
            {
                Ok(true) => info!(%task_arn, "standby: stopped while idle; deregistered"),
                Ok(false) => {
                    warn!(%task_arn, "standby: stopped as it was claimed; the STOPPED event re-dispatches the session")
                }
                Err(e) => {
                    warn!(%task_arn, error = %e, "standby: stopped; could not deregister (the STOPPED event or the sweep will)")
                }
            }
            return 0;
        }
    };
    info!(%task_arn, %session_id, %call_id, "standby: claimed; hosting the session");
    let env = TaskEnv {
        session_id,
        call_id,
        call_type: None,
        table,
    };
    // The process must be gone before its session's lease expires (a session whose end could
    // not be recorded is ended by a sweep then): the supervisor stops trying half an interval
    // before it, so the registration's deletion gets a quarter of one.
    let cleanup = launcher.limits().maintenance_interval() / 4;
    let code = host(launcher, registry, env, shutdown).await;
    // One session per process: the registration goes with it.
    let deleted = tokio::time::timeout(cleanup, standbys.delete(&task_arn, None))
        .await
        .unwrap_or_else(|_| {
            Err(switchboard_core::Error::Unavailable {
                retry_after: Duration::ZERO,
                source: anyhow::anyhow!("no answer within {cleanup:?}"),
            })
        });
    if let Err(e) = deleted {
        warn!(%task_arn, error = %e, "standby: could not delete the registration (the STOPPED event will)");
    }
    code
}

/// The task's ARN and its task definition's ARN, from the task metadata.
async fn identity() -> Option<(String, String)> {
    let metadata = task_metadata().await?;
    let arn = metadata["TaskARN"].as_str()?;
    let family = metadata["Family"].as_str()?;
    let revision = match &metadata["Revision"] {
        serde_json::Value::String(r) => r.clone(),
        serde_json::Value::Number(r) => r.to_string(),
        _ => return None,
    };
    let definition = switchboard_aws::pool::task_definition_arn(arn, family, &revision)?;
    Some((arn.to_owned(), definition))
}

/// Registers, then waits idle for a claim, renewing the lease.
async fn idle(
    standbys: &StandbyRegistry,
    task_arn: &str,
    task_definition: &str,
    lease: Duration,
    renew_every: Duration,
) -> Woken {
    let mut backoff = Duration::from_millis(100);
    loop {
        match standbys.register(task_arn, task_definition, lease).await {
            Ok(until) => {
                info!(%task_arn, lease_expires_at = %until.to_rfc3339(), "standby: registered idle");
                break;
            }
            Err(switchboard_core::Error::Conflict(_)) => {
                // Registered already (a restart of the process): the lease decides.
                warn!(%task_arn, "standby: registered already; continuing");
                break;
            }
            Err(e) => {
                warn!(%task_arn, error = %e, "standby: could not register yet; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(renew_every);
            }
        }
    }
    let mut next_renewal = tokio::time::Instant::now() + renew_every;
    let mut failing = false;
    loop {
        tokio::time::sleep(WAKE_POLL).await;
        if tokio::time::Instant::now() >= next_renewal {
            match standbys.renew(task_arn, lease).await {
                Ok(Renewal::Renewed(_)) => {
                    next_renewal = tokio::time::Instant::now() + renew_every;
                    if std::mem::take(&mut failing) {
                        info!(%task_arn, "standby: the registry answers again; lease renewed");
                    }
                    continue;
                }
                Ok(Renewal::Claimed(call_id, session_id)) => {
                    return Woken::Claimed(call_id, session_id);
                }
                Ok(Renewal::Gone) => return Woken::Gone,
                Err(e) => {
                    if !std::mem::replace(&mut failing, true) {
                        warn!(%task_arn, error = %e, "standby: could not renew the lease (retrying; it is not claimable once it lapses)");
                    }
                    next_renewal = tokio::time::Instant::now() + WAKE_POLL;
                    continue;
                }
            }
        }
        match standbys.get(task_arn, false).await {
            Ok(Some(standby)) => {
                if let (StandbyState::Claimed, Some((call_id, session_id))) =
                    (standby.state, standby.session)
                {
                    return Woken::Claimed(call_id, session_id);
                }
            }
            // Not yet visible to an eventually consistent read, or deleted: the renewal
            // (strongly consistent) decides.
            Ok(None) => {}
            Err(e) => {
                if !std::mem::replace(&mut failing, true) {
                    warn!(%task_arn, error = %e, "standby: could not read the registration (retrying)");
                }
            }
        }
    }
}
