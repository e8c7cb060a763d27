//! The `events` function: the sessions table's stream → session events on EventBridge (and
//! on the webhook queue when webhooks are configured), with the fleet metrics they carry.
//!
//! - Input: a batch of stream records of one shard, in order (the event source mapping,
//!   `FunctionResponseTypes: ReportBatchItemFailures`, filtered to state changes).
//! - Each session change that is an event ([`Change::event`]) is published, in the batch's
//!   order: `PutEvents` on `EVENT_BUS_NAME` (source `switchboard`, detail-type
//!   `Session State Change`, the event's JSON as detail), then `SendMessageBatch` on
//!   `WEBHOOK_QUEUE_URL` (FIFO: message group = the session, deduplication id = the event id,
//!   so a retried batch within five minutes is not sent twice).
//! - The first record that cannot be published ends the batch: its sequence number is the
//!   batch item failure, so Lambda retries from it (those before it are done). The mapping
//!   retries without a limit until the record is 24 hours old (a bus or queue outage delays
//!   events, it does not drop them; the lag has an alarm); only then does the batch go to
//!   its on-failure queue, which has an alarm too.
//! - A record that does not decode (a retry cannot fix it) is set aside: logged whole as an
//!   error and counted (`EventRecordsSetAside`, alarmed); the batch goes on.
//! - Batches hold at most one event per session: SQS takes a batch's entries one by one, so
//!   a later event of the same session could otherwise be queued ahead of a refused one.
//! - The fleet metrics of each published event are written as EMF lines.
//!
//! Why the function writes the webhook queue itself rather than an EventBridge rule: a rule's
//! SQS target takes one fixed `MessageGroupId` (`AWS::Events::Rule SqsParameters`), so every
//! session would share one group: one failing receiver answer would hold back every session's
//! webhooks. docs/events.md has the details.

use std::sync::Arc;

use serde_json::{Value, json};
use switchboard_aws::dynamodb::stream::{RowChange, row_change};
use switchboard_aws::emf::{EmfFleet, Metric, Unit};
use switchboard_core::SessionRegistry;
use switchboard_core::events::{Change, ChangeObserver, EventType, SessionEvent};
use switchboard_core::metrics::AgentMetrics;
use tracing::{error, info, warn};

/// The events' `source`.
pub const SOURCE: &str = "switchboard";
/// The events' `detail-type`.
pub const DETAIL_TYPE: &str = "Session State Change";
/// At most this many entries per `PutEvents` and per `SendMessageBatch`.
const BATCH: usize = 10;

/// Where the events go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventsConfig {
    /// The sessions table (`TABLE_NAME`), for the final metrics of an end.
    pub table: String,
    /// The bus (`EVENT_BUS_NAME`, default `default`).
    pub event_bus: String,
    /// The webhook queue (`WEBHOOK_QUEUE_URL`), when webhooks are configured.
    pub webhook_queue_url: Option<String>,
}

impl EventsConfig {
    /// From `lookup` (the environment).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        Ok(Self {
            table: get("TABLE_NAME").ok_or("TABLE_NAME is not set")?,
            event_bus: get("EVENT_BUS_NAME").unwrap_or_else(|| "default".to_owned()),
            webhook_queue_url: get("WEBHOOK_QUEUE_URL"),
        })
    }
}

/// `pending` cut in order into batches of at most [`BATCH`] with at most one event per
/// session each: SQS accepts or refuses a batch's entries one by one, so a session's later
/// event in the same batch could be queued before an earlier one that was refused.
fn chunks(pending: &[Pending]) -> Vec<&[Pending]> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < pending.len() {
        let mut end = start;
        let mut sessions = std::collections::HashSet::new();
        while end < pending.len()
            && end - start < BATCH
            && sessions.insert(pending[end].change.session.id)
        {
            end += 1;
        }
        out.push(&pending[start..end]);
        start = end;
    }
    out
}

/// The relay.
#[derive(Debug)]
pub struct Relay {
    /// The registry (final metrics).
    pub registry: Arc<dyn SessionRegistry>,
    /// EventBridge.
    pub bus: aws_sdk_eventbridge::Client,
    /// SQS (the webhook queue).
    pub sqs: aws_sdk_sqs::Client,
    /// Where.
    pub config: EventsConfig,
    /// The fleet metrics.
    pub fleet: EmfFleet,
}

/// What one record is.
enum Prepared {
    /// An event to publish (boxed: the others are small).
    Event(Box<Pending>),
    /// Not an event (another item, a heartbeat).
    Skip,
    /// Not readable (a retry cannot help): logged whole and counted.
    SetAside(String),
}

/// One event to publish, with the record it comes from.
struct Pending {
    sequence_number: String,
    change: RowChange,
    metrics: Option<AgentMetrics>,
    event: SessionEvent,
}

impl Relay {
    /// Handles one batch; answers the partial batch response.
    pub async fn handle(&self, payload: Value) -> Value {
        let records = payload["Records"].as_array().cloned().unwrap_or_default();
        let mut pending = Vec::new();
        let mut failed_at = None;
        for record in &records {
            let sequence = record["dynamodb"]["SequenceNumber"]
                .as_str()
                .unwrap_or("")
                .to_owned();
            match self.prepare(record).await {
                Ok(Prepared::Event(p)) => pending.push(*p),
                Ok(Prepared::Skip) => {}
                // Retrying cannot fix a record that does not decode: keep it whole in the
                // log (30 days), count it (an alarm watches), and go on with the others.
                Ok(Prepared::SetAside(reason)) => {
                    error!(sequence_number = %sequence, reason = %reason, record = %record,
                        "a stream record is not a session change this function can read; set aside");
                    self.fleet.0.emit(
                        None,
                        &[Metric::one("EventRecordsSetAside", Unit::Count, 1.0)],
                    );
                }
                Err(e) => {
                    warn!(sequence_number = %sequence, error = %format!("{e:#}"), "a stream record could not be prepared; retried from it");
                    failed_at = Some(sequence);
                    break;
                }
            }
        }
        let (published, publish_failed) = self.publish(&pending).await;
        for p in &pending[..published] {
            let change = Change {
                before: p.change.before,
                session: &p.change.session,
                metrics: p.metrics.as_ref(),
            };
            self.fleet.changed(&change, 0);
        }
        if let Some(p) = pending.get(published).filter(|_| publish_failed) {
            failed_at = Some(p.sequence_number.clone());
        }
        info!(
            records = records.len(),
            events = pending.len(),
            published,
            failed = failed_at.is_some(),
            "events relayed"
        );
        match failed_at {
            Some(sequence) => json!({"batchItemFailures": [{"itemIdentifier": sequence}]}),
            None => json!({"batchItemFailures": []}),
        }
    }

    /// The record's event; `Err` only for what a retry may fix (the table unavailable).
    async fn prepare(&self, record: &Value) -> anyhow::Result<Prepared> {
        let change = match row_change(record) {
            Ok(Some(change)) => change,
            Ok(None) => return Ok(Prepared::Skip),
            Err(e) => return Ok(Prepared::SetAside(e.to_string())),
        };
        let kind = Change {
            before: change.before,
            session: &change.session,
            metrics: None,
        }
        .event_type();
        let Some(kind) = kind else {
            return Ok(Prepared::Skip);
        };
        // An end's final metrics were written by the same transaction as the row.
        let metrics = if kind == EventType::Ended {
            self.registry
                .get_metrics(&change.session.call_id, change.session.id)
                .await?
                .and_then(|m| m.report)
                .map(|r| r.metrics)
        } else {
            None
        };
        let event = SessionEvent::new(kind, &change.session, metrics.as_ref());
        Ok(Prepared::Event(Box::new(Pending {
            sequence_number: change.sequence_number.clone(),
            change,
            metrics,
            event,
        })))
    }

    /// Publishes `pending` in order; returns how many were published and whether one failed.
    async fn publish(&self, pending: &[Pending]) -> (usize, bool) {
        let mut done = 0;
        for chunk in chunks(pending) {
            let ok = match self.put_events(chunk).await {
                Ok(ok) => ok,
                Err(e) => {
                    warn!(error = %format!("{e:#}"), "PutEvents failed");
                    0
                }
            };
            let ok = match &self.config.webhook_queue_url {
                Some(url) => match self.enqueue(url, &chunk[..ok]).await {
                    Ok(queued) => queued,
                    Err(e) => {
                        warn!(error = %format!("{e:#}"), "SendMessageBatch failed");
                        0
                    }
                },
                None => ok,
            };
            done += ok;
            if ok < chunk.len() {
                return (done, true);
            }
        }
        (done, false)
    }

    /// `PutEvents`; returns how many entries from the first were accepted.
    async fn put_events(&self, chunk: &[Pending]) -> anyhow::Result<usize> {
        use aws_sdk_eventbridge::types::PutEventsRequestEntry;
        let entries = chunk
            .iter()
            .map(|p| {
                PutEventsRequestEntry::builder()
                    .source(SOURCE)
                    .detail_type(DETAIL_TYPE)
                    .detail(p.event.to_json())
                    .event_bus_name(&self.config.event_bus)
                    .time(aws_sdk_eventbridge::primitives::DateTime::from_millis(
                        p.event.timestamp.unix_micros() / 1000,
                    ))
                    .build()
            })
            .collect();
        let out = self
            .bus
            .put_events()
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| anyhow::Error::new(e).context("PutEvents"))?;
        let first_failed = out.entries().iter().position(|e| e.error_code().is_some());
        if let Some(i) = first_failed {
            let entry = &out.entries()[i];
            warn!(
                event_id = chunk[i].event.id(),
                code = entry.error_code(),
                message = entry.error_message(),
                "EventBridge refused an event"
            );
        }
        Ok(first_failed.unwrap_or(chunk.len()))
    }

    /// `SendMessageBatch` on the FIFO queue; returns how many from the first were queued.
    async fn enqueue(&self, url: &str, chunk: &[Pending]) -> anyhow::Result<usize> {
        use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
        if chunk.is_empty() {
            return Ok(0);
        }
        let entries = chunk
            .iter()
            .enumerate()
            .map(|(i, p)| {
                SendMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .message_body(p.event.to_json())
                    .message_group_id(&p.event.data.session_id)
                    .message_deduplication_id(p.event.id())
                    .build()
                    .map_err(|e| anyhow::Error::new(e).context("a SendMessageBatch entry"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let out = self
            .sqs
            .send_message_batch()
            .queue_url(url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| anyhow::Error::new(e).context("SendMessageBatch"))?;
        let first_failed = out
            .failed()
            .iter()
            .filter_map(|f| f.id().parse::<usize>().ok())
            .min();
        if let Some(i) = first_failed {
            warn!(
                event_id = chunk[i].event.id(),
                "SQS refused a webhook message"
            );
        }
        Ok(first_failed.unwrap_or(chunk.len()))
    }
}
