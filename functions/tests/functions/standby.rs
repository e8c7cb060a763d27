//! The reaper and the warm pool, against moto, with the reaper's own clients (so the IAM test
//! sees its calls): a standby's STOPPED event deregisters an idle standby, ends a claimed
//! standby's session, or re-dispatches a session whose claimed standby stopped before it
//! joined (to another standby, else a task of its own, else `start_failed` past the start
//! deadline); the sweep stops standbys of another task definition and lapsed ones, re-
//! dispatches a warm start whose standby is gone, and refills the pool.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use switchboard_aws::DynamoRegistry;
use switchboard_aws::dynamodb::StandbyRegistry;
use switchboard_aws::ecs_tasks::EcsTasks;
use switchboard_aws::pool::WarmPool;
use switchboard_core::registry::{StartOutcome, StartRequest};
use switchboard_core::{
    CallId, EndReason, Limits, Session, SessionRegistry, SessionStatus, StandbyState, StartType,
    SystemClock,
};
use switchboard_functions::reaper::{
    Outcome, StandbyOutcome, Stopped, Sweeper, end_standby, parse_event,
};

const LEASE: Duration = Duration::from_secs(30);
const DEADLINE: Duration = Duration::from_secs(600);

struct World {
    /// The tests' own view (admissions, checks).
    registry: DynamoRegistry,
    standbys: StandbyRegistry,
    /// The reaper's, as its binary wires them.
    reaper: DynamoRegistry,
    reaper_standbys: StandbyRegistry,
    pool: WarmPool,
    tasks: EcsTasks,
    ecs: aws_sdk_ecs::Client,
    cluster: String,
    definition: String,
    limits: Limits,
}

async fn world(size: u32) -> World {
    let client = switchboard_testkit::client().await;
    let table = switchboard_testkit::table(&client).await;
    let ecs = switchboard_testkit::ecs_client();
    let (cluster, definition) = switchboard_testkit::ecs_cluster(&ecs).await;
    let config = switchboard_functions::ReaperConfig::from_lookup(|name| {
        Some(match name {
            "TABLE_NAME" => table.clone(),
            "ECS_CLUSTER" => cluster.clone(),
            "TASK_DEFINITION" => definition.clone(),
            "SUBNETS" => switchboard_testkit::subnet(),
            "SECURITY_GROUPS" => "sg-0123456789abcdef0".into(),
            "WARM_POOL_SIZE" => size.to_string(),
            _ => return None,
        })
    })
    .expect("reaper config");
    let sdk = switchboard_testkit::sdk_config().await;
    let (reaper, tasks) = switchboard_functions::reaper_parts(&config, &sdk, Arc::new(SystemClock));
    let pool = switchboard_functions::reaper_pool(&config, &sdk, reaper.clone()).expect("a pool");
    let registry = DynamoRegistry::new(client, table, Arc::new(SystemClock));
    World {
        standbys: StandbyRegistry::new(registry.clone()),
        registry,
        reaper_standbys: StandbyRegistry::new(reaper.clone()),
        reaper,
        pool,
        tasks,
        ecs,
        cluster,
        definition,
        limits: config.limits,
    }
}

impl World {
    async fn admit(&self, call: &str) -> Session {
        super::reaper::admit(&self.registry, call).await
    }

    /// `n` standby tasks started in moto (the pool's RunTask) and registered idle, as their
    /// processes would once warm.
    async fn idle_standbys(&self, n: u32) -> Vec<String> {
        let arns = self.pool.start_standbys(n).await.unwrap();
        for arn in &arns {
            self.standbys
                .register(arn, &self.definition, LEASE)
                .await
                .unwrap();
        }
        arns
    }

    async fn claim(&self, arn: &str, session: &Session) {
        assert!(
            self.standbys
                .claim(arn, &self.definition, session)
                .await
                .unwrap()
        );
    }

    async fn row(&self, s: &Session) -> Session {
        self.registry.get(&s.call_id, s.id).await.unwrap().unwrap()
    }

    async fn stopped(&self, arn: &str, deadline: Duration) -> StandbyOutcome {
        let event = standby_event(arn);
        let Ok(Stopped::Standby(stopped)) = parse_event(&event, "agent") else {
            panic!("not a standby's event")
        };
        assert_eq!(stopped.task_arn, arn);
        end_standby(
            &self.reaper_standbys,
            &self.reaper,
            Some(&self.pool),
            &self.tasks,
            &stopped,
            &self.limits,
            deadline,
            &SystemClock,
        )
        .await
        .unwrap()
    }

    async fn desired_status(&self, arn: &str) -> String {
        let out = self
            .ecs
            .describe_tasks()
            .cluster(&self.cluster)
            .tasks(arn)
            .send()
            .await
            .unwrap();
        out.tasks()[0]
            .desired_status()
            .unwrap_or_default()
            .to_owned()
    }

    async fn sweep(&self) -> switchboard_functions::reaper::SweepReport {
        Sweeper {
            registry: &self.reaper,
            tasks: &self.tasks,
            limits: &self.limits,
            start_deadline: DEADLINE,
            clock: &SystemClock,
            pool: Some(&self.pool),
        }
        .sweep(Duration::from_secs(30))
        .await
        .unwrap()
    }
}

/// The fixture's STOPPED event, for a standby's task: `STANDBY=1`, no session ids.
fn standby_event(arn: &str) -> Value {
    let mut event: Value = serde_json::from_str(include_str!(
        "../../../infra/events/ecs-task-state-change-stopped.json"
    ))
    .unwrap();
    event["detail"]["taskArn"] = Value::from(arn);
    event["detail"]["overrides"]["containerOverrides"][0]["environment"] = serde_json::json!([
        {"name": "STANDBY", "value": "1"},
        {"name": "TABLE_NAME", "value": "t"},
    ]);
    event
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_standbys_stop_deregisters_it_once() {
    let w = world(1).await;
    let arn = w.idle_standbys(1).await.remove(0);
    assert_eq!(
        w.stopped(&arn, DEADLINE).await,
        StandbyOutcome::Deregistered
    );
    assert_eq!(w.standbys.get(&arn, true).await.unwrap(), None);
    assert_eq!(
        w.stopped(&arn, DEADLINE).await,
        StandbyOutcome::Unknown,
        "a repeat"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claimed_standbys_stop_ends_its_joined_session_task_stopped() {
    let w = world(1).await;
    let arn = w.idle_standbys(1).await.remove(0);
    let session = w.admit("joined").await;
    w.claim(&arn, &session).await;
    w.registry
        .mark_running(&session.call_id, session.id)
        .await
        .unwrap();
    assert_eq!(
        w.stopped(&arn, DEADLINE).await,
        StandbyOutcome::Session(Outcome::Ended(EndReason::TaskStopped))
    );
    let row = w.row(&session).await;
    assert_eq!(row.status, SessionStatus::Ended);
    assert!(row.end_detail.unwrap().contains("exit code 137"));
    assert_eq!(w.standbys.get(&arn, true).await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_whose_standby_stopped_before_it_joined_goes_to_another_standby_then_cold() {
    let w = world(0).await;
    let arns = w.idle_standbys(2).await;
    let session = w.admit("redispatched").await;
    w.claim(&arns[0], &session).await;
    // Killed after its claim, before joining: another standby takes the session.
    assert_eq!(
        w.stopped(&arns[0], DEADLINE).await,
        StandbyOutcome::Redispatched(StartType::Warm)
    );
    let row = w.row(&session).await;
    assert_eq!(row.status, SessionStatus::Starting);
    assert_eq!(row.task_arn.as_deref(), Some(arns[1].as_str()));
    assert_eq!(row.start_type, Some(StartType::Warm));
    assert_eq!(
        w.standbys.get(&arns[1], true).await.unwrap().unwrap().state,
        StandbyState::Claimed
    );
    // A repeat of the first event: the session has moved on, nothing changes.
    assert_eq!(w.stopped(&arns[0], DEADLINE).await, StandbyOutcome::Unknown);

    // The second dies too, and no standby is left: a task of its own (the cold path).
    assert_eq!(
        w.stopped(&arns[1], DEADLINE).await,
        StandbyOutcome::Redispatched(StartType::Cold)
    );
    let row = w.row(&session).await;
    assert_eq!(row.start_type, Some(StartType::Cold));
    let listed = w
        .ecs
        .list_tasks()
        .cluster(&w.cluster)
        .started_by(session.id.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(listed.task_arns(), [row.task_arn.unwrap()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_its_start_deadline_such_a_session_ends_start_failed_with_its_slots() {
    let w = world(1).await;
    let arns = w.idle_standbys(2).await;
    let session = w.admit("too-late").await;
    w.claim(&arns[0], &session).await;
    assert_eq!(
        w.stopped(&arns[0], Duration::from_millis(1)).await,
        StandbyOutcome::Session(Outcome::Ended(EndReason::StartFailed))
    );
    let row = w.row(&session).await;
    assert_eq!(row.end_reason, Some(EndReason::StartFailed));
    assert!(row.end_detail.unwrap().contains("past the start deadline"));
    assert_eq!(
        w.registry.counts(&session.call_id).await.unwrap().per_call,
        0
    );
    // The other standby was not taken.
    assert_eq!(
        w.standbys.get(&arns[1], true).await.unwrap().unwrap().state,
        StandbyState::Idle
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweep_stops_stale_standbys_and_refills_the_pool() {
    let w = world(2).await;
    let current = w.idle_standbys(1).await.remove(0);
    // A standby of the previous task definition (a deploy happened) and a lapsed one.
    let old = w.pool.start_standbys(1).await.unwrap().remove(0);
    w.standbys
        .register(&old, &format!("{}-previous", w.definition), LEASE)
        .await
        .unwrap();
    let lapsed = w.pool.start_standbys(1).await.unwrap().remove(0);
    w.standbys
        .register(&lapsed, &w.definition, Duration::ZERO)
        .await
        .unwrap();
    // A claimed one is left to its session.
    let claimed = w.idle_standbys(1).await.remove(0);
    let session = w.admit("kept").await;
    w.claim(&claimed, &session).await;
    w.registry
        .mark_running(&session.call_id, session.id)
        .await
        .unwrap();

    let report = w.sweep().await;
    let pool = report.pool.expect("the pool was swept");
    assert_eq!(pool.stopped, 2, "{report:?}");
    assert_eq!(pool.idle, 1, "{report:?}");
    assert_eq!(
        pool.started, 1,
        "back to two: one idle and one provisioning: {report:?}"
    );
    for stale in [&old, &lapsed] {
        assert_eq!(w.standbys.get(stale, true).await.unwrap(), None);
        assert_eq!(w.desired_status(stale).await, "STOPPED");
    }
    assert_eq!(w.desired_status(&current).await, "RUNNING");
    assert_eq!(
        w.standbys.get(&claimed, true).await.unwrap().unwrap().state,
        StandbyState::Claimed
    );
    // Full: the next sweep starts nothing.
    assert_eq!(w.sweep().await.pool.unwrap().started, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweep_redispatches_a_warm_start_whose_standby_is_gone() {
    let w = world(0).await;
    let arn = w.idle_standbys(1).await.remove(0);
    let session = StartRequest {
        lease: Duration::ZERO,
        ..super::reaper::request(CallId::parse("lost-event").unwrap())
    };
    let StartOutcome::Created(session) = w.registry.start(session).await.unwrap() else {
        unreachable!()
    };
    w.claim(&arn, &session).await;
    // Its task stops and the STOPPED event is lost.
    w.tasks.stop(&arn, "test: killed").await.unwrap();
    let report = w.sweep().await;
    assert_eq!(report.redispatched, 1, "{report:?}");
    let row = w.row(&session).await;
    assert_eq!(row.status, SessionStatus::Starting);
    assert_eq!(row.start_type, Some(StartType::Cold));
    assert_ne!(row.task_arn.as_deref(), Some(arn.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_redispatches_of_one_session_move_it_once() {
    // The STOPPED event and a sweep may both find the session on its gone standby: each
    // moves it only from that task, so the second changes nothing (and stops what it
    // started).
    let w = world(0).await;
    let arns = w.idle_standbys(3).await;
    let session = w.admit("raced").await;
    w.claim(&arns[0], &session).await;
    let stale = w.row(&session).await;
    assert_eq!(stale.task_arn.as_deref(), Some(arns[0].as_str()));
    let redispatch = |snapshot: Session| {
        let w = &w;
        async move {
            switchboard_functions::reaper::redispatch(
                &w.pool,
                &w.tasks,
                &w.reaper,
                &snapshot,
                "test: gone",
                &w.limits,
                DEADLINE,
                &SystemClock,
            )
            .await
            .unwrap()
        }
    };
    assert_eq!(
        redispatch(stale.clone()).await,
        Outcome::Redispatched(StartType::Warm)
    );
    let moved = w.row(&session).await.task_arn.unwrap();
    assert_eq!(redispatch(stale.clone()).await, Outcome::AlreadyEnded);
    assert_eq!(
        w.row(&session).await.task_arn.as_deref(),
        Some(moved.as_str())
    );
    let idle = w
        .standbys
        .list()
        .await
        .unwrap()
        .into_iter()
        .filter(|s| s.state == StandbyState::Idle)
        .count();
    assert_eq!(idle, 1, "the loser claimed nothing");

    // Cold: the same, the loser's task is stopped.
    for arn in &arns {
        w.standbys.delete(arn, None).await.unwrap();
    }
    let on_moved = w.row(&session).await;
    assert_eq!(
        redispatch(on_moved.clone()).await,
        Outcome::Redispatched(StartType::Cold)
    );
    let cold = w.row(&session).await.task_arn.unwrap();
    assert_eq!(redispatch(on_moved).await, Outcome::AlreadyEnded);
    assert_eq!(
        w.row(&session).await.task_arn.as_deref(),
        Some(cold.as_str())
    );
    assert_eq!(w.desired_status(&cold).await, "RUNNING");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweep_trims_idle_standbys_above_the_size_and_all_of_them_at_zero() {
    let w = world(1).await;
    let arns = w.idle_standbys(3).await;
    let report = w.sweep().await.pool.unwrap();
    assert_eq!(
        (report.stopped, report.idle, report.started),
        (2, 1, 0),
        "{report:?}"
    );
    let left = w.standbys.list().await.unwrap();
    assert_eq!(left.len(), 1, "{left:#?}");
    for arn in &arns {
        let kept = left[0].task_arn == *arn;
        assert_eq!(
            w.desired_status(arn).await,
            if kept { "RUNNING" } else { "STOPPED" },
            "{arn}"
        );
    }
    // WarmPoolSize 0: no standby stays (no spend).
    let w = world(0).await;
    w.idle_standbys(2).await;
    let report = w.sweep().await.pool.unwrap();
    assert_eq!((report.stopped, report.started), (2, 0), "{report:?}");
    assert!(w.standbys.list().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stray_tasks_stop_leaves_a_session_another_task_hosts() {
    // A task started for a session that another task hosts now (the loser of a re-dispatch,
    // a cold fallback beside a claim that committed): its STOPPED event ends nothing.
    let w = world(0).await;
    let arn = w.idle_standbys(1).await.remove(0);
    let session = w.admit("hosted").await;
    w.claim(&arn, &session).await;
    let mut event: Value = serde_json::from_str(
        &include_str!("../../../infra/events/ecs-task-state-change-stopped.json")
            .replace("SESSION_ID_HERE", &session.id.to_string())
            .replace("CALL_ID_HERE", session.call_id.as_str()),
    )
    .unwrap();
    event["detail"]["taskArn"] = Value::from("arn:aws:ecs:us-east-1:123456789012:task/c/stray");
    let Ok(Stopped::Session(stopped)) = parse_event(&event, "agent") else {
        panic!("a session's task")
    };
    assert_eq!(
        switchboard_functions::reaper::end_stopped(&w.reaper, &stopped, &w.limits)
            .await
            .unwrap(),
        Outcome::OtherTask
    );
    assert_eq!(w.row(&session).await.status, SessionStatus::Starting);
}
