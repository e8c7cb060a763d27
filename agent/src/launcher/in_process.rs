//! Agents as tokio tasks in this process: [`InProcessLauncher`], the [`TaskLauncher`] the
//! HTTP API is handed in `serve`, and the spawning of a session's supervisor behind it.

use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use switchboard_core::{EndReason, LaunchError, Launched, Session, TaskLauncher};
use tokio::sync::oneshot;

use super::LauncherState;
use super::session::{AgentSession, SessionSignals};
use crate::agent::Agent;
use crate::supervisor::{Hosted, supervise};

impl<A: Agent> LauncherState<A> {
    /// Registers the node's session and spawns its supervisor; returns once the agent exists.
    pub(super) async fn spawn_session(
        self: &Arc<Self>,
        session: &Session,
    ) -> Result<AgentSession<A>, LaunchError> {
        if !self.running.load(Ordering::SeqCst) || self.draining.load(Ordering::SeqCst) {
            return Err(LaunchError::NoCapacity {
                retry_after: Duration::from_secs(1),
                source: anyhow::anyhow!("the launcher is not running"),
            });
        }
        let handle = AgentSession {
            id: session.id,
            call_id: session.call_id.clone(),
            call_type: session.call_type.clone(),
            started_at: session.created_at,
            signals: Arc::new(SessionSignals::new()),
        };
        self.sessions().insert(session.id, handle.clone());
        let (created_tx, created_rx) = oneshot::channel();
        let state = self.clone();
        let hosted = Hosted::from(session);
        let signals = handle.signals.clone();
        tokio::spawn(async move {
            let id = hosted.id;
            let end = supervise(state.ctx.clone(), hosted, signals.clone(), created_tx).await;
            // Forgotten before the end is published: whoever sees the end finds the node's
            // map without it.
            state.forget(id);
            signals.finish(end);
        });
        match created_rx.await {
            Ok(Ok(())) => Ok(handle),
            Ok(Err(e)) => Err(LaunchError::Rejected(e)),
            Err(_) => Err(LaunchError::Rejected(anyhow::anyhow!(
                "the session's supervisor exited before the agent was created"
            ))),
        }
    }
}

/// The [`TaskLauncher`] that runs agents in this process, each under its own supervisor.
pub struct InProcessLauncher<A> {
    pub(super) state: Arc<LauncherState<A>>,
}

impl<A> fmt::Debug for InProcessLauncher<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InProcessLauncher")
            .field("sessions", &self.state.sessions().len())
            .finish()
    }
}

#[async_trait]
impl<A: Agent> TaskLauncher for InProcessLauncher<A> {
    async fn launch(&self, session: &Session) -> Result<Launched, LaunchError> {
        self.state
            .spawn_session(session)
            .await
            .map(|_| Launched::default())
    }

    async fn notify_close(&self, session: &Session) {
        if let Some(local) = self.state.node_session(session.id) {
            local.request_stop(EndReason::Requested);
        }
    }

    fn is_ready(&self) -> bool {
        self.state.ready()
    }
}

/// A [`TaskLauncher`] that keeps the handle of the session it launched.
///
/// [`AgentLauncher::start_session`](super::AgentLauncher::start_session) runs the same use
/// case as the HTTP API (`service::start_session`: admission, launch, the end of a failed
/// launch), which speaks only the `TaskLauncher` port; the typed [`AgentSession`] comes back
/// out through this launcher. It cannot be looked up in the node's map afterwards instead:
/// a session that ends fast is already forgotten there by the time the use case returns.
pub(super) struct CapturingLauncher<A> {
    pub(super) state: Arc<LauncherState<A>>,
    pub(super) handle: Mutex<Option<AgentSession<A>>>,
}

impl<A> fmt::Debug for CapturingLauncher<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CapturingLauncher")
    }
}

#[async_trait]
impl<A: Agent> TaskLauncher for CapturingLauncher<A> {
    async fn launch(&self, session: &Session) -> Result<Launched, LaunchError> {
        let handle = self.state.spawn_session(session).await?;
        *self.handle.lock().unwrap_or_else(|e| e.into_inner()) = Some(handle);
        Ok(Launched::default())
    }
}
