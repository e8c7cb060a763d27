//! `serve`'s webhook queue: bounded, in order per session, retried with backoff for a bounded
//! time, never in a session's way.
//!
//! - [`WebhookQueue::publish`] is called with the registry's lock held: it only counts and
//!   queues. A full queue drops the event (counted as `dropped`, logged with its id); the
//!   session is unaffected.
//! - Each session with queued events has one lane, delivered by its own task, one event at a
//!   time in sequence order; lanes run in parallel, at most `concurrency` attempts at once.
//!   A receiver that is down holds back only its own events.
//! - An attempt that fails (no answer, not 2xx, slower than its timeout) is retried after
//!   a backoff that doubles from `first_backoff` to `max_backoff`, until `retry_for` has passed
//!   since the event's first attempt; then it is given up (counted as `failed`, logged with its
//!   id) and the lane goes on.
//! - At a drain (shutdown), events waiting out a backoff are tried again at once, then at
//!   most every 250 ms, until the drain's time is up.
//! - Delivery is at least once: an attempt that timed out may have been received, and is
//!   sent again with the same `webhook-id`.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use switchboard_core::events::SessionEvent;
use switchboard_core::fleet::{Delivery, EventSink, FleetObserver};
use tokio::sync::{Notify, Semaphore};
use tracing::{debug, error, warn};

use crate::endpoint::Endpoint;

/// The longest backoff once a drain has begun.
const HURRIED_BACKOFF: Duration = Duration::from_millis(250);

/// The queue's bounds and retry schedule.
#[derive(Debug, Clone, Copy)]
pub struct QueueOptions {
    /// Events queued or in flight at most; more are dropped.
    pub capacity: usize,
    /// Attempts in flight at most.
    pub concurrency: usize,
    /// The first retry's delay.
    pub first_backoff: Duration,
    /// The longest delay between attempts.
    pub max_backoff: Duration,
    /// How long an event is retried, from its first attempt.
    pub retry_for: Duration,
}

impl Default for QueueOptions {
    fn default() -> Self {
        Self {
            capacity: 10_000,
            concurrency: 16,
            first_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
            retry_for: Duration::from_secs(600),
        }
    }
}

struct Shared {
    endpoint: Endpoint,
    options: QueueOptions,
    fleet: Arc<dyn FleetObserver>,
    lanes: Mutex<HashMap<String, VecDeque<SessionEvent>>>,
    pending: AtomicUsize,
    /// Events dropped so far (the log says so at 1, 2, 4, 8, ... drops: publishing runs under
    /// the registry's lock, and a log line per drop would slow every write).
    dropped: std::sync::atomic::AtomicU64,
    /// Set by a drain: backoffs end now and stay short, so the last events get their tries.
    hurry: std::sync::atomic::AtomicBool,
    woken: Notify,
    idle: Notify,
    attempts: Semaphore,
    runtime: tokio::runtime::Handle,
}

/// The queue (cheap to clone: every clone is the same queue).
#[derive(Clone)]
pub struct WebhookQueue {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for WebhookQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookQueue")
            .field("url", &self.shared.endpoint.shown_url())
            .field("pending", &self.pending())
            .finish()
    }
}

impl WebhookQueue {
    /// A queue delivering to `endpoint`, counting into `fleet`, its tasks on the current tokio
    /// runtime.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn new(endpoint: Endpoint, options: QueueOptions, fleet: Arc<dyn FleetObserver>) -> Self {
        Self {
            shared: Arc::new(Shared {
                endpoint,
                options,
                fleet,
                lanes: Mutex::new(HashMap::new()),
                pending: AtomicUsize::new(0),
                dropped: std::sync::atomic::AtomicU64::new(0),
                hurry: std::sync::atomic::AtomicBool::new(false),
                woken: Notify::new(),
                idle: Notify::new(),
                attempts: Semaphore::new(options.concurrency.max(1)),
                runtime: tokio::runtime::Handle::current(),
            }),
        }
    }

    /// Events queued or in flight.
    pub fn pending(&self) -> usize {
        self.shared.pending.load(Ordering::SeqCst)
    }

    /// Waits until nothing is pending, or `within` has passed; returns what is left. Events
    /// waiting out a backoff are tried again at once, then every 250 ms at most.
    pub async fn drained(&self, within: Duration) -> usize {
        self.shared.hurry.store(true, Ordering::SeqCst);
        self.shared.woken.notify_waiters();
        let wait = async {
            loop {
                let notified = self.shared.idle.notified();
                tokio::pin!(notified);
                // Registered before the check, so a notification in between is not missed.
                notified.as_mut().enable();
                if self.pending() == 0 {
                    return;
                }
                notified.await;
            }
        };
        let _ = tokio::time::timeout(within, wait).await;
        self.pending()
    }
}

#[async_trait::async_trait]
impl EventSink for WebhookQueue {
    async fn drain(&self, within: Duration) -> usize {
        self.drained(within).await
    }

    fn publish(&self, event: SessionEvent) {
        let shared = &self.shared;
        let queued = shared
            .pending
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < shared.options.capacity).then_some(n + 1)
            });
        if queued.is_err() {
            shared.fleet.webhook(Delivery::Dropped);
            let dropped = shared.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if dropped.is_power_of_two() {
                warn!(event_id = event.id(), event = %event.kind, capacity = shared.options.capacity,
                    dropped, "the webhook queue is full; event dropped (logged at 1, 2, 4, ... drops)");
            }
            return;
        }
        let session = event.data.session_id.clone();
        let mut lanes = shared.lanes.lock().unwrap_or_else(|e| e.into_inner());
        let lane = lanes.entry(session.clone()).or_default();
        let new = lane.is_empty();
        lane.push_back(event);
        drop(lanes);
        if new {
            shared
                .runtime
                .spawn(deliver_lane(self.shared.clone(), session));
        }
    }
}

/// Delivers one session's events in order until its lane is empty.
async fn deliver_lane(shared: Arc<Shared>, session: String) {
    loop {
        let next = {
            let lanes = shared.lanes.lock().unwrap_or_else(|e| e.into_inner());
            lanes.get(&session).and_then(|lane| lane.front().cloned())
        };
        let Some(event) = next else { return };
        deliver(&shared, &event).await;
        let mut lanes = shared.lanes.lock().unwrap_or_else(|e| e.into_inner());
        let empty = lanes.get_mut(&session).is_none_or(|lane| {
            lane.pop_front();
            lane.is_empty()
        });
        if empty {
            lanes.remove(&session);
        }
        drop(lanes);
        if shared.pending.fetch_sub(1, Ordering::SeqCst) == 1 {
            shared.idle.notify_waiters();
        }
        if empty {
            return;
        }
    }
}

/// One event, retried until delivered or its retry time is over.
async fn deliver(shared: &Shared, event: &SessionEvent) {
    let options = &shared.options;
    let give_up_at = tokio::time::Instant::now() + options.retry_for;
    let mut backoff = options.first_backoff;
    let mut attempt = 1u32;
    loop {
        let result = {
            let _permit = shared.attempts.acquire().await;
            shared.endpoint.attempt(event).await
        };
        match result {
            Ok(()) => {
                shared.fleet.webhook(Delivery::Delivered);
                debug!(event_id = event.id(), event = %event.kind, attempt, "webhook delivered");
                return;
            }
            Err(e) if tokio::time::Instant::now() + backoff > give_up_at => {
                shared.fleet.webhook(Delivery::Failed);
                error!(event_id = event.id(), event = %event.kind, session_id = %event.data.session_id,
                    attempts = attempt, error = %e, retry_for = ?options.retry_for,
                    "webhook given up: every attempt failed");
                return;
            }
            Err(e) => {
                shared.fleet.webhook(Delivery::Retried);
                warn!(event_id = event.id(), event = %event.kind, attempt, error = %e, retry_in = ?backoff,
                    "webhook attempt failed; retrying");
                let hurry = || shared.hurry.load(Ordering::SeqCst);
                let pause = if hurry() {
                    backoff.min(HURRIED_BACKOFF)
                } else {
                    backoff
                };
                let woken = shared.woken.notified();
                tokio::pin!(woken);
                woken.as_mut().enable();
                if !hurry() {
                    tokio::select! {
                        () = tokio::time::sleep(pause) => {}
                        () = woken => {}
                    }
                } else {
                    tokio::time::sleep(pause).await;
                }
                backoff = (backoff * 2).min(options.max_backoff);
                attempt += 1;
            }
        }
    }
}
