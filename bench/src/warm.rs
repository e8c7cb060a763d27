//! `warm --url`: the warm pool through a running serverless stack (`infra/serverless-local.sh`
//! with `WARM_POOL_SIZE`): rounds of as many held starts as the pool keeps, each POST →
//! `running` timed (the pool refilled between rounds), then a burst of twice the pool (the
//! excess is cold), the refill times, and, with `--calls` (the directory the stack records
//! its AWS calls into, `SWITCHBOARD_RECORD_AWS_CALLS`), DynamoDB requests per idle
//! standby-hour and the api's per warm start.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hyper::{Method, StatusCode};
use serde_json::{Value, json};
use switchboard_core::metrics::LatencySketch;

use crate::{HttpClient, call, client, session_id};

async fn get_json(client: &HttpClient, base: &str, path: &str) -> anyhow::Result<Value> {
    let (status, body) = call(client, base, Method::GET, path, None).await?;
    if status != StatusCode::OK {
        bail!("GET {path}: {status} {}", String::from_utf8_lossy(&body));
    }
    Ok(serde_json::from_slice(&body)?)
}

/// Waits until the current task definition has `size` idle standbys; how long it took.
async fn until_full(
    client: &HttpClient,
    base: &str,
    size: u64,
    within: Duration,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    loop {
        let pool = get_json(client, base, "/pool").await?;
        if pool["definitions"][0]["idle"].as_u64() >= Some(size) {
            return Ok(started.elapsed());
        }
        if started.elapsed() > within {
            bail!("the pool did not refill to {size} within {within:?}: {pool}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One start: POST, then GET until `running`. (POST → running, the session as seen then.)
async fn start(client: &HttpClient, base: &str, call_id: &str) -> anyhow::Result<(f64, Value)> {
    let asked = Instant::now();
    let (status, body) = call(
        client,
        base,
        Method::POST,
        &format!("/calls/{call_id}/sessions"),
        Some(&json!({})),
    )
    .await?;
    if status != StatusCode::CREATED {
        bail!(
            "POST {call_id}: {status} {}",
            String::from_utf8_lossy(&body)
        );
    }
    let path = format!("/calls/{call_id}/sessions/{}", session_id(&body)?);
    loop {
        let session = get_json(client, base, &path).await?;
        if session["status"] == "running" {
            return Ok((asked.elapsed().as_secs_f64() * 1000.0, session));
        }
        if asked.elapsed() > Duration::from_secs(180) {
            bail!("{path} not running after 180 s: {session}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn close(client: &HttpClient, base: &str, sessions: &[Value]) -> anyhow::Result<()> {
    for s in sessions {
        let path = format!(
            "/calls/{}/sessions/{}",
            s["call_id"].as_str().unwrap_or_default(),
            s["session_id"].as_str().unwrap_or_default()
        );
        call(client, base, Method::DELETE, &path, None).await?;
    }
    Ok(())
}

fn stats(sketch: &LatencySketch) -> Value {
    let s = sketch.stats();
    json!({"samples": s.count, "p50_ms": s.p50_ms, "p95_ms": s.p95_ms, "p99_ms": s.p99_ms, "max_ms": s.max_ms})
}

/// DynamoDB calls recorded so far by `role` (a template resource: `ApiFunction`,
/// `AgentTaskRole`), by operation.
fn dynamodb_calls(dir: &Path, role: &str) -> anyhow::Result<BTreeMap<String, u64>> {
    let mut counts = BTreeMap::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if !name.starts_with(&format!("{role}.")) {
            continue;
        }
        for line in std::fs::read_to_string(&path)?.lines() {
            let Ok(call) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            if call["service"] == "DynamoDB" {
                *counts
                    .entry(call["operation"].as_str().unwrap_or("?").to_owned())
                    .or_default() += 1;
            }
        }
    }
    Ok(counts)
}

fn delta(after: &BTreeMap<String, u64>, before: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    after
        .iter()
        .map(|(op, n)| (op.clone(), n - before.get(op).copied().unwrap_or(0)))
        .filter(|(_, n)| *n > 0)
        .collect()
}

/// Runs the scenario against the stack at `base`.
pub(crate) async fn measure(
    base: &str,
    rounds: usize,
    calls: Option<&Path>,
    idle_seconds: f64,
) -> anyhow::Result<Value> {
    let client = client();
    let pool = get_json(&client, base, "/pool").await?;
    let size = pool["target_size"].as_u64().unwrap_or(0);
    if size == 0 {
        bail!("the stack keeps no warm pool (start it with WARM_POOL_SIZE=3)");
    }
    until_full(&client, base, size, Duration::from_secs(600)).await?;

    let mut report = json!({"pool_size": size, "rounds": rounds});
    if let Some(dir) = calls {
        // Idle: only standbys run, so every AgentTaskRole call is one of theirs.
        let before = dynamodb_calls(dir, "AgentTaskRole")?;
        tokio::time::sleep(Duration::from_secs_f64(idle_seconds)).await;
        let after = dynamodb_calls(dir, "AgentTaskRole")?;
        let idle = delta(&after, &before);
        let per_hour: BTreeMap<&String, f64> = idle
            .iter()
            .map(|(op, n)| (op, (*n as f64) / size as f64 / idle_seconds * 3600.0))
            .collect();
        report["dynamodb_per_standby_hour"] =
            json!({"window_s": idle_seconds, "requests": per_hour});
    }

    let warm = LatencySketch::new();
    let reported = LatencySketch::new();
    let refills = LatencySketch::new();
    let mut cold_in_rounds = 0u64;
    let mut api_calls: Option<BTreeMap<String, u64>> = None;
    for round in 0..rounds {
        let api_before = calls
            .map(|d| dynamodb_calls(d, "ApiFunction"))
            .transpose()?;
        let round_started = Instant::now();
        let mut held = Vec::new();
        for i in 0..size {
            let (ms, session) = start(&client, base, &format!("warm-{round}-{i}")).await?;
            if session["start_type"] == "warm" {
                warm.record(ms);
                if let Some(l) = session["start_latency_ms"].as_f64() {
                    reported.record(l);
                }
            } else {
                cold_in_rounds += 1;
            }
            held.push(session);
        }
        if let (Some(dir), Some(before), None) = (calls, &api_before, &api_calls) {
            // The api's requests for these starts, without the bench's own GET polls.
            let mut d = delta(&dynamodb_calls(dir, "ApiFunction")?, before);
            d.remove("GetItem");
            api_calls = Some(d);
        }
        close(&client, base, &held).await?;
        // From the round's first claim (each claim starts a replacement) to a full pool.
        until_full(&client, base, size, Duration::from_secs(600)).await?;
        refills.record(round_started.elapsed().as_secs_f64() * 1000.0);
    }
    report["warm_post_to_running"] = stats(&warm);
    report["warm_start_latency_ms_reported"] = stats(&reported);
    report["cold_in_rounds"] = json!(cold_in_rounds);
    report["refill_after_round"] = stats(&refills);
    if let Some(api) = api_calls {
        let per_start: BTreeMap<String, f64> = api
            .into_iter()
            .map(|(op, n)| (op, n as f64 / size as f64))
            .collect();
        report["dynamodb_api_per_warm_start"] = json!({
            "requests": per_start,
            "note": "the api's requests per warm start (admission, pool Query, claim, the top-up's PutItem), GetItem excluded (the bench's own polls)",
        });
    }

    // A burst of twice the pool, all at once: the pool serves `size`, the rest is cold.
    let burst_started = Instant::now();
    let starts = (0..2 * size).map(|i| {
        let client = client.clone();
        async move { start(&client, base, &format!("burst-{i}")).await }
    });
    let results = futures::future::join_all(starts).await;
    let (burst_warm, burst_cold) = (LatencySketch::new(), LatencySketch::new());
    let mut held = Vec::new();
    for result in results {
        let (ms, session) = result?;
        if session["start_type"] == "warm" {
            burst_warm.record(ms);
        } else {
            burst_cold.record(ms);
        }
        held.push(session);
    }
    let served = burst_started.elapsed();
    close(&client, base, &held).await?;
    let refill = until_full(&client, base, size, Duration::from_secs(600)).await?;
    report["burst"] = json!({
        "starts": 2 * size,
        "warm": stats(&burst_warm),
        "cold": stats(&burst_cold),
        "all_running_s": served.as_secs_f64(),
        "refill_after_close_s": refill.as_secs_f64(),
    });
    Ok(report)
}
