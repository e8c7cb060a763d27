//! Fleet metrics on AWS: CloudWatch's Embedded Metric Format, one standalone JSON object per
//! stdout line (CloudWatch Logs extracts the metrics from the log group; no API call, nothing
//! on the request path). A line inside a tracing record would be ignored, so these are
//! written to stdout directly, never through `tracing`.
//!
//! The namespace is `METRICS_NAMESPACE` (template.yaml sets `Switchboard/<stack>`). Each
//! metric is published without dimensions, and the labelled ones (`Reason`, `EndReason`,
//! `Outcome`) once more with theirs. docs/events.md lists the names.

use std::io::Write as _;
use std::sync::Arc;

use serde_json::{Map, Value, json};
use switchboard_core::events::{Change, ChangeObserver, EventType};
use switchboard_core::fleet::{Delivery, FleetObserver, Refusal};
use switchboard_core::lease::SweepTotals;

/// The variable naming the namespace.
pub const METRICS_NAMESPACE: &str = "METRICS_NAMESPACE";
/// The namespace without one.
pub const DEFAULT_NAMESPACE: &str = "Switchboard";

/// A metric's unit (CloudWatch's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// A count.
    Count,
    /// Milliseconds.
    Milliseconds,
    /// Seconds.
    Seconds,
    /// A percentage.
    Percent,
}

impl Unit {
    fn as_str(self) -> &'static str {
        match self {
            Self::Count => "Count",
            Self::Milliseconds => "Milliseconds",
            Self::Seconds => "Seconds",
            Self::Percent => "Percent",
        }
    }
}

/// One metric of a line: its name, unit and values (up to 100 samples).
#[derive(Debug, Clone)]
pub struct Metric {
    /// The name.
    pub name: &'static str,
    /// The unit.
    pub unit: Unit,
    /// The values.
    pub values: Vec<f64>,
}

impl Metric {
    /// A metric with one value.
    pub fn one(name: &'static str, unit: Unit, value: f64) -> Self {
        Self {
            name,
            unit,
            values: vec![value],
        }
    }
}

/// Writes EMF lines to a sink (stdout in the functions and tasks).
pub struct Emf {
    namespace: String,
    out: Arc<dyn Fn(&str) + Send + Sync>,
}

impl std::fmt::Debug for Emf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Emf")
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

impl Emf {
    /// Lines to stdout, in `METRICS_NAMESPACE` (or `Switchboard`).
    pub fn from_env() -> Self {
        let namespace = std::env::var(METRICS_NAMESPACE)
            .ok()
            .filter(|n| !n.trim().is_empty())
            .unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned());
        Self::to(namespace, |line| {
            // One write per line, so lines of concurrent tasks never interleave.
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(format!("{line}\n").as_bytes());
            let _ = out.flush();
        })
    }

    /// Lines to `out` (tests).
    pub fn to(namespace: impl Into<String>, out: impl Fn(&str) + Send + Sync + 'static) -> Self {
        Self {
            namespace: namespace.into(),
            out: Arc::new(out),
        }
    }

    /// The namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The line for `metrics`, labelled with `dimension` (a name and its value) when given.
    pub fn line(&self, dimension: Option<(&'static str, &str)>, metrics: &[Metric]) -> String {
        let mut root = Map::new();
        let mut definitions = Vec::with_capacity(metrics.len());
        for m in metrics {
            definitions.push(json!({"Name": m.name, "Unit": m.unit.as_str()}));
            let value = match m.values.as_slice() {
                [one] => json!(one),
                many => json!(many.iter().take(100).collect::<Vec<_>>()),
            };
            root.insert(m.name.to_owned(), value);
        }
        let dimensions = match dimension {
            Some((name, value)) => {
                root.insert(name.to_owned(), Value::String(value.to_owned()));
                json!([[name], []])
            }
            None => json!([[]]),
        };
        let timestamp = switchboard_core::Timestamp::now_system().unix_micros() / 1000;
        root.insert(
            "_aws".into(),
            json!({
                "Timestamp": timestamp,
                "CloudWatchMetrics": [{
                    "Namespace": self.namespace,
                    "Dimensions": dimensions,
                    "Metrics": definitions,
                }],
            }),
        );
        Value::Object(root).to_string()
    }

    /// Writes the line for `metrics` (none when `metrics` is empty).
    pub fn emit(&self, dimension: Option<(&'static str, &str)>, metrics: &[Metric]) {
        if !metrics.is_empty() {
            (self.out)(&self.line(dimension, metrics));
        }
    }
}

/// Fleet metrics written as EMF as they happen (the functions and tasks: few per invocation).
#[derive(Debug)]
pub struct EmfFleet(pub Emf);

fn ms(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

impl ChangeObserver for EmfFleet {
    fn changed(&self, change: &Change<'_>, _live: u64) {
        let session = change.session;
        match change.event_type() {
            Some(EventType::Started) => self
                .0
                .emit(None, &[Metric::one("SessionsAdmitted", Unit::Count, 1.0)]),
            Some(EventType::Running) => {
                if let Some(latency) = session.start_latency() {
                    self.0.emit(
                        None,
                        &[Metric::one("StartLatency", Unit::Milliseconds, ms(latency))],
                    );
                }
            }
            Some(EventType::Ended) => {
                let reason = session.end_reason.map_or("unknown", |r| r.as_str());
                let mut metrics = vec![Metric::one("SessionsEnded", Unit::Count, 1.0)];
                if session.end_reason == Some(switchboard_core::EndReason::StartFailed) {
                    self.0
                        .emit(None, &[Metric::one("StartFailures", Unit::Count, 1.0)]);
                }
                if let (Some(asked), Some(at)) = (session.close_requested_at, session.ended_at) {
                    self.0.emit(
                        None,
                        &[Metric::one(
                            "CloseLatency",
                            Unit::Milliseconds,
                            ms(at.saturating_since(asked)),
                        )],
                    );
                }
                if let Some(at) = session.ended_at {
                    metrics.push(Metric::one(
                        "SessionDuration",
                        Unit::Seconds,
                        at.saturating_since(session.created_at).as_secs_f64(),
                    ));
                }
                self.0.emit(Some(("EndReason", reason)), &metrics);
            }
            None => {}
        }
    }
}

impl FleetObserver for EmfFleet {
    fn refused(&self, refusal: Refusal) {
        self.0.emit(
            Some(("Reason", refusal.as_str())),
            &[Metric::one("SessionsRefused", Unit::Count, 1.0)],
        );
    }

    fn swept(&self, totals: &SweepTotals) {
        for (reason, n) in [
            ("lease_expired", totals.lease_expired),
            ("start_failed", totals.start_failed),
        ] {
            if n > 0 {
                self.0.emit(
                    Some(("Reason", reason)),
                    &[Metric::one("SweepReclaimed", Unit::Count, f64::from(n))],
                );
            }
        }
    }

    fn heartbeat_failed(&self) {
        self.0
            .emit(None, &[Metric::one("HeartbeatFailures", Unit::Count, 1.0)]);
    }

    fn webhook(&self, delivery: Delivery) {
        let outcome = match delivery {
            Delivery::Delivered => "delivered",
            Delivery::Retried => "retried",
            Delivery::Failed => "failed",
            Delivery::Dropped => "dropped",
        };
        self.0.emit(
            Some(("Outcome", outcome)),
            &[Metric::one("WebhookDeliveries", Unit::Count, 1.0)],
        );
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    #[test]
    fn a_line_declares_its_metrics_and_carries_their_values() {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        let emf = Emf::to("Switchboard/test", move |l| {
            sink.lock().unwrap().push(l.to_owned())
        });
        emf.emit(
            Some(("EndReason", "idle")),
            &[
                Metric::one("SessionsEnded", Unit::Count, 1.0),
                Metric {
                    name: "StartLatency",
                    unit: Unit::Milliseconds,
                    values: vec![1.5, 2.0],
                },
            ],
        );
        emf.emit(None, &[]);
        let lines = lines.lock().unwrap();
        assert_eq!(lines.len(), 1);
        let v: Value = serde_json::from_str(&lines[0]).unwrap();
        assert_eq!(v["EndReason"], "idle");
        assert_eq!(v["SessionsEnded"], 1.0);
        assert_eq!(v["StartLatency"], json!([1.5, 2.0]));
        let directive = &v["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(directive["Namespace"], "Switchboard/test");
        assert_eq!(directive["Dimensions"], json!([["EndReason"], []]));
        assert_eq!(
            directive["Metrics"][1],
            json!({"Name": "StartLatency", "Unit": "Milliseconds"})
        );
        assert!(v["_aws"]["Timestamp"].as_i64().unwrap() > 1_700_000_000_000);
    }
}
