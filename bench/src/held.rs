//! `held`: N sessions held open at once; the server's RSS per session.

use crate::*;

/// What `held` measured.
#[derive(Debug, serde::Serialize)]
pub(crate) struct HeldReport {
    pub(crate) sessions: usize,
    pub(crate) create_seconds: f64,
    pub(crate) rss_before_bytes: u64,
    pub(crate) rss_held_bytes: u64,
    pub(crate) rss_after_close_bytes: u64,
    pub(crate) bytes_per_session: f64,
}

impl HeldReport {
    pub(crate) fn print(&self, out: &mut String) {
        let mib = |b: u64| b as f64 / 1048576.0;
        *out += &format!(
            "held: {} sessions created in {:.2} s; RSS {:.1} MiB → {:.1} MiB held → {:.1} MiB after closing; {:.0} bytes/session
",
            self.sessions,
            self.create_seconds,
            mib(self.rss_before_bytes),
            mib(self.rss_held_bytes),
            mib(self.rss_after_close_bytes),
            self.bytes_per_session
        );
    }
}

pub(crate) async fn held(server: &Server, sessions: usize) -> anyhow::Result<HeldReport> {
    let client = client();
    // Warm up the allocator and every code path once, then measure from there.
    for i in 0..200 {
        let (_, body) = call(
            &client,
            &server.base,
            Method::POST,
            &format!("/calls/warm-{i}/sessions"),
            Some(&json!({"metadata": {"participant_seconds": 3600}})),
        )
        .await?;
        let id = session_id(&body)?;
        call(
            &client,
            &server.base,
            Method::DELETE,
            &format!("/calls/warm-{i}/sessions/{id}"),
            None,
        )
        .await?;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = server.rss_bytes()?;
    let started = Instant::now();
    let ids = Arc::new(tokio::sync::Mutex::new(Vec::with_capacity(sessions)));
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let (client, base, ids, next) = (
            client.clone(),
            server.base.clone(),
            ids.clone(),
            next.clone(),
        );
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                if i >= sessions {
                    return Ok::<_, anyhow::Error>(());
                }
                let call_id = format!("held-{i}");
                let (status, body) = call(
                    &client,
                    &base,
                    Method::POST,
                    &format!("/calls/{call_id}/sessions"),
                    Some(&json!({"metadata": {"participant_seconds": 3600}})),
                )
                .await?;
                if status != StatusCode::CREATED {
                    bail!("start {i}: {status}");
                }
                ids.lock().await.push((call_id, session_id(&body)?));
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    let create_seconds = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = server.rss_bytes()?;
    let ids = ids.lock().await.clone();
    for chunk in ids.chunks(32) {
        let handles: Vec<_> = chunk
            .iter()
            .cloned()
            .map(|(c, s)| {
                let (client, base) = (client.clone(), server.base.clone());
                tokio::spawn(async move {
                    call(
                        &client,
                        &base,
                        Method::DELETE,
                        &format!("/calls/{c}/sessions/{s}"),
                        None,
                    )
                    .await
                })
            })
            .collect();
        for h in handles {
            h.await??;
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let released = server.rss_bytes()?;
    Ok(HeldReport {
        sessions,
        create_seconds,
        rss_before_bytes: before,
        rss_held_bytes: after,
        rss_after_close_bytes: released,
        bytes_per_session: after.saturating_sub(before) as f64 / sessions as f64,
    })
}
