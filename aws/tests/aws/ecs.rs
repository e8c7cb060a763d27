//! `EcsLauncher` against moto's ECS, through the same `service::start_session` the API calls:
//! the row first, then one `RunTask` whose overrides carry the session, then the task ARN on
//! the row; a rejected `RunTask` ends the session `start_failed` and gives its slots back.

use std::collections::HashMap;
use std::sync::Arc;

use switchboard_aws::DynamoRegistry;
use switchboard_aws::ecs::{EcsLauncher, TASK_GROUP};
use switchboard_core::service::{self, StartSession};
use switchboard_core::{
    CallId, EndReason, Error, LimitOptions, Limits, SessionRegistry, SessionStatus, SystemClock,
};

use crate::support;

struct Fixture {
    registry: DynamoRegistry,
    launcher: EcsLauncher,
    ecs: aws_sdk_ecs::Client,
    cluster: String,
    limits: Limits,
}

async fn fixture(task_definition: Option<&str>) -> Fixture {
    let dynamodb = support::client().await;
    let table = support::table(&dynamodb).await;
    let ecs = support::ecs_client();
    let (cluster, definition) = support::ecs_cluster(&ecs).await;
    let limits = Limits::new(LimitOptions {
        max_concurrent_sessions: Some(2),
        max_sessions_per_call: Some(1),
        max_session_duration_seconds: Some(600.0),
        maintenance_interval: 2.0,
        ..LimitOptions::default()
    })
    .unwrap();
    let launcher = EcsLauncher::new(
        ecs.clone(),
        support::ecs_settings(
            &cluster,
            &task_definition.map_or(definition, str::to_owned),
            &table,
            limits,
        ),
    );
    Fixture {
        registry: DynamoRegistry::new(dynamodb, table, Arc::new(SystemClock)),
        launcher,
        ecs,
        cluster,
        limits,
    }
}

impl Fixture {
    async fn start(&self, call: &str) -> switchboard_core::Result<service::Started> {
        service::start_session(
            &self.registry,
            &self.launcher,
            &self.limits,
            CallId::parse(call).unwrap(),
            StartSession::default(),
        )
        .await
    }
}

#[tokio::test]
async fn a_start_runs_one_task_whose_overrides_carry_the_session() {
    let f = fixture(None).await;
    let started = f.start("call-ecs").await.expect("started");
    let session = started.session.expect("a new session");
    let arn = session.task_arn.clone().expect("the task ARN");

    let row = f
        .registry
        .get(&session.call_id, session.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        row.status,
        SessionStatus::Starting,
        "running comes from the task"
    );
    assert_eq!(
        row.task_arn.as_deref(),
        Some(arn.as_str()),
        "the ARN is on the row"
    );

    let described = f
        .ecs
        .describe_tasks()
        .cluster(&f.cluster)
        .tasks(&arn)
        .include(aws_sdk_ecs::types::TaskField::Tags)
        .send()
        .await
        .unwrap();
    let task = &described.tasks()[0];
    let id = session.id.to_string();
    assert_eq!(task.started_by(), Some(id.as_str()));
    assert_eq!(task.group(), Some(TASK_GROUP));
    let container = &task.overrides().unwrap().container_overrides()[0];
    assert_eq!(container.name(), Some("agent"));
    let env: HashMap<&str, &str> = container
        .environment()
        .iter()
        .map(|kv| (kv.name().unwrap(), kv.value().unwrap()))
        .collect();
    assert_eq!(env["SESSION_ID"], id);
    assert_eq!(env["CALL_ID"], "call-ecs");
    assert_eq!(env["CALL_TYPE"], "default");
    assert_eq!(env["TABLE_NAME"], f.registry.table());
    assert_eq!(env["SWITCHBOARD_MAINTENANCE_INTERVAL"], "2");
    assert_eq!(env["SWITCHBOARD_MAX_SESSION_DURATION_SECONDS"], "600");
    assert!(
        !env.contains_key("SWITCHBOARD_MAX_CONCURRENT_SESSIONS"),
        "admission limits stay with the API"
    );
    let tags: HashMap<&str, &str> = task
        .tags()
        .iter()
        .map(|t| (t.key().unwrap(), t.value().unwrap()))
        .collect();
    assert_eq!(tags["switchboard:session-id"], id);
    assert_eq!(tags["switchboard:call-id"], "call-ecs");

    // Exactly one task for this session, found the way the reaper finds it.
    assert_eq!(
        support::tasks_started_by(&f.ecs, &f.cluster, &id).await,
        [arn]
    );
}

#[tokio::test]
async fn limits_hold_and_a_refused_start_runs_no_task() {
    let f = fixture(None).await;
    f.start("call-a").await.expect("first");
    let err = f.start("call-a").await.unwrap_err();
    assert!(
        matches!(err, Error::LimitReached(_)),
        "per-call limit: {err:?}"
    );
    f.start("call-b").await.expect("second");
    assert!(matches!(
        f.start("call-c").await.unwrap_err(),
        Error::LimitReached(_)
    ));
    assert_eq!(
        support::running_tasks(&f.ecs, &f.cluster).await,
        2,
        "one task per admitted session"
    );
}

#[tokio::test]
async fn a_rejected_run_task_ends_the_session_start_failed_and_frees_its_slots() {
    let f = fixture(Some("no-such-task-definition:1")).await;
    let err = f.start("call-x").await.unwrap_err();
    assert!(matches!(err, Error::LaunchFailed(_)), "500: {err:?}");
    let call = CallId::parse("call-x").unwrap();
    let counts = f.registry.counts(&call).await.unwrap();
    assert_eq!((counts.global, counts.per_call), (0, 0), "slots released");
    let page = f
        .registry
        .list(switchboard_core::registry::ListQuery {
            call_id: Some(call),
            include_ended: true,
            ..Default::default()
        })
        .await
        .unwrap();
    let ended = &page.sessions[0].session;
    assert_eq!(ended.end_reason, Some(EndReason::StartFailed));
    assert!(
        ended
            .end_detail
            .as_deref()
            .is_some_and(|d| d.contains("RunTask")),
        "the detail says what failed: {:?}",
        ended.end_detail
    );
}
