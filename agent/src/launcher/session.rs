//! A session running on this node: its handle ([`AgentSession`]), what the handle and the
//! supervisor share ([`SessionSignals`]), and how it ended ([`SessionEnd`]).

use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};

use switchboard_core::{CallId, CallType, EndReason, MetricsRecorder, SessionId, Timestamp};
use tokio::sync::Notify;

use crate::agent::Presence;

/// How a session ended, as its supervisor saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionEnd {
    /// Why.
    pub reason: EndReason,
    /// Operator detail (an error message).
    pub detail: Option<String>,
    /// When the supervisor finished.
    pub at: Timestamp,
    /// Whether the end was written to the registry by this supervisor (false when it had
    /// already ended elsewhere, or the registry was unreachable until the lease expired).
    pub recorded: bool,
}

/// What a session's handles and its supervisor share: the session's presence and metrics
/// (the runtime's, handed to the agent), the agent once created, the first stop request, and
/// the end. One small allocation per session (no channels).
pub(crate) struct SessionSignals<A> {
    pub(crate) presence: Presence,
    pub(crate) metrics: MetricsRecorder,
    agent: OnceLock<Arc<A>>,
    stop: Mutex<Option<EndReason>>,
    stop_notify: Notify,
    done: Mutex<Option<SessionEnd>>,
    done_notify: Notify,
}

impl<A> SessionSignals<A> {
    pub(crate) fn new() -> Self {
        Self {
            presence: Presence::new(),
            metrics: MetricsRecorder::new(),
            agent: OnceLock::new(),
            stop: Mutex::new(None),
            stop_notify: Notify::new(),
            done: Mutex::new(None),
            done_notify: Notify::new(),
        }
    }

    /// Resolves with the first stop request (only the supervisor waits here).
    pub(crate) async fn stop_requested(&self) -> EndReason {
        loop {
            if let Some(reason) = *lock(&self.stop) {
                return reason;
            }
            // `notify_one` stores a permit, so a request between the check and here is kept.
            self.stop_notify.notified().await;
        }
    }

    /// Records the end and wakes every waiter.
    pub(crate) fn finish(&self, end: SessionEnd) {
        *lock(&self.done) = Some(end);
        self.done_notify.notify_waiters();
    }

    pub(crate) fn set_agent(&self, agent: Arc<A>) {
        let _ = self.agent.set(agent);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// A session running on this node (the anchor's `AgentSession`). Cheap to clone.
pub struct AgentSession<A> {
    pub(crate) id: SessionId,
    pub(crate) call_id: CallId,
    pub(crate) call_type: CallType,
    pub(crate) started_at: Timestamp,
    pub(crate) signals: Arc<SessionSignals<A>>,
}

impl<A> Clone for AgentSession<A> {
    fn clone(&self) -> Self {
        Self {
            id: self.id,
            call_id: self.call_id.clone(),
            call_type: self.call_type.clone(),
            started_at: self.started_at,
            signals: self.signals.clone(),
        }
    }
}

impl<A> fmt::Debug for AgentSession<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentSession")
            .field("id", &self.id)
            .field("call_id", &self.call_id)
            .field("started_at", &self.started_at)
            .field("finished", &self.finished())
            .finish()
    }
}

impl<A> AgentSession<A> {
    /// The session's id.
    pub fn id(&self) -> SessionId {
        self.id
    }
    /// The call.
    pub fn call_id(&self) -> &CallId {
        &self.call_id
    }
    /// The call's type.
    pub fn call_type(&self) -> &CallType {
        &self.call_type
    }
    /// When the session was admitted.
    pub fn started_at(&self) -> Timestamp {
        self.started_at
    }
    /// The agent, once created.
    pub fn agent(&self) -> Option<Arc<A>> {
        self.signals.agent.get().cloned()
    }
    /// Who is in the session's call (the presence its agent reports to).
    pub fn presence(&self) -> &Presence {
        &self.signals.presence
    }
    /// The session's metrics recorder (the one its agent records to).
    pub fn metrics(&self) -> &MetricsRecorder {
        &self.signals.metrics
    }
    /// Whether the session has ended.
    pub fn finished(&self) -> bool {
        lock(&self.signals.done).is_some()
    }
    /// How it ended, once it has.
    pub fn end(&self) -> Option<SessionEnd> {
        lock(&self.signals.done).clone()
    }
    /// Waits for the end.
    pub async fn wait(&self) -> SessionEnd {
        loop {
            let notified = self.signals.done_notify.notified();
            tokio::pin!(notified);
            // Register before checking, so an end in between is not missed.
            notified.as_mut().enable();
            if let Some(end) = self.end() {
                return end;
            }
            notified.await;
        }
    }
    /// Asks the supervisor to close for `reason`; false if a close was already asked.
    pub(crate) fn request_stop(&self, reason: EndReason) -> bool {
        let mut stop = lock(&self.signals.stop);
        if stop.is_some() {
            return false;
        }
        *stop = Some(reason);
        self.signals.stop_notify.notify_one();
        true
    }
}
