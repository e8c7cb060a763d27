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

/// A latency's count and percentiles (ms), as the reports carry them.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub(crate) struct Stats {
    pub(crate) count: u64,
    pub(crate) p50_ms: Option<f64>,
    pub(crate) p95_ms: Option<f64>,
    pub(crate) p99_ms: Option<f64>,
    pub(crate) max_ms: Option<f64>,
}

impl Stats {
    pub(crate) fn of(sketch: &LatencySketch) -> Self {
        let s = sketch.stats();
        Self {
            count: s.count,
            p50_ms: s.p50_ms,
            p95_ms: s.p95_ms,
            p99_ms: s.p99_ms,
            max_ms: s.max_ms,
        }
    }
}

/// A latency's samples and percentiles (ms), for the reports that give no p99.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub(crate) struct Sampled {
    pub(crate) samples: u64,
    pub(crate) p50_ms: Option<f64>,
    pub(crate) p95_ms: Option<f64>,
    pub(crate) max_ms: Option<f64>,
}

impl Sampled {
    pub(crate) fn of(sketch: &LatencySketch) -> Self {
        let s = sketch.stats();
        Self {
            samples: s.count,
            p50_ms: s.p50_ms,
            p95_ms: s.p95_ms,
            max_ms: s.max_ms,
        }
    }
}

/// One endpoint's figures in `lifecycles` and `soak`.
#[derive(Debug, serde::Serialize)]
pub(crate) struct EndpointReport {
    pub(crate) endpoint: &'static str,
    pub(crate) count: u64,
    pub(crate) errors: u64,
    pub(crate) p50_ms: Option<f64>,
    pub(crate) p95_ms: Option<f64>,
    pub(crate) p99_ms: Option<f64>,
    pub(crate) max_ms: Option<f64>,
}

pub(crate) fn summary(name: &'static str, e: &Endpoint) -> EndpointReport {
    let s = e.latency.stats();
    EndpointReport {
        endpoint: name,
        count: s.count,
        errors: e.errors.load(Ordering::Relaxed),
        p50_ms: s.p50_ms,
        p95_ms: s.p95_ms,
        p99_ms: s.p99_ms,
        max_ms: s.max_ms,
    }
}

/// The endpoints' figures, in the order of [`ENDPOINT_NAMES`].
pub(crate) fn summaries(endpoints: &[Endpoint]) -> Vec<EndpointReport> {
    ENDPOINT_NAMES
        .iter()
        .zip(endpoints)
        .map(|(n, e)| summary(n, e))
        .collect()
}

/// `value` with `decimals`, or `n/a` when it is missing or not finite.
pub(crate) fn or_na(value: Option<f64>, decimals: usize) -> String {
    value
        .filter(|v| v.is_finite())
        .map_or_else(|| "n/a".to_owned(), |v| format!("{v:.decimals$}"))
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
