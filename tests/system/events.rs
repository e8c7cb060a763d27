//! Session events and fleet metrics from the real `serve`: each session's start, run and end
//! reach a webhook receiver that verifies every signature with the `standardwebhooks` Python
//! package, in order, through a 500, a slow answer and a receiver that is down; `/metrics`
//! passes `promtool check metrics` after the lifecycles.

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdout, Command};

use crate::binary::{command, http, read_until, sigterm};

pub const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// The receiver (`webhook_receiver.py`) and its lines.
pub struct Receiver {
    /// Killed on drop.
    _child: Child,
    pub lines: tokio::io::Lines<BufReader<ChildStdout>>,
    pub port: u16,
    pub seen: Vec<Value>,
}

fn python() -> std::path::PathBuf {
    let venv = switchboard_testkit::bins::workspace_root().join(".venv/bin/python");
    if venv.exists() {
        venv
    } else {
        "python3".into()
    }
}

impl Receiver {
    pub async fn start(args: &[&str]) -> Self {
        let script =
            switchboard_testkit::bins::workspace_root().join("tests/system/webhook_receiver.py");
        let mut child = Command::new(python())
            .arg(script)
            .args(["--secret", SECRET])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("python3 runs the receiver");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .expect(
                "the receiver starts (is standardwebhooks installed? the test command installs it)",
            )
            .unwrap()
            .expect("the receiver printed its port");
        let port = serde_json::from_str::<Value>(&first).unwrap()["port"]
            .as_u64()
            .unwrap() as u16;
        Self {
            _child: child,
            lines,
            port,
            seen: Vec::new(),
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hooks", self.port)
    }

    /// Reads until `n` events were answered 200; returns those, in arrival order.
    pub async fn delivered(&mut self, n: usize) -> Vec<Value> {
        let ok = |seen: &[Value]| {
            seen.iter()
                .filter(|v| v["status"] == 200)
                .cloned()
                .collect::<Vec<_>>()
        };
        tokio::time::timeout(Duration::from_secs(60), async {
            while ok(&self.seen).len() < n {
                let line = self
                    .lines
                    .next_line()
                    .await
                    .unwrap()
                    .expect("the receiver is running");
                self.seen.push(serde_json::from_str(&line).unwrap());
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{n} deliveries did not arrive; seen: {:#?}", self.seen));
        ok(&self.seen)
    }
}

/// Checks that `delivered` holds each of `sessions`' three events once, verified, in order.
pub fn assert_lifecycles(delivered: &[Value], sessions: &[String], end_reason: &str) {
    assert!(
        delivered.iter().all(|v| v["verified"] == true),
        "{delivered:#?}"
    );
    for id in sessions {
        let mine: Vec<_> = delivered
            .iter()
            .filter(|v| v["session_id"] == id.as_str())
            .collect();
        let kinds: Vec<_> = mine
            .iter()
            .map(|v| v["type"].as_str().unwrap_or(""))
            .collect();
        assert_eq!(
            kinds,
            ["session.started", "session.running", "session.ended"],
            "{id}: {delivered:#?}"
        );
        let seqs: Vec<_> = mine
            .iter()
            .map(|v| v["sequence"].as_u64().unwrap())
            .collect();
        assert_eq!(seqs, [1, 2, 3]);
        assert_eq!(mine[2]["end_reason"], end_reason);
        assert_eq!(mine[0]["id"], format!("evt_{id}_1"));
    }
}

async fn serve_with_webhook(url: &str) -> (Child, String) {
    let mut child = command(&[
        "serve",
        "--port",
        "0",
        "--log-format",
        "json",
        "--no-splash",
    ])
    .env("SWITCHBOARD_WEBHOOK_URL", url)
    .env("SWITCHBOARD_WEBHOOK_SECRET", SECRET)
    .spawn()
    .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut log = Vec::new();
    let listening = read_until(&mut lines, &mut log, |v| v["message"] == "listening").await;
    let addr = listening["address"].as_str().unwrap().to_owned();
    read_until(&mut lines, &mut log, |v| v["message"] == "ready").await;
    // Keep draining stderr so the server never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, addr)
}

/// Starts a session and waits for its agent to join; returns its id.
pub async fn running_session(addr: &str, call: &str) -> String {
    let (status, body) = http(addr, "POST", &format!("/calls/{call}/sessions")).await;
    assert_eq!(status, 201, "{body}");
    let id = serde_json::from_str::<Value>(&body).unwrap()["session_id"]
        .as_str()
        .unwrap()
        .to_owned();
    for _ in 0..500 {
        let (_, body) = http(addr, "GET", &format!("/calls/{call}/sessions/{id}")).await;
        if serde_json::from_str::<Value>(&body).unwrap()["status"] == "running" {
            return id;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("session {id} never ran");
}

async fn close(addr: &str, call: &str, id: &str) {
    let (status, body) = http(addr, "DELETE", &format!("/calls/{call}/sessions/{id}")).await;
    assert_eq!(status, 202, "{body}");
}

/// `promtool check metrics` on the text; panics with its complaints.
pub async fn promtool_check(text: &str) {
    use tokio::io::AsyncWriteExt;
    let mut check = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian's prometheus package; the test command installs it)");
    check
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .await
        .unwrap();
    let out = check.wait_with_output().await.unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn sample(text: &str, series: &str) -> f64 {
    switchboard_testkit::prometheus_sample(text, series)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_delivers_every_event_signed_in_order_through_a_500_and_a_slow_answer() {
    // The first request waits 2 s and answers 500: that session's later events wait for its
    // retry; the other session's do not.
    let mut receiver = Receiver::start(&["--fail-first", "1", "--delay", "2"]).await;
    let (mut serve, addr) = serve_with_webhook(&receiver.url()).await;
    let a = running_session(&addr, "call-a").await;
    let b = running_session(&addr, "call-b").await;
    close(&addr, "call-a", &a).await;
    close(&addr, "call-b", &b).await;
    let delivered = receiver.delivered(6).await;
    assert_lifecycles(&delivered, &[a, b], "requested");
    assert!(
        receiver
            .seen
            .iter()
            .any(|v| v["status"] == 500 && v["verified"] == true)
    );

    // The receiver logs a delivery before serve has read its answer and counted it.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let text = loop {
        let (status, text) = http(&addr, "GET", "/metrics").await;
        assert_eq!(status, 200);
        let delivered = "switchboard_webhook_deliveries_total{outcome=\"delivered\"}";
        if sample(&text, delivered) >= 6.0 || std::time::Instant::now() > deadline {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    promtool_check(&text).await;
    assert_eq!(sample(&text, "switchboard_sessions_admitted_total"), 2.0);
    assert_eq!(
        sample(
            &text,
            "switchboard_sessions_ended_total{reason=\"requested\"}"
        ),
        2.0
    );
    assert_eq!(
        sample(&text, "switchboard_sessions{status=\"running\"}"),
        0.0
    );
    assert_eq!(
        sample(&text, "switchboard_session_start_seconds_count"),
        2.0
    );
    assert_eq!(
        sample(&text, "switchboard_session_close_seconds_count"),
        2.0
    );
    assert_eq!(
        sample(
            &text,
            "switchboard_webhook_deliveries_total{outcome=\"delivered\"}"
        ),
        6.0
    );
    assert_eq!(
        sample(
            &text,
            "switchboard_webhook_deliveries_total{outcome=\"retried\"}"
        ),
        1.0
    );
    sigterm(&serve).await;
    assert!(serve.wait().await.unwrap().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_is_down_does_not_touch_the_session_and_gets_its_events_once_up() {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = probe.local_addr().unwrap().port();
    drop(probe);
    let (mut serve, addr) = serve_with_webhook(&format!("http://127.0.0.1:{port}/hooks")).await;
    let a = running_session(&addr, "call-down").await;
    close(&addr, "call-down", &a).await;
    // The session ends as always, whatever the webhook does.
    let mut ended = false;
    for _ in 0..500 {
        // An ended session is gone from GET (404), as the anchor's.
        let (status, _) = http(&addr, "GET", &format!("/calls/call-down/sessions/{a}")).await;
        if status == 404 {
            ended = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(ended, "the session did not end while the receiver was down");
    let (_, text) = http(&addr, "GET", "/metrics").await;
    assert!(
        sample(
            &text,
            "switchboard_webhook_deliveries_total{outcome=\"retried\"}"
        ) >= 1.0,
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "switchboard_webhook_deliveries_total{outcome=\"delivered\"}"
        ),
        0.0
    );
    let port = port.to_string();
    let mut receiver = Receiver::start(&["--port", &port]).await;
    let delivered = receiver.delivered(3).await;
    assert_lifecycles(&delivered, &[a], "requested");
    sigterm(&serve).await;
    assert!(serve.wait().await.unwrap().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_refuses_an_unsigned_or_misconfigured_webhook() {
    for (env, says) in [
        (
            vec![("SWITCHBOARD_WEBHOOK_URL", "http://127.0.0.1:9/")],
            "SWITCHBOARD_WEBHOOK_SECRET is required",
        ),
        (
            vec![
                ("SWITCHBOARD_WEBHOOK_URL", "not a url"),
                ("SWITCHBOARD_WEBHOOK_SECRET", SECRET),
            ],
            "SWITCHBOARD_WEBHOOK_URL",
        ),
        (
            vec![
                ("SWITCHBOARD_WEBHOOK_URL", "http://127.0.0.1:9/"),
                ("SWITCHBOARD_WEBHOOK_SECRET", "secret"),
            ],
            "SWITCHBOARD_WEBHOOK_SECRET is invalid",
        ),
    ] {
        let mut cmd = command(&["serve", "--port", "0", "--no-splash"]);
        for (k, v) in &env {
            cmd.env(k, v);
        }
        let out = cmd.output().await.unwrap();
        assert_eq!(out.status.code(), Some(2), "{env:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(says), "{env:?}: {stderr}");
    }
}
