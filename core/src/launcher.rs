//! The [`TaskLauncher`] port: runs the agent of an admitted session somewhere.
//!
//! Adapters: `InProcessLauncher` (agent-task; a tokio task in this process) and
//! `EcsLauncher` (aws; one Fargate task per session).

use std::time::Duration;

use async_trait::async_trait;

use crate::Session;

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

/// What a successful launch produced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Launched {
    /// The remote task that hosts the agent (ECS: the task ARN), recorded on the session row.
    pub task_arn: Option<String>,
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
}
