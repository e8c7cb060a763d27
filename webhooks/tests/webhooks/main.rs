//! The webhook queue against a real receiver on 127.0.0.1: signatures, order per session,
//! retries (down, slow, 500 then 200), the bound, and that publishing never waits.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use switchboard_core::events::{EventType, SessionEvent};
use switchboard_core::fleet::{Delivery, EventSink, FleetMetrics};
use switchboard_core::registry::StartRequest;
use switchboard_core::{
    CallId, CallType, EndReason, Session, SessionId, SessionStatus, SystemClock, Timestamp,
};
use switchboard_webhooks::{Endpoint, QueueOptions, Secret, WebhookQueue};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// What the receiver got, verified.
#[derive(Debug, Clone)]
struct Received {
    id: String,
    kind: String,
    session: String,
    sequence: u64,
    verified: bool,
}

#[derive(Clone, Default)]
struct Receiver {
    got: Arc<Mutex<Vec<Received>>>,
    /// Answers to give, in order (status, delay); then 200 at once.
    script: Arc<Mutex<VecDeque<(u16, Duration)>>>,
    attempts: Arc<AtomicU64>,
}

async fn receive(State(r): State<Receiver>, headers: HeaderMap, body: String) -> StatusCode {
    r.attempts.fetch_add(1, Ordering::SeqCst);
    let (status, delay) = r
        .script
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or((200, Duration::ZERO));
    tokio::time::sleep(delay).await;
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let timestamp: i64 = header("webhook-timestamp").parse().unwrap_or(0);
    let verified = Secret::parse(SECRET).unwrap().verify(
        &header("webhook-id"),
        timestamp,
        body.as_bytes(),
        &header("webhook-signature"),
    ) && (Timestamp::now_system().unix_seconds() - timestamp).abs() < 300;
    if status == 200 {
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        r.got.lock().unwrap().push(Received {
            id: header("webhook-id"),
            kind: json["type"].as_str().unwrap().to_owned(),
            session: json["data"]["session_id"].as_str().unwrap().to_owned(),
            sequence: json["data"]["sequence"].as_u64().unwrap(),
            verified,
        });
    }
    StatusCode::from_u16(status).unwrap()
}

async fn receiver(script: Vec<(u16, Duration)>) -> (String, Receiver) {
    let r = Receiver {
        script: Arc::new(Mutex::new(script.into())),
        ..Default::default()
    };
    let addr = free_addr().await;
    (format!("http://{addr}/hooks"), serve_at(addr, r).await)
}

/// A loopback address nothing listens on (yet).
async fn free_addr() -> std::net::SocketAddr {
    let probe = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    probe.local_addr().unwrap()
}

/// Serves `r` at `addr` (POST /hooks) in the background.
async fn serve_at(addr: std::net::SocketAddr, r: Receiver) -> Receiver {
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let app = axum::Router::new()
        .route("/hooks", post(receive))
        .with_state(r.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    r
}

fn fast(capacity: usize) -> QueueOptions {
    QueueOptions {
        capacity,
        concurrency: 4,
        first_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(100),
        retry_for: Duration::from_secs(20),
    }
}

fn queue(url: &str, options: QueueOptions) -> (WebhookQueue, Arc<FleetMetrics>) {
    let fleet = Arc::new(FleetMetrics::new(Arc::new(SystemClock), None));
    let q = WebhookQueue::new(Endpoint::new(url, SECRET).unwrap(), options, fleet.clone());
    (q, fleet)
}

/// A session's three events.
fn lifecycle(call: &str) -> [SessionEvent; 3] {
    let request = StartRequest {
        session_id: SessionId::generate(),
        call_id: CallId::parse(call).unwrap(),
        call_type: CallType::default(),
        metadata: None,
        idempotency: None,
        max_concurrent_sessions: None,
        max_sessions_per_call: None,
        lease: Duration::from_secs(30),
    };
    let mut s = Session::admitted(&request, Timestamp::now_system());
    let started = SessionEvent::new(EventType::Started, &s, None);
    s.status = SessionStatus::Running;
    s.running_at = Some(Timestamp::now_system());
    let running = SessionEvent::new(EventType::Running, &s, None);
    s.status = SessionStatus::Ended;
    s.ended_at = Some(Timestamp::now_system());
    s.end_reason = Some(EndReason::AgentFinished);
    [
        started,
        running,
        SessionEvent::new(EventType::Ended, &s, None),
    ]
}

async fn until(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..1000 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_arrives_signed_and_in_order_per_session_across_a_500_and_a_slow_answer() {
    // The first attempt is a 500, the second takes 300 ms: the later events of that session
    // wait for it, the other sessions do not.
    let (url, r) = receiver(vec![
        (500, Duration::ZERO),
        (200, Duration::from_millis(300)),
    ])
    .await;
    let (q, fleet) = queue(&url, fast(100));
    let sessions: Vec<_> = (0..5).map(|i| lifecycle(&format!("call-{i}"))).collect();
    for events in &sessions {
        for e in events {
            q.publish(e.clone());
        }
    }
    assert_eq!(q.drained(Duration::from_secs(10)).await, 0);
    let got = r.got.lock().unwrap().clone();
    assert_eq!(got.len(), 15, "{got:?}");
    assert!(got.iter().all(|g| g.verified), "{got:?}");
    for events in &sessions {
        let mine: Vec<_> = got
            .iter()
            .filter(|g| g.session == events[0].data.session_id)
            .collect();
        assert_eq!(
            mine.iter().map(|g| g.sequence).collect::<Vec<_>>(),
            [1, 2, 3]
        );
        assert_eq!(
            mine.iter().map(|g| g.kind.as_str()).collect::<Vec<_>>(),
            ["session.started", "session.running", "session.ended"]
        );
        assert_eq!(
            mine.iter().map(|g| g.id.clone()).collect::<Vec<_>>(),
            events.iter().map(|e| e.id().to_owned()).collect::<Vec<_>>()
        );
    }
    assert_eq!(r.attempts.load(Ordering::SeqCst), 16);
    assert_eq!(fleet.webhooks(Delivery::Delivered), 15);
    assert_eq!(fleet.webhooks(Delivery::Retried), 1);
    assert_eq!(fleet.webhooks(Delivery::Failed), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_is_down_gets_everything_once_it_is_up() {
    // A port nothing listens on yet.
    let addr = free_addr().await;
    let (q, fleet) = queue(&format!("http://{addr}/hooks"), fast(100));
    let events = lifecycle("call-down");
    for e in &events {
        q.publish(e.clone());
    }
    until("a failed attempt", || {
        fleet.webhooks(Delivery::Retried) >= 2
    })
    .await;
    assert_eq!(q.pending(), 3);
    let r = serve_at(addr, Receiver::default()).await;
    assert_eq!(q.drained(Duration::from_secs(10)).await, 0);
    let got = r.got.lock().unwrap().clone();
    assert_eq!(
        got.iter().map(|g| g.sequence).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert!(got.iter().all(|g| g.verified));
    assert_eq!(fleet.webhooks(Delivery::Failed), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_retries_at_once_what_waits_out_a_long_backoff() {
    let addr = free_addr().await;
    let options = QueueOptions {
        first_backoff: Duration::from_secs(3600),
        max_backoff: Duration::from_secs(3600),
        retry_for: Duration::from_secs(7200),
        ..fast(100)
    };
    let (q, fleet) = queue(&format!("http://{addr}/hooks"), options);
    q.publish(lifecycle("call-drain")[2].clone());
    until("a failed attempt", || {
        fleet.webhooks(Delivery::Retried) >= 1
    })
    .await;
    let r = serve_at(addr, Receiver::default()).await;
    // Without the drain's hurry the next attempt would be an hour away.
    assert_eq!(q.drained(Duration::from_secs(10)).await, 0);
    assert_eq!(r.got.lock().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_is_given_up_after_its_retry_time_and_the_lane_goes_on() {
    let (url, r) = receiver(vec![(503, Duration::ZERO); 100]).await;
    let options = QueueOptions {
        retry_for: Duration::from_millis(200),
        ..fast(100)
    };
    let (q, fleet) = queue(&url, options);
    let events = lifecycle("call-gone");
    q.publish(events[0].clone());
    assert_eq!(q.drained(Duration::from_secs(10)).await, 0);
    assert_eq!(fleet.webhooks(Delivery::Failed), 1);
    assert!(r.attempts.load(Ordering::SeqCst) >= 2);
    r.script.lock().unwrap().clear();
    q.publish(events[1].clone());
    assert_eq!(q.drained(Duration::from_secs(10)).await, 0);
    assert_eq!(r.got.lock().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_drops_and_counts_without_waiting() {
    // The receiver holds every answer for 2 s: the queue fills and publishing stays instant.
    let (url, r) = receiver(vec![(200, Duration::from_secs(2)); 4]).await;
    let (q, fleet) = queue(&url, fast(4));
    for i in 0..10 {
        q.publish(lifecycle(&format!("call-full-{i}"))[0].clone());
    }
    // Publishing returned before the receiver answered anything.
    assert!(r.got.lock().unwrap().is_empty());
    assert_eq!(fleet.webhooks(Delivery::Dropped), 6);
    assert_eq!(q.drained(Duration::from_secs(10)).await, 0);
    assert_eq!(r.got.lock().unwrap().len(), 4);
}

#[test]
fn the_environment_names_what_is_wrong() {
    let lookup = |vars: &'static [(&'static str, &'static str)]| {
        move |name: &str| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        }
    };
    assert!(
        switchboard_webhooks::endpoint_from_lookup(lookup(&[]))
            .unwrap()
            .is_none()
    );
    let missing = switchboard_webhooks::endpoint_from_lookup(lookup(&[(
        "SWITCHBOARD_WEBHOOK_URL",
        "http://127.0.0.1:1/",
    )]))
    .unwrap_err();
    assert!(
        missing.contains("SWITCHBOARD_WEBHOOK_SECRET is required"),
        "{missing}"
    );
    let bad = switchboard_webhooks::endpoint_from_lookup(lookup(&[
        ("SWITCHBOARD_WEBHOOK_URL", "ftp://example.com/"),
        ("SWITCHBOARD_WEBHOOK_SECRET", SECRET),
    ]))
    .unwrap_err();
    assert!(
        bad.contains("SWITCHBOARD_WEBHOOK_URL") && bad.contains("its scheme is ftp"),
        "{bad}"
    );
    let short = switchboard_webhooks::endpoint_from_lookup(lookup(&[
        ("SWITCHBOARD_WEBHOOK_URL", "http://127.0.0.1:1/"),
        ("SWITCHBOARD_WEBHOOK_SECRET", "whsec_c2hvcnQ="),
    ]))
    .unwrap_err();
    assert!(
        short.contains("SWITCHBOARD_WEBHOOK_SECRET is invalid") && short.contains("5 bytes"),
        "{short}"
    );
}
