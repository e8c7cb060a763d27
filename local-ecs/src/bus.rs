//! ECS events on their way to the reaper, as EventBridge hands them over: at least once, in
//! no promised order, retried while the target fails. The fault knobs make that visible:
//! drop, duplicate, reorder, delay and hold events, and replay one already delivered.

use std::fmt::Debug;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::Value;

use crate::lock;

/// Where events go: the `reaper` function (or a test's stand-in).
#[async_trait]
pub trait EventSink: Send + Sync + Debug {
    /// Hands over one event; an error means it was not handled, and it is retried.
    async fn deliver(&self, event: &Value) -> Result<(), String>;
}

/// The Lambda Invoke API (`POST /2015-03-31/functions/{name}/invocations`), as
/// `cargo lambda watch` serves it for every function binary.
#[derive(Debug, Clone)]
pub struct InvokeSink {
    url: String,
    client: hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        Full<Bytes>,
    >,
}

impl InvokeSink {
    /// `base` is the emulator's address (`http://127.0.0.1:9000`), `function` the name.
    pub fn new(base: &str, function: &str) -> Self {
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http();
        Self {
            url: format!(
                "{}/2015-03-31/functions/{function}/invocations",
                base.trim_end_matches('/')
            ),
            client,
        }
    }
}

#[async_trait]
impl EventSink for InvokeSink {
    async fn deliver(&self, event: &Value) -> Result<(), String> {
        let request = http::Request::post(&self.url)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(event.to_string())))
            .map_err(|e| e.to_string())?;
        // The reaper's timeout in the template is 60 s; a hung invocation is a failed one.
        let response = tokio::time::timeout(Duration::from_secs(70), self.client.request(request))
            .await
            .map_err(|_| format!("{}: no answer within 70 s", self.url))?
            .map_err(|e| format!("{}: {e}", self.url))?;
        let status = response.status();
        let failed = response.headers().contains_key("x-amz-function-error");
        let body = response
            .into_body()
            .collect()
            .await
            .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
            .unwrap_or_default();
        if !status.is_success() || failed {
            return Err(format!("{}: {status} {body}", self.url));
        }
        tracing::debug!(response = %body, "event handled");
        Ok(())
    }
}

/// The faults the bus injects (all off by default).
#[derive(Debug, Clone, Copy)]
pub struct Faults {
    /// The chance (0.0–1.0) that an event is never delivered.
    pub drop: f64,
    /// Each event is delivered between 1 and this many times.
    pub max_copies: usize,
    /// Pending events go in random order instead of as they came.
    pub reorder: bool,
    /// Each event waits at least this long before its first delivery.
    pub delay: Duration,
    /// Seeds every choice above.
    pub seed: u64,
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            drop: 0.0,
            max_copies: 1,
            reorder: false,
            delay: Duration::ZERO,
            seed: 0,
        }
    }
}

/// Counts of what the bus did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BusStats {
    pub published: u64,
    pub dropped: u64,
    pub delivered: u64,
    pub failed_deliveries: u64,
}

#[derive(Debug)]
pub(crate) struct Bus {
    faults: Faults,
    pending: Mutex<Vec<(Instant, Value)>>,
    delivered: Mutex<Vec<Value>>,
    rng: Mutex<fastrand::Rng>,
    held: AtomicBool,
    /// Taken from `pending`, not yet handled.
    in_flight: std::sync::atomic::AtomicUsize,
    stats: Mutex<BusStats>,
}

impl Bus {
    pub(crate) fn new(faults: Faults) -> Self {
        Self {
            faults,
            pending: Mutex::default(),
            delivered: Mutex::default(),
            rng: Mutex::new(fastrand::Rng::with_seed(faults.seed)),
            held: AtomicBool::new(false),
            in_flight: std::sync::atomic::AtomicUsize::new(0),
            stats: Mutex::default(),
        }
    }

    pub(crate) fn publish(&self, event: Value) {
        let (dropped, copies) = {
            let mut rng = lock(&self.rng);
            let dropped = self.faults.drop > 0.0 && rng.f64() < self.faults.drop;
            (dropped, 1 + rng.usize(0..self.faults.max_copies.max(1)))
        };
        let mut stats = lock(&self.stats);
        stats.published += 1;
        if dropped {
            stats.dropped += 1;
            return;
        }
        let ready = Instant::now() + self.faults.delay;
        let mut pending = lock(&self.pending);
        for _ in 0..copies {
            pending.push((ready, event.clone()));
        }
    }

    /// Delivers every pending event that is due, one at a time; a failed one stays pending.
    pub(crate) async fn deliver_due(&self, sink: &dyn EventSink) {
        loop {
            if self.held.load(Ordering::SeqCst) {
                return;
            }
            let event = {
                let mut pending = lock(&self.pending);
                let now = Instant::now();
                let due: Vec<usize> = (0..pending.len())
                    .filter(|i| pending[*i].0 <= now)
                    .collect();
                if due.is_empty() {
                    return;
                }
                let pick = if self.faults.reorder {
                    due[lock(&self.rng).usize(0..due.len())]
                } else {
                    due[0]
                };
                self.in_flight.fetch_add(1, Ordering::SeqCst);
                pending.remove(pick).1
            };
            let delivered = sink.deliver(&event).await;
            let _in_flight = InFlight(&self.in_flight);
            match delivered {
                Ok(()) => {
                    lock(&self.stats).delivered += 1;
                    lock(&self.delivered).push(event);
                }
                Err(error) => {
                    tracing::warn!(%error, "event delivery failed; retrying");
                    lock(&self.stats).failed_deliveries += 1;
                    // EventBridge retries with backoff; a second here.
                    lock(&self.pending).push((Instant::now() + Duration::from_secs(1), event));
                    return;
                }
            }
        }
    }

    pub(crate) fn hold(&self, held: bool) {
        self.held.store(held, Ordering::SeqCst);
    }

    pub(crate) fn is_held(&self) -> bool {
        self.held.load(Ordering::SeqCst)
    }

    /// Events not yet handled: waiting, or being delivered now.
    pub(crate) fn pending(&self) -> usize {
        let pending = lock(&self.pending);
        pending.len() + self.in_flight.load(Ordering::SeqCst)
    }

    pub(crate) fn replay_random(&self, rng: &mut fastrand::Rng) -> bool {
        let old = {
            let delivered = lock(&self.delivered);
            if delivered.is_empty() {
                return false;
            }
            delivered[rng.usize(0..delivered.len())].clone()
        };
        lock(&self.pending).push((Instant::now(), old));
        true
    }

    pub(crate) fn stats(&self) -> BusStats {
        *lock(&self.stats)
    }
}

/// Counts one delivery done when dropped (after a failed one is back in `pending`).
struct InFlight<'a>(&'a std::sync::atomic::AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A sink that keeps nothing: events are logged only (no reaper to hand them to).
#[derive(Debug, Clone, Copy, Default)]
pub struct LogSink;

#[async_trait]
impl EventSink for LogSink {
    async fn deliver(&self, event: &Value) -> Result<(), String> {
        tracing::info!(event = %event, "event (no reaper to hand it to)");
        Ok(())
    }
}

/// Shares a sink.
pub type SharedSink = Arc<dyn EventSink>;

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default)]
    struct Recorder {
        got: Mutex<Vec<u64>>,
        fail_first: AtomicBool,
    }

    #[async_trait]
    impl EventSink for Recorder {
        async fn deliver(&self, event: &Value) -> Result<(), String> {
            if self.fail_first.swap(false, Ordering::SeqCst) {
                return Err("the target is down".into());
            }
            lock(&self.got).push(event["n"].as_u64().unwrap());
            Ok(())
        }
    }

    fn publish(bus: &Bus, n: u64) {
        for i in 0..n {
            bus.publish(serde_json::json!({ "n": i }));
        }
    }

    #[tokio::test]
    async fn without_faults_every_event_goes_once_in_order() {
        let bus = Bus::new(Faults::default());
        let sink = Recorder::default();
        publish(&bus, 5);
        bus.deliver_due(&sink).await;
        assert_eq!(*lock(&sink.got), vec![0, 1, 2, 3, 4]);
        assert_eq!(bus.stats().delivered, 5);
    }

    #[tokio::test]
    async fn dropped_events_never_arrive_and_are_counted() {
        let bus = Bus::new(Faults {
            drop: 1.0,
            ..Faults::default()
        });
        let sink = Recorder::default();
        publish(&bus, 5);
        bus.deliver_due(&sink).await;
        assert!(lock(&sink.got).is_empty());
        assert_eq!((bus.stats().published, bus.stats().dropped), (5, 5));
    }

    #[tokio::test]
    async fn duplicates_and_reordering_keep_every_event_at_least_once() {
        let bus = Bus::new(Faults {
            max_copies: 3,
            reorder: true,
            seed: 7,
            ..Faults::default()
        });
        let sink = Recorder::default();
        publish(&bus, 20);
        bus.deliver_due(&sink).await;
        let got = lock(&sink.got).clone();
        for i in 0..20 {
            let copies = got.iter().filter(|n| **n == i).count();
            assert!((1..=3).contains(&copies), "event {i} came {copies} times");
        }
        assert!(got.len() > 20, "some came more than once: {got:?}");
        assert!(
            got.windows(2).any(|w| w[0] > w[1]),
            "some came out of order: {got:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_delayed_event_waits_and_a_held_bus_delivers_nothing() {
        let bus = Bus::new(Faults {
            delay: Duration::from_secs(2),
            ..Faults::default()
        });
        let sink = Recorder::default();
        publish(&bus, 1);
        bus.deliver_due(&sink).await;
        assert!(lock(&sink.got).is_empty(), "not yet due");
        bus.hold(true);
        tokio::time::advance(Duration::from_secs(3)).await;
        bus.deliver_due(&sink).await;
        assert!(lock(&sink.got).is_empty(), "held");
        bus.hold(false);
        bus.deliver_due(&sink).await;
        assert_eq!(*lock(&sink.got), vec![0]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_delivery_is_retried_and_a_replay_comes_again() {
        let bus = Bus::new(Faults::default());
        let sink = Recorder {
            fail_first: AtomicBool::new(true),
            ..Recorder::default()
        };
        publish(&bus, 1);
        bus.deliver_due(&sink).await;
        assert_eq!((bus.pending(), bus.stats().failed_deliveries), (1, 1));
        tokio::time::advance(Duration::from_secs(1)).await;
        bus.deliver_due(&sink).await;
        assert_eq!(*lock(&sink.got), vec![0]);
        assert!(bus.replay_random(&mut fastrand::Rng::with_seed(1)));
        bus.deliver_due(&sink).await;
        assert_eq!(*lock(&sink.got), vec![0, 0]);
    }
}
