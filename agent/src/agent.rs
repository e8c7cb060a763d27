//! What an agent is to the runtime: something that warms up and closes. Who is in its call
//! ([`Presence`]) and what it measured (a `MetricsRecorder`) are the runtime's: it hands both
//! to `create_agent` and `join_call` and reads them itself.

use std::any::Any;
use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex};

use switchboard_core::{CallId, CallType, EndReason, Metadata, MetricsRecorder, SessionId};
use tokio::sync::{OnceCell, watch};

/// One agent instance, made by the user's `create_agent` for one session.
///
/// The runtime calls [`Agent::warmup`] once before `join_call`, and [`Agent::close`] exactly
/// once when the session ends, whatever the reason. Both have defaults; an agent with nothing
/// to prepare or release implements neither (`impl Agent for MyAgent {}`). Implement them
/// with `async fn`.
pub trait Agent: Send + Sync + 'static {
    /// Prepares the agent (load models, open connections), fed from a cache shared by every
    /// agent of this process so expensive resources load once. Default: nothing to do.
    fn warmup(&self, cache: &WarmupCache) -> impl Future<Output = anyhow::Result<()>> + Send {
        let _ = cache;
        async { Ok(()) }
    }

    /// Releases everything (leave the call, close connections). Default: nothing to do.
    fn close(&self) -> impl Future<Output = ()> + Send {
        async {}
    }

    /// [`close`](Self::close), told why the session ends: the runtime calls this one when a
    /// session ends (an agent that tells someone else, such as a child process, why it must
    /// leave implements it). Default: `close()`.
    fn close_for(&self, reason: EndReason) -> impl Future<Output = ()> + Send {
        let _ = reason;
        self.close()
    }
}

/// The state [`Presence`] publishes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PresenceState {
    /// Whether the agent has joined the call (and not left it).
    pub joined: bool,
    /// The other participants currently in the call.
    pub participants: BTreeSet<String>,
}

impl PresenceState {
    /// Joined and nobody else there: the idle clock runs.
    pub fn is_alone(&self) -> bool {
        self.joined && self.participants.is_empty()
    }
}

/// Who is in the agent's call. Cheap to clone; every clone sees the same state. Joins and
/// leaves are idempotent (a participant id is counted once).
#[derive(Clone)]
pub struct Presence(Arc<watch::Sender<PresenceState>>);

impl fmt::Debug for Presence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Presence").field(&*self.0.borrow()).finish()
    }
}

impl Default for Presence {
    fn default() -> Self {
        Self::new()
    }
}

impl Presence {
    /// Nobody joined yet.
    pub fn new() -> Self {
        Self(Arc::new(watch::Sender::new(PresenceState::default())))
    }

    /// The agent has joined the call: the session becomes `running` and the idle and
    /// duration clocks start.
    pub fn agent_joined(&self) {
        self.0
            .send_if_modified(|s| !std::mem::replace(&mut s.joined, true));
    }

    /// The agent has left the call.
    pub fn agent_left(&self) {
        self.0
            .send_if_modified(|s| std::mem::replace(&mut s.joined, false));
    }

    /// Another participant joined.
    pub fn participant_joined(&self, id: &str) {
        self.0
            .send_if_modified(|s| s.participants.insert(id.to_owned()));
    }

    /// Another participant left.
    pub fn participant_left(&self, id: &str) {
        self.0.send_if_modified(|s| s.participants.remove(id));
    }

    /// The current state.
    pub fn state(&self) -> PresenceState {
        self.0.borrow().clone()
    }

    /// Joined and alone.
    pub fn is_alone(&self) -> bool {
        self.0.borrow().is_alone()
    }

    /// A receiver notified on every change.
    pub fn subscribe(&self) -> watch::Receiver<PresenceState> {
        self.0.subscribe()
    }
}

type CacheSlot = Arc<OnceCell<Arc<dyn Any + Send + Sync>>>;

/// Resources shared by every agent of a process (models, clients), initialized once even when
/// many agents warm up at the same time.
#[derive(Default)]
pub struct WarmupCache {
    slots: Mutex<HashMap<String, CacheSlot>>,
}

impl fmt::Debug for WarmupCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys: Vec<String> = self
            .slots
            .lock()
            .map(|s| s.keys().cloned().collect())
            .unwrap_or_default();
        f.debug_struct("WarmupCache").field("keys", &keys).finish()
    }
}

impl WarmupCache {
    /// The value under `key`, initializing it with `init` the first time. Concurrent callers
    /// wait for the one initialization; a failed initialization is retried by the next caller.
    /// A value of another type under the same key is an error.
    pub async fn get_or_try_init<T, F, Fut>(&self, key: &str, init: F) -> anyhow::Result<Arc<T>>
    where
        T: Send + Sync + 'static,
        F: FnOnce() -> Fut,
        Fut: Future<Output = anyhow::Result<T>>,
    {
        let slot = {
            let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
            match slots.get(key) {
                Some(slot) => slot.clone(),
                None => slots.entry(key.to_owned()).or_default().clone(),
            }
        };
        let value = slot
            .get_or_try_init(|| async {
                Ok::<_, anyhow::Error>(Arc::new(init().await?) as Arc<dyn Any + Send + Sync>)
            })
            .await?
            .clone();
        value
            .downcast::<T>()
            .map_err(|_| anyhow::anyhow!("warmup cache key '{key}' holds a value of another type"))
    }
}

/// The session an agent is created for.
#[derive(Debug, Clone)]
pub struct SessionRef {
    /// The session.
    pub session_id: SessionId,
    /// Its call.
    pub call_id: CallId,
    /// The call's type.
    pub call_type: CallType,
}

/// What `create_agent` receives.
#[derive(Clone)]
pub struct CreateContext {
    /// The session, or `None` when the launcher creates a throw-away agent to warm up the
    /// process (the anchor's `warmup()`).
    pub session: Option<SessionRef>,
    /// The metadata the client attached to the session.
    pub metadata: Option<Metadata>,
    /// A local video file to play instead of incoming video (`run --video-track-override`).
    pub video_track_override: Option<std::path::PathBuf>,
    /// The call transport this process offers, if any: under `serve` and `run` with its demo
    /// page, the local call (people join it from the demo page); `None` in an ECS task and
    /// the console `run --no-demo`, where an agent brings its own. See
    /// [`AgentLauncher::offer_edge`](crate::AgentLauncher::offer_edge).
    pub edge: Option<Arc<dyn crate::edge::Edge>>,
    /// Who is in the session's call: the runtime's, read for the idle clock and the join.
    /// Hand it to the edge the agent joins with (`Edge::join`), which keeps it current.
    pub presence: Presence,
    /// The session's metrics: the runtime's, flushed every interval and kept at the end.
    pub metrics: MetricsRecorder,
    /// The process's warmup cache (the one `Agent::warmup` gets): resources every agent of
    /// the process shares, made once.
    pub cache: Arc<WarmupCache>,
}

impl fmt::Debug for CreateContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CreateContext")
            .field("session", &self.session)
            .field("metadata", &self.metadata)
            .field("video_track_override", &self.video_track_override)
            .field("edge", &self.edge.as_ref().map(|_| "offered"))
            .field("presence", &self.presence)
            .finish_non_exhaustive()
    }
}

impl CreateContext {
    /// Whether this agent only serves the process warmup and will never join a call.
    pub fn is_warmup(&self) -> bool {
        self.session.is_none()
    }
}

/// What `join_call` receives beside the agent.
#[derive(Debug, Clone)]
pub struct JoinContext {
    /// The session.
    pub session_id: SessionId,
    /// The call to join.
    pub call_id: CallId,
    /// The call's type.
    pub call_type: CallType,
    /// The metadata the client attached to the session.
    pub metadata: Option<Metadata>,
    /// Who is in the call (the same [`Presence`] `create_agent` was given).
    pub presence: Presence,
    /// The session's metrics (the same recorder `create_agent` was given).
    pub metrics: MetricsRecorder,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presence_counts_each_participant_once() {
        let p = Presence::new();
        assert!(!p.is_alone(), "not joined yet");
        p.agent_joined();
        assert!(p.is_alone());
        p.participant_joined("u1");
        p.participant_joined("u1");
        assert!(!p.is_alone());
        p.participant_left("u1");
        assert!(p.is_alone());
        p.participant_left("u1");
        assert_eq!(p.state().participants.len(), 0);
    }

    #[tokio::test]
    async fn warmup_cache_initializes_once_and_checks_types() {
        let cache = WarmupCache::default();
        let calls = std::sync::atomic::AtomicUsize::new(0);
        for _ in 0..3 {
            let v: Arc<u32> = cache
                .get_or_try_init("model", || async {
                    calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    Ok(7)
                })
                .await
                .unwrap();
            assert_eq!(*v, 7);
        }
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
        let wrong = cache
            .get_or_try_init::<String, _, _>("model", || async { Ok(String::new()) })
            .await;
        assert!(wrong.is_err());
        let failed = cache
            .get_or_try_init::<u8, _, _>("flaky", || async { anyhow::bail!("boom") })
            .await;
        assert!(failed.is_err());
        let retried = cache
            .get_or_try_init::<u8, _, _>("flaky", || async { Ok(1) })
            .await
            .unwrap();
        assert_eq!(*retried, 1);
    }
}
