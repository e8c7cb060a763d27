//! End to end under `cargo lambda watch` (its Lambda runtime API and function-URL front end)
//! with the prebuilt `api` binary against moto's DynamoDB and ECS: several function instances
//! serve concurrently, like Lambda's execution environments.
//!
//! `cargo lambda watch --only-lambda-apis` serves the runtime API; this test starts the
//! function processes itself (the binary cargo built for this test, so nothing is compiled
//! on the first request), as many as `INSTANCES`. Overlap is proven from the functions' own
//! logs: two invocations on two instances whose [start, end] intervals intersect.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;
use switchboard_aws::DynamoRegistry;
use switchboard_core::registry::{StartOutcome, StartRequest};
use switchboard_core::{CallId, SessionId, SessionRegistry, SystemClock};
use switchboard_testkit::http::{Reply, request};
use tokio::process::{Child, Command};

const INSTANCES: usize = 4;

struct Stack {
    addr: String,
    _watch: Child,
    _functions: Vec<Child>,
    dir: PathBuf,
    logs: Vec<PathBuf>,
    table: String,
    cluster: String,
    init: Duration,
}

async fn wait_for(addr: &str, path: &str, want: u16) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            let reply =
                tokio::time::timeout(Duration::from_secs(5), request(addr, "GET", path, &[], ""))
                    .await;
            if matches!(reply, Ok(Reply { status, .. }) if status == want) {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{addr}{path} never answered {want}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

impl Stack {
    async fn start(
        instances: usize,
        edit: impl FnOnce(&mut HashMap<&'static str, String>),
    ) -> Self {
        Self::start_function(&switchboard_testkit::bins::bin("api"), instances, edit).await
    }

    /// Like [`Stack::start`], for any of the package's function binaries.
    async fn start_function(
        binary: &std::path::Path,
        instances: usize,
        edit: impl FnOnce(&mut HashMap<&'static str, String>),
    ) -> Self {
        let dynamodb = switchboard_testkit::client().await;
        let table = switchboard_testkit::table(&dynamodb).await;
        let ecs = switchboard_testkit::ecs_client();
        let (cluster, definition) = switchboard_testkit::ecs_cluster(&ecs).await;
        let port = crate::free_port();
        let addr = format!("127.0.0.1:{port}");
        let mut watch = Command::new("cargo")
            .args([
                "lambda",
                "watch",
                "--only-lambda-apis",
                // The function answers CORS itself (the template declares none on the HTTP
                // API); watch's own CORS layer would add a second `vary` to every response.
                "--disable-cors",
                "-A",
                "127.0.0.1",
                "-P",
            ])
            .arg(port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect(
                "cargo lambda (pip install cargo-lambda; ./scripts/test puts .venv/bin on PATH)",
            );
        let deadline = Instant::now() + Duration::from_secs(30);
        while tokio::net::TcpStream::connect(&addr).await.is_err() {
            if let Ok(Some(status)) = watch.try_wait() {
                panic!(
                    "`cargo lambda watch` exited ({status}): is cargo-lambda on PATH? \
                     ./scripts/test installs it into .venv and puts .venv/bin first"
                );
            }
            assert!(
                Instant::now() < deadline,
                "cargo lambda watch did not listen"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut vars: HashMap<&'static str, String> = HashMap::from([
            ("TABLE_NAME", table.clone()),
            ("ECS_CLUSTER", cluster.clone()),
            ("TASK_DEFINITION", definition),
            ("SUBNETS", switchboard_testkit::subnet()),
            ("SECURITY_GROUPS", "sg-0123456789abcdef0".into()),
            ("SWITCHBOARD_MAX_CONCURRENT_SESSIONS", "6".into()),
        ]);
        edit(&mut vars);
        let dir = std::env::temp_dir().join(format!("switchboard-lambda-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&dir).expect("log dir");
        let started = Instant::now();
        let mut functions = Vec::new();
        let mut logs = Vec::new();
        for i in 0..instances {
            let log = dir.join(format!("api-{i}.log"));
            let file = std::fs::File::create(&log).expect("log file");
            let child = Command::new(binary)
                .envs(vars.iter().map(|(k, v)| (*k, v.as_str())))
                .env("AWS_LAMBDA_RUNTIME_API", format!("http://{addr}/.rt"))
                .env("AWS_LAMBDA_FUNCTION_NAME", "_")
                .env("AWS_LAMBDA_FUNCTION_VERSION", "1")
                .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
                .env("AWS_ENDPOINT_URL", switchboard_testkit::endpoint())
                .env("AWS_REGION", "us-east-1")
                .env("AWS_ACCESS_KEY_ID", "testing")
                .env("AWS_SECRET_ACCESS_KEY", "testing")
                .env("RUST_LOG", "info,tower_http=debug")
                .stdout(file)
                .stderr(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .expect("the api binary");
            functions.push(child);
            logs.push(log);
        }
        if !binary.ends_with("reaper") {
            wait_for(&addr, "/lambda-url/_/health", 200).await;
        }
        let init = started.elapsed();
        Stack {
            addr,
            _watch: watch,
            _functions: functions,
            dir,
            logs,
            table,
            cluster,
            init,
        }
    }

    async fn call(&self, method: &str, path: &str, body: &str) -> Reply {
        let headers: &[(&str, &str)] = if body.is_empty() {
            &[]
        } else {
            &[("content-type", "application/json")]
        };
        request(
            &self.addr,
            method,
            &format!("/lambda-url/_{path}"),
            headers,
            body,
        )
        .await
    }

    /// Every invocation's [start, end] per instance, from the functions' JSON logs.
    fn invocations(&self) -> Vec<Vec<(String, String)>> {
        self.logs
            .iter()
            .map(|log| {
                let mut open = HashMap::new();
                let mut done = Vec::new();
                for line in std::fs::read_to_string(log).unwrap_or_default().lines() {
                    let Ok(v) = serde_json::from_str::<Value>(line) else {
                        continue;
                    };
                    let id = v["span"]["requestId"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned();
                    let at = v["timestamp"].as_str().unwrap_or_default().to_owned();
                    match v["fields"]["message"].as_str() {
                        Some("started processing request") => {
                            open.insert(id, at);
                        }
                        Some("finished processing request" | "response failed") => {
                            if let Some(start) = open.remove(&id) {
                                done.push((start, at));
                            }
                        }
                        _ => {}
                    }
                }
                done
            })
            .collect()
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn registry(table: &str) -> DynamoRegistry {
    DynamoRegistry::new(
        switchboard_testkit::client().await,
        table,
        std::sync::Arc::new(SystemClock),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_under_cargo_lambda_watch_serves_sessions_from_dynamodb_and_ecs() {
    let stack = Stack::start(INSTANCES, |_| {}).await;
    eprintln!(
        "{INSTANCES} function instances answered in {:?} (process start to first response)",
        stack.init
    );
    let ecs = switchboard_testkit::ecs_client();
    let registry = registry(&stack.table).await;

    // POST writes the row, then one RunTask whose overrides carry the session.
    let created = stack
        .call(
            "POST",
            "/calls/call-e2e/sessions",
            r#"{"metadata":{"topic":"weather"}}"#,
        )
        .await;
    assert_eq!(created.status, 201, "{created:?}");
    let id = created.json()["session_id"].as_str().unwrap().to_owned();
    let call = CallId::parse("call-e2e").unwrap();
    let session_id = SessionId::parse(&id).unwrap();
    let row = registry
        .get(&call, session_id)
        .await
        .unwrap()
        .expect("the row");
    let arn = row.task_arn.clone().expect("the task ARN on the row");
    let env = switchboard_testkit::task_environment(&ecs, &stack.cluster, &arn).await;
    assert_eq!(env["SESSION_ID"], id);
    assert_eq!(env["CALL_ID"], "call-e2e");
    assert_eq!(env["TABLE_NAME"], stack.table);
    let metadata = registry
        .get_metadata(&call, session_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        metadata.as_map()["topic"],
        "weather",
        "the task reads it from the table"
    );

    // GET, list, metrics and close per docs/api.md.
    let path = format!("/calls/call-e2e/sessions/{id}");
    let got = stack.call("GET", &path, "").await;
    assert_eq!(
        (got.status, got.json()["status"].clone()),
        (200, "starting".into())
    );
    let listed = stack.call("GET", "/calls/call-e2e/sessions", "").await;
    assert_eq!(listed.json()["sessions"][0]["session_id"], id.as_str());
    let metrics = stack.call("GET", &format!("{path}/metrics"), "").await;
    assert_eq!(metrics.status, 200);
    assert_eq!(metrics.json()["metrics"].as_object().unwrap().len(), 70);
    let closed = stack.call("DELETE", &path, "").await;
    assert_eq!(closed.status, 202);
    let closing = stack.call("GET", &path, "").await.json();
    assert_eq!(closing["status"], "closing");
    let unknown = stack
        .call("GET", "/calls/call-e2e/sessions/some-id", "")
        .await;
    assert_eq!(unknown.status, 404);
    assert_eq!(
        unknown.json()["detail"],
        "Session with id 'some-id' not found"
    );

    // Limits under concurrent invocations: 1 live + 20 concurrent starts, limit 6 → 5 more.
    let starts = (0..20).map(|i| {
        let stack = &stack;
        async move {
            stack
                .call("POST", &format!("/calls/load-{i}/sessions"), "")
                .await
        }
    });
    let replies = futures::future::join_all(starts).await;
    let created = replies.iter().filter(|r| r.status == 201).count();
    let refused: Vec<&Reply> = replies.iter().filter(|r| r.status == 429).collect();
    assert_eq!(
        created,
        5,
        "{:?}",
        replies.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    assert_eq!(refused.len(), 15);
    assert!(
        refused
            .iter()
            .all(|r| r.json()["detail"] == "Reached maximum number of concurrent sessions")
    );
    let counts = registry.counts(&call).await.unwrap();
    assert_eq!(counts.global, 6, "the counter equals the live sessions");
    assert_eq!(
        switchboard_testkit::running_tasks(&ecs, &stack.cluster).await,
        6,
        "one task per admitted session, none for refusals"
    );

    // The invocations provably overlapped on different instances.
    let invocations = stack.invocations();
    let served = invocations.iter().filter(|i| !i.is_empty()).count();
    assert!(served >= 2, "several instances served: {invocations:?}");
    let overlapped = invocations.iter().enumerate().any(|(a, mine)| {
        invocations.iter().enumerate().any(|(b, theirs)| {
            a != b
                && mine
                    .iter()
                    .any(|(s1, e1)| theirs.iter().any(|(s2, e2)| s1 < e2 && s2 < e1))
        })
    });
    assert!(overlapped, "no two invocations overlapped: {invocations:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_run_task_under_cargo_lambda_watch_leaves_no_slot_taken() {
    let stack = Stack::start(1, |vars| {
        vars.insert("TASK_DEFINITION", "no-such-definition:1".into());
        vars.insert("SWITCHBOARD_MAX_CONCURRENT_SESSIONS", "1".into());
    })
    .await;
    let call = CallId::parse("call-f").unwrap();
    for _ in 0..3 {
        let mut reply = stack.call("POST", "/calls/call-f/sessions", "").await;
        // A start slower than its deadline (a cold function on CI's 2 cores) is 503 and goes
        // on in the background: its failure gives the slot back too, then it is retried.
        let deadline = Instant::now() + Duration::from_secs(60);
        while reply.status == 503 && Instant::now() < deadline {
            while registry(&stack.table)
                .await
                .counts(&call)
                .await
                .unwrap()
                .global
                != 0
            {
                assert!(Instant::now() < deadline, "a 503's slot never came back");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            reply = stack.call("POST", "/calls/call-f/sessions", "").await;
        }
        assert_eq!(reply.status, 500, "{reply:?}");
        assert_eq!(reply.json()["detail"], "Failed to start agent");
    }
    let counts = registry(&stack.table).await.counts(&call).await.unwrap();
    assert_eq!(
        (counts.global, counts.per_call),
        (0, 0),
        "every slot given back"
    );
}

/// What `sam build` made: the test command builds it first (`sam build ApiFunction
/// --build-in-source`, x86_64) and names it in `SWITCHBOARD_TEST_SAM_BOOTSTRAP`.
fn sam_bootstrap() -> String {
    let path = std::env::var("SWITCHBOARD_TEST_SAM_BOOTSTRAP").expect(
        "SWITCHBOARD_TEST_SAM_BOOTSTRAP is not set: run ./scripts/test, which runs sam build first",
    );
    assert!(
        std::path::Path::new(&path).is_file(),
        "{path}: sam build made no bootstrap"
    );
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_function_sam_build_made_serves_health_and_a_session_lifecycle() {
    // The artifact a deploy uploads, not the test build: SAM's own cargo-lambda build
    // (an explicit target triple, its own profile and features) under cargo lambda watch.
    let stack = Stack::start_function(std::path::Path::new(&sam_bootstrap()), 1, |_| {}).await;
    let health = stack.call("GET", "/health", "").await;
    assert_eq!(health.status, 200);
    // Each header once through the function (lambda_http keeps one value per header).
    let mut names: Vec<&str> = health.headers.iter().map(|(n, _)| n.as_str()).collect();
    let all = names.len();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), all, "{:?}", health.headers);
    assert_eq!(stack.call("GET", "/ready", "").await.status, 200);
    let created = stack
        .call(
            "POST",
            "/calls/call-sam/sessions",
            r#"{"metadata":{"via":"sam"}}"#,
        )
        .await;
    assert_eq!(created.status, 201, "{created:?}");
    let id = created.json()["session_id"].as_str().unwrap().to_owned();
    let path = format!("/calls/call-sam/sessions/{id}");
    let got = stack.call("GET", &path, "").await;
    assert_eq!(got.status, 200, "{got:?}");
    assert_eq!(got.json()["status"], "starting");
    assert_eq!(
        stack
            .call("GET", &format!("{path}/metrics"), "")
            .await
            .status,
        200
    );
    assert_eq!(stack.call("DELETE", &path, "").await.status, 202);
    assert_eq!(
        stack.call("GET", &path, "").await.json()["status"],
        "closing"
    );
    let listed = stack.call("GET", "/calls/call-sam/sessions", "").await;
    assert_eq!(listed.json()["sessions"][0]["session_id"], id.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docs_without_a_slash_renders_the_operations_through_the_function() {
    // Chromium starts within its wait only when no heavy test loads both cores.
    let _heavy = crate::HEAVY.lock().await;
    // /docs is the page itself (200), and its relative assets and document resolve under the
    // function's URL prefix (cargo lambda watch's /lambda-url/_/), as under a stage on AWS.
    let stack = Stack::start(1, |_| {}).await;
    let page = stack.call("GET", "/docs", "").await;
    assert_eq!(page.status, 200, "{page:?}");
    let mut browser = switchboard_testkit::browser::Chromium::launch(
        &format!("http://{}/lambda-url/_/docs", stack.addr),
        1280,
        800,
    )
    .await;
    browser
        .wait_for(
            "document.querySelectorAll('.opblock').length >= 7",
            "Swagger UI rendering the API's operations",
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_serverless_path_end_to_end_with_the_local_ecs_running_the_task() {
    let stack = Stack::start(2, |vars| {
        vars.insert("SWITCHBOARD_MAINTENANCE_INTERVAL", "1".into());
    })
    .await;
    let ecs = switchboard_testkit::ecs_client();
    // The api alone here (the reaper's path: local_stack.rs): events are only logged.
    let local = crate::local_ecs(
        &stack.cluster,
        std::sync::Arc::new(switchboard_local_ecs::LogSink),
        |_| {},
    )
    .await;
    let posted = Instant::now();
    let created = stack.call("POST", "/calls/call-fargate/sessions", "").await;
    assert_eq!(created.status, 201, "{created:?}");
    let id = created.json()["session_id"].as_str().unwrap().to_owned();
    let tasks = switchboard_testkit::tasks_started_by(&ecs, &stack.cluster, &id).await;

    let path = format!("/calls/call-fargate/sessions/{id}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while stack.call("GET", &path, "").await.json()["status"] != "running" {
        assert!(
            Instant::now() < deadline,
            "the agent never reported running; its log: {}",
            local.log_of(&tasks[0]).display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "POST → running through the local ECS's task: {:?}",
        posted.elapsed()
    );
    let log = std::fs::read_to_string(local.log_of(&tasks[0])).unwrap();
    assert!(
        log.lines().next().unwrap().contains(&id),
        "the task's log names its session first: {log}"
    );
    // The agent's metrics reach the API once flushed (the demo agent answers its participant).
    loop {
        let metrics = stack
            .call("GET", &format!("{path}/metrics"), "")
            .await
            .json();
        if metrics["metrics"]["llm_latency_ms__count"]
            .as_u64()
            .unwrap_or(0)
            > 0
        {
            break;
        }
        assert!(Instant::now() < deadline, "no metrics: {metrics}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let closed_at = Instant::now();
    let closed_sys = std::time::SystemTime::now();
    assert_eq!(stack.call("DELETE", &path, "").await.status, 202);
    let exit = loop {
        if let Some(exit) = local.exits().into_iter().find(|e| e.task_arn == tasks[0]) {
            break exit;
        }
        assert!(
            closed_at.elapsed() < Duration::from_secs(30),
            "the agent task did not exit after the close"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(exit.code, Some(0));
    eprintln!(
        "DELETE → agent process exit: {:?} (interval 1 s)",
        exit.at.duration_since(closed_sys).unwrap_or_default()
    );
    // The local ECS stops the exited task in the emulator, as ECS does.
    let deadline = Instant::now() + Duration::from_secs(10);
    while switchboard_testkit::running_tasks(&ecs, &stack.cluster).await != 0 {
        assert!(Instant::now() < deadline, "the exited task still RUNNING");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let gone = stack.call("GET", &path, "").await;
    assert_eq!(gone.status, 404, "ended sessions answer 404");
    let history = stack
        .call("GET", "/calls/call-fargate/sessions?include_ended=true", "")
        .await
        .json();
    assert_eq!(history["sessions"][0]["end_reason"], "requested");
    assert!(
        history["sessions"][0]["metrics"]["llm_latency_ms__count"]
            .as_u64()
            .unwrap()
            > 0,
        "final metrics kept with the ended row"
    );
    let counts = registry(&stack.table)
        .await
        .counts(&CallId::parse("call-fargate").unwrap())
        .await
        .unwrap();
    assert_eq!((counts.global, counts.per_call), (0, 0), "slots released");
    local.shutdown(Duration::from_secs(5)).await;
}

/// Invokes the function with an event, as EventBridge does (the Lambda Invoke API of
/// `cargo lambda watch`).
async fn invoke(stack: &Stack, event: &Value) -> Value {
    let reply = request(
        &stack.addr,
        "POST",
        "/2015-03-31/functions/_/invocations",
        &[("content-type", "application/json")],
        &event.to_string(),
    )
    .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    reply.json()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reaper_under_cargo_lambda_watch_ends_a_stopped_tasks_session_once_and_sweeps() {
    let stack = Stack::start_function(&switchboard_testkit::bins::bin("reaper"), 1, |_| {}).await;
    let registry = registry(&stack.table).await;
    let call = CallId::parse("call-reaped").unwrap();
    let StartOutcome::Created(session) = registry
        .start(StartRequest {
            session_id: SessionId::generate(),
            call_id: call.clone(),
            call_type: switchboard_core::CallType::default(),
            metadata: None,
            idempotency: None,
            max_concurrent_sessions: Some(5),
            max_sessions_per_call: None,
            lease: Duration::from_secs(30),
        })
        .await
        .unwrap()
    else {
        unreachable!()
    };
    registry.mark_running(&call, session.id).await.unwrap();
    let event: Value = serde_json::from_str(
        &include_str!("../../infra/events/ecs-task-state-change-stopped.json")
            .replace("SESSION_ID_HERE", &session.id.to_string())
            .replace("CALL_ID_HERE", call.as_str()),
    )
    .unwrap();
    assert_eq!(
        invoke(&stack, &event).await["outcome"],
        "Ended(TaskStopped)"
    );
    assert_eq!(invoke(&stack, &event).await["outcome"], "AlreadyEnded");
    let row = registry.get(&call, session.id).await.unwrap().unwrap();
    assert_eq!(
        row.end_reason,
        Some(switchboard_core::EndReason::TaskStopped)
    );
    assert_eq!(registry.counts(&call).await.unwrap().global, 0);

    let schedule: Value =
        serde_json::from_str(include_str!("../../infra/events/eventbridge-schedule.json")).unwrap();
    let swept = invoke(&stack, &schedule).await;
    // A whole sweep: under watch the invocation's deadline header is no real deadline.
    let report = swept["sweep"].as_str().unwrap();
    assert!(
        report.starts_with("SweepReport") && report.contains("incomplete: false"),
        "{swept}"
    );
}
