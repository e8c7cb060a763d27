//! `close`: POST → `running` and DELETE → 404 latency.

use crate::*;

/// POST → `running` (the agent joined its call), then DELETE → 404 (the agent stopped and its
/// end recorded), one session at a time, both polled with GET.
pub(crate) async fn close_latency(server: &Server, samples: usize) -> anyhow::Result<Value> {
    let client = client();
    let sketch = LatencySketch::new();
    let started = LatencySketch::new();
    let exited = std::sync::Arc::new(LatencySketch::new());
    let mut polls = 0u64;
    for i in 0..samples {
        let call_id = format!("close-{i}");
        let asked = Instant::now();
        let (_, body) = call(
            &client,
            &server.base,
            Method::POST,
            &format!("/calls/{call_id}/sessions"),
            Some(&json!({})),
        )
        .await?;
        let path = format!("/calls/{call_id}/sessions/{}", session_id(&body)?);
        let mut status_body = body;
        while serde_json::from_slice::<Value>(&status_body)?["status"] != "running" {
            if asked.elapsed() > Duration::from_secs(30) {
                bail!("{path} not running after 30 s");
            }
            status_body = call(&client, &server.base, Method::GET, &path, None)
                .await?
                .1;
        }
        started.record(asked.elapsed().as_secs_f64() * 1000.0);
        // An agent in a process of its own (the local ECS's tasks): its exit is measured too.
        let id = path.rsplit('/').next().unwrap_or_default().to_owned();
        let agents = agent_processes(&id);
        let start = Instant::now();
        let (status, _) = call(&client, &server.base, Method::DELETE, &path, None).await?;
        let exit_wait = (!agents.is_empty()).then(|| {
            let exited = exited.clone();
            tokio::spawn(async move {
                while agents.iter().any(|pid| alive(*pid)) {
                    if start.elapsed() > Duration::from_secs(60) {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                exited.record(start.elapsed().as_secs_f64() * 1000.0);
            })
        });
        if status != StatusCode::ACCEPTED {
            bail!("close {i}: {status}");
        }
        loop {
            polls += 1;
            if call(&client, &server.base, Method::GET, &path, None)
                .await?
                .0
                == StatusCode::NOT_FOUND
            {
                break;
            }
            if start.elapsed() > Duration::from_secs(30) {
                bail!("{path} still there after 30 s");
            }
        }
        sketch.record(start.elapsed().as_secs_f64() * 1000.0);
        if let Some(wait) = exit_wait {
            wait.await?;
        }
    }
    let (s, up, ex) = (sketch.stats(), started.stats(), exited.stats());
    let mut report = json!({
        "samples": samples, "p50_ms": s.p50_ms, "p95_ms": s.p95_ms, "max_ms": s.max_ms, "polls": polls,
        "start_to_running": {"p50_ms": up.p50_ms, "p95_ms": up.p95_ms, "max_ms": up.max_ms},
    });
    if ex.count > 0 {
        report["close_to_exit"] = json!({"samples": ex.count, "p50_ms": ex.p50_ms, "p95_ms": ex.p95_ms, "max_ms": ex.max_ms});
    }
    Ok(report)
}
