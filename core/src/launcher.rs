//! The [`TaskLauncher`] port: runs the agent of an admitted session somewhere.
//!
//! Adapters: `InProcessLauncher` (agent-task; a tokio task in this process) and
//! `EcsLauncher` (aws; one Fargate task per session).

use std::time::Duration;

use async_trait::async_trait;

use crate::{Session, StartType, Timestamp};

/// Why a launch did not happen.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// Definitely not started and never will be (e.g. `create_agent` failed, RunTask rejected).
    #[error("agent launch rejected: {0}")]
    Rejected(#[source] anyhow::Error),
    /// Definitely not started, but capacity may free up: the client should retry later.
    #[error("agent launch refused for lack of capacity: {source}")]
    NoCapacity {
        /// When to retry.
        retry_after: Duration,
        /// What refused.
        #[source]
        source: anyhow::Error,
    },
    /// Unknown whether it started (timeout, reset). The session stays `starting`; the reaper
    /// resolves it.
    #[error("agent launch outcome unknown: {source}")]
    Ambiguous {
        /// When to retry.
        retry_after: Duration,
        /// What failed.
        #[source]
        source: anyhow::Error,
    },
}

impl LaunchError {
    /// The domain error a caller sees: a rejected launch is [`crate::Error::LaunchFailed`]; no
    /// capacity, or an outcome unknown, is [`crate::Error::Unavailable`] (retry after the delay).
    pub fn into_error(self) -> crate::Error {
        match self {
            Self::Rejected(source) => crate::Error::LaunchFailed(source),
            Self::NoCapacity {
                retry_after,
                source,
            }
            | Self::Ambiguous {
                retry_after,
                source,
            } => crate::Error::Unavailable {
                retry_after,
                source,
            },
        }
    }
}

/// What a successful launch produced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Launched {
    /// The remote task that hosts the agent (ECS: the task ARN), recorded on the session row.
    pub task_arn: Option<String>,
    /// Warm (a standby was claimed) or cold (a task was started for the session); `None`
    /// where the launcher has no such choice.
    pub start_type: Option<StartType>,
    /// The launch already wrote `task_arn` and `start_type` on the row (a claim does, in the
    /// same transaction that claims the standby): nothing is left to record.
    pub recorded: bool,
}

impl Launched {
    /// A task started for the session alone.
    pub fn cold(task_arn: impl Into<String>) -> Self {
        Self {
            task_arn: Some(task_arn.into()),
            start_type: Some(StartType::Cold),
            recorded: false,
        }
    }
}

/// Where a standby is in its life (see `docs/warm-standby.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StandbyState {
    /// Started by `RunTask`, not yet registered (Fargate is still provisioning it, or it is
    /// warming up).
    Provisioning,
    /// Warmed up, registered and leased: claimable.
    Idle,
    /// Claimed for a session (it hosts that session now).
    Claimed,
}

impl StandbyState {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Provisioning => "provisioning",
            Self::Idle => "idle",
            Self::Claimed => "claimed",
        }
    }
}

/// One standby of a warm pool, as the registry holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Standby {
    /// Its task.
    pub task_arn: String,
    /// The task definition it runs.
    pub task_definition: String,
    /// Where it is.
    pub state: StandbyState,
    /// Its lease: an idle standby past it is never claimed (and a provisioning one past it
    /// never registered in time).
    pub lease_expires_at: Timestamp,
    /// When its task was started (provisioning) or it registered (idle).
    pub since: Timestamp,
    /// The session it hosts, once claimed: call and session id.
    pub session: Option<(crate::CallId, crate::SessionId)>,
}

/// A warm pool's state, for operators (`GET /pool`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolStatus {
    /// The idle standbys it keeps (`WarmPoolSize`).
    pub target_size: u32,
    /// The task definition claims accept (the api's `TASK_DEFINITION`).
    pub task_definition: String,
    /// Every registered standby, of every task definition.
    pub standbys: Vec<Standby>,
    /// When it was read.
    pub at: Timestamp,
}

/// Runs agents for admitted sessions.
#[async_trait]
pub trait TaskLauncher: Send + Sync + std::fmt::Debug {
    /// Launches the agent of `session` (status `starting`). Returns once the agent exists
    /// (in-process: created and warmed up; ECS: the task was accepted). The agent's supervisor
    /// then owns the session until it ends.
    async fn launch(&self, session: &Session) -> Result<Launched, LaunchError>;

    /// Tells a local agent at once that a close was requested. The flag in the registry is
    /// the source of truth; this only shortens the path (remote agents see it at their next
    /// heartbeat, within one maintenance interval).
    async fn notify_close(&self, session: &Session) {
        let _ = session;
    }

    /// Whether new agents can be started now (`/ready`).
    fn is_ready(&self) -> bool {
        true
    }

    /// The warm pool, where this launcher keeps one (`None`: it has none, e.g. in-process
    /// agents or `WarmPoolSize` 0).
    async fn pool(&self) -> Option<crate::Result<PoolStatus>> {
        None
    }
}
