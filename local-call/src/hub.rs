//! The local call's rooms ([`CallHub`]) and the agent's side of them ([`HubEdge`], the
//! [`Edge`] port): people join through the local server's WebSocket, agents through
//! `HubEdge`, and both hear each other. Joins and leaves reach the agent's [`Presence`], so
//! when the last person leaves the agent is alone and its idle clock runs.
//!
//! Agents hear people, not each other: two agents in one call (`max_sessions_per_call` > 1)
//! would otherwise answer each other's messages forever. People see everyone.
//!
//! Fan-out never waits on a slow reader: each person has a bounded queue of
//! [`PERSON_QUEUE`] frames, and a person whose queue is full is disconnected (everyone else
//! sees them leave). Agents' queues are unbounded: an agent is this process's own code, and
//! what it receives is bounded by what people can send (4,000 characters a message).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use switchboard_core::Clock;
use tokio::sync::mpsc;

use crate::protocol::{EncodedFrame, Participant, ServerFrame};
use switchboard_agent::Presence;
use switchboard_agent::edge::{Call, CallEvent, Connection, Edge, EventQueue, User};

/// Frames queued for one person before they are disconnected as too slow.
pub const PERSON_QUEUE: usize = 256;

struct Person {
    participant: Participant,
    frames: mpsc::Sender<EncodedFrame>,
}

struct AgentSlot {
    participant: Participant,
    presence: Presence,
    events: Arc<EventQueue>,
}

#[derive(Default)]
struct Room {
    people: Vec<Person>,
    agents: Vec<AgentSlot>,
}

impl Room {
    fn everyone(&self) -> Vec<Participant> {
        self.agents
            .iter()
            .map(|a| a.participant.clone())
            .chain(self.people.iter().map(|p| p.participant.clone()))
            .collect()
    }

    /// Sends `frame` to every person but `except`; returns the people whose queue was full
    /// (or closed), already removed from the room.
    fn send_to_people(&mut self, frame: ServerFrame, except: Option<&str>) -> Vec<Participant> {
        if self.people.is_empty() {
            return Vec::new();
        }
        let frame = EncodedFrame::new(frame);
        let mut dropped = Vec::new();
        self.people.retain(|person| {
            if except == Some(person.participant.id.as_str()) {
                return true;
            }
            match person.frames.try_send(frame.clone()) {
                Ok(()) => true,
                Err(_) => {
                    dropped.push(person.participant.clone());
                    false
                }
            }
        });
        dropped
    }

    fn send_to_agents(&self, event: &CallEvent) {
        for agent in &self.agents {
            agent.events.send(event.clone());
        }
    }

    /// Everyone else hears that `who` left; people dropped meanwhile leave too, in turn.
    fn announce_left(&mut self, who: Participant) {
        let mut pending = vec![who];
        while let Some(who) = pending.pop() {
            for agent in &self.agents {
                if !who.agent {
                    agent.presence.participant_left(&who.id);
                }
            }
            if !who.agent {
                self.send_to_agents(&CallEvent::ParticipantLeft(User::new(&who.id, &who.name)));
            }
            if !self.people.is_empty() {
                pending.extend(self.send_to_people(ServerFrame::Left { participant: who }, None));
            }
        }
    }
}

/// The rooms of the local call, one per call id, shared by the server's WebSocket route and
/// every agent of the process.
pub struct CallHub {
    rooms: Mutex<HashMap<String, Room>>,
    clock: Arc<dyn Clock>,
    next_id: AtomicU64,
}

impl std::fmt::Debug for CallHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallHub")
            .field("rooms", &self.lock().len())
            .finish_non_exhaustive()
    }
}

impl CallHub {
    /// An empty hub; message times come from `clock`.
    pub fn new(clock: Arc<dyn Clock>) -> Arc<Self> {
        Arc::new(Self {
            rooms: Mutex::new(HashMap::new()),
            clock,
            next_id: AtomicU64::new(1),
        })
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Room>> {
        self.rooms
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn new_id(&self, prefix: &str) -> String {
        format!("{prefix}-{}", self.next_id.fetch_add(1, Ordering::Relaxed))
    }

    /// Who is in `call_id` now (agents first).
    pub fn participants(&self, call_id: &str) -> Vec<Participant> {
        self.lock()
            .get(call_id)
            .map(Room::everyone)
            .unwrap_or_default()
    }

    /// A person joins `call_id` as `name`: they get `welcome` first on the returned queue,
    /// everyone else hears `joined`. Dropping the [`PersonHandle`] leaves.
    pub fn join_person(
        self: &Arc<Self>,
        call_id: &str,
        name: &str,
    ) -> (PersonHandle, mpsc::Receiver<EncodedFrame>) {
        let (frames, receiver) = mpsc::channel(PERSON_QUEUE);
        let participant = Participant {
            id: self.new_id("p"),
            name: name.to_owned(),
            agent: false,
        };
        let mut rooms = self.lock();
        let room = rooms.entry(call_id.to_owned()).or_default();
        let _ = frames.try_send(EncodedFrame::new(ServerFrame::Welcome {
            call_id: call_id.to_owned(),
            you: participant.clone(),
            participants: room.everyone(),
        }));
        for agent in &room.agents {
            agent.presence.participant_joined(&participant.id);
        }
        room.send_to_agents(&CallEvent::ParticipantJoined(User::new(
            &participant.id,
            &participant.name,
        )));
        let dropped = room.send_to_people(
            ServerFrame::Joined {
                participant: participant.clone(),
            },
            None,
        );
        room.people.push(Person {
            participant: participant.clone(),
            frames,
        });
        for who in dropped {
            room.announce_left(who);
        }
        drop(rooms);
        (
            PersonHandle {
                hub: self.clone(),
                call_id: call_id.to_owned(),
                participant,
                left: false,
            },
            receiver,
        )
    }

    /// `from` says `text`: every person (the sender included) gets `message`; when `from` is
    /// a person, every agent gets a `CallEvent::Message`. Returns false when `from` is no longer in the
    /// call (left, or dropped as too slow).
    fn say(&self, call_id: &str, from: &Participant, text: &str) -> bool {
        let mut rooms = self.lock();
        let Some(room) = rooms.get_mut(call_id) else {
            return false;
        };
        let present = room.people.iter().any(|p| p.participant.id == from.id)
            || room.agents.iter().any(|a| a.participant.id == from.id);
        if !present {
            return false;
        }
        if !from.agent {
            room.send_to_agents(&CallEvent::Message {
                from: User::new(&from.id, &from.name),
                text: text.to_owned(),
            });
        }
        if room.people.is_empty() {
            // An agent talking to an empty room (its greeting before anyone joined): no frame
            // to build (its timestamp is the costly part).
            return true;
        }
        let message = ServerFrame::Message {
            from: from.clone(),
            text: text.to_owned(),
            at: self.clock.now().to_rfc3339(),
        };
        for who in room.send_to_people(message, None) {
            room.announce_left(who);
        }
        true
    }

    fn leave(&self, call_id: &str, id: &str) {
        let mut rooms = self.lock();
        let Some(room) = rooms.get_mut(call_id) else {
            return;
        };
        let person = room
            .people
            .iter()
            .position(|p| p.participant.id == id)
            .map(|i| room.people.remove(i).participant);
        let agent = room
            .agents
            .iter()
            .position(|a| a.participant.id == id)
            .map(|i| {
                let slot = room.agents.remove(i);
                slot.presence.agent_left();
                slot.participant
            });
        if let Some(who) = person.or(agent) {
            room.announce_left(who);
        }
        if room.people.is_empty() && room.agents.is_empty() {
            rooms.remove(call_id);
        }
    }
}

/// A person in a room; dropping it leaves the call.
#[derive(Debug)]
pub struct PersonHandle {
    hub: Arc<CallHub>,
    call_id: String,
    participant: Participant,
    left: bool,
}

impl PersonHandle {
    /// Who this person is in the call.
    pub fn participant(&self) -> &Participant {
        &self.participant
    }

    /// Says `text` to the call; false when this person is no longer in it.
    pub fn say(&self, text: &str) -> bool {
        !self.left && self.hub.say(&self.call_id, &self.participant, text)
    }

    /// Leaves the call (idempotent).
    pub fn leave(&mut self) {
        if !std::mem::replace(&mut self.left, true) {
            self.hub.leave(&self.call_id, &self.participant.id);
        }
    }
}

impl Drop for PersonHandle {
    fn drop(&mut self) {
        self.leave();
    }
}

/// The [`Edge`] on a [`CallHub`]: the agent joins the same rooms as the people.
#[derive(Debug, Clone)]
pub struct HubEdge {
    hub: Arc<CallHub>,
}

impl HubEdge {
    /// Agents on `hub`.
    pub fn new(hub: Arc<CallHub>) -> Self {
        Self { hub }
    }
}

#[async_trait]
impl Edge for HubEdge {
    async fn join(
        &self,
        call: &Call,
        agent_user: &User,
        presence: Presence,
    ) -> anyhow::Result<Box<dyn Connection>> {
        let events = Arc::new(EventQueue::default());
        let participant = Participant {
            id: self.hub.new_id("agent"),
            name: agent_user.name.clone(),
            agent: true,
        };
        let call_id = call.call_id.as_str().to_owned();
        {
            let mut rooms = self.hub.lock();
            let room = rooms.entry(call_id.clone()).or_default();
            for person in &room.people {
                presence.participant_joined(&person.participant.id);
            }
            presence.agent_joined();
            let dropped = if room.people.is_empty() {
                Vec::new()
            } else {
                room.send_to_people(
                    ServerFrame::Joined {
                        participant: participant.clone(),
                    },
                    None,
                )
            };
            room.agents.push(AgentSlot {
                participant: participant.clone(),
                presence,
                events: events.clone(),
            });
            for who in dropped {
                room.announce_left(who);
            }
        }
        Ok(Box::new(HubConnection {
            hub: self.hub.clone(),
            call_id,
            participant,
            events,
            left: AtomicBool::new(false),
        }))
    }
}

struct HubConnection {
    hub: Arc<CallHub>,
    call_id: String,
    participant: Participant,
    events: Arc<EventQueue>,
    left: AtomicBool,
}

#[async_trait]
impl Connection for HubConnection {
    async fn send_message(&self, text: &str) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.hub.say(&self.call_id, &self.participant, text),
            "the agent is no longer in call {}",
            self.call_id
        );
        Ok(())
    }

    async fn next_event(&self) -> Option<CallEvent> {
        if self.left.load(Ordering::SeqCst) {
            return None;
        }
        self.events.recv().await
    }

    async fn leave(&self) {
        self.leave_now();
    }

    fn leave_now(&self) -> bool {
        if !self.left.swap(true, Ordering::SeqCst) {
            self.hub.leave(&self.call_id, &self.participant.id);
            self.events.close();
        }
        true
    }
}

impl Drop for HubConnection {
    fn drop(&mut self) {
        if !*self.left.get_mut() {
            self.hub.leave(&self.call_id, &self.participant.id);
        }
    }
}
