//! `close`: POST → `running` and DELETE → 404 latency.

use crate::*;

/// POST → `running` (the agent joined its call), then DELETE → 404 (the agent stopped and its
/// end recorded), one session at a time, both polled with GET.
/// What `close` measured.
#[derive(Debug, serde::Serialize)]
pub(crate) struct CloseReport {
    /// DELETE → 404.
    pub(crate) samples: usize,
    pub(crate) p50_ms: Option<f64>,
    pub(crate) p95_ms: Option<f64>,
    pub(crate) max_ms: Option<f64>,
    pub(crate) polls: u64,
    pub(crate) start_to_running: Percentiles,
    /// DELETE → the agent's process exit, when the server runs agents as processes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) close_to_exit: Option<Sampled>,
}

/// Percentiles without a count.
#[derive(Debug, serde::Serialize)]
pub(crate) struct Percentiles {
    pub(crate) p50_ms: Option<f64>,
    pub(crate) p95_ms: Option<f64>,
    pub(crate) max_ms: Option<f64>,
}

impl CloseReport {
    pub(crate) fn print(&self, out: &mut String) {
        let ms = |v: Option<f64>| v.unwrap_or(0.0);
        *out += &format!(
            "close (DELETE → 404): {} samples, p50 {:.3} ms, p95 {:.3} ms, max {:.3} ms\n",
            self.samples,
            ms(self.p50_ms),
            ms(self.p95_ms),
            ms(self.max_ms)
        );
        let up = &self.start_to_running;
        *out += &format!(
            "start (POST → running): p50 {:.3} ms, p95 {:.3} ms, max {:.3} ms\n",
            ms(up.p50_ms),
            ms(up.p95_ms),
            ms(up.max_ms)
        );
        if let Some(ex) = &self.close_to_exit {
            *out += &format!(
                "close (DELETE → agent process exit): {} samples, p50 {:.3} ms, p95 {:.3} ms, max {:.3} ms\n",
                ex.samples,
                ms(ex.p50_ms),
                ms(ex.p95_ms),
                ms(ex.max_ms)
            );
        }
    }
}

pub(crate) async fn close_latency(
    server: &Server,
    samples: usize,
    pause: Duration,
) -> anyhow::Result<CloseReport> {
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
        tokio::time::sleep(pause).await;
    }
    let (s, up) = (sketch.stats(), started.stats());
    let close_to_exit = Some(Sampled::of(&exited)).filter(|ex| ex.samples > 0);
    Ok(CloseReport {
        samples,
        p50_ms: s.p50_ms,
        p95_ms: s.p95_ms,
        max_ms: s.max_ms,
        polls,
        start_to_running: Percentiles {
            p50_ms: up.p50_ms,
            p95_ms: up.p95_ms,
            max_ms: up.max_ms,
        },
        close_to_exit,
    })
}
