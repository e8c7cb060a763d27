//! Two `serve` processes on one DynamoDB table (moto): the limits hold across both, a session
//! started on A is visible and closable on B, and A closes it within one maintenance interval.

use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::binary::{command, http, http_with, read_until, sigterm};

const ENV: [(&str, &str); 5] = [
    ("AWS_REGION", "us-east-1"),
    ("AWS_ACCESS_KEY_ID", "testing"),
    ("AWS_SECRET_ACCESS_KEY", "testing"),
    ("AWS_EC2_METADATA_DISABLED", "true"),
    ("DEMO_PARTICIPANT_SECONDS", "3600"),
];

async fn table() -> String {
    switchboard_testkit::table(&switchboard_testkit::client().await).await
}

struct Node {
    child: tokio::process::Child,
    addr: String,
    log: Vec<Value>,
}

async fn node(endpoint: &str, table: &str) -> Node {
    node_with(
        endpoint,
        table,
        &[
            "--max-concurrent-sessions",
            "10",
            "--max-sessions-per-call",
            "3",
            // 2 s: each node sweeps 16 index shards and heartbeats every interval, and the
            // emulator serves one request at a time.
            "--maintenance-interval",
            "2",
            // A long lease (still >= 3 intervals): a starved emulator must not expire
            // sessions mid-test.
            "--session-lease-seconds",
            "60",
        ],
    )
    .await
}

/// A `serve` process on the DynamoDB table with `limits` as extra options, once ready.
async fn node_with(endpoint: &str, table: &str, limits: &[&str]) -> Node {
    let mut args = vec![
        "serve",
        "--port",
        "0",
        "--no-splash",
        "--log-format",
        "json",
        "--registry",
        "dynamodb",
        "--table",
        table,
    ];
    args.extend_from_slice(limits);
    let mut cmd = command(&args);
    cmd.envs(ENV).env("AWS_ENDPOINT_URL", endpoint);
    let mut child = cmd.spawn().unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut log = Vec::new();
    let listening = read_until(&mut lines, &mut log, |v| v["message"] == "listening").await;
    read_until(&mut lines, &mut log, |v| v["message"] == "ready").await;
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Node {
        addr: listening["address"].as_str().unwrap().to_owned(),
        child,
        log,
    }
}

/// Starts `n` sessions concurrently, alternating nodes, as a careful client does: each
/// logical start has its own Idempotency-Key and is retried on 503 after `Retry-After`, so a
/// start that went on in the background is replayed, not duplicated. Returns
/// (node index, final status, body).
async fn start_many(
    nodes: &[&str],
    calls: impl Fn(usize) -> String,
    n: usize,
) -> Vec<(usize, u16, String)> {
    let run = uuid::Uuid::now_v7().simple().to_string();
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let (addr, call) = (nodes[i % nodes.len()].to_owned(), calls(i));
            let key = format!("{run}-{i}");
            tokio::spawn(async move {
                let path = format!("/calls/{call}/sessions");
                // A client retries 503 + Retry-After; the emulator is one Python process, so
                // give it a minute of retries rather than a count.
                let deadline = Instant::now() + Duration::from_secs(60);
                loop {
                    let (status, body) =
                        http_with(&addr, "POST", &path, &[("Idempotency-Key", &key)]).await;
                    if status != 503 || Instant::now() > deadline {
                        return (i % 2, status, body);
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_serve_nodes_on_one_table_share_limits_and_close_each_others_sessions() {
    // Heavy: each node sweeps the table's 16 index shards every interval and the emulator
    // serves one request at a time; beside a chaos world, 200 starts saw a minute of 503s.
    let _heavy = crate::HEAVY.lock().await;
    let endpoint = switchboard_testkit::endpoint();
    let table = table().await;
    let mut a = node(&endpoint, &table).await;
    let mut b = node(&endpoint, &table).await;
    let nodes = [a.addr.as_str(), b.addr.as_str()];

    // Per-call limit 3, across both nodes.
    let results = start_many(&nodes, |_| "shared-call".to_owned(), 40).await;
    let admitted: Vec<_> = results.iter().filter(|r| r.1 == 201).collect();
    assert_eq!(admitted.len(), 3, "{results:?}");
    assert!(
        results
            .iter()
            .all(|r| r.1 == 201 || (r.1 == 429 && r.2.contains("for this call"))),
        "{results:?}"
    );

    // Global limit 10, across both nodes. A session may end meanwhile (a lease the slow
    // emulator could not renew) and free its slot; so check the invariant itself: exactly 10
    // live at the end, and every 201 is a live session or one whose end is recorded.
    let results = start_many(&nodes, |i| format!("call-{i}"), 200).await;
    assert!(
        results
            .iter()
            .all(|r| r.1 == 201 || (r.1 == 429 && r.2.contains("concurrent sessions"))),
        "{results:?}"
    );
    let admitted_now: Vec<String> = results
        .iter()
        .filter(|r| r.1 == 201)
        .map(|r| {
            serde_json::from_str::<Value>(&r.2).unwrap()["session_id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    let (_, listed) = http(nodes[0], "GET", "/sessions?include_ended=true&limit=500").await;
    let listed: Value = serde_json::from_str(&listed).unwrap();
    let sessions = listed["sessions"].as_array().unwrap();
    let live = sessions.iter().filter(|s| s["status"] != "ended").count();
    assert_eq!(live, 10, "exactly the global limit is live: {sessions:#?}");
    let ended: Vec<&Value> = sessions.iter().filter(|s| s["status"] == "ended").collect();
    assert_eq!(
        admitted_now.len() + 3,
        10 + ended.len(),
        "every admission is live or ended: {sessions:#?}"
    );
    for s in &ended {
        assert!(
            s["end_reason"].is_string(),
            "an end always has a reason: {s}"
        );
    }
    for id in &admitted_now {
        assert!(
            sessions.iter().any(|s| s["session_id"] == id.as_str()),
            "{id} admitted but not recorded"
        );
    }

    // A session started on A is visible on B, and a close sent to B stops it on A.
    let (node_index, _, body) = admitted
        .iter()
        .find(|r| r.0 == 0)
        .copied()
        .cloned()
        .unwrap_or_else(|| admitted[0].clone());
    let (owner, other) = if node_index == 0 {
        (nodes[0], nodes[1])
    } else {
        (nodes[1], nodes[0])
    };
    let id = serde_json::from_str::<Value>(&body).unwrap()["session_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("/calls/shared-call/sessions/{id}");
    assert_eq!(
        http(other, "GET", &path).await.0,
        200,
        "visible on the other node"
    );
    let asked = Instant::now();
    assert_eq!(http(other, "DELETE", &path).await.0, 202);
    while http(owner, "GET", &path).await.0 != 404 {
        assert!(
            asked.elapsed() < Duration::from_secs(4),
            "not closed within one interval (2 s) plus slack"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let closed_after = asked.elapsed();
    assert!(
        closed_after <= Duration::from_millis(3500),
        "{closed_after:?}"
    );

    // The freed slot is available again, on either node.
    assert_eq!(
        http(other, "POST", "/calls/shared-call/sessions").await.0,
        201
    );

    for n in [&mut a, &mut b] {
        sigterm(&n.child).await;
        let status = tokio::time::timeout(Duration::from_secs(30), n.child.wait())
            .await
            .unwrap()
            .unwrap();
        assert!(status.success(), "{:?}", n.log);
    }
}

/// A `serve` node with a short lease (3 intervals of 2 s), for node-death tests.
async fn short_lease_node(endpoint: &str, table: &str) -> Node {
    node_with(
        endpoint,
        table,
        &[
            "--maintenance-interval",
            "2",
            "--session-lease-seconds",
            "6",
        ],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sessions_of_a_node_killed_with_sigkill_are_ended_by_the_survivor_after_their_lease() {
    // Heavy: each node sweeps the table's 16 index shards every interval and the emulator
    // serves one request at a time; beside a chaos world, 200 starts saw a minute of 503s.
    let _heavy = crate::HEAVY.lock().await;
    let endpoint = switchboard_testkit::endpoint();
    let table = table().await;
    let mut doomed = short_lease_node(&endpoint, &table).await;
    let mut survivor = short_lease_node(&endpoint, &table).await;
    let mut orphans = Vec::new();
    for call in ["node-a", "node-b"] {
        let (status, body) = http(&doomed.addr, "POST", &format!("/calls/{call}/sessions")).await;
        assert_eq!(status, 201, "{body}");
        let id = serde_json::from_str::<Value>(&body).unwrap()["session_id"]
            .as_str()
            .unwrap()
            .to_owned();
        orphans.push(format!("/calls/{call}/sessions/{id}"));
    }
    let (status, body) = http(&survivor.addr, "POST", "/calls/node-c/sessions").await;
    assert_eq!(status, 201, "{body}");
    let kept = format!(
        "/calls/node-c/sessions/{}",
        serde_json::from_str::<Value>(&body).unwrap()["session_id"]
            .as_str()
            .unwrap()
    );
    // Running on their node (in-process agents join at once).
    for path in &orphans {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (_, body) = http(&survivor.addr, "GET", path).await;
            if serde_json::from_str::<Value>(&body).unwrap()["status"] == "running" {
                break;
            }
            assert!(Instant::now() < deadline, "never running: {body}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    doomed.child.start_kill().unwrap(); // SIGKILL: no drain, nothing written
    doomed.child.wait().await.unwrap();
    let killed = Instant::now();

    // The survivor's maintenance loop ends them once their leases expire: lease_expired,
    // never before the lease, and the slots come back.
    let history = loop {
        let (_, body) = http(
            &survivor.addr,
            "GET",
            "/sessions?include_ended=true&limit=500",
        )
        .await;
        let listed: Value = serde_json::from_str(&body).unwrap();
        let sessions = listed["sessions"].as_array().unwrap().clone();
        let ended = sessions
            .iter()
            .filter(|s| {
                orphans
                    .iter()
                    .any(|p| p.ends_with(s["session_id"].as_str().unwrap()))
            })
            .filter(|s| s["status"] == "ended")
            .count();
        if ended == orphans.len() {
            break sessions;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(30),
            "not reaped: {sessions:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let reaped_after = killed.elapsed();
    eprintln!(
        "SIGKILL of a serve node → its sessions ended by the survivor in {reaped_after:?} (lease 6 s, interval 2 s)"
    );
    for s in history.iter().filter(|s| {
        orphans
            .iter()
            .any(|p| p.ends_with(s["session_id"].as_str().unwrap()))
    }) {
        assert_eq!(s["end_reason"], "lease_expired", "{s}");
    }
    // Never before the lease: the rows themselves.
    let registry = switchboard_aws::DynamoRegistry::new(
        switchboard_testkit::client().await,
        table.clone(),
        std::sync::Arc::new(switchboard_core::SystemClock),
    );
    for path in &orphans {
        let parts: Vec<&str> = path.split('/').collect();
        let call = switchboard_core::CallId::parse(parts[2]).unwrap();
        let id = switchboard_core::SessionId::parse(parts[4]).unwrap();
        let row = switchboard_core::SessionRegistry::get(&registry, &call, id)
            .await
            .unwrap()
            .unwrap();
        assert!(
            row.ended_at.unwrap() >= row.lease_expires_at,
            "ended while its lease held: {row:?}"
        );
    }
    // The survivor's own session is untouched, and the freed slots are usable.
    let (_, body) = http(&survivor.addr, "GET", &kept).await;
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["status"],
        "running"
    );
    for path in &orphans {
        assert_eq!(http(&survivor.addr, "GET", path).await.0, 404);
    }

    sigterm(&survivor.child).await;
    let status = tokio::time::timeout(Duration::from_secs(30), survivor.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{:?}", survivor.log);
}
