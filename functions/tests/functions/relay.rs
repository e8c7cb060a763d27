//! The `events` function's relay and the `webhooks` function's deliverer on error paths the
//! emulator cannot produce (EventBridge refusing one entry of a batch) and against a real
//! receiver; the happy path end to end is the local stack's system test.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use aws_smithy_mocks::{RuleMode, mock, mock_client};
use serde_json::{Value, json};
use switchboard_aws::emf::{Emf, EmfFleet};
use switchboard_core::{MemoryRegistry, SystemClock};
use switchboard_functions::events::{EventsConfig, Relay};
use switchboard_functions::webhooks::Deliverer;

/// A stream record of a session row as Lambda delivers it.
fn record(seq: u64, session: &str, before: Option<&str>, after: &str) -> Value {
    let image = |status: &str| {
        json!({
            "PK": {"S": "CALL#call-1"}, "SK": {"S": format!("SESSION#{session}")},
            "session_id": {"S": session}, "call_id": {"S": "call-1"}, "call_type": {"S": "default"},
            "status": {"S": status}, "created_at": {"N": "1767225600000000"},
            "lease_expires_at": {"N": "1767225630000000"},
            "running_at": {"N": "1767225600500000"},
            "counted_global": {"BOOL": true}, "counted_call": {"BOOL": true}
        })
    };
    let mut change = json!({
        "Keys": {"PK": {"S": "CALL#call-1"}, "SK": {"S": format!("SESSION#{session}")}},
        "NewImage": image(after),
        "SequenceNumber": seq.to_string(),
    });
    if let Some(before) = before {
        change["OldImage"] = image(before);
    }
    json!({"eventName": if before.is_some() { "MODIFY" } else { "INSERT" }, "dynamodb": change})
}

fn emf() -> (EmfFleet, Arc<Mutex<Vec<String>>>) {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = lines.clone();
    (
        EmfFleet(Emf::to("Switchboard/test", move |l| {
            sink.lock().unwrap().push(l.to_owned())
        })),
        lines,
    )
}

/// A relay to `bus` alone (no webhook queue).
fn bus_only(bus: aws_sdk_eventbridge::Client, fleet: EmfFleet) -> Relay {
    Relay {
        registry: Arc::new(MemoryRegistry::new(Arc::new(SystemClock))),
        bus,
        sqs: mock_client!(aws_sdk_sqs, RuleMode::Sequential, []),
        config: EventsConfig {
            table: "t".into(),
            event_bus: "default".into(),
            webhook_queue_url: None,
        },
        fleet,
    }
}

const A: &str = "01a23300-0000-7000-8000-000000000001";
const B: &str = "01a23300-0000-7000-8000-000000000002";

#[tokio::test]
async fn the_relay_stops_at_the_first_event_eventbridge_refuses_and_names_its_record() {
    use aws_sdk_eventbridge::operation::put_events::PutEventsOutput;
    use aws_sdk_eventbridge::types::PutEventsResultEntry;
    use aws_sdk_sqs::operation::send_message_batch::SendMessageBatchOutput;

    let sizes = Arc::new(Mutex::new(Vec::new()));
    let sized = sizes.clone();
    let put = mock!(aws_sdk_eventbridge::Client::put_events)
        .match_requests(move |r| {
            sized.lock().unwrap().push(r.entries().len());
            true
        })
        .then_output(|| {
            PutEventsOutput::builder()
                .failed_entry_count(1)
                .entries(PutEventsResultEntry::builder().event_id("e1").build())
                .entries(
                    PutEventsResultEntry::builder()
                        .error_code("ThrottlingException")
                        .error_message("slow down")
                        .build(),
                )
                .build()
        });
    let queued = Arc::new(Mutex::new(Vec::new()));
    let seen = queued.clone();
    let send = mock!(aws_sdk_sqs::Client::send_message_batch)
        .match_requests(move |r| {
            seen.lock().unwrap().extend(r.entries().iter().map(|e| {
                (
                    e.message_group_id().unwrap().to_owned(),
                    e.message_deduplication_id().unwrap().to_owned(),
                )
            }));
            true
        })
        .then_output(|| {
            SendMessageBatchOutput::builder()
                .set_successful(Some(vec![]))
                .set_failed(Some(vec![]))
                .build()
                .unwrap()
        });
    let (fleet, lines) = emf();
    let relay = Relay {
        registry: Arc::new(MemoryRegistry::new(Arc::new(SystemClock))),
        bus: mock_client!(aws_sdk_eventbridge, RuleMode::Sequential, [&put]),
        sqs: mock_client!(aws_sdk_sqs, RuleMode::Sequential, [&send]),
        config: EventsConfig {
            table: "t".into(),
            event_bus: "default".into(),
            webhook_queue_url: Some("https://sqs.example/q.fifo".into()),
        },
        fleet,
    };
    let batch = json!({"Records": [
        record(10, A, None, "starting"),
        // A heartbeat: not an event, skipped.
        record(11, A, Some("starting"), "starting"),
        record(12, B, Some("starting"), "running"),
        record(13, A, Some("starting"), "running"),
    ]});
    let answer = relay.handle(batch).await;
    // B's running (record 12) was refused: Lambda retries from it; A's start went out.
    assert_eq!(
        answer,
        json!({"batchItemFailures": [{"itemIdentifier": "12"}]})
    );
    assert_eq!(
        *queued.lock().unwrap(),
        [(A.to_owned(), format!("evt_{A}_1"))],
        "only what the bus took is queued"
    );
    let lines = lines.lock().unwrap();
    assert_eq!(
        lines.len(),
        1,
        "the fleet metrics of the published event only: {lines:?}"
    );
    assert!(lines[0].contains("SessionsAdmitted"));
}

#[tokio::test]
async fn a_record_that_does_not_decode_is_set_aside_and_the_batch_goes_on() {
    let (fleet, lines) = emf();
    let put = mock!(aws_sdk_eventbridge::Client::put_events).then_output(|| {
        aws_sdk_eventbridge::operation::put_events::PutEventsOutput::builder()
            .entries(
                aws_sdk_eventbridge::types::PutEventsResultEntry::builder()
                    .event_id("e1")
                    .build(),
            )
            .build()
    });
    let relay = bus_only(
        mock_client!(aws_sdk_eventbridge, RuleMode::Sequential, [&put]),
        fleet,
    );
    let mut broken = record(20, A, None, "starting");
    broken["dynamodb"]["NewImage"]["status"] = json!({"S": "sleeping"});
    let batch = json!({"Records": [broken, record(21, B, None, "starting")]});
    assert_eq!(relay.handle(batch).await, json!({"batchItemFailures": []}));
    let lines = lines.lock().unwrap();
    assert!(
        lines.iter().any(|l| l.contains("EventRecordsSetAside")),
        "{lines:?}"
    );
    assert!(
        lines.iter().any(|l| l.contains("SessionsAdmitted")),
        "B's start was published: {lines:?}"
    );
}

#[tokio::test]
async fn a_record_that_is_not_a_session_row_is_skipped_and_a_batch_of_none_succeeds() {
    let (fleet, lines) = emf();
    let put = mock!(aws_sdk_eventbridge::Client::put_events)
        .then_error(|| unreachable!("nothing to put"));
    let relay = bus_only(
        mock_client!(aws_sdk_eventbridge, RuleMode::Sequential, [&put]),
        fleet,
    );
    let counter = json!({"eventName": "MODIFY", "dynamodb": {"Keys": {"PK": {"S": "COUNTER#GLOBAL"}, "SK": {"S": "COUNTER"}},
        "NewImage": {"count": {"N": "2"}}, "OldImage": {"count": {"N": "1"}}, "SequenceNumber": "7"}});
    assert_eq!(
        relay.handle(json!({"Records": [counter]})).await,
        json!({"batchItemFailures": []})
    );
    assert!(lines.lock().unwrap().is_empty());
}

mod receiver {
    use super::*;
    use axum::extract::State;
    use axum::http::{HeaderMap, StatusCode};

    pub const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    /// The answers still to give, and the ids received.
    type Receiver = (Arc<Mutex<Vec<u16>>>, Arc<Mutex<Vec<String>>>);

    /// A receiver that answers `statuses` in order (then 200) and keeps what verified.
    pub async fn start(statuses: Vec<u16>) -> (String, Arc<Mutex<Vec<String>>>) {
        let got = Arc::new(Mutex::new(Vec::new()));
        let state = (Arc::new(Mutex::new(statuses)), got.clone());
        let app =
            axum::Router::new()
                .route(
                    "/in",
                    axum::routing::post(
                        |State((statuses, got)): State<Receiver>,
                         headers: HeaderMap,
                         body: String| async move {
                            let h = |n: &str| headers.get(n).unwrap().to_str().unwrap().to_owned();
                            let secret = switchboard_webhooks::Secret::parse(SECRET).unwrap();
                            assert!(secret.verify(
                                &h("webhook-id"),
                                h("webhook-timestamp").parse().unwrap(),
                                body.as_bytes(),
                                &h("webhook-signature")
                            ));
                            let status = {
                                let mut s = statuses.lock().unwrap();
                                if s.is_empty() { 200 } else { s.remove(0) }
                            };
                            if status == 200 {
                                got.lock().unwrap().push(h("webhook-id"));
                            }
                            StatusCode::from_u16(status).unwrap()
                        },
                    ),
                )
                .with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/in", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (url, got)
    }
}

fn message(id: &str, event_id: &str) -> Value {
    message_of(A, id, event_id)
}

fn message_of(session: &str, id: &str, event_id: &str) -> Value {
    json!({"messageId": id, "body": json!({"type": "session.started", "timestamp": "2026-01-01T00:00:00Z",
        "data": {"event_id": event_id, "session_id": session, "sequence": 1}}).to_string(),
        "attributes": {"ApproximateReceiveCount": "1", "MessageGroupId": session}})
}

#[tokio::test]
async fn the_deliverer_reports_the_first_failure_and_everything_after_it() {
    let (url, got) = receiver::start(vec![200, 500]).await;
    let (fleet, lines) = emf();
    let deliverer = Deliverer {
        endpoint: switchboard_webhooks::Endpoint::new(&url, receiver::SECRET).unwrap(),
        fleet,
    };
    let batch = json!({"Records": [
        message("m1", "evt_1"),
        json!({"messageId": "junk", "body": "not an event"}),
        message("m2", "evt_2"),
        message("m3", "evt_3"),
    ]});
    let answer = deliverer
        .handle(batch, SystemTime::now() + Duration::from_secs(30))
        .await;
    // m2 answered 500; m3 must not overtake it. The junk message is dropped, not retried.
    assert_eq!(
        answer,
        json!({"batchItemFailures": [{"itemIdentifier": "m2"}, {"itemIdentifier": "m3"}]})
    );
    assert_eq!(*got.lock().unwrap(), ["evt_1"]);
    let lines = lines.lock().unwrap();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("\"Outcome\":\"delivered\""))
            && lines.iter().any(|l| l.contains("\"Outcome\":\"retried\""))
    );
}

#[tokio::test]
async fn the_deliverer_leaves_what_it_has_no_time_for() {
    let (url, got) = receiver::start(vec![]).await;
    let (fleet, _) = emf();
    let deliverer = Deliverer {
        endpoint: switchboard_webhooks::Endpoint::new(&url, receiver::SECRET).unwrap(),
        fleet,
    };
    let answer = deliverer
        .handle(
            json!({"Records": [message("m1", "evt_1")]}),
            SystemTime::now() + Duration::from_secs(5),
        )
        .await;
    assert_eq!(
        answer,
        json!({"batchItemFailures": [{"itemIdentifier": "m1"}]})
    );
    assert!(got.lock().unwrap().is_empty());
}
