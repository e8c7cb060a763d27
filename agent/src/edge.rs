//! The `Edge` port: the call transport an agent joins (Stream, LiveKit, a local WebSocket
//! call, an in-memory stand-in). It creates and joins calls, reports who comes and goes
//! through [`Presence`], and carries messages.

use std::collections::VecDeque;
use std::sync::Mutex;

use async_trait::async_trait;
use switchboard_core::{CallId, CallType};
use tokio::sync::Notify;

use crate::Presence;

/// A participant of a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Stable id.
    pub id: String,
    /// Display name.
    pub name: String,
}

impl User {
    /// A user with `id` and `name`.
    pub fn new(id: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            name: name.into(),
        }
    }
}

/// A call an agent can join.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// The call's type.
    pub call_type: CallType,
    /// The call's id.
    pub call_id: CallId,
}

/// Something that happens in a joined call.
#[derive(Debug, Clone, PartialEq)]
pub enum CallEvent {
    /// A participant joined.
    ParticipantJoined(User),
    /// A participant left.
    ParticipantLeft(User),
    /// A participant sent a text message.
    Message {
        /// Who sent it.
        from: User,
        /// What they said.
        text: String,
    },
    /// The call ended for everyone.
    Ended,
}

/// A call transport.
#[async_trait]
pub trait Edge: Send + Sync {
    /// Creates the call if needed and returns it. The default is for transports whose calls
    /// exist as soon as someone joins them (the local call, the in-memory stand-in): the call
    /// is just its ids.
    async fn create_call(&self, call_type: &CallType, call_id: &CallId) -> anyhow::Result<Call> {
        Ok(Call {
            call_type: call_type.clone(),
            call_id: call_id.clone(),
        })
    }

    /// Joins `call` as `agent_user`. The connection keeps `presence` up to date (agent joined,
    /// participants joining and leaving) for as long as it is open.
    async fn join(
        &self,
        call: &Call,
        agent_user: &User,
        presence: Presence,
    ) -> anyhow::Result<Box<dyn Connection>>;
}

/// The agent's side of a joined call. Every method takes `&self`, so a connection can be
/// shared (`Arc`) between the task that reads its events and those that speak, with no lock
/// held across an await; only one task should read events.
#[async_trait]
pub trait Connection: Send + Sync {
    /// Sends a text message to the call.
    async fn send_message(&self, text: &str) -> anyhow::Result<()>;

    /// The next event, or `None` once the connection is closed.
    async fn next_event(&self) -> Option<CallEvent>;

    /// Leaves the call (idempotent). Presence then reports the agent as not joined.
    async fn leave(&self);

    /// Leaves the call at once if the transport can without waiting (a local one), and says
    /// whether it did; the default cannot. A join guard dropped in synchronous code (its
    /// `Drop`) uses it, and spawns [`leave`](Self::leave) only when it returns false.
    fn leave_now(&self) -> bool {
        false
    }
}

/// A joined agent's incoming events, from its transport to its `next_event`: one consumer,
/// any number of producers. It allocates only as events arrive; a tokio channel would
/// allocate a 32-slot block (about 2.5 KB of `CallEvent`s) per agent up front, and most
/// agents wait far more than they receive.
#[derive(Debug, Default)]
pub struct EventQueue {
    state: Mutex<(VecDeque<CallEvent>, bool)>,
    notify: Notify,
}

impl EventQueue {
    /// Queues `event`; false once the queue is closed.
    pub fn send(&self, event: CallEvent) -> bool {
        {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            if state.1 {
                return false;
            }
            state.0.push_back(event);
        }
        // One consumer: `notify_one` keeps a permit if it is not waiting yet.
        self.notify.notify_one();
        true
    }

    /// The next event; `None` once the queue is closed and empty.
    pub async fn recv(&self) -> Option<CallEvent> {
        loop {
            {
                let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(event) = state.0.pop_front() {
                    return Some(event);
                }
                if state.1 {
                    return None;
                }
            }
            self.notify.notified().await;
        }
    }

    /// Closes the queue: nothing more is accepted, and `recv` ends after what is queued.
    pub fn close(&self) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).1 = true;
        self.notify.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_event_queue_delivers_in_order_then_ends_after_close() {
        let queue = std::sync::Arc::new(EventQueue::default());
        let waiter = {
            let queue = queue.clone();
            tokio::spawn(async move { queue.recv().await })
        };
        tokio::task::yield_now().await;
        let ada = User::new("p-1", "Ada");
        assert!(queue.send(CallEvent::ParticipantJoined(ada.clone())));
        assert_eq!(
            waiter.await.unwrap(),
            Some(CallEvent::ParticipantJoined(ada.clone())),
            "a waiting receiver is woken"
        );
        assert!(queue.send(CallEvent::ParticipantLeft(ada.clone())));
        assert!(queue.send(CallEvent::Ended));
        queue.close();
        assert!(!queue.send(CallEvent::Ended), "closed: refused");
        assert_eq!(queue.recv().await, Some(CallEvent::ParticipantLeft(ada)));
        assert_eq!(queue.recv().await, Some(CallEvent::Ended));
        assert_eq!(queue.recv().await, None, "closed and drained");
    }
}
