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
mod close;
mod held;
mod http;
mod lifecycles;
mod report;
mod server;
mod soak;
#[cfg(feature = "aws")]
mod task;
mod warm;

pub(crate) use close::*;
pub(crate) use held::*;
pub(crate) use http::*;
pub(crate) use lifecycles::*;
pub(crate) use report::*;
pub(crate) use server::*;
pub(crate) use soak::*;

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
        /// Milliseconds between samples (lets a `--prewarm` pool refill).
        #[arg(long, default_value_t = 0)]
        pause_ms: u64,
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
    let mut report = Report::new(server_name, cli.server_arg.clone());
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
        report.server = agent.display().to_string();
        report.task = Some(task::measure(&agent, &table, *tasks, intervals).await?);
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
        report.warm = Some(warm::measure(url, *rounds, calls.as_deref(), *idle_seconds).await?);
        return finish(&report, cli.json.as_deref());
    }
    if let Cmd::Call { samples, listeners } = cli.command {
        let server = start().await?;
        report.call = Some(call::round_trips(&server, samples, listeners).await?);
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
        report.soak = Some(soak(&server, rate, minutes, warmup_minutes, sample_seconds).await?);
        server.stop().await;
        return finish(&report, cli.json.as_deref());
    }
    let mut pause = Duration::ZERO;
    let (lc, held_n, close_n) = match cli.command {
        Cmd::Soak { .. } | Cmd::Call { .. } | Cmd::Warm { .. } => unreachable!("handled above"),
        #[cfg(feature = "aws")]
        Cmd::Task { .. } => unreachable!("handled above"),
        Cmd::Lifecycles { clients, duration } => (Some((clients, duration)), None, None),
        Cmd::Held { sessions } => (None, Some(sessions), None),
        Cmd::Close { samples, pause_ms } => {
            pause = Duration::from_millis(pause_ms);
            (None, None, Some(samples))
        }
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
        report.lifecycles = Some(lifecycles(&server, clients, duration).await?);
        server.stop().await;
    }
    if let Some(sessions) = held_n {
        let server = start().await?;
        report.held = Some(held(&server, sessions).await?);
        server.stop().await;
    }
    if let Some(samples) = close_n {
        let server = start().await?;
        report.close = Some(close_latency(&server, samples, pause).await?);
        server.stop().await;
    }
    finish(&report, cli.json.as_deref())
}
