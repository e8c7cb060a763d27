//! Prewarmed children (`--prewarm N`): N started and past their imports (`ready`), waiting
//! for a session. A start takes the oldest; a replacement starts at once (in `serve` and
//! `run`; a task hosts one session, so there it is not replaced). A child that dies while
//! idle is replaced too, after a backoff when children keep failing before they are ready.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tracing::{info, warn};

use crate::child::{AgentCommand, Child};

/// How long a prewarmed child may take to be ready; past it, it is killed (a failure).
const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// A prewarmed child that dies this soon after `ready` counts as a failure (the backoff).
const EARLY_DEATH: Duration = Duration::from_secs(10);

/// What the pool publishes: how many children wait, and why the last one failed to start.
#[derive(Debug, Clone, Default)]
struct Level {
    idle: usize,
    last_error: Option<String>,
}

struct Slots {
    /// Ready children, oldest first, with when they became ready.
    idle: VecDeque<(Child, Instant)>,
    /// Children started and not ready yet.
    starting: usize,
    /// Children that failed before `ready`, or died idle soon after it, since a child last
    /// served a session: the backoff's exponent.
    failures: u32,
}

/// The prewarmed children.
pub(crate) struct Pool {
    command: AgentCommand,
    target: usize,
    refill: bool,
    slots: Mutex<Slots>,
    level: watch::Sender<Level>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("target", &self.target)
            .field("level", &*self.level.borrow())
            .finish_non_exhaustive()
    }
}

impl Pool {
    pub(crate) fn new(command: AgentCommand, target: usize, refill: bool) -> Arc<Self> {
        Arc::new(Self {
            command,
            target,
            refill,
            slots: Mutex::new(Slots {
                idle: VecDeque::new(),
                starting: 0,
                failures: 0,
            }),
            level: watch::Sender::new(Level::default()),
        })
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, Slots> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn publish(&self, slots: &Slots, error: Option<String>) {
        let idle = slots.idle.len();
        self.level.send_modify(|l| {
            l.idle = idle;
            if error.is_some() {
                l.last_error = error;
            }
        });
    }

    /// Starts children until `target` are idle or starting.
    pub(crate) fn fill(self: &Arc<Self>) {
        let mut slots = self.slots();
        while slots.idle.len() + slots.starting < self.target {
            slots.starting += 1;
            let backoff = match slots.failures {
                0 => Duration::ZERO,
                n => Duration::from_secs(1 << n.min(5)).min(Duration::from_secs(30)),
            };
            tokio::spawn(self.clone().start_one(backoff));
        }
    }

    async fn start_one(self: Arc<Self>, backoff: Duration) {
        tokio::time::sleep(backoff).await;
        let started = match Child::spawn(&self.command) {
            Ok(child) => match tokio::time::timeout(READY_TIMEOUT, child.ready()).await {
                Ok(ready) => ready.map(|()| child),
                // Dropping it kills it.
                Err(_) => Err(anyhow::anyhow!(
                    "the agent process was not ready within {}s of its start (a prewarmed child sends ready once its imports are done)",
                    READY_TIMEOUT.as_secs()
                )),
            },
            Err(e) => Err(e),
        };
        let mut slots = self.slots();
        slots.starting -= 1;
        match started {
            Ok(child) => {
                info!(pid = child.pid(), "prewarmed agent process ready");
                let mut state = child.state();
                slots.idle.push_back((child, Instant::now()));
                self.publish(&slots, None);
                drop(slots);
                // Watch it while it waits: one that dies idle is replaced.
                let pool = Arc::downgrade(&self);
                tokio::spawn(async move {
                    let _ = state
                        .wait_for(|s| s.exit.is_some() || s.fatal.is_some())
                        .await;
                    if let Some(pool) = pool.upgrade() {
                        pool.prune();
                    }
                });
            }
            Err(e) => {
                slots.failures += 1;
                let error = format!("{e:#}");
                warn!(error = %error, failures = slots.failures, "a prewarmed agent process could not start");
                self.publish(&slots, Some(error));
                drop(slots);
                self.fill();
            }
        }
    }

    /// Drops idle children that are gone, and replaces them.
    fn prune(self: &Arc<Self>) {
        let mut slots = self.slots();
        let before = slots.idle.len();
        let mut early = 0;
        slots.idle.retain(|(child, ready_at)| {
            let alive = child.is_idle_ready();
            if !alive && ready_at.elapsed() < EARLY_DEATH {
                early += 1;
            }
            alive
        });
        // One that dies soon after `ready` is a crash loop in the making: backed off.
        slots.failures += early;
        if slots.idle.len() < before {
            warn!(
                gone = before - slots.idle.len(),
                "a prewarmed agent process ended while idle; replacing it"
            );
            self.publish(&slots, None);
            drop(slots);
            if self.refill {
                self.fill();
            }
        }
    }

    /// The oldest idle child still ready, if any; a replacement starts.
    pub(crate) fn take(self: &Arc<Self>) -> Option<Child> {
        let mut slots = self.slots();
        let mut taken = None;
        while let Some((child, _)) = slots.idle.pop_front() {
            if child.is_idle_ready() {
                taken = Some(child);
                break;
            }
        }
        self.publish(&slots, None);
        drop(slots);
        if self.refill {
            self.fill();
        }
        taken
    }

    /// A taken child took its session: the command works, the backoff starts over.
    pub(crate) fn served(&self) {
        self.slots().failures = 0;
    }

    /// Kills every idle child's process group (when the program stops: helpers they started
    /// during their imports go too).
    pub(crate) fn clear(&self) {
        let mut slots = self.slots();
        for (child, _) in slots.idle.drain(..) {
            child.kill();
        }
        self.publish(&slots, None);
    }

    /// Waits until `target` children are ready; an error as soon as one fails to start
    /// before that (a command that cannot start is a configuration error).
    pub(crate) async fn full(&self) -> anyhow::Result<()> {
        let mut rx = self.level.subscribe();
        let level = rx
            .wait_for(|l| l.idle >= self.target || l.last_error.is_some())
            .await
            .map(|l| l.clone())
            .unwrap_or_default();
        match level.last_error {
            Some(e) if level.idle < self.target => Err(anyhow::anyhow!(e)),
            _ => Ok(()),
        }
    }
}
