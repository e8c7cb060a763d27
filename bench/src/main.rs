//! `switchboard-bench`: measures a running Switchboard server the way users compare servers.
//!
//! It starts the server itself (`demo-agent serve` on a free port, by default the release
//! binary next to this one) so it can read the server's CPU time and RSS from `/proc`, then:
//! - `lifecycles`: C clients loop create → get → metrics → close; lifecycles per second and
//!   p50/p95/p99/max per endpoint;
//! - `held`: N sessions held open at once; server RSS before and after, bytes per session;
//! - `close`: POST → `running` and DELETE → 404 latency, polled.
//!
//! It prints a table and writes JSON (`--json`). The client's own CPU share is reported so
//! a saturated client is visible. A binary, never a test: figures are reported, not asserted.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use switchboard_core::metrics::LatencySketch;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

mod call;
#[cfg(feature = "aws")]
mod task;
mod warm;

#[derive(Debug, Parser)]
#[command(
    about = "Measure a Switchboard server: lifecycles/s, held sessions with RSS, close latency."
)]
struct Cli {
    /// The server binary to start (`<binary> serve --port 0`); default: `demo-agent` next to this binary.
    #[arg(long, global = true)]
    server: Option<PathBuf>,
    /// Extra arguments for `serve`.
    #[arg(long, global = true, allow_hyphen_values = true)]
    server_arg: Vec<String>,
    /// Measure an already running server at this base URL instead of starting one (e.g.
    /// `cargo lambda watch`'s `http://127.0.0.1:9000/lambda-url/api`): no CPU or RSS figures.
    #[arg(long, global = true)]
    url: Option<String>,
    /// Write the results as JSON to this file.
    #[arg(long, global = true)]
    json: Option<PathBuf>,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Create → get → metrics → close, in a loop, from concurrent clients.
    Lifecycles {
        /// Concurrent clients.
        #[arg(long, default_value_t = 32)]
        clients: usize,
        /// Seconds of measurement (after 2 s of warm-up).
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
    },
    /// Hold N sessions open and measure the server's memory per session.
    Held {
        /// Sessions to hold.
        #[arg(long, default_value_t = 10_000)]
        sessions: usize,
    },
    /// POST → `running` and DELETE → 404 latency.
    Close {
        /// Samples.
        #[arg(long, default_value_t = 200)]
        samples: usize,
    },
    /// A steady rate of lifecycles for a long time, sampling the server's RSS and open file
    /// descriptors (no growth after warm-up is the pass condition).
    Soak {
        /// Lifecycles started per second.
        #[arg(long, default_value_t = 50.0)]
        rate: f64,
        /// Minutes of soak, warm-up included.
        #[arg(long, default_value_t = 30.0)]
        minutes: f64,
        /// Minutes of warm-up (allocator growth, the ended-session cap filling up).
        #[arg(long, default_value_t = 5.0)]
        warmup_minutes: f64,
        /// Seconds between samples.
        #[arg(long, default_value_t = 10.0)]
        sample_seconds: f64,
    },
    /// The agent-task path (ECS mode): real `demo-agent task` processes on a DynamoDB table at
    /// `AWS_ENDPOINT_URL` (moto); start latency, idle RSS per task, close → exit latency.
    #[cfg(feature = "aws")]
    Task {
        /// The agent binary (built with `--features aws`); default: `demo-agent` next to this
        /// binary.
        #[arg(long)]
        agent: Option<PathBuf>,
        /// Task processes per interval.
        #[arg(long, default_value_t = 10)]
        tasks: usize,
        /// Maintenance intervals to measure, in seconds.
        #[arg(long, value_delimiter = ',', default_value = "1,5")]
        intervals: Vec<f64>,
        /// The table to create (it must not exist); default: a fresh `bench-task-<ms>`.
        #[arg(long)]
        table: Option<String>,
    },
    /// Message round trips through the local call (WebSocket): a person asks the demo agent,
    /// waits for their own message to come back and for the agent's answer.
    Call {
        /// Round trips.
        #[arg(long, default_value_t = 1000)]
        samples: usize,
        /// Other people in the call, reading everything (the fan-out).
        #[arg(long, default_value_t = 0)]
        listeners: usize,
    },
    /// The warm pool through a running stack (`--url`, started with `WARM_POOL_SIZE`):
    /// rounds of held warm starts, a burst of twice the pool, refill times, DynamoDB requests.
    Warm {
        /// Rounds of as many starts as the pool keeps (the pool refilled between rounds).
        #[arg(long, default_value_t = 7)]
        rounds: usize,
        /// The directory the stack records its AWS calls into (`SWITCHBOARD_RECORD_AWS_CALLS`
        /// of the script): DynamoDB requests per standby-hour and per warm start.
        #[arg(long)]
        calls: Option<PathBuf>,
        /// Seconds of idle pool to count the standbys' requests over.
        #[arg(long, default_value_t = 60.0)]
        idle_seconds: f64,
    },
    /// All three, in order.
    All {
        /// Concurrent clients for `lifecycles`.
        #[arg(long, default_value_t = 32)]
        clients: usize,
        /// Seconds for `lifecycles`.
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
        /// Sessions for `held`.
        #[arg(long, default_value_t = 10_000)]
        sessions: usize,
        /// Samples for `close`.
        #[arg(long, default_value_t = 200)]
        samples: usize,
    },
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

struct Server {
    /// The process the bench started; `None` for `--url`.
    child: Option<Child>,
    base: String,
    pid: Option<u32>,
}

impl Server {
    async fn start(binary: &PathBuf, extra: &[String]) -> anyhow::Result<Self> {
        let mut child = Command::new(binary)
            .args([
                "serve",
                "--port",
                "0",
                "--no-splash",
                "--log-format",
                "json",
            ])
            .args(extra)
            // Startup lines only: per-session logs would cost the server CPU under load.
            .env("RUST_LOG", "warn,switchboard_runner=info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("could not start {}", binary.display()))?;
        let pid = child.id().context("server exited at once")?;
        let mut lines = BufReader::new(child.stderr.take().context("no stderr")?).lines();
        let address = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await? {
                if let Ok(v) = serde_json::from_str::<Value>(&line)
                    && v["message"] == "listening"
                {
                    return Ok::<_, anyhow::Error>(
                        v["address"].as_str().unwrap_or_default().to_owned(),
                    );
                }
            }
            bail!("the server exited before listening")
        })
        .await
        .context("the server did not start listening within 30 s")??;
        // Keep draining its logs so the pipe never fills.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let server = Self {
            child: Some(child),
            base: format!("http://{address}"),
            pid: Some(pid),
        };
        server.wait_ready("/ready").await?;
        Ok(server)
    }

    /// A server someone else started (`--url`); its process is not observed.
    async fn external(url: &str) -> anyhow::Result<Self> {
        let server = Self {
            child: None,
            base: url.trim_end_matches('/').to_owned(),
            pid: None,
        };
        server.wait_ready("/health").await?;
        Ok(server)
    }

    async fn wait_ready(&self, path: &str) -> anyhow::Result<()> {
        let server = self;
        let client = client();
        let deadline = Instant::now() + Duration::from_secs(30);
        while call(&client, &server.base, Method::GET, path, None)
            .await
            .ok()
            .map(|r| r.0)
            != Some(StatusCode::OK)
        {
            if Instant::now() > deadline {
                bail!("{}{path} did not answer 200 within 30 s", server.base);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    fn pid(&self) -> anyhow::Result<u32> {
        self.pid
            .context("this needs a server the bench starts itself (not --url): it reads /proc")
    }

    fn rss_bytes(&self) -> anyhow::Result<u64> {
        rss_bytes_of(self.pid()?)
    }

    fn open_fds(&self) -> anyhow::Result<usize> {
        Ok(std::fs::read_dir(format!("/proc/{}/fd", self.pid()?))?.count())
    }

    /// The server's CPU seconds so far; NaN (reported as null) for `--url`.
    fn cpu_seconds(&self) -> anyhow::Result<f64> {
        match self.pid {
            Some(pid) => cpu_seconds_of(&format!("/proc/{pid}/stat")),
            None => Ok(f64::NAN),
        }
    }

    async fn stop(self) {
        let (Some(mut child), Some(pid)) = (self.child, self.pid) else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await;
        if tokio::time::timeout(Duration::from_secs(30), child.wait())
            .await
            .is_err()
        {
            let _ = child.kill().await;
        }
    }
}

/// A process's resident set size, from `/proc/<pid>/status`.
fn rss_bytes_of(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no VmRSS")?;
    Ok(kb * 1024)
}

fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

fn cpu_seconds_of(stat_path: &str) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(stat_path)?;
    let after = stat.rsplit_once(')').context("bad stat")?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let utime: f64 = fields.get(11).context("utime")?.parse()?;
    let stime: f64 = fields.get(12).context("stime")?.parse()?;
    Ok((utime + stime) / clock_ticks())
}

fn client() -> HttpClient {
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(256)
        .build_http()
}

async fn call(
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

fn session_id(body: &Bytes) -> anyhow::Result<String> {
    let v: Value = serde_json::from_slice(body)?;
    Ok(v["session_id"]
        .as_str()
        .context("no session_id")?
        .to_owned())
}

/// The four calls of a lifecycle, in the order of the `[Endpoint; 4]` arrays.
const ENDPOINT_NAMES: [&str; 4] = [
    "POST /calls/{c}/sessions",
    "GET  …/{s}",
    "GET  …/{s}/metrics",
    "DELETE …/{s}",
];

#[derive(Default)]
struct Endpoint {
    latency: LatencySketch,
    errors: AtomicU64,
}

fn summary(name: &str, e: &Endpoint) -> Value {
    let s = e.latency.stats();
    json!({
        "endpoint": name,
        "count": s.count,
        "errors": e.errors.load(Ordering::Relaxed),
        "p50_ms": s.p50_ms, "p95_ms": s.p95_ms, "p99_ms": s.p99_ms, "max_ms": s.max_ms,
    })
}

async fn timed(
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

async fn lifecycles(server: &Server, clients: usize, duration: f64) -> anyhow::Result<Value> {
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
    Ok(json!({
        "clients": clients,
        "seconds": wall,
        "lifecycles": count,
        "lifecycles_per_second": count as f64 / wall,
        "server_cpu_cores": server_cpu / wall,
        "client_cpu_cores": client_cpu / wall,
        "endpoints": ENDPOINT_NAMES.iter().zip(endpoints.iter()).map(|(n, e)| summary(n, e)).collect::<Vec<_>>(),
    }))
}

async fn held(server: &Server, sessions: usize) -> anyhow::Result<Value> {
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
    Ok(json!({
        "sessions": sessions,
        "create_seconds": create_seconds,
        "rss_before_bytes": before,
        "rss_held_bytes": after,
        "rss_after_close_bytes": released,
        "bytes_per_session": after.saturating_sub(before) as f64 / sessions as f64,
    }))
}

/// One lifecycle (start, get, metrics, close) as the `lifecycles` clients run it; false on
/// any unexpected status.
async fn one_lifecycle(client: &HttpClient, base: &str, call_id: &str, e: &[Endpoint; 4]) -> bool {
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

/// Least-squares slope of `ys` over `xs` (per unit of `xs`).
fn slope(xs: &[f64], ys: &[f64]) -> f64 {
    let n = xs.len() as f64;
    if n < 2.0 {
        return 0.0;
    }
    let (mx, my) = (xs.iter().sum::<f64>() / n, ys.iter().sum::<f64>() / n);
    let sxy: f64 = xs.iter().zip(ys).map(|(x, y)| (x - mx) * (y - my)).sum();
    let sxx: f64 = xs.iter().map(|x| (x - mx).powi(2)).sum();
    if sxx == 0.0 { 0.0 } else { sxy / sxx }
}

async fn soak(
    server: &Server,
    rate: f64,
    minutes: f64,
    warmup_minutes: f64,
    sample_seconds: f64,
) -> anyhow::Result<Value> {
    let client = client();
    let endpoints: Arc<[Endpoint; 4]> = Arc::new(Default::default());
    let (done, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    // At most this many lifecycles in flight: a stalled server shows as failures, not as an
    // ever-growing client.
    let in_flight = Arc::new(tokio::sync::Semaphore::new(256));
    let started = Instant::now();
    let total = Duration::from_secs_f64(minutes * 60.0);
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut next_sample = Instant::now();
    let mut samples = Vec::new();
    let mut i = 0u64;
    let cpu0 = server.cpu_seconds()?;
    while started.elapsed() < total {
        ticker.tick().await;
        if Instant::now() >= next_sample {
            let t = started.elapsed().as_secs_f64();
            samples.push(json!({
                "t_seconds": t,
                "rss_bytes": server.rss_bytes()?,
                "open_fds": server.open_fds()?,
                "server_cpu_seconds": server.cpu_seconds()? - cpu0,
                "lifecycles": done.load(Ordering::Relaxed),
                "failed": failed.load(Ordering::Relaxed),
            }));
            next_sample += Duration::from_secs_f64(sample_seconds);
        }
        let Ok(permit) = in_flight.clone().try_acquire_owned() else {
            failed.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        i += 1;
        let (client, base, endpoints, done, failed) = (
            client.clone(),
            server.base.clone(),
            endpoints.clone(),
            done.clone(),
            failed.clone(),
        );
        tokio::spawn(async move {
            let ok = one_lifecycle(&client, &base, &format!("soak-{}", i % 1000), &endpoints).await;
            if ok { &done } else { &failed }.fetch_add(1, Ordering::Relaxed);
            drop(permit);
        });
    }
    let _ = in_flight.acquire_many(256).await;
    let after_warmup: Vec<&Value> = samples
        .iter()
        .filter(|s| s["t_seconds"].as_f64().unwrap_or(0.0) >= warmup_minutes * 60.0)
        .collect();
    let series = |key: &str| -> Vec<f64> {
        after_warmup
            .iter()
            .map(|s| s[key].as_f64().unwrap_or(0.0))
            .collect()
    };
    let hours: Vec<f64> = series("t_seconds").iter().map(|t| t / 3600.0).collect();
    let rss = series("rss_bytes");
    let fds = series("open_fds");
    let max = |v: &[f64]| v.iter().copied().fold(f64::MIN, f64::max);
    let min = |v: &[f64]| v.iter().copied().fold(f64::MAX, f64::min);
    Ok(json!({
        "rate_per_second": rate,
        "minutes": minutes,
        "warmup_minutes": warmup_minutes,
        "lifecycles": done.load(Ordering::Relaxed),
        "failed": failed.load(Ordering::Relaxed),
        "after_warmup": {
            "rss_min_bytes": min(&rss), "rss_max_bytes": max(&rss),
            "rss_slope_bytes_per_hour": slope(&hours, &rss),
            "fds_min": min(&fds), "fds_max": max(&fds),
            "fds_slope_per_hour": slope(&hours, &fds),
        },
        "endpoints": ENDPOINT_NAMES.iter().zip(endpoints.iter()).map(|(n, e)| summary(n, e)).collect::<Vec<_>>(),
        "samples": samples,
    }))
}

/// POST → `running` (the agent joined its call), then DELETE → 404 (the agent stopped and its
/// end recorded), one session at a time, both polled with GET.
async fn close_latency(server: &Server, samples: usize) -> anyhow::Result<Value> {
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

/// The live processes whose environment names `SESSION_ID=<id>` (from /proc).
fn agent_processes(id: &str) -> Vec<u32> {
    let needle = format!("SESSION_ID={id}");
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|b| *b == 0).any(|kv| kv == needle.as_bytes()))
        })
        .filter(|pid| alive(*pid))
        .collect()
}

/// Whether a process runs (not gone, not a zombie).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        !matches!(
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.trim_start().chars().next()),
            Some('Z' | 'X') | None
        )
    })
}

fn print_report(report: &Value) {
    let mut out = String::new();
    if let Some(w) = report.get("warm") {
        out += &format!(
            "warm pool: {}\n",
            serde_json::to_string_pretty(w).unwrap_or_default()
        );
    }
    if let Some(c) = report.get("call") {
        let ms = |v: &Value| {
            v.as_f64()
                .map_or_else(|| "n/a".to_owned(), |x| format!("{x:.2}"))
        };
        out += &format!(
            "call: {} round trips, {} listeners, {:.0}/s; own message back p50 {} ms, p95 {} ms; agent's answer p50 {} ms, p95 {} ms, p99 {} ms, max {} ms; server CPU {} µs per round trip\n",
            c["samples"],
            c["listeners"],
            c["round_trips_per_second"].as_f64().unwrap_or(0.0),
            ms(&c["echo"]["p50_ms"]),
            ms(&c["echo"]["p95_ms"]),
            ms(&c["answer"]["p50_ms"]),
            ms(&c["answer"]["p95_ms"]),
            ms(&c["answer"]["p99_ms"]),
            ms(&c["answer"]["max_ms"]),
            c["server_cpu_us_per_round_trip"]
                .as_f64()
                .map_or_else(|| "n/a".to_owned(), |x| format!("{x:.0}")),
        );
    }
    if let Some(l) = report.get("lifecycles") {
        out += &format!(
            "lifecycles: {} clients, {:.1} s: {} lifecycles, {:.0}/s; server CPU {} cores, client CPU {:.2} cores\n",
            l["clients"],
            l["seconds"].as_f64().unwrap_or(0.0),
            l["lifecycles"],
            l["lifecycles_per_second"].as_f64().unwrap_or(0.0),
            l["server_cpu_cores"]
                .as_f64()
                .map_or_else(|| "n/a".to_owned(), |c| format!("{c:.2}")),
            l["client_cpu_cores"].as_f64().unwrap_or(0.0)
        );
        out += &format!(
            "  {:<26} {:>9} {:>7} {:>9} {:>9} {:>9} {:>9}\n",
            "endpoint", "count", "errors", "p50 ms", "p95 ms", "p99 ms", "max ms"
        );
        for e in l["endpoints"].as_array().into_iter().flatten() {
            let f = |k: &str| e[k].as_f64().map_or("-".to_owned(), |v| format!("{v:.3}"));
            out += &format!(
                "  {:<26} {:>9} {:>7} {:>9} {:>9} {:>9} {:>9}\n",
                e["endpoint"].as_str().unwrap_or(""),
                e["count"],
                e["errors"],
                f("p50_ms"),
                f("p95_ms"),
                f("p99_ms"),
                f("max_ms")
            );
        }
    }
    if let Some(h) = report.get("held") {
        let mib = |k: &str| h[k].as_f64().unwrap_or(0.0) / 1048576.0;
        out += &format!(
            "held: {} sessions created in {:.2} s; RSS {:.1} MiB → {:.1} MiB held → {:.1} MiB after closing; {:.0} bytes/session\n",
            h["sessions"],
            h["create_seconds"].as_f64().unwrap_or(0.0),
            mib("rss_before_bytes"),
            mib("rss_held_bytes"),
            mib("rss_after_close_bytes"),
            h["bytes_per_session"].as_f64().unwrap_or(0.0)
        );
    }
    if let Some(k) = report.get("soak") {
        let a = &k["after_warmup"];
        let mib = |v: &Value| v.as_f64().unwrap_or(0.0) / 1048576.0;
        out += &format!(
            "soak: {}/s for {} min: {} lifecycles, {} failed; after {} min of warm-up RSS {:.1}–{:.1} MiB (slope {:.2} MiB/h), open fds {}–{} (slope {:.1}/h)\n",
            k["rate_per_second"],
            k["minutes"],
            k["lifecycles"],
            k["failed"],
            k["warmup_minutes"],
            mib(&a["rss_min_bytes"]),
            mib(&a["rss_max_bytes"]),
            mib(&a["rss_slope_bytes_per_hour"]),
            a["fds_min"],
            a["fds_max"],
            a["fds_slope_per_hour"].as_f64().unwrap_or(0.0)
        );
    }
    if let Some(c) = report.get("close") {
        out += &format!(
            "close (DELETE → 404): {} samples, p50 {:.3} ms, p95 {:.3} ms, max {:.3} ms\n",
            c["samples"],
            c["p50_ms"].as_f64().unwrap_or(0.0),
            c["p95_ms"].as_f64().unwrap_or(0.0),
            c["max_ms"].as_f64().unwrap_or(0.0)
        );
        let up = &c["start_to_running"];
        out += &format!(
            "start (POST → running): p50 {:.3} ms, p95 {:.3} ms, max {:.3} ms\n",
            up["p50_ms"].as_f64().unwrap_or(0.0),
            up["p95_ms"].as_f64().unwrap_or(0.0),
            up["max_ms"].as_f64().unwrap_or(0.0)
        );
        if let Some(ex) = c.get("close_to_exit") {
            out += &format!(
                "close (DELETE → agent process exit): {} samples, p50 {:.3} ms, p95 {:.3} ms, max {:.3} ms\n",
                ex["samples"],
                ex["p50_ms"].as_f64().unwrap_or(0.0),
                ex["p95_ms"].as_f64().unwrap_or(0.0),
                ex["max_ms"].as_f64().unwrap_or(0.0)
            );
        }
    }
    for run in report["task"]["runs"].as_array().into_iter().flatten() {
        let ms = |part: &str, k: &str| run[part][k].as_f64().unwrap_or(0.0);
        out += &format!(
            "task, interval {} s, {} processes: admission → running p50 {:.0} ms, p95 {:.0} ms; spawn → running p50 {:.0} ms; idle RSS {:.1} MiB; close → exit p50 {:.0} ms, p95 {:.0} ms, max {:.0} ms\n",
            run["interval_seconds"],
            run["tasks"],
            ms("admit_to_running", "p50_ms"),
            ms("admit_to_running", "p95_ms"),
            ms("spawn_to_running", "p50_ms"),
            run["idle_rss_bytes_median"].as_f64().unwrap_or(0.0) / 1048576.0,
            ms("close_to_exit", "p50_ms"),
            ms("close_to_exit", "p95_ms"),
            ms("close_to_exit", "max_ms"),
        );
    }
    use std::io::Write;
    let _ = std::io::stdout().write_all(out.as_bytes());
}

fn machine() -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|s| {
        s.lines().find_map(|l| {
            l.strip_prefix("model name")
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        })
    });
    json!({
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu": cpu,
        "os": std::env::consts::OS,
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let binary = match cli.server.clone() {
        Some(path) => path,
        None => std::env::current_exe()?
            .parent()
            .context("no directory")?
            .join("demo-agent"),
    };
    let server_name = cli
        .url
        .clone()
        .unwrap_or_else(|| binary.display().to_string());
    let mut report =
        json!({ "machine": machine(), "server": server_name, "server_args": cli.server_arg });
    let start = || async {
        match &cli.url {
            Some(url) => Server::external(url).await,
            None => Server::start(&binary, &cli.server_arg).await,
        }
    };
    #[cfg(feature = "aws")]
    if let Cmd::Task {
        agent,
        tasks,
        intervals,
        table,
    } = &cli.command
    {
        let agent = agent.clone().unwrap_or_else(|| binary.clone());
        let table = table.clone().unwrap_or_else(|| {
            let ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis());
            format!("bench-task-{ms}")
        });
        report["server"] = json!(agent.display().to_string());
        report["task"] = task::measure(&agent, &table, *tasks, intervals).await?;
        return finish(&report, cli.json.as_deref());
    }
    if let Cmd::Warm {
        rounds,
        calls,
        idle_seconds,
    } = &cli.command
    {
        let url = cli
            .url
            .as_deref()
            .context("warm needs --url: a stack started with WARM_POOL_SIZE")?;
        report["warm"] = warm::measure(url, *rounds, calls.as_deref(), *idle_seconds).await?;
        return finish(&report, cli.json.as_deref());
    }
    if let Cmd::Call { samples, listeners } = cli.command {
        let server = start().await?;
        report["call"] = call::round_trips(&server, samples, listeners).await?;
        server.stop().await;
        return finish(&report, cli.json.as_deref());
    }
    if let Cmd::Soak {
        rate,
        minutes,
        warmup_minutes,
        sample_seconds,
    } = cli.command
    {
        let server = start().await?;
        report["soak"] = soak(&server, rate, minutes, warmup_minutes, sample_seconds).await?;
        server.stop().await;
        return finish(&report, cli.json.as_deref());
    }
    let (lc, held_n, close_n) = match cli.command {
        Cmd::Soak { .. } | Cmd::Call { .. } | Cmd::Warm { .. } => unreachable!("handled above"),
        #[cfg(feature = "aws")]
        Cmd::Task { .. } => unreachable!("handled above"),
        Cmd::Lifecycles { clients, duration } => (Some((clients, duration)), None, None),
        Cmd::Held { sessions } => (None, Some(sessions), None),
        Cmd::Close { samples } => (None, None, Some(samples)),
        Cmd::All {
            clients,
            duration,
            sessions,
            samples,
        } => (Some((clients, duration)), Some(sessions), Some(samples)),
    };
    // Each scenario gets a fresh server so they do not disturb each other.
    if let Some((clients, duration)) = lc {
        let server = start().await?;
        report["lifecycles"] = lifecycles(&server, clients, duration).await?;
        server.stop().await;
    }
    if let Some(sessions) = held_n {
        let server = start().await?;
        report["held"] = held(&server, sessions).await?;
        server.stop().await;
    }
    if let Some(samples) = close_n {
        let server = start().await?;
        report["close"] = close_latency(&server, samples).await?;
        server.stop().await;
    }
    finish(&report, cli.json.as_deref())
}

/// Prints the report and writes it as JSON to `json`, if given.
fn finish(report: &Value, json: Option<&std::path::Path>) -> anyhow::Result<()> {
    print_report(report);
    if let Some(path) = json {
        std::fs::write(path, serde_json::to_vec_pretty(report)?)
            .with_context(|| format!("could not write {}", path.display()))?;
    }
    Ok(())
}
