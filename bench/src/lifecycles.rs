//! `lifecycles`: C clients loop create → get → metrics → close.

use crate::*;

/// What `lifecycles` measured.
#[derive(Debug, serde::Serialize)]
pub(crate) struct LifecyclesReport {
    pub(crate) clients: usize,
    pub(crate) seconds: f64,
    pub(crate) lifecycles: u64,
    pub(crate) lifecycles_per_second: f64,
    /// Not finite (null in the JSON) for `--url`.
    pub(crate) server_cpu_cores: f64,
    pub(crate) client_cpu_cores: f64,
    pub(crate) endpoints: Vec<EndpointReport>,
}

impl LifecyclesReport {
    pub(crate) fn print(&self, out: &mut String) {
        *out += &format!(
            "lifecycles: {} clients, {:.1} s: {} lifecycles, {:.0}/s; server CPU {} cores, client CPU {:.2} cores\n",
            self.clients,
            self.seconds,
            self.lifecycles,
            self.lifecycles_per_second,
            or_na(Some(self.server_cpu_cores), 2),
            self.client_cpu_cores
        );
        print_endpoints(&self.endpoints, out);
    }
}

/// The endpoints' table.
pub(crate) fn print_endpoints(endpoints: &[EndpointReport], out: &mut String) {
    *out += &format!(
        "  {:<26} {:>9} {:>7} {:>9} {:>9} {:>9} {:>9}\n",
        "endpoint", "count", "errors", "p50 ms", "p95 ms", "p99 ms", "max ms"
    );
    for e in endpoints {
        let f = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.3}"));
        *out += &format!(
            "  {:<26} {:>9} {:>7} {:>9} {:>9} {:>9} {:>9}\n",
            e.endpoint,
            e.count,
            e.errors,
            f(e.p50_ms),
            f(e.p95_ms),
            f(e.p99_ms),
            f(e.max_ms)
        );
    }
}

pub(crate) async fn lifecycles(
    server: &Server,
    clients: usize,
    duration: f64,
) -> anyhow::Result<LifecyclesReport> {
    let endpoints: Arc<[Endpoint; 4]> = Arc::new(Default::default());
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let client = client();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (client, base) = (client.clone(), server.base.clone());
        let (endpoints, measuring, stop, done) = (
            endpoints.clone(),
            measuring.clone(),
            stop.clone(),
            done.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let scratch: [Endpoint; 4] = Default::default();
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let e: &[Endpoint; 4] = if measuring.load(Ordering::Relaxed) {
                    &endpoints
                } else {
                    &scratch
                };
                i += 1;
                let call_id = format!("bench-{c}-{i}");
                let Some(body) = timed(
                    &e[0],
                    StatusCode::CREATED,
                    call(
                        &client,
                        &base,
                        Method::POST,
                        &format!("/calls/{call_id}/sessions"),
                        Some(&json!({})),
                    ),
                )
                .await
                else {
                    continue;
                };
                let Ok(id) = session_id(&body) else { continue };
                let path = format!("/calls/{call_id}/sessions/{id}");
                timed(
                    &e[1],
                    StatusCode::OK,
                    call(&client, &base, Method::GET, &path, None),
                )
                .await;
                timed(
                    &e[2],
                    StatusCode::OK,
                    call(
                        &client,
                        &base,
                        Method::GET,
                        &format!("{path}/metrics"),
                        None,
                    ),
                )
                .await;
                if timed(
                    &e[3],
                    StatusCode::ACCEPTED,
                    call(&client, &base, Method::DELETE, &path, None),
                )
                .await
                .is_some()
                    && measuring.load(Ordering::Relaxed)
                {
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (server_cpu0, client_cpu0, t0) = (
        server.cpu_seconds()?,
        cpu_seconds_of("/proc/self/stat")?,
        Instant::now(),
    );
    measuring.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs_f64(duration)).await;
    measuring.store(false, Ordering::Relaxed);
    let wall = t0.elapsed().as_secs_f64();
    let (server_cpu, client_cpu) = (
        server.cpu_seconds()? - server_cpu0,
        cpu_seconds_of("/proc/self/stat")? - client_cpu0,
    );
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await?;
    }
    let count = done.load(Ordering::Relaxed);
    Ok(LifecyclesReport {
        clients,
        seconds: wall,
        lifecycles: count,
        lifecycles_per_second: count as f64 / wall,
        server_cpu_cores: server_cpu / wall,
        client_cpu_cores: client_cpu / wall,
        endpoints: summaries(&endpoints[..]),
    })
}

/// One lifecycle (start, get, metrics, close) as the `lifecycles` clients run it; false on
/// any unexpected status.
pub(crate) async fn one_lifecycle(
    client: &HttpClient,
    base: &str,
    call_id: &str,
    e: &[Endpoint; 4],
) -> bool {
    let Some(body) = timed(
        &e[0],
        StatusCode::CREATED,
        call(
            client,
            base,
            Method::POST,
            &format!("/calls/{call_id}/sessions"),
            Some(&json!({})),
        ),
    )
    .await
    else {
        return false;
    };
    let Ok(id) = session_id(&body) else {
        return false;
    };
    let path = format!("/calls/{call_id}/sessions/{id}");
    let got = timed(
        &e[1],
        StatusCode::OK,
        call(client, base, Method::GET, &path, None),
    )
    .await;
    let metrics = timed(
        &e[2],
        StatusCode::OK,
        call(client, base, Method::GET, &format!("{path}/metrics"), None),
    )
    .await;
    let closed = timed(
        &e[3],
        StatusCode::ACCEPTED,
        call(client, base, Method::DELETE, &path, None),
    )
    .await;
    got.is_some() && metrics.is_some() && closed.is_some()
}
