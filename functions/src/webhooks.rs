//! The `webhooks` function: the webhook FIFO queue → the receiver, one signed attempt per
//! message (Standard Webhooks, [`switchboard_webhooks::Endpoint`]).
//!
//! - Input: an SQS batch (`FunctionResponseTypes: ReportBatchItemFailures`), in order per
//!   message group (a session).
//! - A message that fails (no answer, not 2xx) and every later message of its group (its
//!   session) in the batch are batch item failures, so a session's later events never
//!   overtake it; other sessions' messages are still delivered. SQS makes the failed ones
//!   visible again after the visibility timeout (the retry's backoff), and after
//!   `maxReceiveCount` receives moves a message to the dead-letter queue, which has an alarm.
//! - A message that is not an event is logged and dropped (it would fail forever).
//! - With less than an attempt's timeout (10 s) and 2 s left of the invocation, the rest are
//!   reported failed unattempted, so a batch never outlives the function's timeout.

use std::time::{Duration, SystemTime};

use serde_json::{Value, json};
use switchboard_aws::emf::EmfFleet;
use switchboard_core::fleet::{Delivery, FleetObserver};
use switchboard_webhooks::Endpoint;
use switchboard_webhooks::endpoint::ATTEMPT_TIMEOUT;
use tracing::{error, info, warn};

/// The secret's name or ARN in Secrets Manager (`WebhookSecretArn`).
pub const WEBHOOK_SECRET_ARN: &str = "WEBHOOK_SECRET_ARN";
/// The receiver's URL (`WebhookUrl`).
pub const WEBHOOK_URL: &str = "WEBHOOK_URL";

/// The delivery function's state.
#[derive(Debug)]
pub struct Deliverer {
    /// The receiver.
    pub endpoint: Endpoint,
    /// The fleet metrics.
    pub fleet: EmfFleet,
}

impl Deliverer {
    /// Handles one SQS batch within the invocation's `deadline`; answers the partial batch
    /// response. A deadline already past is no real one (`cargo lambda watch` sends 1970).
    pub async fn handle(&self, payload: Value, deadline: SystemTime) -> Value {
        let records = payload["Records"].as_array().cloned().unwrap_or_default();
        let real_deadline = deadline > SystemTime::now();
        let mut failures = Vec::new();
        let mut failed_groups = std::collections::HashSet::new();
        let mut delivered = 0;
        for record in &records {
            let message_id = record["messageId"].as_str().unwrap_or("").to_owned();
            // A session's messages share a group; without one (not FIFO) all are one group.
            let group = record["attributes"]["MessageGroupId"]
                .as_str()
                .unwrap_or("")
                .to_owned();
            // Not enough time for another full attempt: SQS hands it over again.
            let short = real_deadline
                && deadline
                    .duration_since(SystemTime::now())
                    .unwrap_or_default()
                    < ATTEMPT_TIMEOUT + Duration::from_secs(2);
            if failed_groups.contains(&group) || short {
                failures.push(json!({"itemIdentifier": message_id}));
                failed_groups.insert(group);
                continue;
            }
            let body = record["body"].as_str().unwrap_or("");
            let Some(id) = serde_json::from_str::<Value>(body)
                .ok()
                .and_then(|v| v["data"]["event_id"].as_str().map(str::to_owned))
            else {
                error!(%message_id, "a queued message is not a session event; dropped");
                continue;
            };
            match self.endpoint.attempt_raw(&id, body.to_owned()).await {
                Ok(()) => {
                    delivered += 1;
                    self.fleet.webhook(Delivery::Delivered);
                }
                Err(e) => {
                    let receives = record["attributes"]["ApproximateReceiveCount"]
                        .as_str()
                        .unwrap_or("?");
                    warn!(event_id = %id, %message_id, receives, error = %e, "webhook attempt failed; SQS retries it");
                    self.fleet.webhook(Delivery::Retried);
                    failures.push(json!({"itemIdentifier": message_id}));
                    failed_groups.insert(group);
                }
            }
        }
        info!(
            messages = records.len(),
            delivered,
            failed = failures.len(),
            "webhooks delivered"
        );
        json!({"batchItemFailures": failures})
    }
}
