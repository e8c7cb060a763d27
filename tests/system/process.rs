//! Process agents: the `switchboard` binary runs one child per session. The anchor's HTTP
//! contract holds with the Python example agent as with the demo agent; a child that crashes,
//! ignores its close, never joins or exceeds its memory limit ends its session with the
//! reason and detail that say so; 200 concurrent children run, and killing one touches no
//! other. Each takes the HEAVY lock: they start dozens of processes, and a chaos world or the
//! local stack beside them on 2 cores would measure our load, not their own.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::binary::{command_of, http, refused, sigterm};

/// The Python example agent's command.
fn python_agent() -> Vec<String> {
    let root = switchboard_testkit::bins::workspace_root();
    vec![
        "python3".to_owned(),
        root.join("examples/python-agent/agent.py")
            .to_string_lossy()
            .into_owned(),
    ]
}

/// The bash stub agent in `mode` (tests/system/agents/stub_agent.sh).
fn stub(mode: &str) -> Vec<String> {
    let root = switchboard_testkit::bins::workspace_root();
    vec![
        root.join("tests/system/agents/stub_agent.sh")
            .to_string_lossy()
            .into_owned(),
        mode.to_owned(),
    ]
}

/// A `serve` process (the `switchboard` binary, or the demo agent when `agent` is empty) and
/// every JSON log line it wrote so far.
struct Server {
    child: tokio::process::Child,
    addr: String,
    log: Arc<Mutex<Vec<Value>>>,
    /// Reads the logs until the server's stderr closes.
    reader: tokio::task::JoinHandle<()>,
}

impl Server {
    async fn start(binary: &str, options: &[&str], agent: &[String]) -> Self {
        let mut args = vec![
            "serve",
            "--port",
            "0",
            "--no-splash",
            "--log-format",
            "json",
        ];
        args.extend_from_slice(options);
        let mut cmd = command_of(binary, &args);
        if !agent.is_empty() {
            cmd.arg("--").args(agent);
        }
        cmd.env("DEMO_PARTICIPANT_SECONDS", "3600");
        let mut child = cmd.spawn().expect("serve starts");
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let collected = log.clone();
        let reader = tokio::spawn(async move {
            let mut ready_tx = Some(ready_tx);
            let mut addr = None;
            while let Ok(Some(line)) = lines.next_line().await {
                let Ok(value) = serde_json::from_str::<Value>(&line) else {
                    continue;
                };
                if value["message"] == "listening" {
                    addr = value["address"].as_str().map(str::to_owned);
                }
                let ready = value["message"] == "ready";
                // Recorded before the test hears of it: what it reads then includes it.
                collected.lock().unwrap().push(value);
                if ready && let (Some(tx), Some(a)) = (ready_tx.take(), addr.clone()) {
                    let _ = tx.send(a);
                }
            }
        });
        let addr = tokio::time::timeout(Duration::from_secs(30), ready_rx)
            .await
            .unwrap_or_else(|_| panic!("serve not ready in 30 s; logs: {:#?}", log.lock().unwrap()))
            .unwrap_or_else(|_| panic!("serve exited; logs: {:#?}", log.lock().unwrap()));
        Self {
            child,
            addr,
            log,
            reader,
        }
    }

    async fn start_session(&self, call: &str, body: &str) -> String {
        let reply = switchboard_testkit::http::request(
            &self.addr,
            "POST",
            &format!("/calls/{call}/sessions"),
            &[("content-type", "application/json")],
            body,
        )
        .await;
        assert_eq!(reply.status, 201, "{}", reply.body);
        let v: Value = serde_json::from_str(&reply.body).unwrap();
        v["session_id"].as_str().unwrap().to_owned()
    }

    /// The session as `GET /sessions?include_ended=true` lists it.
    async fn session(&self, id: &str) -> Value {
        let (status, body) = http(
            &self.addr,
            "GET",
            "/sessions?include_ended=true&include_metrics=true&limit=500",
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        v["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["session_id"] == id)
            .cloned()
            .unwrap_or(Value::Null)
    }

    /// Waits until `pred` holds for the session (within `within`).
    async fn wait_session(
        &self,
        id: &str,
        within: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let s = self.session(id).await;
            if pred(&s) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "session {id} never matched within {within:?}: {s:#}\nlogs: {:#?}",
                self.log.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits for the session's end; returns its row with the end's detail (from the
    /// runtime's "session ended" log line) as `end_detail`.
    async fn wait_ended(&self, id: &str, within: Duration) -> Value {
        let mut ended = self
            .wait_session(id, within, |s| s["status"] == "ended")
            .await;
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let detail = self.log.lock().unwrap().iter().find_map(|v| {
                (v["message"] == "session ended" && v["session_id"] == id)
                    .then(|| v["detail"].clone())
            });
            if let Some(detail) = detail {
                ended["end_detail"] = detail;
                return ended;
            }
            assert!(
                Instant::now() < deadline,
                "no \"session ended\" log for {id}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The pid of the child that logged `stub ... got` for `id`.
    async fn child_pid(&self, id: &str) -> i32 {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let found = self.log.lock().unwrap().iter().find_map(|v| {
                (v["session_id"] == id && v["stream"] == "stdout")
                    .then(|| v["pid"].as_i64())
                    .flatten()
            });
            if let Some(pid) = found {
                return i32::try_from(pid).unwrap();
            }
            assert!(Instant::now() < deadline, "no child logged for {id}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops the server (SIGTERM, then its drain) and returns its exit code once every log
    /// line it wrote has been read.
    async fn stop(mut self) -> Option<i32> {
        sigterm(&self.child).await;
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("serve exits within 30 s of SIGTERM")
            .unwrap();
        tokio::time::timeout(Duration::from_secs(10), self.reader)
            .await
            .expect("its stderr closes after its exit")
            .unwrap();
        status.code()
    }
}

fn alive(pid: i32) -> bool {
    // A zombie has exited: only its parent's wait is missing.
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        !stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
    })
}

/// The HTTP-observable part of the anchor's `TestRunnerServe` (anchor-study §9.3; the
/// permission-hook and custom-route tests need code, not a binary, and stay in
/// api/tests/api/anchor_contract.rs), against a server with `--max-concurrent-sessions 2
/// --max-sessions-per-call 1`.
async fn anchor_contract(server: &Server, reports_metrics: bool) {
    let addr = server.addr.as_str();
    // test_health, test_ready
    assert_eq!(http(addr, "GET", "/health").await.0, 200);
    assert_eq!(http(addr, "GET", "/ready").await.0, 200);
    // test_start_session_success
    let reply = switchboard_testkit::http::request(
        addr,
        "POST",
        "/calls/test/sessions",
        &[("content-type", "application/json")],
        r#"{"call_type":"default"}"#,
    )
    .await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    let body: Value = serde_json::from_str(&reply.body).unwrap();
    assert_eq!(body["call_id"], "test");
    let id = body["session_id"].as_str().unwrap().to_owned();
    assert!(!id.is_empty());
    assert!(body["session_started_at"].as_str().unwrap().ends_with('Z'));
    let path = format!("/calls/test/sessions/{id}");
    // test_get_session_success
    let (status, got) = http(addr, "GET", &path).await;
    assert_eq!(status, 200, "{got}");
    let got: Value = serde_json::from_str(&got).unwrap();
    assert_eq!(got["session_id"], id.as_str());
    assert_eq!(got["call_id"], "test");
    assert!(got["session_started_at"].is_string());
    // test_get_session_metrics_success: every name, the timestamps, and (for an agent that
    // reports) its figures once flushed.
    server
        .wait_session(&id, Duration::from_secs(20), |s| s["status"] == "running")
        .await;
    let metrics = loop {
        let (status, m) = http(addr, "GET", &format!("{path}/metrics")).await;
        assert_eq!(status, 200, "{m}");
        let m: Value = serde_json::from_str(&m).unwrap();
        if !reports_metrics || m["metrics"]["llm_input_tokens__total"].as_u64() > Some(0) {
            break m;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    for name in switchboard_core::metrics::all_metric_names() {
        assert!(
            metrics["metrics"].get(&name).is_some(),
            "{name} missing: {metrics:#}"
        );
    }
    assert!(metrics["metrics_generated_at"].is_string());
    assert!(metrics["session_started_at"].is_string());
    if reports_metrics {
        assert_eq!(metrics["metrics"]["llm_input_tokens__total"], 12);
        assert_eq!(metrics["metrics"]["llm_latency_ms__count"], 1);
        assert_eq!(metrics["metrics"]["tts_characters__total"], 32);
    }
    // test_start_session_max_sessions_per_call_exceeded
    let (status, body) = http(addr, "POST", "/calls/test/sessions").await;
    assert_eq!(status, 429, "{body}");
    assert!(body.contains("Reached maximum number of sessions for this call"));
    // test_start_session_max_concurrent_sessions_exceeded
    let other = server.start_session("other", "{}").await;
    let (status, body) = http(addr, "POST", "/calls/third/sessions").await;
    assert_eq!(status, 429, "{body}");
    assert!(body.contains("Reached maximum number of concurrent sessions"));
    // test_close_session_beacon_success, test_close_session_success
    assert_eq!(
        http(
            addr,
            "POST",
            &format!("/calls/other/sessions/{other}/close")
        )
        .await
        .0,
        202
    );
    assert_eq!(http(addr, "DELETE", &path).await.0, 202);
    for s in [&id, &other] {
        let ended = server.wait_ended(s, Duration::from_secs(20)).await;
        assert_eq!(ended["end_reason"], "requested", "{ended:#}");
    }
    // 404s: test_get_session_doesnt_exist_404, test_get_session_metrics_doesnt_exist_404,
    // test_close_session_not_found, test_close_session_beacon_not_found
    for (method, p) in [
        ("GET", "/calls/test/sessions/123123".to_owned()),
        ("GET", "/calls/test/sessions/123123/metrics".to_owned()),
        ("DELETE", "/calls/test/sessions/some-id".to_owned()),
        ("POST", "/calls/test/sessions/some-id/close".to_owned()),
        ("GET", path.clone()),
    ] {
        assert_eq!(http(addr, method, &p).await.0, 404, "{method} {p}");
    }
}

const CONTRACT_LIMITS: [&str; 6] = [
    "--max-concurrent-sessions",
    "2",
    "--max-sessions-per-call",
    "1",
    "--maintenance-interval",
    "0.5",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_anchor_contract_holds_with_the_python_agent_as_with_the_demo_agent() {
    let _heavy = crate::HEAVY.lock().await;
    let demo = Server::start("demo-agent", &CONTRACT_LIMITS, &[]).await;
    anchor_contract(&demo, false).await;
    assert_eq!(demo.stop().await, Some(0));

    let python = Server::start("switchboard", &CONTRACT_LIMITS, &python_agent()).await;
    anchor_contract(&python, true).await;
    let log = python.log.clone();
    assert_eq!(python.stop().await, Some(0));
    // Its stdout reached our logs with the session.
    let logged = log.lock().unwrap().iter().any(|v| {
        v["stream"] == "stdout"
            && v["session_id"].is_string()
            && v["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("agent says: Hello!"))
    });
    assert!(logged, "the agent's greeting is in the runtime's logs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_that_crashes_never_joins_ignores_its_close_or_leaks_ends_with_the_reason_that_says_so()
 {
    let opts = [
        "--agent-join-timeout",
        "2",
        "--agent-close-grace-seconds",
        "0.5",
        "--maintenance-interval",
        "0.5",
    ];

    // Crashes: agent_failed with the exit status.
    let crash = Server::start("switchboard", &opts, &stub("crash")).await;
    let id = crash.start_session("c", "{}").await;
    let ended = crash.wait_ended(&id, Duration::from_secs(20)).await;
    assert_eq!(ended["end_reason"], "agent_failed", "{ended:#}");
    assert_eq!(
        ended["end_detail"], "the agent process exited with status 3",
        "{ended:#}"
    );
    assert_eq!(crash.stop().await, Some(0));

    // Never joins: start_failed at the join deadline, and the child is gone.
    let never = Server::start("switchboard", &opts, &stub("never-join")).await;
    let id = never.start_session("c", "{}").await;
    let pid = never.child_pid(&id).await;
    let ended = never.wait_ended(&id, Duration::from_secs(20)).await;
    assert_eq!(ended["end_reason"], "start_failed", "{ended:#}");
    assert!(
        ended["end_detail"]
            .as_str()
            .unwrap()
            .contains("agent_join_timeout"),
        "{ended:#}"
    );
    wait_gone(pid).await;
    assert_eq!(never.stop().await, Some(0));

    // Ignores its close (and SIGTERM): killed after its grace, the session ends requested.
    let stubborn = Server::start("switchboard", &opts, &stub("ignore-close")).await;
    let id = stubborn.start_session("c", "{}").await;
    stubborn
        .wait_session(&id, Duration::from_secs(20), |s| s["status"] == "running")
        .await;
    let pid = stubborn.child_pid(&id).await;
    let asked = Instant::now();
    assert_eq!(
        http(&stubborn.addr, "DELETE", &format!("/calls/c/sessions/{id}"))
            .await
            .0,
        202
    );
    let ended = stubborn.wait_ended(&id, Duration::from_secs(20)).await;
    assert_eq!(ended["end_reason"], "requested", "{ended:#}");
    wait_gone(pid).await;
    // The close grace (0.5 s) and SIGTERM's (2 s) both passed before the end.
    assert!(
        asked.elapsed() >= Duration::from_millis(2500),
        "{:?}",
        asked.elapsed()
    );
    let log = stubborn.log.clone();
    assert_eq!(stubborn.stop().await, Some(0));
    let log = log.lock().unwrap().clone();
    assert!(
        log.iter()
            .any(|v| v["message"] == "agent process ignored SIGTERM; SIGKILL")
    );
    assert!(
        log.iter().any(|v| v["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("stub ignore-close close"))
            && v["message"]
                .as_str()
                .unwrap()
                .contains(r#""reason":"requested""#)),
        "the child was told why: {log:#?}"
    );

    // Leaks: its tree (a grandchild holding 256 MB) over 100 MB ends it agent_failed.
    let mut with_limit = opts.to_vec();
    with_limit.extend(["--agent-memory-limit-mb", "100"]);
    let hog = Server::start("switchboard", &with_limit, &stub("hog")).await;
    let id = hog.start_session("c", "{}").await;
    let pid = hog.child_pid(&id).await;
    let ended = hog.wait_ended(&id, Duration::from_secs(30)).await;
    assert_eq!(ended["end_reason"], "agent_failed", "{ended:#}");
    let detail = ended["end_detail"].as_str().unwrap();
    assert!(
        detail.contains("over its limit of 100 MB (--agent-memory-limit-mb)"),
        "{detail}"
    );
    wait_gone(pid).await;
    // The whole tree: the grandchild that held the memory too.
    wait_group_gone(pid).await;
    assert_eq!(hog.stop().await, Some(0));
}

/// The live processes of process group `group` (zombies excluded).
fn group_members(group: i32) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
                let rest: Vec<&str> = stat
                    .rsplit(')')
                    .next()
                    .unwrap_or("")
                    .split_whitespace()
                    .collect();
                rest.first() != Some(&"Z")
                    && rest.get(2).and_then(|g| g.parse().ok()) == Some(group)
            })
        })
        .collect()
}

/// Waits until process group `group` has no live member.
async fn wait_group_gone(group: i32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !group_members(group).is_empty() {
        assert!(
            Instant::now() < deadline,
            "left in the group: {:?}",
            group_members(group)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn wait_gone(pid: i32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while alive(pid) {
        assert!(Instant::now() < deadline, "child {pid} still alive");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The VmRSS of `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_children_run_at_once_and_killing_one_touches_no_other() {
    let _heavy = crate::HEAVY.lock().await;
    let n = 200;
    let server = Server::start(
        "switchboard",
        &[
            "--max-concurrent-sessions",
            "250",
            "--maintenance-interval",
            "1",
            "--agent-close-grace-seconds",
            "2",
        ],
        &stub("normal"),
    )
    .await;
    let server_pid = server.child.id().unwrap();
    let rss_before = rss_kib(server_pid);
    let starts: Vec<_> = (0..n)
        .map(|i| {
            let addr = server.addr.clone();
            tokio::spawn(async move {
                let reply = switchboard_testkit::http::request(
                    &addr,
                    "POST",
                    &format!("/calls/many-{i}/sessions"),
                    &[],
                    "",
                )
                .await;
                assert_eq!(reply.status, 201, "{}", reply.body);
                let v: Value = serde_json::from_str(&reply.body).unwrap();
                (
                    format!("many-{i}"),
                    v["session_id"].as_str().unwrap().to_owned(),
                )
            })
        })
        .collect();
    let mut ids = Vec::new();
    for s in starts {
        ids.push(s.await.unwrap());
    }
    // Every one running.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (_, body) = http(&server.addr, "GET", "/sessions?limit=500").await;
        let v: Value = serde_json::from_str(&body).unwrap();
        let running = v["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["status"] == "running")
            .count();
        if running == n {
            break;
        }
        assert!(Instant::now() < deadline, "{running} of {n} running");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let rss_with = rss_kib(server_pid);
    eprintln!(
        "runtime RSS: {rss_before} KiB idle, {rss_with} KiB with {n} children: {} KiB per child",
        rss_with.saturating_sub(rss_before) / n as u64
    );
    let mut pids = HashMap::new();
    for (_, id) in &ids {
        pids.insert(id.clone(), server.child_pid(id).await);
    }
    let (call, victim) = ids[n / 2].clone();
    let pid = pids[&victim];
    let killed = tokio::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .await
        .unwrap();
    assert!(killed.success());
    let ended = server.wait_ended(&victim, Duration::from_secs(20)).await;
    assert_eq!(ended["end_reason"], "agent_failed", "{ended:#}");
    assert_eq!(
        ended["end_detail"], "the agent process was killed by SIGKILL",
        "{ended:#}"
    );
    // The others are untouched: all still running, their children alive.
    let (_, body) = http(&server.addr, "GET", "/sessions?limit=500").await;
    let v: Value = serde_json::from_str(&body).unwrap();
    let statuses: HashMap<String, String> = v["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["session_id"].as_str().unwrap().to_owned(),
                s["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    for (_, id) in ids.iter().filter(|(_, id)| *id != victim) {
        assert_eq!(
            statuses.get(id).map(String::as_str),
            Some("running"),
            "{id}"
        );
        assert!(alive(pids[id]), "{id}'s child {} was touched", pids[id]);
    }
    assert_eq!(http(&server.addr, "GET", "/health").await.0, 200);
    let _ = call;
    // The drain closes every child and ends every session shutdown; none is left.
    let log = server.log.clone();
    assert_eq!(server.stop().await, Some(0));
    let shutdown = log
        .lock()
        .unwrap()
        .iter()
        .filter(|v| v["message"] == "session ended" && v["end_reason"] == "shutdown")
        .count();
    assert_eq!(shutdown, n - 1);
    for pid in pids.values() {
        wait_gone(*pid).await;
    }
}

/// The plain-client Python agent (`examples/python-agent/plain_agent.py`).
fn plain_agent() -> Vec<String> {
    let root = switchboard_testkit::bins::workspace_root();
    vec![
        "python3".to_owned(),
        root.join("examples/python-agent/plain_agent.py")
            .to_string_lossy()
            .into_owned(),
    ]
}

/// The pids of the prewarmed children that said `ready` so far.
fn prewarmed(server: &Server) -> Vec<i32> {
    server
        .log
        .lock()
        .unwrap()
        .iter()
        .filter(|v| v["message"] == "prewarmed agent process ready")
        .filter_map(|v| v["pid"].as_i64().and_then(|p| i32::try_from(p).ok()))
        .collect()
}

async fn wait_prewarmed(server: &Server, n: usize) -> Vec<i32> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let pids = prewarmed(server);
        if pids.len() >= n {
            return pids;
        }
        assert!(Instant::now() < deadline, "{} of {n} prewarmed", pids.len());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prewarmed_children_are_ready_before_serve_is_taken_by_starts_and_replaced() {
    let _heavy = crate::HEAVY.lock().await;
    let mut cmd_env = plain_agent();
    cmd_env.insert(0, "EXAMPLE_IMPORT_SECONDS=1".to_owned());
    cmd_env.insert(0, "env".to_owned());
    let server = Server::start("switchboard", &["--prewarm", "2"], &cmd_env).await;
    // `ready` came after both children were past their (1 s) imports.
    let ready_at = server
        .log
        .lock()
        .unwrap()
        .iter()
        .position(|v| v["message"] == "ready")
        .unwrap();
    assert_eq!(prewarmed(&server).len(), 2, "both ready before serve was");
    assert!(
        server.log.lock().unwrap()[..ready_at]
            .iter()
            .filter(|v| v["message"] == "prewarmed agent process ready")
            .count()
            == 2
    );
    // An idle child's logs carry its pid, not a session (its stdout is read by a task of
    // its own: waited for).
    let first = prewarmed(&server)[0];
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let idle_line =
            server.log.lock().unwrap().iter().any(|v| {
                v["pid"] == first && v["stream"] == "stdout" && v.get("session_id").is_none()
            });
        if idle_line {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the idle child's `ready in pid` line, without a session"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // A start takes the oldest prewarmed child; a replacement starts.
    let id = server.start_session("warm", "{}").await;
    server
        .wait_session(&id, Duration::from_secs(20), |s| s["status"] == "running")
        .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let assigned = loop {
        let found = server
            .log
            .lock()
            .unwrap()
            .iter()
            .find(|v| {
                v["message"] == "agent process assigned to the session"
                    && v["session_id"] == id.as_str()
            })
            .cloned();
        if let Some(found) = found {
            break found;
        }
        assert!(Instant::now() < deadline, "no assignment logged for {id}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(assigned["prewarmed"], true, "{assigned}");
    assert_eq!(assigned["pid"], first, "{assigned}");
    assert_eq!(server.child_pid(&id).await, first);
    wait_prewarmed(&server, 3).await;

    // A prewarmed child that dies idle is replaced too.
    let idle = prewarmed(&server)[1];
    let killed = tokio::process::Command::new("kill")
        .args(["-KILL", &idle.to_string()])
        .status()
        .await
        .unwrap();
    assert!(killed.success());
    let replaced = wait_prewarmed(&server, 4).await;
    wait_gone(idle).await;

    assert_eq!(
        http(
            &server.addr,
            "DELETE",
            &format!("/calls/warm/sessions/{id}")
        )
        .await
        .0,
        202
    );
    let ended = server.wait_ended(&id, Duration::from_secs(20)).await;
    assert_eq!(ended["end_reason"], "requested");
    // Stopping serve leaves no child behind: the idle ones are killed with their groups.
    assert_eq!(server.stop().await, Some(0));
    for pid in replaced {
        wait_gone(pid).await;
    }
}

#[tokio::test]
async fn an_agent_command_that_cannot_start_is_refused_at_startup() {
    let _heavy = crate::HEAVY.lock().await;
    // Not on PATH: an invalid command line (2), before anything starts.
    let stderr = refused(
        "switchboard",
        &["serve", "--port", "0", "--", "no-such-agent-xyz"],
        2,
    )
    .await;
    assert!(
        stderr.contains("\"no-such-agent-xyz\" is not on PATH"),
        "{stderr}"
    );
    // No command at all.
    let stderr = refused("switchboard", &["serve", "--port", "0"], 2).await;
    assert!(stderr.contains("AGENT_COMMAND"), "{stderr}");
    // Prewarmed children that exit before `ready`: serve does not start, and says why.
    let args = [
        "serve",
        "--port",
        "0",
        "--no-splash",
        "--prewarm",
        "1",
        "--",
        "sh",
        "-c",
        "exit 7",
    ];
    let stderr = refused("switchboard", &args, 1).await;
    assert!(
        stderr.contains("the agent process exited with status 7 before it was ready"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_child_gets_its_metadata_its_close_reason_and_ends_as_it_says() {
    let _heavy = crate::HEAVY.lock().await;
    let opts = [
        "--agent-idle-timeout",
        "1",
        "--agent-close-grace-seconds",
        "1",
        "--maintenance-interval",
        "0.5",
    ];
    // `finished`: agent_finished, its last metrics kept.
    let server = Server::start("switchboard", &opts, &stub("finished")).await;
    let id = server
        .start_session("f", r#"{"metadata":{"customer":"acme"}}"#)
        .await;
    let ended = server.wait_ended(&id, Duration::from_secs(20)).await;
    assert_eq!(ended["end_reason"], "agent_finished", "{ended:#}");
    assert_eq!(ended["metrics"]["llm_output_tokens__total"], 7, "{ended:#}");
    let log = server.log.clone();
    assert_eq!(server.stop().await, Some(0));
    let handed = log.lock().unwrap().iter().any(|v| {
        v["session_id"] == id.as_str()
            && v["message"].as_str().is_some_and(|m| {
                m.starts_with("stub finished pid")
                    && m.contains(r#""metadata":{"customer":"acme"}"#)
                    && m.contains(&format!(r#""session_id":"{id}""#))
                    && m.contains(r#""call_id":"f""#)
            })
    });
    assert!(
        handed,
        "the session message carried the ids and the metadata"
    );

    // Metrics, then exit 0 at once: the last metrics are still the session's.
    let server = Server::start("switchboard", &opts, &stub("exit-after-metrics")).await;
    let id = server.start_session("m", "{}").await;
    let ended = server.wait_ended(&id, Duration::from_secs(20)).await;
    assert_eq!(ended["end_reason"], "agent_finished", "{ended:#}");
    assert_eq!(ended["metrics"]["llm_output_tokens__total"], 9, "{ended:#}");
    assert_eq!(server.stop().await, Some(0));

    // Alone: the idle timeout ends it, and the child hears `idle`.
    let server = Server::start("switchboard", &opts, &stub("alone")).await;
    let id = server.start_session("a", "{}").await;
    let ended = server.wait_ended(&id, Duration::from_secs(20)).await;
    assert_eq!(ended["end_reason"], "idle", "{ended:#}");
    let log = server.log.clone();
    assert_eq!(server.stop().await, Some(0));
    let told = log.lock().unwrap().iter().any(|v| {
        v["session_id"] == id.as_str()
            && v["message"].as_str().is_some_and(|m| {
                m.starts_with("stub alone close")
                    && m.contains(r#""reason":"idle""#)
                    && m.contains(r#""grace_seconds":1.0"#)
            })
    });
    assert!(told, "the child was told idle, with its grace");

    // Another protocol version: refused; the start answers 500 as for any agent that cannot
    // be created (the anchor's contract), and the session ends start_failed saying why.
    let server = Server::start("switchboard", &opts, &stub("v2")).await;
    let (status, body) = http(&server.addr, "POST", "/calls/v/sessions").await;
    assert_eq!(status, 500, "{body}");
    assert_eq!(body, r#"{"detail":"Failed to start agent"}"#);
    let (_, listed) = http(&server.addr, "GET", "/sessions?include_ended=true").await;
    let listed: Value = serde_json::from_str(&listed).unwrap();
    let id = listed["sessions"][0]["session_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let ended = server.wait_ended(&id, Duration::from_secs(20)).await;
    assert_eq!(ended["end_reason"], "start_failed", "{ended:#}");
    assert!(
        ended["end_detail"]
            .as_str()
            .unwrap()
            .contains("it speaks protocol version 2; this runtime speaks 1"),
        "{ended:#}"
    );
    assert_eq!(server.stop().await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn children_die_with_a_runtime_killed_by_sigkill_and_a_clean_stop_takes_their_helpers() {
    let _heavy = crate::HEAVY.lock().await;
    // SIGKILL: no drain runs, and the children (deaf to their channel's end: `sleep` holds it)
    // get the parent-death signal.
    let mut server = Server::start("switchboard", &["--prewarm", "2"], &stub("deaf")).await;
    let pids = wait_prewarmed(&server, 2).await;
    for pid in &pids {
        assert!(alive(*pid));
    }
    server.child.start_kill().unwrap();
    let _ = server.child.wait().await;
    for pid in &pids {
        wait_gone(*pid).await;
    }
    // Their helpers are not the kernel's to end (docs/process-agents.md): ours to clean up.
    for pid in &pids {
        let _ = tokio::process::Command::new("kill")
            .args(["-KILL", "--", &format!("-{pid}")])
            .status()
            .await;
    }

    // A clean stop kills each idle child's process group: its helpers go with it.
    let server = Server::start("switchboard", &["--prewarm", "2"], &stub("deaf")).await;
    let pids = wait_prewarmed(&server, 2).await;
    for pid in &pids {
        assert_eq!(group_members(*pid).len(), 2, "the child and its helper");
    }
    assert_eq!(server.stop().await, Some(0));
    for pid in pids {
        wait_group_gone(pid).await;
    }
}
