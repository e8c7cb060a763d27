//! The real `demo-agent` binary: `serve` drains on SIGTERM and exits 0 with every session
//! ended `shutdown`; `run` runs one agent to its end; structured JSON logs.

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStderr, Command};

pub fn command(args: &[&str]) -> Command {
    command_of("demo-agent", args)
}

/// A workspace binary with `args`, piped, killed on drop, without the caller's Switchboard
/// and AWS settings.
pub fn command_of(binary: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(switchboard_testkit::bins::bin(binary));
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (key, _) in std::env::vars() {
        // The IAM check's recording goes through: the task's AWS calls are its role's.
        if key.starts_with("SWITCHBOARD_") && key != "SWITCHBOARD_RECORD_AWS_CALLS"
            || key.starts_with("AWS_")
            || key == "RUST_LOG"
        {
            cmd.env_remove(key);
        }
    }
    cmd
}

/// Reads JSON log lines until one matches `pred`; returns it and every line read.
pub async fn read_until(
    lines: &mut tokio::io::Lines<BufReader<ChildStderr>>,
    log: &mut Vec<Value>,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let found = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(line) = lines.next_line().await.expect("stderr") {
            if let Ok(value) = serde_json::from_str::<Value>(&line) {
                log.push(value.clone());
                if pred(&value) {
                    return Some(value);
                }
            }
        }
        None
    })
    .await
    .expect("timed out reading the logs");
    found
        .unwrap_or_else(|| panic!("the process ended before the expected log line; logs: {log:#?}"))
}

/// Runs a workspace binary that must refuse `args` with exit code `code`; its stderr.
pub async fn refused(binary: &str, args: &[&str], code: i32) -> String {
    let out = command_of(binary, args).output().await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(code), "{stderr}");
    stderr
}

pub async fn http(addr: &str, method: &str, path: &str) -> (u16, String) {
    http_with(addr, method, path, &[]).await
}

/// Like [`http`], with extra headers.
pub async fn http_with(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, String) {
    let reply = switchboard_testkit::http::request(addr, method, path, headers, "").await;
    (reply.status, reply.body)
}

pub async fn sigterm(child: &Child) {
    let pid = child.id().expect("running").to_string();
    let status = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_drains_on_sigterm_and_exits_0_with_sessions_ended_shutdown() {
    let mut child = command(&[
        "serve",
        "--port",
        "0",
        "--log-format",
        "json",
        "--no-splash",
    ])
    .spawn()
    .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut log = Vec::new();
    let listening = read_until(&mut lines, &mut log, |v| v["message"] == "listening").await;
    let addr = listening["address"].as_str().unwrap().to_owned();
    read_until(&mut lines, &mut log, |v| v["message"] == "ready").await;
    assert_eq!(http(&addr, "GET", "/ready").await.0, 200);

    let mut ids = Vec::new();
    for call in ["call-a", "call-b"] {
        let (status, body) = http(&addr, "POST", &format!("/calls/{call}/sessions")).await;
        assert_eq!(status, 201, "{body}");
        let body: Value = serde_json::from_str(&body).unwrap();
        ids.push(body["session_id"].as_str().unwrap().to_owned());
    }

    sigterm(&child).await;
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("exits")
        .unwrap();
    let mut rest = Vec::new();
    while let Some(line) = lines.next_line().await.unwrap() {
        if let Ok(v) = serde_json::from_str::<Value>(&line) {
            rest.push(v);
        }
    }
    log.extend(rest);
    assert!(status.success(), "exit status {status:?}; logs: {log:#?}");
    for id in &ids {
        let ended = log
            .iter()
            .find(|v| v["message"] == "session ended" && v["session_id"] == id.as_str())
            .unwrap_or_else(|| panic!("no end for {id}: {log:#?}"));
        assert_eq!(ended["end_reason"], "shutdown");
        assert_eq!(ended["recorded"], true);
    }
    assert!(
        log.iter()
            .any(|v| v["message"] == "shutting down" && v["signal"] == "SIGTERM")
    );
    assert!(log.iter().any(|v| v["message"] == "stopped"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_runs_one_agent_until_it_is_left_alone() {
    let mut cmd = command(&[
        "run",
        "--call-id",
        "console-call",
        "--no-demo",
        "--no-splash",
        "--log-format",
        "json",
        "--agent-idle-timeout",
        "0.3",
    ]);
    cmd.env("DEMO_PARTICIPANT_SECONDS", "0.2");
    let out = tokio::time::timeout(Duration::from_secs(30), cmd.output())
        .await
        .expect("run ends")
        .unwrap();
    let log: Vec<Value> = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert!(out.status.success(), "{log:#?}");
    let ended = log
        .iter()
        .find(|v| v["message"] == "session ended")
        .expect("the session ended");
    assert_eq!(ended["end_reason"], "idle");
    assert_eq!(ended["call_id"], "console-call");
}

#[tokio::test]
async fn a_missing_video_file_is_refused_before_anything_starts() {
    let stderr = refused(
        "demo-agent",
        &["run", "--video-track-override", "/nope/video.mp4"],
        2,
    )
    .await;
    assert!(
        stderr.contains("File '/nope/video.mp4' does not exist."),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_port_in_use_is_a_clear_error() {
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = holder.local_addr().unwrap().port().to_string();
    let stderr = refused("demo-agent", &["serve", "--port", &port, "--no-splash"], 1).await;
    assert!(
        stderr.contains(&format!("could not listen on 127.0.0.1:{port}")),
        "{stderr}"
    );
}

#[tokio::test]
async fn run_serves_the_demo_page_and_its_call_then_ends_idle_after_the_person_leaves() {
    let mut child = command(&[
        "run",
        "--call-id",
        "run-demo",
        "--no-splash",
        "--log-format",
        "json",
        "--agent-idle-timeout",
        "0.5",
    ])
    .spawn()
    .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut log = Vec::new();
    let line = read_until(&mut lines, &mut log, |v| {
        v["message"] == "demo page: join the call in a browser"
    })
    .await;
    let url = line["url"].as_str().unwrap().to_owned();
    let rest = url.strip_prefix("http://").unwrap();
    let (addr, query) = rest.split_once("/?").unwrap();
    assert!(addr.starts_with("127.0.0.1:"), "loopback only: {url}");
    assert!(query.starts_with("call_id=run-demo&session_id="), "{url}");
    assert!(query.ends_with("&join=1"), "{url}");
    let (status, page) = http(addr, "GET", "/").await;
    assert_eq!(status, 200);
    assert!(page.contains("Switchboard demo call"));
    // A person joins the agent's call from "the page": the agent is there and welcomes them.
    let socket_addr: std::net::SocketAddr = addr.parse().unwrap();
    let mut socket = crate::local_call::connect(socket_addr, "/calls/run-demo/ws", &[])
        .await
        .unwrap();
    let welcome = crate::local_call::join(&mut socket, "Tester").await;
    assert_eq!(welcome["participants"][0]["name"], "Assistant");
    assert_eq!(
        crate::local_call::agent_says(&mut socket).await,
        format!("Welcome, Tester! {}", demo_agent::GREETING)
    );
    // While they are in the call, `run` serves what its one session needs: that session's row and metrics...
    let session_id = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("session_id="))
        .unwrap()
        .to_owned();
    let own = format!("/calls/run-demo/sessions/{session_id}");
    assert_eq!(http(addr, "GET", &own).await.0, 200);
    assert_eq!(http(addr, "GET", &format!("{own}/metrics")).await.0, 200);
    // ...and nothing else of the API: no other starts, lists, pool or docs.
    for (method, path) in [
        ("POST", "/calls/run-demo/sessions".to_owned()),
        ("GET", "/calls/run-demo/sessions".to_owned()),
        ("GET", "/sessions".to_owned()),
        ("GET", "/docs".to_owned()),
        ("GET", "/calls/another-call/ws".to_owned()),
        ("GET", format!("/calls/another-call/sessions/{session_id}")),
    ] {
        let (status, body) = http(addr, method, &path).await;
        assert_eq!(status, 404, "{method} {path}: {body}");
        assert!(
            body.contains("`run` serves only its one session"),
            "{method} {path}: {body}"
        );
    }

    // They leave; alone for the idle timeout, the agent's session ends and `run` exits 0.
    drop(socket);
    let ended = read_until(&mut lines, &mut log, |v| v["message"] == "session ended").await;
    assert_eq!(ended["end_reason"], "idle");
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("run exits")
        .unwrap();
    assert!(status.success(), "{log:#?}");
}

/// `serve` with `OPENAI_MODEL` answers through the OpenAI-compatible model: the greeting, a
/// tool round and the answer come from a local fake server, over the local call.
#[tokio::test]
async fn serve_with_an_openai_compatible_model_answers_through_it() {
    use serde_json::json;
    use switchboard_testkit::openai::{fake_openai, sse, text_chunk, tool_fragment, usage_chunk};
    let zero = Duration::ZERO;
    let (base, seen) = fake_openai(vec![
        sse(vec![
            (zero, text_chunk("Hi, I am the remote model.")),
            (zero, usage_chunk(20, 7)),
        ]),
        sse(vec![
            (
                zero,
                tool_fragment(Some("call_1"), Some("get_weather"), "{\"location\":"),
            ),
            (zero, tool_fragment(None, None, "\"Paris\"}")),
            (zero, usage_chunk(30, 5)),
        ]),
        sse(vec![
            (zero, text_chunk("Sunny in Paris, 72°F.")),
            (zero, usage_chunk(45, 6)),
        ]),
    ])
    .await;
    let mut cmd = command(&[
        "serve",
        "--port",
        "0",
        "--no-splash",
        "--log-format",
        "json",
    ]);
    cmd.env("OPENAI_MODEL", "fake-model")
        .env("OPENAI_BASE_URL", &base)
        .env("OPENAI_API_KEY", "sk-local");
    let mut child = cmd.spawn().unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut log = Vec::new();
    let listening = read_until(&mut lines, &mut log, |v| v["message"] == "listening").await;
    let addr = listening["address"].as_str().unwrap().to_owned();
    read_until(&mut lines, &mut log, |v| v["message"] == "ready").await;
    assert!(
        log.iter().any(
            |v| v["message"] == "the demo answers with an OpenAI-compatible model"
                && v["model"] == "fake-model"
        ),
        "{log:#?}"
    );

    let mut socket = crate::local_call::connect(addr.parse().unwrap(), "/calls/remote/ws", &[])
        .await
        .unwrap();
    crate::local_call::join(&mut socket, "Ada").await;
    let (status, body) = http(&addr, "POST", "/calls/remote/sessions").await;
    assert_eq!(status, 201, "{body}");
    let session_id = serde_json::from_str::<Value>(&body).unwrap()["session_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        crate::local_call::agent_says(&mut socket).await,
        "Hi, I am the remote model."
    );
    crate::local_call::send(
        &mut socket,
        json!({"v": 1, "type": "say", "text": "What's the weather in Paris?"}),
    )
    .await;
    assert_eq!(
        crate::local_call::agent_says(&mut socket).await,
        "Sunny in Paris, 72°F."
    );
    {
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 3);
        assert!(
            seen[0]
                .0
                .to_ascii_lowercase()
                .contains("authorization: bearer sk-local")
        );
        assert_eq!(seen[0].1["model"], "fake-model");
        let tool_result = &seen[2].1["messages"]
            .as_array()
            .unwrap()
            .last()
            .unwrap()
            .clone();
        assert_eq!(tool_result["role"], "tool");
        assert_eq!(
            tool_result["content"],
            "The weather in Paris is sunny and 72°F."
        );
    }
    // The metrics are the stream's usage: 20 + 30 + 45 in, 7 + 5 + 6 out.
    let path = format!("/calls/remote/sessions/{session_id}/metrics");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (_, body) = http(&addr, "GET", &path).await;
        let metrics = serde_json::from_str::<Value>(&body).unwrap()["metrics"].clone();
        if metrics["llm_input_tokens__total"] == 95 {
            assert_eq!(metrics["llm_output_tokens__total"], 18);
            assert_eq!(metrics["llm_tool_calls__total"], 1);
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{metrics}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(socket);
    child.start_kill().unwrap();
    let _ = child.wait().await;
}
