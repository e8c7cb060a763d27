//! `switchboard-local-ecs`: Fargate for the emulator (see the library's documentation and
//! docs/serverless.md). Runs until SIGINT or SIGTERM, then stops every task's process as ECS
//! does and exits.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use switchboard_local_ecs::{Config, EventSink, Faults, InvokeSink, LocalEcs, LogSink};

/// Fargate on this machine: runs the agent process of every task RunTask creates in the
/// emulator, and hands the reaper ECS's events and its schedule.
#[derive(Debug, Parser)]
#[command(name = "switchboard-local-ecs", version)]
struct Args {
    /// The emulator (moto) whose ECS it plays.
    #[arg(long, env = "AWS_ENDPOINT_URL")]
    endpoint: String,
    /// The cluster whose tasks it runs.
    #[arg(long, env = "ECS_CLUSTER")]
    cluster: String,
    /// The binary each task's container runs (its image's entry point); by default the demo
    /// agent next to this binary.
    #[arg(long, env = "LOCAL_ECS_AGENT")]
    agent: Option<PathBuf>,
    /// Seconds from RunTask to a started process (Fargate: 30–60).
    #[arg(long, env = "PROVISIONING_SECONDS", default_value_t = 0.0)]
    provisioning_seconds: f64,
    /// Seconds between the reaper's scheduled sweeps (the template: 60); 0: none.
    #[arg(long, env = "SWEEP_SECONDS", default_value_t = 60.0)]
    sweep_seconds: f64,
    /// Hand ECS Task State Change events to the reaper (0: off, to exercise the sweep alone).
    #[arg(long, env = "LOCAL_ECS_EVENTS", default_value = "1", value_parser = parse_flag)]
    events: bool,
    /// The address serving the Lambda Invoke API (`cargo lambda watch`), e.g.
    /// http://127.0.0.1:9000; without it events are only logged.
    #[arg(long, env = "LOCAL_ECS_LAMBDA_URL")]
    lambda_url: Option<String>,
    /// The function that gets the events and the schedule.
    #[arg(long, default_value = "reaper")]
    function: String,
    /// Where each task's log file goes (named by task id).
    #[arg(long, env = "LOCAL_ECS_LOGS", default_value = "target/local-ecs")]
    logs: PathBuf,
    /// More environment for every task (KEY=VALUE), under the task definition's and the
    /// container override's.
    #[arg(long = "env", value_parser = parse_kv)]
    env: Vec<(String, String)>,
    /// The chance (0–1) that an event is never delivered.
    #[arg(long, env = "LOCAL_ECS_DROP_EVENTS", default_value_t = 0.0)]
    drop_events: f64,
    /// Deliver each event between 1 and this many times.
    #[arg(long, env = "LOCAL_ECS_EVENT_COPIES", default_value_t = 1)]
    event_copies: usize,
    /// Deliver pending events in random order.
    #[arg(long, env = "LOCAL_ECS_REORDER_EVENTS", default_value = "0", value_parser = parse_flag)]
    reorder_events: bool,
    /// Hold each event at least this many milliseconds.
    #[arg(long, env = "LOCAL_ECS_DELAY_EVENTS_MS", default_value_t = 0)]
    delay_events_ms: u64,
    /// Seeds the fault choices.
    #[arg(long, env = "LOCAL_ECS_SEED", default_value_t = 1)]
    seed: u64,
    /// Created once it watches (for a script to wait on).
    #[arg(long)]
    ready_file: Option<PathBuf>,
    /// Log as JSON lines.
    #[arg(long, env = "LOCAL_ECS_LOG_JSON", default_value = "0", value_parser = parse_flag)]
    json: bool,
}

fn parse_flag(s: &str) -> Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        other => Err(format!("{other:?} is not 0 or 1")),
    }
}

fn parse_kv(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .filter(|(k, _)| !k.is_empty())
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("{s:?} is not KEY=VALUE"))
}

fn seconds(name: &str, v: f64) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(v)
        .map_err(|_| anyhow::anyhow!("{name} must be 0 or more seconds, not {v}"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()));
    if args.json {
        fmt.json().flatten_event(true).init();
    } else {
        fmt.init();
    }
    if !(0.0..=1.0).contains(&args.drop_events) {
        anyhow::bail!(
            "--drop-events must be between 0 and 1, not {}",
            args.drop_events
        );
    }
    let agent = match args.agent {
        Some(a) => a,
        None => std::env::current_exe()?.with_file_name("demo-agent"),
    };
    anyhow::ensure!(
        agent.is_file(),
        "the agent binary {} does not exist (build it: cargo build -p demo-agent --features aws, or pass --agent)",
        agent.display()
    );
    let mut config = Config::new(&args.cluster, &agent, &args.endpoint);
    config.provisioning = seconds("PROVISIONING_SECONDS", args.provisioning_seconds)?;
    config.sweep_every =
        Some(seconds("SWEEP_SECONDS", args.sweep_seconds)?).filter(|d| !d.is_zero());
    config.events = args.events;
    config.logs = args.logs;
    config.env = args.env;
    config.faults = Faults {
        drop: args.drop_events,
        max_copies: args.event_copies.max(1),
        reorder: args.reorder_events,
        delay: Duration::from_millis(args.delay_events_ms),
        seed: args.seed,
    };
    if let Ok(region) = std::env::var("AWS_REGION") {
        config.region = region;
    }
    let sink: Arc<dyn EventSink> = match &args.lambda_url {
        Some(url) => Arc::new(InvokeSink::new(url, &args.function)),
        None => Arc::new(LogSink),
    };
    // A hung emulator call must not stall the watch (moto serves one request at a time).
    let timeouts = aws_config::timeout::TimeoutConfig::builder()
        .operation_timeout(Duration::from_secs(10))
        .build();
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(&args.endpoint)
        .timeout_config(timeouts)
        .load()
        .await;
    let ecs = aws_sdk_ecs::Client::new(&sdk);
    let local = LocalEcs::start(config, ecs, sink).await?;
    if let Some(path) = &args.ready_file {
        std::fs::write(path, b"watching\n")
            .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("stopping every task (SIGTERM, then SIGKILL)");
    local.shutdown(Duration::from_secs(10)).await;
    tracing::info!("local ECS stopped");
    Ok(())
}
