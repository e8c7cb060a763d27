//! `infra/serverless-local.sh` itself, as a user runs it: its own moto, the api and the
//! reaper under `cargo lambda watch`, the local ECS running each session's agent process.
//! One full lifecycle through it, a SIGKILLed agent resolved by the reaper (by its STOPPED
//! event; with `LOCAL_ECS_EVENTS=0`, by the sweep once the lease expired), then SIGTERM:
//! the script stops everything it started. Session events reach the bus and a verifying
//! webhook receiver, in order, even when the api is SIGKILLed right after its 201; the
//! functions' and tasks' EMF lines are EMF.

use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;
use switchboard_testkit::http::{Reply, request};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// The processes whose environment has `key=value`, with their command lines.
fn processes_with(key: &str, value: &str) -> Vec<(u32, String)> {
    switchboard_testkit::procs::with_env(key, value)
        .into_iter()
        .map(|p| (p.pid, p.cmdline()))
        .collect()
}

struct LocalStack {
    script: Child,
    port: u16,
    moto_port: u16,
    table: String,
    marker: String,
    /// The script's output so far (its own lines and the local ECS's).
    output: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    /// Reads the output until the script and everything it started closed it.
    reader: Option<tokio::task::JoinHandle<()>>,
    logs: std::path::PathBuf,
}

impl LocalStack {
    /// Starts the script with `settings` and waits for its ready line.
    async fn start(settings: &[(&str, &str)]) -> Self {
        let port = crate::free_port();
        let moto_port = crate::free_port();
        let run = uuid::Uuid::now_v7().simple().to_string();
        let table = format!("local-stack-{run}");
        let logs = std::env::temp_dir().join(format!("switchboard-local-stack-{run}"));
        let root = switchboard_testkit::bins::workspace_root();
        let mut command = Command::new("bash");
        command
            .arg(root.join("infra/serverless-local.sh"))
            .current_dir(&root)
            .env("PORT", port.to_string())
            .env("MOTO_PORT", moto_port.to_string())
            .env("TABLE", &table)
            .env("CLUSTER", format!("local-stack-{run}"))
            .env("LOGS", &logs)
            .env("BIN_DIR", switchboard_testkit::bins::bin_dir())
            .env("SWITCHBOARD_LOCAL_STACK_TEST", &run)
            // The local ECS's lines as JSON, for the checks below.
            .env("LOCAL_ECS_LOG_JSON", "1")
            .envs(settings.iter().copied())
            .env_remove("AWS_ENDPOINT_URL")
            .env_remove("EMULATOR")
            .env_remove("LOCAL_ECS")
            .env_remove("RELEASE")
            .env_remove("AGENT")
            .env_remove("SWITCHBOARD_TEST_DYNAMODB_ENDPOINT")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            // Its own process group, as a user's terminal would give it; stopped by SIGTERM.
            .process_group(0)
            .kill_on_drop(true);
        let mut script = command.spawn().expect("bash infra/serverless-local.sh");
        let output = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut lines = BufReader::new(script.stdout.take().unwrap()).lines();
        let ready = format!("switchboard: ready at http://127.0.0.1:{port}/lambda-url/api");
        let (seen, collected) = (tokio::sync::oneshot::channel::<()>(), output.clone());
        let (ready_tx, ready_rx) = seen;
        let reader = tokio::spawn(async move {
            let mut ready_tx = Some(ready_tx);
            while let Ok(Some(line)) = lines.next_line().await {
                if line == ready
                    && let Some(tx) = ready_tx.take()
                {
                    let _ = tx.send(());
                }
                collected
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push(line);
            }
        });
        // The guard exists before the wait: a failed start still stops what it started.
        let stack = Self {
            script,
            port,
            moto_port,
            table,
            marker: run,
            output,
            reader: Some(reader),
            logs,
        };
        // A cold first build of the functions can take minutes; the test command builds
        // them before the tests.
        let ready = tokio::time::timeout(Duration::from_secs(900), ready_rx).await;
        let output = || {
            stack
                .output
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone()
        };
        match ready {
            Ok(Ok(())) => stack,
            Ok(Err(_)) => panic!("the script ended before it was ready: {:#?}", output()),
            Err(_) => panic!("no ready line within 15 minutes: {:#?}", output()),
        }
    }

    /// The local ECS's `task state` lines (JSON) for a session.
    fn task_states(&self, session: &str) -> Vec<Value> {
        self.output
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["message"] == "task state" && v["session"] == session)
            .collect()
    }

    async fn call(&self, method: &str, path: &str) -> Reply {
        request(
            &format!("127.0.0.1:{}", self.port),
            method,
            &format!("/lambda-url/api{path}"),
            &[],
            "",
        )
        .await
    }

    async fn session(&self, call: &str, id: &str) -> Value {
        let listed = self
            .call("GET", &format!("/calls/{call}/sessions?include_ended=true"))
            .await;
        assert_eq!(listed.status, 200, "{listed:?}");
        listed.json()["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["session_id"] == id)
            .cloned()
            .unwrap_or(Value::Null)
    }

    /// Polls the session until `done`; panics after `within` with the script's output.
    async fn until(
        &self,
        call: &str,
        id: &str,
        within: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let s = self.session(call, id).await;
            if done(&s) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "session {id} not as expected within {within:?}: {s}\noutput: {:#?}",
                self.output
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Starts a session as a careful client does: one Idempotency-Key, retried on 503 after
    /// its Retry-After for up to 30 s (a start slower than its deadline goes on in the
    /// background, and its replay answers its 201; CI's 2 cores once gave one 503 here).
    async fn start_session(&self, call: &str) -> String {
        let key = uuid::Uuid::now_v7().to_string();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let created = request(
                &format!("127.0.0.1:{}", self.port),
                "POST",
                &format!("/lambda-url/api/calls/{call}/sessions"),
                &[("Idempotency-Key", &key)],
                "",
            )
            .await;
            if created.status == 503 && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            assert_eq!(created.status, 201, "{created:?}");
            return created.json()["session_id"].as_str().unwrap().to_owned();
        }
    }

    /// The pid of the session's agent process (the local ECS starts it with the task's
    /// environment, so its SESSION_ID).
    fn agent_of(&self, id: &str) -> u32 {
        let found = processes_with("SESSION_ID", id);
        assert_eq!(found.len(), 1, "one agent process for {id}: {found:?}");
        found[0].0
    }

    /// Starts a session in `call`, SIGKILLs its agent once it runs, and waits for the
    /// session to end; returns its id, its ended row and how long the end took.
    async fn kill_a_running_agent(&self, call: &str) -> (String, Value, Duration) {
        let id = self.start_session(call).await;
        self.until(call, &id, Duration::from_secs(60), |s| {
            s["status"] == "running"
        })
        .await;
        let pid = self.agent_of(&id).to_string();
        let killed = Instant::now();
        Command::new("kill")
            .args(["-KILL", &pid])
            .status()
            .await
            .unwrap();
        let ended = self
            .until(call, &id, Duration::from_secs(30), |s| {
                s["status"] == "ended"
            })
            .await;
        (id, ended, killed.elapsed())
    }

    /// SIGTERM, as Ctrl-C or a service manager would stop it; then nothing it started is left.
    async fn stop(mut self) {
        let pid = self.script.id().unwrap().to_string();
        let _ = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .await
            .unwrap();
        let status = tokio::time::timeout(Duration::from_secs(60), self.script.wait())
            .await
            .expect("the script stops within a minute of SIGTERM")
            .unwrap();
        // 143: it exits as a SIGTERMed script does, after stopping what it started.
        assert_eq!(status.code(), Some(143), "{status:?}");
        if let Some(reader) = self.reader.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), reader).await;
        }
        let left: Vec<_> = processes_with("SWITCHBOARD_LOCAL_STACK_TEST", &self.marker)
            .into_iter()
            .chain(processes_with("TABLE_NAME", &self.table))
            .collect();
        assert!(left.is_empty(), "processes outlived the script: {left:#?}");
        let output = self
            .output
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        assert_eq!(
            output.last().map(String::as_str),
            Some("switchboard: stopped"),
            "{output:#?}"
        );
        let _ = std::fs::remove_dir_all(&self.logs);
    }
}

impl Drop for LocalStack {
    /// A failed test still stops the stack: SIGTERM lets the script stop what it started
    /// (a SIGKILL would leave its process groups running).
    fn drop(&mut self) {
        if !matches!(self.script.try_wait(), Ok(None)) {
            return;
        }
        if let Some(pid) = self.script.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        while matches!(self.script.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_stack_runs_a_session_end_to_end_and_the_reaper_ends_a_killed_one() {
    let _heavy = crate::HEAVY.lock().await;
    let stack = LocalStack::start(&[
        ("PROVISIONING_SECONDS", "2"),
        ("SWEEP_SECONDS", "60"),
        ("SWITCHBOARD_MAINTENANCE_INTERVAL", "1"),
    ])
    .await;
    assert_eq!(stack.call("GET", "/health").await.status, 200);

    // starting → running (its process visible) → metrics → DELETE → ended requested.
    let posted = Instant::now();
    let id = stack.start_session("walk").await;
    let got = stack
        .call("GET", &format!("/calls/walk/sessions/{id}"))
        .await;
    assert_eq!(got.json()["status"], "starting");
    stack
        .until("walk", &id, Duration::from_secs(60), |s| {
            s["status"] == "running"
        })
        .await;
    eprintln!(
        "local stack: POST → running in {:?} (provisioning 2 s)",
        posted.elapsed()
    );
    let agent = stack.agent_of(&id);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let m = stack
            .call("GET", &format!("/calls/walk/sessions/{id}/metrics"))
            .await
            .json();
        if m["metrics"]["llm_latency_ms__count"].as_u64().unwrap_or(0) > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "no metrics: {m}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let closed = stack
        .call("DELETE", &format!("/calls/walk/sessions/{id}"))
        .await;
    assert_eq!(closed.status, 202, "{closed:?}");
    let ended = stack
        .until("walk", &id, Duration::from_secs(30), |s| {
            s["status"] == "ended"
        })
        .await;
    assert_eq!(ended["end_reason"], "requested", "{ended}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::path::Path::new(&format!("/proc/{agent}")).exists()
        && !processes_with("SESSION_ID", &id).is_empty()
    {
        assert!(
            Instant::now() < deadline,
            "the agent process outlived its session"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // kill -9 of an agent: its STOPPED event reaches the reaper, which ends it task_stopped.
    let (id, ended, took) = stack.kill_a_running_agent("killed").await;
    assert_eq!(ended["end_reason"], "task_stopped", "{ended}");
    eprintln!("local stack: kill -9 → ended task_stopped in {took:?}");
    let states = stack.task_states(&id);
    let statuses: Vec<&str> = states.iter().filter_map(|v| v["status"].as_str()).collect();
    assert_eq!(
        statuses,
        ["PROVISIONING", "RUNNING", "STOPPED"],
        "{states:#?}"
    );
    let stopped = &states[2];
    assert_eq!(stopped["exit_code"], 137, "128 + SIGKILL: {stopped}");
    assert_eq!(
        stopped["stop_code"], "EssentialContainerExited",
        "{stopped}"
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_events_the_sweep_ends_a_killed_agents_session_once_its_lease_expired() {
    let _heavy = crate::HEAVY.lock().await;
    let lease = 4.0;
    let stack = LocalStack::start(&[
        ("LOCAL_ECS_EVENTS", "0"),
        ("SWEEP_SECONDS", "1"),
        ("SWITCHBOARD_MAINTENANCE_INTERVAL", "1"),
        ("SWITCHBOARD_SESSION_LEASE_SECONDS", "4"),
    ])
    .await;
    let (_, ended, took) = stack.kill_a_running_agent("swept").await;
    assert_eq!(ended["end_reason"], "lease_expired", "{ended}");
    // Never before the lease: it was renewed at most one interval (1 s) before the kill.
    assert!(
        took >= Duration::from_secs(3),
        "ended {took:?} after the kill, inside the lease"
    );
    eprintln!(
        "local stack without events: kill -9 → ended lease_expired in {took:?} (lease {lease} s, sweep 1 s)"
    );
    stack.stop().await;
}

impl LocalStack {
    async fn pool(&self) -> Value {
        let reply = self.call("GET", "/pool").await;
        assert_eq!(reply.status, 200, "{reply:?}");
        reply.json()
    }

    /// Waits until the current task definition has `idle` idle standbys; how long it took.
    async fn pool_idle(&self, idle: u64, within: Duration) -> Duration {
        let started = Instant::now();
        loop {
            let pool = self.pool().await;
            if pool["definitions"][0]["idle"].as_u64() == Some(idle) {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < within,
                "not {idle} idle standbys within {within:?}: {pool:#}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The standby processes of this stack, by their task ARN (from the task metadata
    /// endpoint each was given, as the standby itself finds it).
    async fn standby_processes(&self) -> Vec<(String, u32)> {
        let mut found = Vec::new();
        for process in switchboard_testkit::procs::with_env("STANDBY", "1") {
            if process.env.get("TABLE_NAME") != Some(&self.table) {
                continue;
            }
            let Some(uri) = process.env.get("ECS_CONTAINER_METADATA_URI_V4") else {
                continue;
            };
            let rest = uri.trim_start_matches("http://");
            let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            let task = request(host, "GET", &format!("{path}/task"), &[], "").await;
            if let Some(arn) = task.json()["TaskARN"].as_str() {
                found.push((arn.to_owned(), process.pid));
            }
        }
        found
    }
}

async fn signal(name: &str, pid: u32) {
    Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_pool_starts_held_sessions_warm_then_cold_refills_and_redispatches_a_killed_claim() {
    let _heavy = crate::HEAVY.lock().await;
    let provisioning = 3;
    let stack = LocalStack::start(&[
        ("WARM_POOL_SIZE", "3"),
        ("PROVISIONING_SECONDS", "3"),
        ("SWEEP_SECONDS", "2"),
        ("SWITCHBOARD_MAINTENANCE_INTERVAL", "1"),
    ])
    .await;
    let filled = stack.pool_idle(3, Duration::from_secs(60)).await;
    eprintln!("local stack: pool of 3 idle {filled:?} after ready (provisioning {provisioning} s)");

    // Three held starts: each claims a standby.
    let mut latencies = Vec::new();
    for i in 0..3 {
        let call = format!("warm-{i}");
        let posted = Instant::now();
        let id = stack.start_session(&call).await;
        let running = stack
            .until(&call, &id, Duration::from_secs(60), |s| {
                s["status"] == "running"
            })
            .await;
        assert_eq!(running["start_type"], "warm", "{running}");
        let latency = running["start_latency_ms"]
            .as_u64()
            .expect("a latency once running");
        latencies.push((latency, posted.elapsed()));
    }
    eprintln!("local stack: warm starts (start_latency_ms, POST → seen running): {latencies:?}");

    // The fourth finds none idle: cold, through Fargate's modeled provisioning.
    let id = stack.start_session("cold").await;
    let cold = stack
        .until("cold", &id, Duration::from_secs(60), |s| {
            s["status"] == "running"
        })
        .await;
    assert_eq!(cold["start_type"], "cold", "{cold}");
    let cold_ms = cold["start_latency_ms"].as_u64().unwrap();
    assert!(
        cold_ms >= provisioning * 1000,
        "a cold start waits for its task's provisioning: {cold}"
    );
    let refill = stack.pool_idle(3, Duration::from_secs(60)).await;
    eprintln!("local stack: cold start {cold_ms} ms; the pool was full again {refill:?} later");
    let pool = stack.pool().await;
    assert_eq!(pool["definitions"][0]["claimed"], 4 - 1, "{pool:#}");

    // A standby killed after its claim, before it joined: the session goes to another.
    let standbys = stack.standby_processes().await;
    let idle: Vec<(String, u32)> = standbys
        .into_iter()
        .filter(|(arn, _)| {
            pool["standbys"]
                .as_array()
                .unwrap()
                .iter()
                .any(|s| s["task_arn"] == arn.as_str() && s["state"] == "idle")
        })
        .collect();
    assert_eq!(idle.len(), 3, "{idle:?} of {pool:#}");
    for (_, pid) in &idle {
        signal("STOP", *pid).await;
    }
    let id = stack.start_session("redispatched").await;
    let pool = stack.pool().await;
    let claimed = pool["standbys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["session_id"] == id.as_str())
        .and_then(|s| s["task_arn"].as_str())
        .unwrap_or_else(|| panic!("no standby claimed for {id}: {pool:#}"))
        .to_owned();
    for (arn, pid) in &idle {
        if *arn == claimed {
            signal("KILL", *pid).await;
        } else {
            signal("CONT", *pid).await;
        }
    }
    let running = stack
        .until("redispatched", &id, Duration::from_secs(60), |s| {
            s["status"] == "running"
        })
        .await;
    assert_eq!(
        running["start_type"], "warm",
        "re-dispatched to another standby: {running}"
    );
    let pool = stack.pool().await;
    let host = pool["standbys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["session_id"] == id.as_str())
        .unwrap_or_else(|| panic!("{pool:#}"));
    assert_ne!(host["task_arn"], claimed.as_str(), "{pool:#}");
    assert!(
        !pool["standbys"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["task_arn"] == claimed.as_str()),
        "the killed standby is deregistered: {pool:#}"
    );
    eprintln!(
        "local stack: a claimed standby killed before joining; its session ran {} ms after admission",
        running["start_latency_ms"]
    );
    stack.stop().await;
}

impl LocalStack {
    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.moto_port)
    }

    /// A rule on moto's default bus for Switchboard's events, into a queue the test reads.
    async fn event_tap(&self) -> (aws_sdk_sqs::Client, String) {
        let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .endpoint_url(self.endpoint())
            .region(aws_config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_sqs::config::Credentials::new(
                "testing", "testing", None, None, "test",
            ))
            .load()
            .await;
        let sqs = aws_sdk_sqs::Client::new(&sdk);
        let bus = aws_sdk_eventbridge::Client::new(&sdk);
        let url = sqs
            .create_queue()
            .queue_name(format!("tap-{}", self.marker))
            .send()
            .await
            .unwrap();
        let url = url.queue_url().unwrap().to_owned();
        let attrs = sqs
            .get_queue_attributes()
            .queue_url(&url)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
            .send()
            .await
            .unwrap();
        let arn =
            attrs.attributes().unwrap()[&aws_sdk_sqs::types::QueueAttributeName::QueueArn].clone();
        let rule = format!("tap-{}", self.marker);
        bus.put_rule()
            .name(&rule)
            .event_pattern(
                r#"{"source": ["switchboard"], "detail-type": ["Session State Change"]}"#,
            )
            .send()
            .await
            .unwrap();
        bus.put_targets()
            .rule(&rule)
            .targets(
                aws_sdk_eventbridge::types::Target::builder()
                    .id("tap")
                    .arn(arn)
                    .build()
                    .unwrap(),
            )
            .send()
            .await
            .unwrap();
        (sqs, url)
    }
}

/// The events the tap received, until `n`.
async fn tapped(sqs: &aws_sdk_sqs::Client, url: &str, n: usize) -> Vec<Value> {
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while got.len() < n {
        assert!(
            Instant::now() < deadline,
            "the bus delivered {} of {n}: {got:#?}",
            got.len()
        );
        let out = sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await
            .unwrap();
        for m in out.messages() {
            got.push(serde_json::from_str::<Value>(m.body().unwrap()).unwrap());
            sqs.delete_message()
                .queue_url(url)
                .receipt_handle(m.receipt_handle().unwrap())
                .send()
                .await
                .unwrap();
        }
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_events_reach_the_bus_and_a_verifying_webhook_even_past_a_killed_api() {
    let _heavy = crate::HEAVY.lock().await;
    // The first delivery answers 500: SQS makes it visible again a second later, and that
    // session's later events wait behind it (FIFO, one group per session).
    let mut receiver = crate::events::Receiver::start(&["--fail-first", "1"]).await;
    let url = receiver.url();
    let stack = LocalStack::start(&[
        ("WEBHOOK_URL", url.as_str()),
        ("WEBHOOK_SECRET", crate::events::SECRET),
        ("WEBHOOK_RETRY_SECONDS", "1"),
        ("SWITCHBOARD_MAINTENANCE_INTERVAL", "1"),
        // Session b ends by itself, with no api to close it.
        ("SWITCHBOARD_MAX_SESSION_DURATION_SECONDS", "15"),
    ])
    .await;
    let (sqs, tap) = stack.event_tap().await;

    let a = stack.start_session("events-a").await;
    stack
        .until("events-a", &a, Duration::from_secs(60), |s| {
            s["status"] == "running"
        })
        .await;
    assert_eq!(
        stack
            .call("DELETE", &format!("/calls/events-a/sessions/{a}"))
            .await
            .status,
        202
    );

    // b: the api is SIGKILLed as soon as its 201 is out. Its admission was committed with
    // the row, so the stream has it; the task reports the rest.
    let b = stack.start_session("events-b").await;
    let api: Vec<_> = processes_with("TABLE_NAME", &stack.table)
        .into_iter()
        .filter(|(_, cmd)| {
            cmd.split_whitespace()
                .next()
                .is_some_and(|exe| exe.ends_with("/api"))
        })
        .collect();
    assert_eq!(api.len(), 1, "one api function process: {api:?}");
    Command::new("kill")
        .args(["-KILL", &api[0].0.to_string()])
        .status()
        .await
        .unwrap();

    let delivered = receiver.delivered(6).await;
    crate::events::assert_lifecycles(&delivered, std::slice::from_ref(&a), "requested");
    crate::events::assert_lifecycles(&delivered, std::slice::from_ref(&b), "max_duration");
    assert!(
        receiver.seen.iter().any(|v| v["status"] == 500),
        "{:#?}",
        receiver.seen
    );

    let events = tapped(&sqs, &tap, 6).await;
    for id in [&a, &b] {
        let mine: Vec<_> = events
            .iter()
            .filter(|e| e["detail"]["data"]["session_id"] == id.as_str())
            .collect();
        let mut kinds: Vec<_> = mine
            .iter()
            .map(|e| e["detail"]["data"]["sequence"].as_u64().unwrap())
            .collect();
        kinds.sort_unstable();
        assert_eq!(kinds, [1, 2, 3], "{events:#?}");
        assert!(mine.iter().all(|e| e["source"] == "switchboard" && e["detail-type"] == "Session State Change"));
    }

    // The functions' and the tasks' metric lines are EMF.
    let mut logs = vec![stack.logs.join("lambda.log")];
    logs.extend(
        std::fs::read_dir(stack.logs.join("tasks"))
            .unwrap()
            .map(|e| e.unwrap().path()),
    );
    let root = switchboard_testkit::bins::workspace_root();
    let check = Command::new(root.join(".venv/bin/python"))
        .arg(root.join("infra/emf_check.py"))
        .args(&logs)
        .output()
        .await
        .unwrap();
    let report = String::from_utf8_lossy(&check.stdout);
    assert!(check.status.success(), "{report}");
    for name in [
        "SessionsAdmitted",
        "StartLatency",
        "SessionsEnded",
        "CloseLatency",
        "WebhookDeliveries",
    ] {
        assert!(report.contains(name), "no {name} in {report}");
    }
    stack.stop().await;
}

impl LocalStack {
    /// The JSON lines of every task's log.
    fn task_log_lines(&self) -> Vec<Value> {
        std::fs::read_dir(self.logs.join("tasks"))
            .map(|dir| {
                dir.flatten()
                    .flat_map(|entry| {
                        std::fs::read_to_string(entry.path())
                            .unwrap_or_default()
                            .lines()
                            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                            .collect::<Vec<_>>()
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The process agent of a session: (its task's runtime, the child), from the task's
    /// `agent process assigned to the session` line (a standby's task has no SESSION_ID).
    async fn process_agent_of(&self, id: &str) -> (u32, u32, Value) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let assigned = self.task_log_lines().into_iter().find(|v| {
                v["message"] == "agent process assigned to the session" && v["session_id"] == id
            });
            if let Some(line) = assigned {
                let child = u32::try_from(line["pid"].as_u64().unwrap()).unwrap();
                let stat = std::fs::read_to_string(format!("/proc/{child}/stat")).unwrap();
                let parent = stat.rsplit(')').next().unwrap().split_whitespace().nth(1);
                let task = parent.unwrap().parse().unwrap();
                return (task, child, line);
            }
            assert!(
                Instant::now() < deadline,
                "no process agent logged for {id}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The children of `pid` (from /proc/<pid>/task/*/children).
fn children_of(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|c| {
            c.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_process_agent_runs_a_session_end_to_end_through_the_local_stack() {
    let _heavy = crate::HEAVY.lock().await;
    let root = switchboard_testkit::bins::workspace_root();
    let command = serde_json::json!([
        "python3",
        root.join("examples/python-agent/agent.py")
            .to_string_lossy()
    ])
    .to_string();
    let stack = LocalStack::start(&[
        ("SWITCHBOARD_MAINTENANCE_INTERVAL", "1"),
        ("SWITCHBOARD_AGENT_COMMAND", &command),
        ("SWITCHBOARD_AGENT_CLOSE_GRACE_SECONDS", "1"),
        ("WARM_POOL_SIZE", "1"),
    ])
    .await;

    // A standby task is one prewarmed child: it registers once the child is ready, and the
    // claim hands the session to that child. The task runs `switchboard task`, which runs
    // the Python agent as its child.
    stack.pool_idle(1, Duration::from_secs(60)).await;
    let id = stack.start_session("python").await;
    let running = stack
        .until("python", &id, Duration::from_secs(60), |s| {
            s["status"] == "running"
        })
        .await;
    assert_eq!(running["start_type"], "warm", "{running}");
    eprintln!(
        "local stack: a Python process agent (a standby's prewarmed child) running {} ms after admission",
        running["start_latency_ms"]
    );
    let (task, child, assigned) = stack.process_agent_of(&id).await;
    assert_eq!(
        assigned["prewarmed"], true,
        "the standby's child was prewarmed: {assigned}"
    );
    assert_eq!(
        children_of(task),
        vec![child],
        "one child of the task {task}"
    );
    let python = [child];
    // Its metrics reach the table through the task's heartbeats.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let m = stack
            .call("GET", &format!("/calls/python/sessions/{id}/metrics"))
            .await
            .json();
        if m["metrics"]["llm_input_tokens__total"] == 12 {
            assert_eq!(m["metrics"]["tts_characters__total"], 32, "{m}");
            break;
        }
        assert!(Instant::now() < deadline, "no metrics from the agent: {m}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // DELETE → the close flag → the task's runtime closes the child → ended requested.
    let closed = stack
        .call("DELETE", &format!("/calls/python/sessions/{id}"))
        .await;
    assert_eq!(closed.status, 202, "{closed:?}");
    let ended = stack
        .until("python", &id, Duration::from_secs(30), |s| {
            s["status"] == "ended"
        })
        .await;
    assert_eq!(ended["end_reason"], "requested", "{ended}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while switchboard_testkit::procs::alive(python[0]) || switchboard_testkit::procs::alive(task) {
        assert!(
            Instant::now() < deadline,
            "the task or its child outlived the session"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The child's own lines are in the task's log, with the session.
    let logged = stack.task_log_lines().iter().any(|v| {
        v["session_id"] == id.as_str()
            && v["stream"] == "stdout"
            && v["message"] == "leaving the call: requested"
    });
    assert!(
        logged,
        "the Python agent's `leaving the call: requested` in its task's log"
    );

    // The child crashing ends its session agent_failed, through the same task.
    let id = stack.start_session("python-crash").await;
    stack
        .until("python-crash", &id, Duration::from_secs(60), |s| {
            s["status"] == "running"
        })
        .await;
    let (task, _, _) = stack.process_agent_of(&id).await;
    for child in children_of(task) {
        let killed = Command::new("kill")
            .args(["-KILL", &child.to_string()])
            .status()
            .await
            .unwrap();
        assert!(killed.success());
    }
    let ended = stack
        .until("python-crash", &id, Duration::from_secs(30), |s| {
            s["status"] == "ended"
        })
        .await;
    assert_eq!(ended["end_reason"], "agent_failed", "{ended}");
    stack.stop().await;
}
