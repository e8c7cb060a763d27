//! The HTTP client, one timed call, and the per-endpoint latency sketches.

use crate::*;

pub(crate) type HttpClient = Client<HttpConnector, Full<Bytes>>;

pub(crate) fn client() -> HttpClient {
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(256)
        .build_http()
}

pub(crate) async fn call(
    client: &HttpClient,
    base: &str,
    method: Method,
    path: &str,
    body: Option<&Value>,
) -> anyhow::Result<(StatusCode, Bytes)> {
    let mut request = Request::builder()
        .method(method)
        .uri(format!("{base}{path}"));
    let bytes = match body {
        Some(b) => {
            request = request.header("content-type", "application/json");
            Bytes::from(b.to_string())
        }
        None => Bytes::new(),
    };
    let response = client.request(request.body(Full::new(bytes))?).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, body))
}

pub(crate) fn session_id(body: &Bytes) -> anyhow::Result<String> {
    let v: Value = serde_json::from_slice(body)?;
    Ok(v["session_id"]
        .as_str()
        .context("no session_id")?
        .to_owned())
}

/// The four calls of a lifecycle, in the order of the `[Endpoint; 4]` arrays.
pub(crate) const ENDPOINT_NAMES: [&str; 4] = [
    "POST /calls/{c}/sessions",
    "GET  …/{s}",
    "GET  …/{s}/metrics",
    "DELETE …/{s}",
];

#[derive(Default)]
pub(crate) struct Endpoint {
    pub(crate) latency: LatencySketch,
    pub(crate) errors: AtomicU64,
}

pub(crate) fn summary(name: &str, e: &Endpoint) -> Value {
    let s = e.latency.stats();
    json!({
        "endpoint": name,
        "count": s.count,
        "errors": e.errors.load(Ordering::Relaxed),
        "p50_ms": s.p50_ms, "p95_ms": s.p95_ms, "p99_ms": s.p99_ms, "max_ms": s.max_ms,
    })
}

pub(crate) async fn timed(
    endpoint: &Endpoint,
    expect: StatusCode,
    fut: impl std::future::Future<Output = anyhow::Result<(StatusCode, Bytes)>>,
) -> Option<Bytes> {
    let start = Instant::now();
    let result = fut.await;
    let ms = start.elapsed().as_secs_f64() * 1000.0;
    match result {
        Ok((status, body)) if status == expect => {
            endpoint.latency.record(ms);
            Some(body)
        }
        _ => {
            endpoint.errors.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}
