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

/// The reaper's registry and ECS lookups as its binary builds them (so the IAM test sees its
/// calls), on `table` and `cluster`.
pub(crate) async fn reaper(
    table: &str,
    cluster: &str,
    clock: Arc<dyn switchboard_core::Clock>,
) -> (DynamoRegistry, switchboard_aws::ecs_tasks::EcsTasks) {
    let config = switchboard_functions::ReaperConfig::from_lookup(|name| match name {
        "TABLE_NAME" => Some(table.to_owned()),
        "ECS_CLUSTER" => Some(cluster.to_owned()),
        _ => None,
    })
    .expect("reaper config");
    switchboard_functions::reaper_parts(&config, &switchboard_testkit::sdk_config().await, clock)
}

/// A table with the tests' own registry (admissions, checks) and the reaper's.
async fn registries() -> (DynamoRegistry, DynamoRegistry) {
    let client = switchboard_testkit::client().await;
    let table = switchboard_testkit::table(&client).await;
    let (reaper, _) = reaper(&table, "unused", Arc::new(SystemClock)).await;
    (
        DynamoRegistry::new(client, table, Arc::new(SystemClock)),
        reaper,
    )
}

pub(crate) fn request(call_id: CallId) -> StartRequest {
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

pub(crate) async fn admit(registry: &DynamoRegistry, call: &str) -> Session {
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
    let (registry, reaper) = registries().await;
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
        futures::future::join_all((0..5).map(|_| end_stopped(&reaper, &stopped, &limits))).await;
    let ended = outcomes
        .iter()
        .filter(|o| matches!(o, Ok(Outcome::Ended(EndReason::TaskStopped))))
        .count();
    assert_eq!(ended, 1, "{outcomes:?}");
    assert!(outcomes.iter().all(|o| o.is_ok()));
    assert_eq!(
        end_stopped(&reaper, &stopped, &limits).await.unwrap(),
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
    let (registry, reaper) = registries().await;
    let limits = Limits::default();
    let starting = admit(&registry, "call-s").await;
    let stopped = parse_stopped(&event(&starting, "STOPPED"), "agent").unwrap();
    assert_eq!(
        end_stopped(&reaper, &stopped, &limits).await.unwrap(),
        Outcome::Ended(EndReason::StartFailed)
    );
    let row = registry
        .get(&starting.call_id, starting.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.status, SessionStatus::Ended);
    assert_eq!(registry.counts(&starting.call_id).await.unwrap().global, 0);

    // Closed while starting (the chaos test found these ended task_stopped, as if they had
    // run): the agent never joined, so its task stopping is a failed start.
    let closed = admit(&registry, "call-s").await;
    registry
        .request_close(&closed.call_id, closed.id)
        .await
        .unwrap();
    let stopped = parse_stopped(&event(&closed, "STOPPED"), "agent").unwrap();
    assert_eq!(
        end_stopped(&reaper, &stopped, &limits).await.unwrap(),
        Outcome::Ended(EndReason::StartFailed)
    );

    let mut ghost = starting.clone();
    ghost.id = SessionId::generate();
    let stopped = parse_stopped(&event(&ghost, "STOPPED"), "agent").unwrap();
    assert_eq!(
        end_stopped(&reaper, &stopped, &limits).await.unwrap(),
        Outcome::Unknown
    );
}

mod sweep {
    //! The scheduled sweep against moto (DynamoDB + ECS), on a manual clock for the leases.

    use std::sync::Arc;
    use std::time::Duration;

    use switchboard_aws::DynamoRegistry;
    use switchboard_aws::ecs::EcsLauncher;
    use switchboard_aws::ecs_tasks::EcsTasks;
    use switchboard_core::{
        CallId, EndReason, Limits, ManualClock, Session, SessionRegistry, SessionStatus,
        TaskLauncher, Timestamp,
    };
    use switchboard_functions::reaper::{SweepReport, Sweeper};

    struct World {
        clock: Arc<ManualClock>,
        registry: DynamoRegistry,
        /// The reaper's own (its binary's clients).
        reaper: DynamoRegistry,
        launcher: EcsLauncher,
        tasks: EcsTasks,
        ecs: aws_sdk_ecs::Client,
        cluster: String,
        limits: Limits,
    }

    async fn world() -> World {
        world_with(
            Limits::default(),
            Arc::new(ManualClock::new(Timestamp::now_system())),
        )
        .await
    }

    async fn world_with(limits: Limits, clock: Arc<ManualClock>) -> World {
        let client = switchboard_testkit::client().await;
        let table = switchboard_testkit::table(&client).await;
        let ecs = switchboard_testkit::ecs_client();
        let (cluster, definition) = switchboard_testkit::ecs_cluster(&ecs).await;
        let launcher = EcsLauncher::new(
            ecs.clone(),
            switchboard_testkit::ecs_settings(&cluster, &definition, &table, limits),
        );
        let (reaper, tasks) = super::reaper(&table, &cluster, clock.clone()).await;
        World {
            registry: DynamoRegistry::new(client, table, clock.clone()),
            reaper,
            clock,
            launcher,
            tasks,
            ecs,
            cluster,
            limits,
        }
    }

    impl World {
        async fn admit(&self, call: &str) -> Session {
            super::admit(&self.registry, call).await
        }
        async fn launch(&self, session: &Session) -> String {
            let arn = self
                .launcher
                .launch(session)
                .await
                .unwrap()
                .task_arn
                .unwrap();
            self.registry
                .attach_task(&session.call_id, session.id, &arn, None)
                .await
                .unwrap();
            arn
        }
        async fn sweep(&self) -> SweepReport {
            Sweeper {
                registry: &self.reaper,
                tasks: &self.tasks,
                limits: &self.limits,
                start_deadline: Duration::from_secs(600),
                clock: &*self.clock,
                pool: None,
            }
            .sweep(Duration::from_secs(30))
            .await
            .unwrap()
        }
        async fn row(&self, s: &Session) -> Session {
            self.registry.get(&s.call_id, s.id).await.unwrap().unwrap()
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn expired_leases_end_lease_expired_and_their_tasks_are_stopped() {
        let w = world().await;
        let dead = w.admit("call-dead").await;
        w.registry
            .mark_running(&dead.call_id, dead.id)
            .await
            .unwrap();
        w.launch(&dead).await;
        let alive = w.admit("call-alive").await;
        w.registry
            .mark_running(&alive.call_id, alive.id)
            .await
            .unwrap();
        assert_eq!(
            w.sweep().await,
            SweepReport::default(),
            "nothing expired yet"
        );

        w.clock.advance(Duration::from_secs(31));
        // The live one heartbeats; the dead one does not.
        w.registry
            .heartbeat(&alive.call_id, alive.id, Duration::from_secs(30))
            .await
            .unwrap();
        let report = w.sweep().await;
        assert_eq!(
            (report.lease_expired, report.tasks_stopped),
            (1, 1),
            "{report:?}"
        );
        let row = w.row(&dead).await;
        assert_eq!(row.end_reason, Some(EndReason::LeaseExpired));
        assert_eq!(w.row(&alive).await.status, SessionStatus::Running);
        assert_eq!(
            switchboard_testkit::running_tasks(&w.ecs, &w.cluster).await,
            0
        );
        let counts = w
            .registry
            .counts(&CallId::parse("call-dead").unwrap())
            .await
            .unwrap();
        assert_eq!(
            (counts.global, counts.per_call),
            (1, 0),
            "one slot back; the live one kept"
        );
        assert_eq!(
            w.sweep().await,
            SweepReport::default(),
            "a second sweep finds nothing"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn starting_rows_are_checked_against_ecs_before_they_end() {
        let w = world().await;
        let lost = w.admit("call-lost").await; // RunTask never happened (crash, ambiguous)
        let slow = w.admit("call-slow").await; // its task is still coming up
        w.launch(&slow).await;
        // Closed while starting: the same two cases (the chaos test found these ended
        // lease_expired without a look at ECS, their provisioning task left running).
        let closed_lost = w.admit("call-lost").await;
        let closed_slow = w.admit("call-slow").await;
        w.launch(&closed_slow).await;
        for s in [&closed_lost, &closed_slow] {
            w.registry.request_close(&s.call_id, s.id).await.unwrap();
        }
        w.clock.advance(Duration::from_secs(31));
        let report = w.sweep().await;
        assert_eq!(
            (
                report.start_failed,
                report.still_starting,
                report.lease_expired
            ),
            (2, 2, 0),
            "{report:?}"
        );
        assert_eq!(w.row(&lost).await.end_reason, Some(EndReason::StartFailed));
        assert_eq!(
            w.row(&closed_lost).await.end_reason,
            Some(EndReason::StartFailed)
        );
        assert_eq!(w.row(&slow).await.status, SessionStatus::Starting);
        assert_eq!(w.row(&closed_slow).await.status, SessionStatus::Closing);
        // Its agent, once up, sees the close and leaves (`requested`); if it never comes up,
        // past the start deadline its task is stopped like the other's.

        w.clock.advance(Duration::from_secs(600));
        let report = w.sweep().await;
        assert_eq!(
            (report.start_failed, report.tasks_stopped),
            (2, 2),
            "{report:?}"
        );
        for s in [&slow, &closed_slow] {
            let row = w.row(s).await;
            assert_eq!(row.end_reason, Some(EndReason::StartFailed));
            assert!(row.end_detail.unwrap().contains("did not start within"));
        }
        assert_eq!(
            switchboard_testkit::running_tasks(&w.ecs, &w.cluster).await,
            0
        );
        assert_eq!(
            w.registry
                .counts(&CallId::parse("call-slow").unwrap())
                .await
                .unwrap()
                .global,
            0
        );
    }
}

mod faults {
    //! Faults: a `RunTask` whose outcome stays unknown (an agent task killed with SIGKILL
    //! mid-session, a real process on the local ECS, is a system test: tests/system).

    use std::sync::Arc;
    use std::time::Duration;

    use switchboard_aws::DynamoRegistry;
    use switchboard_aws::ecs::EcsLauncher;
    use switchboard_core::registry::StartOutcome;
    use switchboard_core::{
        CallId, CallType, EndReason, Limits, SessionId, SessionRegistry, SessionStatus,
    };
    use switchboard_functions::reaper::Sweeper;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_ambiguous_run_task_answers_503_leaves_the_row_starting_and_the_sweep_resolves_it() {
        use aws_sdk_ecs::error::ErrorMetadata;
        use aws_sdk_ecs::operation::run_task::RunTaskError;
        use aws_sdk_ecs::types::error::ServerException;
        use aws_smithy_mocks::{RuleMode, mock, mock_client};
        use switchboard_core::service::{self, StartSession};
        use switchboard_core::{Error, ManualClock, Timestamp};

        // moto cannot fail RunTask ambiguously: a mocked ECS answers 5xx every time.
        let rule = mock!(aws_sdk_ecs::Client::run_task)
            .sequence()
            .error(|| {
                RunTaskError::ServerException(
                    ServerException::builder()
                        .message("internal")
                        .meta(ErrorMetadata::builder().code("ServerException").build())
                        .build(),
                )
            })
            .repeatedly()
            .build();
        let failing_ecs = mock_client!(aws_sdk_ecs, RuleMode::Sequential, [&rule]);
        let clock = Arc::new(ManualClock::new(Timestamp::now_system()));
        let client = switchboard_testkit::client().await;
        let table = switchboard_testkit::table(&client).await;
        let registry = DynamoRegistry::new(client, table.clone(), clock.clone());
        let ecs = switchboard_testkit::ecs_client();
        let (cluster, definition) = switchboard_testkit::ecs_cluster(&ecs).await;
        let limits = Limits::default();
        let mut settings = switchboard_testkit::ecs_settings(&cluster, &definition, &table, limits);
        settings.retry_budget = Duration::from_millis(300);
        let launcher = EcsLauncher::new(failing_ecs, settings);

        let call = CallId::parse("call-unknown").unwrap();
        let key = switchboard_core::IdempotencyKey::parse("retry-me").unwrap();
        let err = service::start_session(
            &registry,
            &launcher,
            &limits,
            call.clone(),
            StartSession {
                idempotency_key: Some(key.clone()),
                ..StartSession::default()
            },
        )
        .await
        .unwrap_err();
        assert!(
            matches!(err, Error::Unavailable { .. }),
            "503 + Retry-After: {err:?}"
        );
        assert!(rule.num_calls() >= 2, "retried with the same token");
        let page = registry
            .list(switchboard_core::registry::ListQuery {
                call_id: Some(call.clone()),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(page.sessions.len(), 1);
        assert_eq!(
            page.sessions[0].session.status,
            SessionStatus::Starting,
            "left for the reaper"
        );
        assert_eq!(
            registry.counts(&call).await.unwrap().global,
            1,
            "its slot is held meanwhile"
        );

        // Past its lease, the sweep asks ECS: no task was ever started → start_failed.
        clock.advance(limits.session_lease() + Duration::from_secs(1));
        let (reaper, tasks) = super::reaper(&table, &cluster, clock.clone()).await;
        let report = Sweeper {
            registry: &reaper,
            tasks: &tasks,
            limits: &limits,
            start_deadline: Duration::from_secs(600),
            clock: &*clock,
            pool: None,
        }
        .sweep(Duration::from_secs(10))
        .await
        .unwrap();
        assert_eq!(report.start_failed, 1, "{report:?}");
        let row = registry
            .get(&call, page.sessions[0].session.id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(row.end_reason, Some(EndReason::StartFailed));
        assert_eq!(registry.counts(&call).await.unwrap().global, 0, "slot back");
        // A start that never happened does not consume its Idempotency-Key, also when the
        // reaper ends it: the client's retry with the key is a new start, not a replay.
        let retried = registry
            .start(switchboard_core::registry::StartRequest {
                session_id: SessionId::generate(),
                call_id: call.clone(),
                call_type: CallType::default(),
                metadata: None,
                idempotency: Some(switchboard_core::registry::Idempotency::new(
                    key,
                    &CallType::default(),
                    None,
                )),
                max_concurrent_sessions: None,
                max_sessions_per_call: None,
                lease: limits.session_lease(),
            })
            .await
            .unwrap();
        assert!(
            matches!(retried, StartOutcome::Created(_)),
            "the key was released: {retried:?}"
        );
    }
}
