//! `demo-agent task` — the agent inside an ECS task — as a real child process against moto,
//! started with the environment `EcsLauncher`'s container override carries, for a session
//! admitted the way the API admits it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use switchboard_aws::DynamoRegistry;
use switchboard_core::registry::{StartOutcome, StartRequest};
use switchboard_core::{
    CallId, CallType, EndReason, Metadata, Session, SessionRegistry, SessionStatus, SystemClock,
    Timestamp,
};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Child;

use crate::binary::{command, read_until, sigterm};

struct Fixture {
    registry: DynamoRegistry,
    table: String,
}

async fn fixture() -> Fixture {
    let client = switchboard_testkit::client().await;
    let table = switchboard_testkit::table(&client).await;
    Fixture {
        registry: DynamoRegistry::new(client, table.clone(), Arc::new(SystemClock)),
        table,
    }
}

impl Fixture {
    /// Admits a session as the API does (one slot of a limit of 20).
    async fn admit(&self, call: &str, metadata: Option<Value>) -> Session {
        self.admit_with_lease(call, metadata, Duration::from_secs(30))
            .await
    }

    async fn admit_with_lease(
        &self,
        call: &str,
        metadata: Option<Value>,
        lease: Duration,
    ) -> Session {
        self.admit_request(call, metadata, lease, None).await
    }

    /// Admits a session that came with an Idempotency-Key.
    async fn admit_keyed(&self, call: &str, key: &str) -> Session {
        self.admit_request(call, None, Duration::from_secs(30), Some(key))
            .await
    }

    async fn admit_request(
        &self,
        call: &str,
        metadata: Option<Value>,
        lease: Duration,
        key: Option<&str>,
    ) -> Session {
        let request = StartRequest {
            session_id: switchboard_core::SessionId::generate(),
            call_id: CallId::parse(call).unwrap(),
            call_type: CallType::default(),
            metadata: metadata.map(|m| Metadata::parse(m).unwrap()),
            idempotency: key.map(|k| {
                switchboard_core::registry::Idempotency::new(
                    switchboard_core::IdempotencyKey::parse(k).unwrap(),
                    &CallType::default(),
                    None,
                )
            }),
            max_concurrent_sessions: Some(20),
            max_sessions_per_call: None,
            lease,
        };
        match self.registry.start(request).await.unwrap() {
            StartOutcome::Created(s) => s,
            StartOutcome::Replayed(_) => unreachable!(),
        }
    }

    /// The task for `session` behind a proxy that cuts the table off, once it retries reading
    /// its row: the child, the proxy (to restore), its log lines and those read so far.
    async fn task_during_outage(
        &self,
        session: &Session,
    ) -> (
        Child,
        switchboard_testkit::proxy::Proxy,
        tokio::io::Lines<BufReader<tokio::process::ChildStderr>>,
        Vec<Value>,
    ) {
        let endpoint = switchboard_testkit::endpoint();
        let proxy =
            switchboard_testkit::proxy::Proxy::start(endpoint.trim_start_matches("http://"))
                .await
                .expect("the proxy");
        proxy.cut();
        let mut child = self.task(session, &proxy.url, &[]);
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let mut log = Vec::new();
        read_until(&mut lines, &mut log, |v| {
            v["message"] == "could not read the session row; retrying"
        })
        .await;
        (child, proxy, lines, log)
    }

    /// The task process for `session`, with the override's environment plus `extra`.
    fn task(&self, session: &Session, endpoint: &str, extra: &[(&str, &str)]) -> Child {
        let mut cmd = command(&["task", "--log-format", "json"]);
        cmd.env("SESSION_ID", session.id.to_string())
            .env("CALL_ID", session.call_id.as_str())
            .env("CALL_TYPE", session.call_type.as_str())
            .env("TABLE_NAME", &self.table)
            .env("SWITCHBOARD_MAINTENANCE_INTERVAL", "1")
            .env("AWS_ENDPOINT_URL", endpoint)
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing");
        for (k, v) in extra {
            cmd.env(k, v);
        }
        cmd.spawn().expect("demo-agent task")
    }

    async fn row(&self, session: &Session) -> Session {
        self.registry
            .get(&session.call_id, session.id)
            .await
            .unwrap()
            .expect("the row")
    }

    /// Waits (polling the table) until `pred` holds for the row.
    async fn until(
        &self,
        session: &Session,
        what: &str,
        pred: impl Fn(&Session) -> bool,
    ) -> Session {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let row = self.row(session).await;
            if pred(&row) {
                return row;
            }
            assert!(Instant::now() < deadline, "never {what}: {row:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn exit_code(child: &mut Child) -> i32 {
    tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("the task exits")
        .expect("wait")
        .code()
        .expect("an exit code")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_runs_heartbeats_flushes_metrics_and_leaves_within_an_interval_of_a_close() {
    let f = fixture().await;
    let session = f
        .admit(
            "call-task",
            Some(serde_json::json!({"participant_seconds": 60})),
        )
        .await;
    let mut child = f.task(&session, &switchboard_testkit::endpoint(), &[]);
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut log = Vec::new();
    let joined = read_until(&mut lines, &mut log, |v| {
        v["message"] == "agent joined the call"
    })
    .await;
    assert!(joined["start_to_join_ms"].as_i64().is_some(), "{joined}");
    let running = f
        .until(&session, "running", |r| r.status == SessionStatus::Running)
        .await;
    let first_lease = running.lease_expires_at;
    let renewed = f
        .until(&session, "heartbeating", |r| {
            r.heartbeat_at.is_some() && r.lease_expires_at > first_lease
        })
        .await;
    assert!(renewed.lease_expires_at > renewed.heartbeat_at.unwrap());
    // The demo agent answers its participant: metrics flushed to the metrics item.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let metrics = f
            .registry
            .get_metrics(&session.call_id, session.id)
            .await
            .unwrap()
            .expect("metrics");
        if metrics
            .report
            .is_some_and(|r| !r.metrics.to_map().is_empty())
        {
            break;
        }
        assert!(Instant::now() < deadline, "no metrics flushed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let asked = Instant::now();
    f.registry
        .request_close(&session.call_id, session.id)
        .await
        .unwrap();
    assert_eq!(exit_code(&mut child).await, 0);
    let took = asked.elapsed();
    let ended = f.row(&session).await;
    assert_eq!(ended.status, SessionStatus::Ended);
    assert_eq!(ended.end_reason, Some(EndReason::Requested));
    eprintln!("close → process exit: {took:?} at a 1 s interval");
    let counts = f.registry.counts(&session.call_id).await.unwrap();
    assert_eq!(counts.global, 0, "the slot is back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_ends_the_session_shutdown_and_exits_0() {
    let f = fixture().await;
    let session = f.admit("call-term", None).await;
    let mut child = f.task(
        &session,
        &switchboard_testkit::endpoint(),
        &[("DEMO_PARTICIPANT_SECONDS", "60")],
    );
    f.until(&session, "running", |r| r.status == SessionStatus::Running)
        .await;
    sigterm(&child).await;
    assert_eq!(exit_code(&mut child).await, 0);
    let ended = f.row(&session).await;
    assert_eq!(ended.end_reason, Some(EndReason::Shutdown));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_max_duration_end_the_session_with_their_reason() {
    let f = fixture().await;
    let idle = f.admit("call-idle", None).await;
    let long = f.admit("call-long", None).await;
    let endpoint = switchboard_testkit::endpoint();
    let mut a = f.task(
        &idle,
        &endpoint,
        &[
            ("DEMO_PARTICIPANT_SECONDS", "1"),
            ("SWITCHBOARD_AGENT_IDLE_TIMEOUT", "1"),
        ],
    );
    let mut b = f.task(
        &long,
        &endpoint,
        &[
            ("DEMO_PARTICIPANT_SECONDS", "60"),
            ("SWITCHBOARD_MAX_SESSION_DURATION_SECONDS", "2"),
        ],
    );
    assert_eq!(exit_code(&mut a).await, 0);
    assert_eq!(exit_code(&mut b).await, 0);
    assert_eq!(f.row(&idle).await.end_reason, Some(EndReason::Idle));
    assert_eq!(f.row(&long).await.end_reason, Some(EndReason::MaxDuration));
}

/// The join deadline in the agent's own process: an agent whose call never takes it in
/// ends `start_failed` `agent_join_timeout` after `create_agent`, saying so; its slots come
/// back and the task exits 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_that_never_joins_ends_start_failed_at_its_join_deadline() {
    let f = fixture().await;
    let session = f.admit("call-nojoin", None).await;
    let endpoint = switchboard_testkit::endpoint();
    let mut child = f.task(
        &session,
        &endpoint,
        &[
            ("DEMO_CONNECT_SECONDS", "600"),
            ("SWITCHBOARD_AGENT_JOIN_TIMEOUT", "1.5"),
        ],
    );
    assert_eq!(exit_code(&mut child).await, 1);
    let ended = f.row(&session).await;
    assert_eq!(ended.end_reason, Some(EndReason::StartFailed));
    assert_eq!(
        ended.end_detail.as_deref(),
        Some("the agent did not join its call within 1.5s of create_agent (agent_join_timeout)")
    );
    assert!(ended.running_at.is_none(), "it never ran");
    let counts = f.registry.counts(&session.call_id).await.unwrap();
    assert_eq!(
        (counts.global, counts.per_call),
        (0, 0),
        "its slots are back"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_environment_names_the_variable_and_frees_the_slot_when_it_can() {
    let f = fixture().await;
    // With an Idempotency-Key: a start that never happened gives it back.
    let session = f.admit_keyed("call-env", "env-key-1").await;
    let endpoint = switchboard_testkit::endpoint();

    // No table: nothing can be ended; exit 2 naming the variable.
    let mut cmd = command(&["task"]);
    cmd.env("SESSION_ID", session.id.to_string())
        .env("CALL_ID", "call-env");
    let out = cmd.output().await.unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("TABLE_NAME is not set (required)"),
        "{stderr}"
    );
    assert_eq!(f.row(&session).await.status, SessionStatus::Starting);

    // A bad supervisor setting with a findable row: ended start_failed, slot back.
    let mut child = f.task(
        &session,
        &endpoint,
        &[("SWITCHBOARD_MAINTENANCE_INTERVAL", "0")],
    );
    assert_eq!(exit_code(&mut child).await, 2);
    let ended = f.row(&session).await;
    assert_eq!(ended.end_reason, Some(EndReason::StartFailed));
    assert!(
        ended
            .end_detail
            .unwrap()
            .contains("maintenance_interval must be > 0")
    );
    assert_eq!(f.registry.counts(&session.call_id).await.unwrap().global, 0);
    let retried = f.admit_keyed("call-env", "env-key-1").await;
    assert_ne!(retried.id, session.id, "the key was released: a new start");

    // A session that already ended: exit 0 without joining.
    let mut again = f.task(&session, &endpoint, &[]);
    assert_eq!(exit_code(&mut again).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_closed_before_its_task_came_up_ends_requested_and_frees_its_slot() {
    let f = fixture().await;
    let session = f.admit("call-closed-early", None).await;
    f.registry
        .request_close(&session.call_id, session.id)
        .await
        .unwrap();
    let mut child = f.task(&session, &switchboard_testkit::endpoint(), &[]);
    assert_eq!(exit_code(&mut child).await, 0);
    let row = f.row(&session).await;
    assert_eq!(row.end_reason, Some(EndReason::Requested), "{row:?}");
    assert_eq!(
        row.end_detail.as_deref(),
        Some("closed before its agent joined")
    );
    assert!(!row.joined(), "the agent never joined: {row:?}");
    assert_eq!(f.registry.counts(&session.call_id).await.unwrap().global, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_that_comes_up_during_a_store_outage_waits_it_out_and_joins() {
    // The chaos test found tasks exiting 1 (their sessions start_failed) when the table was
    // unreachable for a moment as they came up.
    let f = fixture().await;
    let session = f.admit("call-blip", None).await;
    // The SDK's own attempts fail; the task retries rather than exit.
    let (mut child, proxy, mut lines, _) = f.task_during_outage(&session).await;
    proxy.restore();
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    f.until(&session, "running", |r| r.status == SessionStatus::Running)
        .await;
    f.registry
        .request_close(&session.call_id, session.id)
        .await
        .unwrap();
    assert_eq!(exit_code(&mut child).await, 0);
    assert_eq!(f.row(&session).await.end_reason, Some(EndReason::Requested));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigterm_while_the_row_is_still_being_read_is_handled_not_ignored() {
    // The handler is installed before anything else: a StopTask that lands while the task
    // rides out a store blip ends it at once (exit 0, never joined), instead of being ignored
    // (PID 1) or killing it (elsewhere) until SIGKILL at the stop timeout.
    let f = fixture().await;
    let session = f.admit("call-early-stop", None).await;
    let (mut child, proxy, mut lines, mut log) = f.task_during_outage(&session).await;
    sigterm(&child).await;
    read_until(&mut lines, &mut log, |v| {
        v["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("stopped before the session row was read"))
    })
    .await;
    assert_eq!(exit_code(&mut child).await, 0, "handled, not killed");
    proxy.restore();
    let row = f.row(&session).await;
    assert_eq!(
        row.status,
        SessionStatus::Starting,
        "left to the STOPPED event"
    );
    assert!(!row.joined());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_that_comes_up_after_its_admission_lease_expired_renews_it_and_runs() {
    // Fargate provisioning can outlast the lease (30 s by default). The chaos test found
    // agents giving up at once: the supervisor started from the admission's lease.
    let f = fixture().await;
    let session = f
        .admit_with_lease("call-late", None, Duration::from_secs(1))
        .await;
    let expired = session
        .lease_expires_at
        .saturating_since(Timestamp::now_system());
    tokio::time::sleep(expired + Duration::from_millis(200)).await;
    let mut child = f.task(
        &session,
        &switchboard_testkit::endpoint(),
        &[("SWITCHBOARD_SESSION_LEASE_SECONDS", "3")],
    );
    let row = f
        .until(&session, "running and heartbeating", |r| {
            r.status == SessionStatus::Running && r.heartbeat_at > r.running_at
        })
        .await;
    assert!(row.lease_expires_at > Timestamp::now_system(), "{row:?}");
    f.registry
        .request_close(&session.call_id, session.id)
        .await
        .unwrap();
    assert_eq!(exit_code(&mut child).await, 0);
    assert_eq!(f.row(&session).await.end_reason, Some(EndReason::Requested));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_lease_stops_the_agent_before_it_expires() {
    let f = fixture().await;
    let session = f.admit("call-lease", None).await;
    let endpoint = switchboard_testkit::endpoint();
    let proxy = switchboard_testkit::proxy::Proxy::start(endpoint.trim_start_matches("http://"))
        .await
        .expect("the proxy");
    let mut child = f.task(
        &session,
        &proxy.url,
        &[
            ("DEMO_PARTICIPANT_SECONDS", "60"),
            ("SWITCHBOARD_SESSION_LEASE_SECONDS", "4"),
        ],
    );
    f.until(&session, "running", |r| r.status == SessionStatus::Running)
        .await;
    let before = f
        .until(&session, "heartbeating", |r| r.heartbeat_at.is_some())
        .await;
    proxy.cut();
    let code = exit_code(&mut child).await;
    let exited = switchboard_core::Timestamp::now_system();
    assert_eq!(code, 1, "a lost lease is not a clean end");
    let row = f.row(&session).await;
    assert_eq!(
        row.status,
        SessionStatus::Running,
        "nothing could be written; the reaper ends it"
    );
    assert!(
        exited < row.lease_expires_at,
        "the agent left at {exited:?}, before its lease expired at {:?} (last renewed {:?})",
        row.lease_expires_at,
        before.heartbeat_at
    );
}
