//! The reaper's STOPPED-event path, from the real event shape (moto emits no ECS events:
//! the fixture `infra/events/ecs-task-state-change-stopped.json` is injected), against the
//! DynamoDB registry on moto: one end and one decrement however often and in whatever order
//! the events come.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use switchboard_aws::DynamoRegistry;
use switchboard_core::registry::{StartOutcome, StartRequest};
use switchboard_core::{
    CallId, CallType, EndReason, Limits, Session, SessionId, SessionRegistry, SessionStatus,
    SystemClock,
};
use switchboard_functions::reaper::{Outcome, Skipped, end_stopped, parse_stopped};

fn event(session: &Session, last_status: &str) -> Value {
    let text = include_str!("../../../infra/events/ecs-task-state-change-stopped.json")
        .replace("SESSION_ID_HERE", &session.id.to_string())
        .replace("CALL_ID_HERE", session.call_id.as_str());
    let mut event: Value = serde_json::from_str(&text).unwrap();
    event["detail"]["lastStatus"] = Value::from(last_status);
    event
}

async fn registry() -> DynamoRegistry {
    let client = switchboard_testkit::client().await;
    let table = switchboard_testkit::table(&client).await;
    DynamoRegistry::new(client, table, Arc::new(SystemClock))
}

fn request(call_id: CallId) -> StartRequest {
    StartRequest {
        session_id: SessionId::generate(),
        call_id,
        call_type: CallType::default(),
        metadata: None,
        idempotency: None,
        max_concurrent_sessions: Some(10),
        max_sessions_per_call: Some(10),
        lease: Duration::from_secs(30),
    }
}

async fn admit(registry: &DynamoRegistry, call: &str) -> Session {
    match registry
        .start(request(CallId::parse(call).unwrap()))
        .await
        .unwrap()
    {
        StartOutcome::Created(s) => s,
        StartOutcome::Replayed(_) => unreachable!(),
    }
}

#[test]
fn the_event_names_the_session_and_says_why_the_task_stopped() {
    let session = Session::admitted(
        &request(CallId::parse("call-1").unwrap()),
        switchboard_core::Timestamp::now_system(),
    );
    let stopped = parse_stopped(&event(&session, "STOPPED"), "agent").unwrap();
    assert_eq!(stopped.session_id, session.id);
    assert_eq!(stopped.call_id.as_str(), "call-1");
    assert_eq!(
        stopped.detail,
        "task stopped: Your Spot Task was interrupted.; stop code SpotInterruption; exit code 137"
    );
    assert_eq!(
        parse_stopped(&event(&session, "RUNNING"), "agent"),
        Err(Skipped::NotStopped("RUNNING".into()))
    );
    let mut other = event(&session, "STOPPED");
    other["detail"]["group"] = Value::from("service:web");
    assert!(matches!(
        parse_stopped(&other, "agent"),
        Err(Skipped::OtherGroup(_))
    ));
    let mut anonymous = event(&session, "STOPPED");
    anonymous["detail"]["overrides"] = serde_json::json!({"containerOverrides": []});
    assert!(matches!(
        parse_stopped(&anonymous, "agent"),
        Err(Skipped::NoSession(_))
    ));
    assert_eq!(
        parse_stopped(&serde_json::json!({"source": "aws.events"}), "agent"),
        Err(Skipped::NotTaskStateChange)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_and_reordered_events_end_a_session_once_and_release_its_slots_once() {
    let registry = registry().await;
    let limits = Limits::default();
    let running = admit(&registry, "call-r").await;
    registry
        .mark_running(&running.call_id, running.id)
        .await
        .unwrap();
    let other = admit(&registry, "call-r").await;
    registry
        .mark_running(&other.call_id, other.id)
        .await
        .unwrap();

    // A late RUNNING event is not a STOPPED one: ignored before any lookup.
    assert!(parse_stopped(&event(&running, "RUNNING"), "agent").is_err());
    let stopped = parse_stopped(&event(&running, "STOPPED"), "agent").unwrap();
    let outcomes =
        futures::future::join_all((0..5).map(|_| end_stopped(&registry, &stopped, &limits))).await;
    let ended = outcomes
        .iter()
        .filter(|o| matches!(o, Ok(Outcome::Ended(EndReason::TaskStopped))))
        .count();
    assert_eq!(ended, 1, "{outcomes:?}");
    assert!(outcomes.iter().all(|o| o.is_ok()));
    assert_eq!(
        end_stopped(&registry, &stopped, &limits).await.unwrap(),
        Outcome::AlreadyEnded
    );
    let row = registry
        .get(&running.call_id, running.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.end_reason, Some(EndReason::TaskStopped));
    assert!(row.end_detail.unwrap().contains("exit code 137"));
    let counts = registry.counts(&running.call_id).await.unwrap();
    assert_eq!(
        (counts.global, counts.per_call),
        (1, 1),
        "one decrement; the other session keeps its slot"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_that_stopped_before_joining_ends_start_failed_and_an_unknown_row_is_left() {
    let registry = registry().await;
    let limits = Limits::default();
    let starting = admit(&registry, "call-s").await;
    let stopped = parse_stopped(&event(&starting, "STOPPED"), "agent").unwrap();
    assert_eq!(
        end_stopped(&registry, &stopped, &limits).await.unwrap(),
        Outcome::Ended(EndReason::StartFailed)
    );
    let row = registry
        .get(&starting.call_id, starting.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.status, SessionStatus::Ended);
    assert_eq!(registry.counts(&starting.call_id).await.unwrap().global, 0);

    let mut ghost = starting.clone();
    ghost.id = SessionId::generate();
    let stopped = parse_stopped(&event(&ghost, "STOPPED"), "agent").unwrap();
    assert_eq!(
        end_stopped(&registry, &stopped, &limits).await.unwrap(),
        Outcome::Unknown
    );
}
