//! Fleet metrics: what an operator watches across sessions (live sessions by status,
//! admissions, refusals, failed starts, ends by reason, start and close latency, reclaims,
//! heartbeat failures, webhook deliveries, time at the concurrency limit).
//!
//! [`FleetObserver`] is where the runtime reports what happened; each mode has its sink:
//! [`FleetMetrics`] (counters in memory, rendered for `GET /metrics` in the Prometheus text
//! format) under `serve`, CloudWatch's Embedded Metric Format on AWS. Registry writes reach a
//! sink as [`Change`]s ([`crate::events::ChangeObserver`]); the rest through the methods here.
//!
//! The text format is written here rather than with a client library: it is a few lines per
//! family, core has no such dependency, and the test command checks the output with
//! `promtool check metrics`.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use crate::events::{Change, ChangeObserver, EventType, SessionEvent};
use crate::lease::SweepTotals;
use crate::{Clock, EndReason, SessionStatus, Timestamp};

/// Why a start was refused, as the API answered it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// 429: `max_concurrent_sessions` reached.
    GlobalLimit,
    /// 429: `max_sessions_per_call` reached.
    PerCallLimit,
    /// 503: not ready, draining, out of capacity or past the start's deadline.
    Unavailable,
}

impl Refusal {
    /// Every refusal.
    pub const ALL: [Refusal; 3] = [Self::GlobalLimit, Self::PerCallLimit, Self::Unavailable];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::GlobalLimit => "global_limit",
            Self::PerCallLimit => "per_call_limit",
            Self::Unavailable => "unavailable",
        }
    }
}

/// What happened to one webhook delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// The receiver answered 2xx.
    Delivered,
    /// An attempt failed and will be retried.
    Retried,
    /// Given up: every attempt failed within the retry time.
    Failed,
    /// Not queued: the queue was full.
    Dropped,
}

/// Where the runtime reports what fleet metrics count. Every method has a default that does
/// nothing; none may block.
pub trait FleetObserver: ChangeObserver {
    /// A start was refused.
    fn refused(&self, _refusal: Refusal) {}
    /// A lease sweep finished.
    fn swept(&self, _totals: &SweepTotals) {}
    /// A heartbeat failed (it is retried).
    fn heartbeat_failed(&self) {}
    /// A webhook delivery's outcome.
    fn webhook(&self, _delivery: Delivery) {}
}

/// Observes nothing.
#[derive(Debug, Default)]
pub struct NoFleet;

impl ChangeObserver for NoFleet {
    fn changed(&self, _change: &Change<'_>, _live: u64) {}
}

impl FleetObserver for NoFleet {}

/// Where events go once made (a webhook queue). Must not block.
#[async_trait::async_trait]
pub trait EventSink: Send + Sync + std::fmt::Debug {
    /// One event, in the order of the writes.
    fn publish(&self, event: SessionEvent);

    /// Waits until what was published is delivered or given up, or `within` has passed;
    /// returns how many events are left (at a shutdown, so that the last ends go out).
    async fn drain(&self, _within: Duration) -> usize {
        0
    }
}

/// Upper bounds of the latency histograms, in seconds.
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// A histogram with [`LATENCY_BUCKETS`].
#[derive(Debug, Default)]
struct Histogram {
    /// Observations at or below each bound (not cumulative; summed when rendered).
    buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    fn observe(&self, d: Duration) {
        let seconds = d.as_secs_f64();
        if let Some(i) = LATENCY_BUCKETS.iter().position(|&b| seconds <= b) {
            self.buckets[i].fetch_add(1, Relaxed);
        }
        self.count.fetch_add(1, Relaxed);
        let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(micros, Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        family(out, name, "histogram", help);
        let mut cumulative = 0;
        for (bound, bucket) in LATENCY_BUCKETS.iter().zip(&self.buckets) {
            cumulative += bucket.load(Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        // A scrape racing an observation may see its bucket before its count: keep the
        // buckets monotonic.
        let count = self.count.load(Relaxed).max(cumulative);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let sum = self.sum_micros.load(Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}");
        let _ = writeln!(out, "{name}_count {count}");
    }
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

const LIVE: [SessionStatus; 3] = [
    SessionStatus::Starting,
    SessionStatus::Running,
    SessionStatus::Closing,
];

fn live_index(status: SessionStatus) -> Option<usize> {
    LIVE.iter().position(|s| *s == status)
}

/// The fleet's figures in memory, for `GET /metrics`.
#[derive(Debug)]
pub struct FleetMetrics {
    clock: Arc<dyn Clock>,
    /// `max_concurrent_sessions`, for the saturation counter.
    limit: Option<u32>,
    live: [AtomicU64; 3],
    admitted: AtomicU64,
    refused: [AtomicU64; 3],
    ended: [AtomicU64; EndReason::ALL.len()],
    start_latency: Histogram,
    close_latency: Histogram,
    reclaimed_lease_expired: AtomicU64,
    reclaimed_start_failed: AtomicU64,
    sweep_failures: AtomicU64,
    heartbeat_failures: AtomicU64,
    webhooks: [AtomicU64; 4],
    /// Time at the limit before the current stretch, in microseconds.
    saturated_micros: AtomicU64,
    /// Since when the live count has been at the limit.
    saturated_since: Mutex<Option<Timestamp>>,
    /// The largest value rendered so far (the counter never goes down).
    saturated_shown: AtomicU64,
    events: OnceLock<Arc<dyn EventSink>>,
}

impl FleetMetrics {
    /// Empty figures; `limit` is `max_concurrent_sessions` (time at it is counted).
    pub fn new(clock: Arc<dyn Clock>, limit: Option<u32>) -> Self {
        Self {
            clock,
            limit,
            live: Default::default(),
            admitted: AtomicU64::new(0),
            refused: Default::default(),
            ended: Default::default(),
            start_latency: Histogram::default(),
            close_latency: Histogram::default(),
            reclaimed_lease_expired: AtomicU64::new(0),
            reclaimed_start_failed: AtomicU64::new(0),
            sweep_failures: AtomicU64::new(0),
            heartbeat_failures: AtomicU64::new(0),
            webhooks: Default::default(),
            saturated_micros: AtomicU64::new(0),
            saturated_since: Mutex::new(None),
            saturated_shown: AtomicU64::new(0),
            events: OnceLock::new(),
        }
    }

    /// Sends every session event to `sink` from now on (once; a second sink is refused).
    pub fn publish_events_to(&self, sink: Arc<dyn EventSink>) -> Result<(), Arc<dyn EventSink>> {
        self.events.set(sink)
    }

    /// Waits for the event sink to deliver what it has, for at most `within`; returns how
    /// many events are left undelivered (none without a sink).
    pub async fn drain_events(&self, within: Duration) -> usize {
        match self.events.get() {
            Some(sink) => sink.drain(within).await,
            None => 0,
        }
    }

    /// Live sessions with `status`.
    pub fn live(&self, status: SessionStatus) -> u64 {
        live_index(status).map_or(0, |i| self.live[i].load(Relaxed))
    }

    /// Sessions ended with `reason`.
    pub fn ended(&self, reason: EndReason) -> u64 {
        let i = EndReason::ALL.iter().position(|r| *r == reason);
        i.map_or(0, |i| self.ended[i].load(Relaxed))
    }

    /// Webhook deliveries with `outcome`.
    pub fn webhooks(&self, outcome: Delivery) -> u64 {
        self.webhooks[outcome as usize].load(Relaxed)
    }

    /// Time spent with the live count at the concurrency limit, the current stretch included.
    /// Never less than an earlier answer (a counter): read under the stretch's lock, and held
    /// up if the clock steps back.
    pub fn saturated(&self) -> Duration {
        let since = self
            .saturated_since
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let before = self.saturated_micros.load(Relaxed);
        let current = since.map_or(0, |at| {
            u64::try_from(self.clock.now().saturating_since(at).as_micros()).unwrap_or(0)
        });
        drop(since);
        let total = before + current;
        let shown = self.saturated_shown.fetch_max(total, Relaxed).max(total);
        Duration::from_micros(shown)
    }

    fn saturation(&self, live: u64) {
        let Some(limit) = self.limit else { return };
        let mut since = self
            .saturated_since
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let now = self.clock.now();
        match (*since, live >= u64::from(limit)) {
            (None, true) => *since = Some(now),
            (Some(at), false) => {
                let micros = u64::try_from(now.saturating_since(at).as_micros()).unwrap_or(0);
                self.saturated_micros.fetch_add(micros, Relaxed);
                *since = None;
            }
            _ => {}
        }
    }

    /// The figures in the Prometheus text format (version 0.0.4).
    pub fn render_prometheus(&self) -> String {
        let mut out = String::with_capacity(4096);
        family(
            &mut out,
            "switchboard_sessions",
            "gauge",
            "Live sessions on this node's registry, by status.",
        );
        for status in LIVE {
            let _ = writeln!(
                out,
                "switchboard_sessions{{status=\"{status}\"}} {}",
                self.live(status)
            );
        }
        let counter = |out: &mut String, name: &str, help: &str, value: u64| {
            family(out, name, "counter", help);
            let _ = writeln!(out, "{name} {value}");
        };
        counter(
            &mut out,
            "switchboard_sessions_admitted_total",
            "Sessions admitted.",
            self.admitted.load(Relaxed),
        );
        family(
            &mut out,
            "switchboard_sessions_refused_total",
            "counter",
            "Starts refused: 429 at either limit, 503 when unavailable.",
        );
        for (refusal, n) in Refusal::ALL.iter().zip(&self.refused) {
            let _ = writeln!(
                out,
                "switchboard_sessions_refused_total{{reason=\"{}\"}} {}",
                refusal.as_str(),
                n.load(Relaxed)
            );
        }
        counter(
            &mut out,
            "switchboard_sessions_start_failed_total",
            "Sessions ended start_failed (the agent could not be created, launched or join).",
            self.ended(EndReason::StartFailed),
        );
        family(
            &mut out,
            "switchboard_sessions_ended_total",
            "counter",
            "Sessions ended, by end reason.",
        );
        for (reason, n) in EndReason::ALL.iter().zip(&self.ended) {
            let _ = writeln!(
                out,
                "switchboard_sessions_ended_total{{reason=\"{reason}\"}} {}",
                n.load(Relaxed)
            );
        }
        self.start_latency.render(
            &mut out,
            "switchboard_session_start_seconds",
            "Admission to the agent joined its call.",
        );
        self.close_latency.render(
            &mut out,
            "switchboard_session_close_seconds",
            "Close requested to the session ended.",
        );
        family(
            &mut out,
            "switchboard_sweep_reclaimed_total",
            "counter",
            "Sessions a lease sweep ended, by end reason.",
        );
        for (reason, n) in [
            ("lease_expired", &self.reclaimed_lease_expired),
            ("start_failed", &self.reclaimed_start_failed),
        ] {
            let _ = writeln!(
                out,
                "switchboard_sweep_reclaimed_total{{reason=\"{reason}\"}} {}",
                n.load(Relaxed)
            );
        }
        counter(
            &mut out,
            "switchboard_sweep_failures_total",
            "Expired rows a sweep could not end (found again by the next one).",
            self.sweep_failures.load(Relaxed),
        );
        counter(
            &mut out,
            "switchboard_heartbeat_failures_total",
            "Heartbeats that failed (and were retried).",
            self.heartbeat_failures.load(Relaxed),
        );
        family(
            &mut out,
            "switchboard_webhook_deliveries_total",
            "counter",
            "Webhook deliveries, by outcome (delivered; retried: one failed attempt; failed: given up; dropped: the queue was full).",
        );
        for (outcome, name) in [
            (Delivery::Delivered, "delivered"),
            (Delivery::Retried, "retried"),
            (Delivery::Failed, "failed"),
            (Delivery::Dropped, "dropped"),
        ] {
            let _ = writeln!(
                out,
                "switchboard_webhook_deliveries_total{{outcome=\"{name}\"}} {}",
                self.webhooks(outcome)
            );
        }
        family(
            &mut out,
            "switchboard_saturated_seconds_total",
            "counter",
            "Time the live sessions were at max_concurrent_sessions.",
        );
        let _ = writeln!(
            out,
            "switchboard_saturated_seconds_total {}",
            self.saturated().as_secs_f64()
        );
        if let Some(limit) = self.limit {
            family(
                &mut out,
                "switchboard_max_concurrent_sessions",
                "gauge",
                "The concurrency limit (max_concurrent_sessions).",
            );
            let _ = writeln!(out, "switchboard_max_concurrent_sessions {limit}");
        }
        out
    }
}

impl ChangeObserver for FleetMetrics {
    fn changed(&self, change: &Change<'_>, live: u64) {
        let after = change.session.status;
        if let Some(i) = change.before.and_then(live_index) {
            // Never below zero: a gauge that saw the row's admission saw it go up.
            let _ = self.live[i].fetch_update(Relaxed, Relaxed, |n| n.checked_sub(1));
        }
        if let Some(i) = live_index(after) {
            self.live[i].fetch_add(1, Relaxed);
        }
        self.saturation(live);
        let Some(kind) = change.event_type() else {
            return;
        };
        match kind {
            EventType::Started => {
                self.admitted.fetch_add(1, Relaxed);
            }
            EventType::Running => {
                if let Some(latency) = change.session.start_latency() {
                    self.start_latency.observe(latency);
                }
            }
            EventType::Ended => {
                let session = change.session;
                if let Some(i) = session
                    .end_reason
                    .and_then(|r| EndReason::ALL.iter().position(|x| *x == r))
                {
                    self.ended[i].fetch_add(1, Relaxed);
                }
                if let (Some(asked), Some(at)) = (session.close_requested_at, session.ended_at) {
                    self.close_latency.observe(at.saturating_since(asked));
                }
            }
        }
        if let Some(sink) = self.events.get() {
            sink.publish(SessionEvent::new(kind, change.session, change.metrics));
        }
    }
}

impl FleetObserver for FleetMetrics {
    fn refused(&self, refusal: Refusal) {
        self.refused[refusal as usize].fetch_add(1, Relaxed);
    }

    fn swept(&self, totals: &SweepTotals) {
        self.reclaimed_lease_expired
            .fetch_add(u64::from(totals.lease_expired), Relaxed);
        self.reclaimed_start_failed
            .fetch_add(u64::from(totals.start_failed), Relaxed);
        self.sweep_failures
            .fetch_add(u64::from(totals.failed), Relaxed);
    }

    fn heartbeat_failed(&self) {
        self.heartbeat_failures.fetch_add(1, Relaxed);
    }

    fn webhook(&self, delivery: Delivery) {
        self.webhooks[delivery as usize].fetch_add(1, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ManualClock;

    #[test]
    fn saturation_counts_the_time_at_the_limit() {
        let clock = Arc::new(ManualClock::new(Timestamp::from_unix_micros(0)));
        let fleet = FleetMetrics::new(clock.clone(), Some(2));
        fleet.saturation(1);
        clock.advance(Duration::from_secs(3));
        fleet.saturation(2);
        clock.advance(Duration::from_secs(5));
        assert_eq!(fleet.saturated(), Duration::from_secs(5));
        fleet.saturation(1);
        clock.advance(Duration::from_secs(7));
        assert_eq!(fleet.saturated(), Duration::from_secs(5));
        assert!(
            fleet
                .render_prometheus()
                .contains("switchboard_saturated_seconds_total 5\n")
        );
    }

    #[test]
    fn histograms_are_cumulative() {
        let h = Histogram::default();
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_millis(300));
        h.observe(Duration::from_secs(60));
        let mut out = String::new();
        h.render(&mut out, "x_seconds", "X.");
        assert!(out.contains("x_seconds_bucket{le=\"0.005\"} 1\n"), "{out}");
        assert!(out.contains("x_seconds_bucket{le=\"0.5\"} 2\n"), "{out}");
        assert!(out.contains("x_seconds_bucket{le=\"30\"} 2\n"), "{out}");
        assert!(out.contains("x_seconds_bucket{le=\"+Inf\"} 3\n"), "{out}");
        assert!(out.contains("x_seconds_count 3\n"), "{out}");
        assert!(out.contains("x_seconds_sum 60.303\n"), "{out}");
    }
}
