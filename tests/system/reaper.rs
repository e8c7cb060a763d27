//! The reaper against a real agent process: an agent task SIGKILLed mid-session (on the
//! local ECS) ends `lease_expired` by the sweep, never before its lease, and once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use switchboard_aws::DynamoRegistry;
use switchboard_aws::ecs::EcsLauncher;
use switchboard_core::registry::{StartOutcome, StartRequest};
use switchboard_core::{
    CallId, CallType, EndReason, LimitOptions, Limits, SessionId, SessionRegistry, SessionStatus,
    SystemClock, TaskLauncher,
};
use switchboard_functions::reaper::{Outcome, Sweeper, end_stopped, parse_stopped};

/// The reaper's registry and ECS lookups as its binary builds them (so the IAM test sees its
/// calls).
async fn reaper_parts(
    table: &str,
    cluster: &str,
) -> (DynamoRegistry, switchboard_aws::ecs_tasks::EcsTasks) {
    let config = switchboard_functions::ReaperConfig::from_lookup(|name| match name {
        "TABLE_NAME" => Some(table.to_owned()),
        "ECS_CLUSTER" => Some(cluster.to_owned()),
        _ => None,
    })
    .expect("reaper config");
    switchboard_functions::reaper_parts(
        &config,
        &switchboard_testkit::sdk_config().await,
        Arc::new(SystemClock),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_agent_task_ends_lease_expired_never_before_its_lease_and_once() {
    let limits = Limits::new(LimitOptions {
        maintenance_interval: 1.0,
        session_lease_seconds: Some(3.0),
        ..LimitOptions::default()
    })
    .unwrap();
    let client = switchboard_testkit::client().await;
    let table = switchboard_testkit::table(&client).await;
    let registry = DynamoRegistry::new(client, table.clone(), Arc::new(SystemClock));
    let ecs = switchboard_testkit::ecs_client();
    let (cluster, definition) = switchboard_testkit::ecs_cluster(&ecs).await;
    let launcher = EcsLauncher::new(
        ecs.clone(),
        switchboard_testkit::ecs_settings(&cluster, &definition, &table, limits),
    );
    let request = StartRequest {
        session_id: SessionId::generate(),
        call_id: CallId::parse("call-kill").unwrap(),
        call_type: CallType::default(),
        metadata: None,
        idempotency: None,
        max_concurrent_sessions: Some(10),
        max_sessions_per_call: None,
        lease: limits.session_lease(),
    };
    let StartOutcome::Created(session) = registry.start(request).await.unwrap() else {
        unreachable!()
    };
    let arn = launcher.launch(&session).await.unwrap().task_arn.unwrap();
    registry
        .attach_task(&session.call_id, session.id, &arn, None)
        .await
        .unwrap();
    let local = crate::local_ecs(&cluster, Arc::new(switchboard_local_ecs::LogSink), |_| {}).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while registry
        .get(&session.call_id, session.id)
        .await
        .unwrap()
        .unwrap()
        .status
        != SessionStatus::Running
    {
        assert!(Instant::now() < deadline, "never running");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(local.kill(&arn), "SIGKILL: no drain, no end written");
    while !local.exits().iter().any(|e| e.task_arn == arn) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let killed = Instant::now();

    // The schedule, every 500 ms here (every minute in AWS).
    let (reaper, tasks) = reaper_parts(&table, &cluster).await;
    let sweeper = Sweeper {
        registry: &reaper,
        tasks: &tasks,
        limits: &limits,
        start_deadline: Duration::from_secs(600),
        clock: &SystemClock,
        pool: None,
    };
    let row = loop {
        sweeper.sweep(Duration::from_secs(10)).await.unwrap();
        let row = registry
            .get(&session.call_id, session.id)
            .await
            .unwrap()
            .unwrap();
        if row.status == SessionStatus::Ended {
            break row;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(30),
            "never reaped: {row:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    eprintln!(
        "SIGKILL → lease_expired in {:?} (lease 3 s, sweep every 0.5 s)",
        killed.elapsed()
    );
    assert_eq!(row.end_reason, Some(EndReason::LeaseExpired));
    assert!(
        row.ended_at.unwrap() >= row.lease_expires_at,
        "never ended while the lease held: ended {:?}, lease {:?}",
        row.ended_at,
        row.lease_expires_at
    );
    assert_eq!(
        switchboard_testkit::running_tasks(&ecs, &cluster).await,
        0,
        "the task was stopped (the local ECS stops an exited task, as ECS does)"
    );
    // ECS's own STOPPED event for that task comes later: nothing more happens.
    let event = include_str!("../../infra/events/ecs-task-state-change-stopped.json")
        .replace("SESSION_ID_HERE", &session.id.to_string())
        .replace("CALL_ID_HERE", session.call_id.as_str());
    let stopped = parse_stopped(&serde_json::from_str(&event).unwrap(), "agent").unwrap();
    assert_eq!(
        end_stopped(&reaper, &stopped, &limits).await.unwrap(),
        Outcome::AlreadyEnded
    );
    assert_eq!(
        registry.counts(&session.call_id).await.unwrap().global,
        0,
        "released once"
    );
}
