//! The command line: `serve` (the local server) and `run` (one agent in the console).
//!
//! Launcher options resolve as flag > `SWITCHBOARD_*` environment variable > the value set in
//! code on the `AgentLauncher` builder > the anchor's default.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use serde_json::json;
use switchboard_agent::{Agent, AgentLauncher};
use switchboard_api::ServeOptions;
use switchboard_core::limits::env;
use switchboard_core::{CallId, CallType, LimitOptions, Limits};
use tracing::{error, info};

use crate::telemetry::{self, LogFormat, LogLevel};

/// An agent program.
#[derive(Debug, Parser)]
#[command(
    version,
    about = "Run AI agents in calls: a local HTTP server that spawns agents on demand, or one agent in the console."
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The sub-commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the HTTP API: start, inspect, measure and close agent sessions on demand.
    Serve(ServeArgs),
    /// Run one agent in one call, in the console, until it ends or Ctrl-C.
    Run(RunArgs),
    /// Host the agent of one admitted session inside an ECS task (the task definition's
    /// command); the session comes from the environment `EcsLauncher` sets.
    Task(TaskArgs),
}

/// The launcher options (SPEC.md §2). Absent flags fall back to the environment, then to
/// the values set in code.
#[derive(Debug, Clone, Default, Args)]
pub struct LauncherArgs {
    /// Maximum concurrent sessions across all calls.
    #[arg(long, env = env::MAX_CONCURRENT_SESSIONS)]
    pub max_concurrent_sessions: Option<i64>,
    /// Maximum concurrent sessions per call.
    #[arg(long, env = env::MAX_SESSIONS_PER_CALL)]
    pub max_sessions_per_call: Option<i64>,
    /// Seconds after joining before a session is closed (`max_duration`).
    #[arg(long, env = env::MAX_SESSION_DURATION_SECONDS)]
    pub max_session_duration_seconds: Option<f64>,
    /// Seconds an agent may stay alone in its call before it is closed (`idle`); 0 disables.
    #[arg(long, env = env::AGENT_IDLE_TIMEOUT)]
    pub agent_idle_timeout: Option<f64>,
    /// Seconds between heartbeats, metrics flushes and lease sweeps.
    #[arg(long, env = env::MAINTENANCE_INTERVAL)]
    pub maintenance_interval: Option<f64>,
    /// Seconds a session's lease lasts without a heartbeat (≥ 3 × the interval).
    #[arg(long, env = env::SESSION_LEASE_SECONDS)]
    pub session_lease_seconds: Option<f64>,
    /// Seconds an ended session stays readable (with its final metrics).
    #[arg(long, env = env::SESSION_RETENTION_SECONDS)]
    pub session_retention_seconds: Option<f64>,
}

impl LauncherArgs {
    /// Overrides `options` with what was given.
    pub fn apply(&self, options: &mut LimitOptions) {
        if let Some(v) = self.max_concurrent_sessions {
            options.max_concurrent_sessions = Some(v);
        }
        if let Some(v) = self.max_sessions_per_call {
            options.max_sessions_per_call = Some(v);
        }
        if let Some(v) = self.max_session_duration_seconds {
            options.max_session_duration_seconds = Some(v);
        }
        if let Some(v) = self.agent_idle_timeout {
            options.agent_idle_timeout = v;
        }
        if let Some(v) = self.maintenance_interval {
            options.maintenance_interval = v;
        }
        if let Some(v) = self.session_lease_seconds {
            options.session_lease_seconds = Some(v);
        }
        if let Some(v) = self.session_retention_seconds {
            options.session_retention = v;
        }
    }
}

/// Options `serve` and `run` share.
#[derive(Debug, Clone, Args)]
pub struct CommonArgs {
    /// Debug mode: every log at DEBUG.
    #[arg(long)]
    pub debug: bool,
    /// Log format.
    #[arg(
        long,
        value_enum,
        ignore_case = true,
        env = "SWITCHBOARD_LOG_FORMAT",
        default_value = "text"
    )]
    pub log_format: LogFormat,
    /// Do not show the splash screen (it only shows on a terminal anyway).
    #[arg(long)]
    pub no_splash: bool,
    /// Print the effective configuration as JSON and exit (exit code 2 if it is invalid).
    #[arg(long)]
    pub print_config: bool,
    /// Launcher options.
    #[command(flatten)]
    pub launcher: LauncherArgs,
}

/// Where sessions are recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum RegistryKind {
    /// In this process (the embedded default).
    #[default]
    Memory,
    /// A DynamoDB table, shared by every node using it (build with the `aws` feature).
    Dynamodb,
}

/// `serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port to listen on (0 picks a free one; the log says which).
    #[arg(long, default_value_t = 8000)]
    pub port: u16,
    /// Log level for agents.
    #[arg(long, value_enum, ignore_case = true, default_value = "INFO")]
    pub agents_log_level: LogLevel,
    /// Log level for the HTTP server.
    #[arg(long, value_enum, ignore_case = true, default_value = "INFO")]
    pub http_log_level: LogLevel,
    /// Where sessions are recorded: `memory`, or `dynamodb` to share a table with other nodes
    /// (region, credentials and `AWS_ENDPOINT_URL` from the standard AWS settings).
    #[arg(
        long,
        value_enum,
        ignore_case = true,
        env = "SWITCHBOARD_REGISTRY",
        default_value = "memory"
    )]
    pub registry: RegistryKind,
    /// The DynamoDB table (with `--registry dynamodb`).
    #[arg(long, env = "SWITCHBOARD_TABLE")]
    pub table: Option<String>,
    /// Shared options.
    #[command(flatten)]
    pub common: CommonArgs,
}

fn existing_file(value: &str) -> Result<PathBuf, String> {
    let path = PathBuf::from(value);
    match std::fs::metadata(&path) {
        Ok(meta) if meta.is_file() => std::fs::canonicalize(&path)
            .map_err(|e| format!("File '{value}' cannot be resolved: {e}")),
        Ok(_) => Err(format!("File '{value}' is a directory.")),
        Err(_) => Err(format!("File '{value}' does not exist.")),
    }
}

/// `run`.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Call type for the call.
    #[arg(long, default_value = "default")]
    pub call_type: String,
    /// Call id (generated when absent).
    #[arg(long)]
    pub call_id: Option<String>,
    /// Log level.
    #[arg(long, value_enum, ignore_case = true, default_value = "INFO")]
    pub log_level: LogLevel,
    /// Do not serve the demo page: the agent joins an in-memory call with a scripted
    /// participant instead of the local call.
    #[arg(long)]
    pub no_demo: bool,
    /// Port of the demo page and the local call, on 127.0.0.1 (0 picks a free one; the log
    /// says which).
    #[arg(long, default_value_t = 0)]
    pub demo_port: u16,
    /// A local video file to play instead of incoming video (must exist).
    #[arg(long, value_parser = existing_file)]
    pub video_track_override: Option<PathBuf>,
    /// Shared options.
    #[command(flatten)]
    pub common: CommonArgs,
}

/// `task`: every value comes from the environment of the ECS container override.
#[derive(Debug, Clone, Args)]
pub struct TaskArgs {
    /// The session to host.
    #[arg(long, env = "SESSION_ID")]
    pub session_id: Option<String>,
    /// Its call.
    #[arg(long, env = "CALL_ID")]
    pub call_id: Option<String>,
    /// The call's type.
    #[arg(long, env = "CALL_TYPE", default_value = "default")]
    pub call_type: String,
    /// The DynamoDB table of the sessions.
    #[arg(long, env = "TABLE_NAME")]
    pub table: Option<String>,
    /// Run as a warm standby (`STANDBY=1`, set by the warm pool's `RunTask`): warm up,
    /// register in the pool, and host the session a start claims it for (no session ids).
    #[arg(
        long,
        env = "STANDBY",
        value_parser = clap::builder::BoolishValueParser::new(),
        num_args = 0..=1,
        default_value = "false",
        default_missing_value = "true"
    )]
    pub standby: bool,
    /// Log level.
    #[arg(long, value_enum, ignore_case = true, default_value = "INFO")]
    pub log_level: LogLevel,
    /// Shared options.
    #[command(flatten)]
    pub common: CommonArgs,
}

fn limits_json(limits: &Limits) -> serde_json::Value {
    json!({
        "max_concurrent_sessions": limits.max_concurrent_sessions(),
        "max_sessions_per_call": limits.max_sessions_per_call(),
        "max_session_duration_seconds": limits.max_session_duration().map(|d| d.as_secs_f64()),
        "agent_idle_timeout": limits.agent_idle_timeout().map_or(0.0, |d| d.as_secs_f64()),
        "maintenance_interval": limits.maintenance_interval().as_secs_f64(),
        "session_lease_seconds": limits.session_lease().as_secs_f64(),
        "session_retention": limits.session_retention().as_secs_f64(),
    })
}

fn print_json(value: &serde_json::Value) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout(), "{value}");
}

fn fail(code: u8, err: &anyhow::Error) -> u8 {
    error!(error = %format!("{err:#}"), "exiting");
    eprintln!("error: {err:#}");
    code
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("could not start the tokio runtime")
}

/// Parses `args` and runs the chosen sub-command; returns the process exit code (0 success,
/// 1 runtime failure, 2 invalid command line or configuration).
pub fn main<A, I, T>(launcher: AgentLauncher<A>, options: ServeOptions, args: I) -> u8
where
    A: Agent,
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return u8::try_from(e.exit_code()).unwrap_or(2);
        }
    };
    match cli.command {
        Command::Serve(args) => serve(launcher, options, args),
        Command::Run(args) => run(launcher, args),
        Command::Task(args) => task(launcher, args),
    }
}

fn task<A: Agent>(launcher: AgentLauncher<A>, args: TaskArgs) -> u8 {
    let level = if args.common.debug {
        LogLevel::Debug
    } else {
        args.log_level
    };
    telemetry::init(&telemetry::filter(level, level), args.common.log_format);
    let launcher = launcher.reconfigure(|o| args.common.launcher.apply(o));
    if args.common.print_config {
        print_json(&json!({
            "command": "task",
            "session_id": args.session_id,
            "call_id": args.call_id,
            "call_type": args.call_type,
            "table": args.table,
            "limits": launcher.as_ref().ok().map(|l| limits_json(l.limits())),
        }));
        return if launcher.is_ok() { 0 } else { 2 };
    }
    task_main(launcher, args)
}

#[cfg(feature = "aws")]
fn task_main<A: Agent>(
    launcher: Result<AgentLauncher<A>, switchboard_core::Error>,
    args: TaskArgs,
) -> u8 {
    match runtime() {
        Ok(rt) => {
            let code = rt.block_on(crate::task::run(launcher, args));
            // The session is over (ended, or left to the reaper): exit now rather than wait
            // for abandoned requests; the slot may already be someone else's.
            rt.shutdown_timeout(std::time::Duration::from_millis(100));
            code
        }
        Err(e) => fail(1, &e),
    }
}

#[cfg(not(feature = "aws"))]
fn task_main<A: Agent>(
    _launcher: Result<AgentLauncher<A>, switchboard_core::Error>,
    _args: TaskArgs,
) -> u8 {
    fail(
        2,
        &anyhow::anyhow!(
            "`task` needs a binary built with the `aws` feature (e.g. cargo build -p demo-agent --features aws)"
        ),
    )
}

fn serve<A: Agent>(launcher: AgentLauncher<A>, options: ServeOptions, args: ServeArgs) -> u8 {
    let (agents, http) = if args.common.debug {
        (LogLevel::Debug, LogLevel::Debug)
    } else {
        (args.agents_log_level, args.http_log_level)
    };
    telemetry::init(&telemetry::filter(agents, http), args.common.log_format);
    let launcher = match launcher.reconfigure(|o| args.common.launcher.apply(o)) {
        Ok(l) => l,
        Err(e) => {
            return fail(
                2,
                &anyhow::Error::new(e).context("invalid launcher options"),
            );
        }
    };
    // AUTH_MODE and AUTH_JWT_*: read once, here; the policy runs before the program's own
    // hooks (both must allow).
    // A key set (AUTH_JWT_JWKS_URL) is read here too, within 2 s, or serve does not start.
    let loaded = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("a runtime to read the authentication keys")
        .and_then(|rt| {
            rt.block_on(switchboard_api::auth::JwtPolicy::load(|name| {
                std::env::var(name).ok()
            }))
            .map_err(anyhow::Error::new)
        });
    let auth = match loaded {
        Ok(policy) => policy.map(Arc::new),
        Err(e) => {
            return fail(2, &e.context("invalid authentication configuration"));
        }
    };
    let options = match &auth {
        Some(policy) => ServeOptions {
            hooks: policy.hooks().then(options.hooks),
            ..options
        },
        None => options,
    };
    if args.common.print_config {
        print_json(&json!({
            "command": "serve",
            "auth_mode": if auth.is_some() { "jwt" } else { "none" },
            "host": args.host,
            "port": args.port,
            "agents_log_level": agents.directive(),
            "http_log_level": http.directive(),
            "log_format": format!("{:?}", args.common.log_format).to_lowercase(),
            "registry": format!("{:?}", args.registry).to_lowercase(),
            "table": args.table,
            "limits": limits_json(launcher.limits()),
        }));
        return 0;
    }
    crate::splash::show(
        args.common.no_splash,
        &format!(
            "serving on http://{}:{} (the demo page at /, docs at /docs)",
            args.host, args.port
        ),
    );
    let result = runtime().and_then(|rt| {
        rt.block_on(async {
            let addr = tokio::net::lookup_host((args.host.as_str(), args.port))
                .await
                .with_context(|| format!("could not resolve host '{}'", args.host))?
                .next()
                .with_context(|| format!("host '{}' has no address", args.host))?;
            let launcher = registry(launcher, args.registry, args.table.as_deref()).await?;
            crate::serve::serve(launcher, options, addr, crate::serve::shutdown_signal()).await
        })
    });
    match result {
        Ok(()) => 0,
        Err(e) => fail(1, &e),
    }
}

/// The launcher on the chosen registry.
async fn registry<A: Agent>(
    launcher: AgentLauncher<A>,
    kind: RegistryKind,
    table: Option<&str>,
) -> anyhow::Result<AgentLauncher<A>> {
    match kind {
        RegistryKind::Memory => Ok(launcher),
        RegistryKind::Dynamodb => dynamodb(launcher, table).await,
    }
}

#[cfg(feature = "aws")]
async fn dynamodb<A: Agent>(
    launcher: AgentLauncher<A>,
    table: Option<&str>,
) -> anyhow::Result<AgentLauncher<A>> {
    let table =
        table.context("--table (SWITCHBOARD_TABLE) is required with --registry dynamodb")?;
    let client = switchboard_aws::dynamodb::client_from_env().await;
    let registry = switchboard_aws::DynamoRegistry::new(client, table, launcher.clock());
    info!(table, "sessions are recorded in DynamoDB");
    Ok(launcher.with_registry(std::sync::Arc::new(registry))?)
}

#[cfg(not(feature = "aws"))]
async fn dynamodb<A: Agent>(
    _launcher: AgentLauncher<A>,
    _table: Option<&str>,
) -> anyhow::Result<AgentLauncher<A>> {
    anyhow::bail!(
        "--registry dynamodb needs a binary built with the `aws` feature (e.g. cargo run -p demo-agent --features aws -- serve ...)"
    )
}

fn run<A: Agent>(launcher: AgentLauncher<A>, args: RunArgs) -> u8 {
    let level = if args.common.debug {
        LogLevel::Debug
    } else {
        args.log_level
    };
    telemetry::init(&telemetry::filter(level, level), args.common.log_format);
    let launcher = match launcher
        .reconfigure(|o| args.common.launcher.apply(o))
        .and_then(|l| l.with_video_track_override(args.video_track_override.clone()))
    {
        Ok(l) => l,
        Err(e) => {
            return fail(
                2,
                &anyhow::Error::new(e).context("invalid launcher options"),
            );
        }
    };
    let call_id = args
        .call_id
        .clone()
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    let parsed = CallId::parse(&call_id).and_then(|c| Ok((c, CallType::parse(&args.call_type)?)));
    let (call_id, call_type) = match parsed {
        Ok(ids) => ids,
        Err(e) => return fail(2, &anyhow::Error::new(e).context("invalid call")),
    };
    if args.common.print_config {
        print_json(&json!({
            "command": "run",
            "call_id": call_id.as_str(),
            "call_type": call_type.as_str(),
            "log_level": level.directive(),
            "no_demo": args.no_demo,
            "demo_port": args.demo_port,
            "video_track_override": args.video_track_override,
            "limits": limits_json(launcher.limits()),
        }));
        return 0;
    }
    crate::splash::show(
        args.common.no_splash,
        &format!("running one agent in call {call_type}:{call_id}"),
    );
    let demo = (!args.no_demo).then_some(args.demo_port);
    let result = runtime().and_then(|rt| rt.block_on(run_one(launcher, call_id, call_type, demo)));
    match result {
        Ok(()) => 0,
        Err(e) => fail(1, &e),
    }
}

/// The demo page's server under `run`: the local API and call on 127.0.0.1.
struct DemoServer {
    address: std::net::SocketAddr,
    stop_calls: tokio::sync::watch::Sender<bool>,
    stop_http: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl DemoServer {
    async fn start<A: Agent>(launcher: &AgentLauncher<A>, port: u16) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .with_context(|| format!("could not listen on 127.0.0.1:{port} for the demo page"))?;
        let address = listener
            .local_addr()
            .context("the demo listener has no address")?;
        let (stop_calls, calls_stopped) = tokio::sync::watch::channel(false);
        let router = crate::serve::local_router(launcher, ServeOptions::default(), calls_stopped)?;
        let (stop_http, http_stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(
            axum::serve(crate::serve::no_delay(listener), router)
                .with_graceful_shutdown(async {
                    let _ = http_stopped.await;
                })
                .into_future(),
        );
        Ok(Self {
            address,
            stop_calls,
            stop_http,
            server,
        })
    }

    /// The page for `call_id`, attached to `session_id`, joining on load.
    fn url(&self, call_id: &CallId, session_id: &str) -> String {
        let query: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("call_id", call_id.as_str())
            .append_pair("session_id", session_id)
            .append_pair("join", "1")
            .finish();
        format!("http://{}/?{query}", self.address)
    }

    async fn stop(self) {
        let _ = self.stop_calls.send(true);
        let _ = self.stop_http.send(());
        if let Ok(Err(e)) = self.server.await {
            tracing::warn!(error = %e, "the demo page's server failed");
        }
    }
}

/// Opens `url` in the desktop's browser when there is someone to see it (a terminal).
fn open_in_browser(url: &str) {
    use std::io::IsTerminal;
    if !std::io::stderr().is_terminal() {
        return;
    }
    let opener = if cfg!(target_os = "macos") {
        "open"
    } else {
        "xdg-open"
    };
    let opened = std::process::Command::new(opener)
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    if let Err(e) = opened {
        tracing::debug!(opener, error = %e, "could not open a browser; open the URL by hand");
    }
}

async fn run_one<A: Agent>(
    launcher: AgentLauncher<A>,
    call_id: CallId,
    call_type: CallType,
    demo_port: Option<u16>,
) -> anyhow::Result<()> {
    // The demo page's server first: the agent then joins the local call (the launcher's hub).
    let demo = match demo_port {
        Some(port) => Some(DemoServer::start(&launcher, port).await?),
        None => None,
    };
    let stop_demo = |demo: Option<DemoServer>| async move {
        if let Some(demo) = demo {
            demo.stop().await;
        }
    };
    if let Err(e) = launcher.start().await {
        stop_demo(demo).await;
        return Err(anyhow::Error::new(e).context("the agent launcher could not start"));
    }
    let session = match launcher
        .start_session(call_id.clone(), call_type, None)
        .await
    {
        Ok(s) => s,
        Err(e) => {
            launcher.stop().await;
            stop_demo(demo).await;
            return Err(anyhow::Error::new(e).context("the agent could not start"));
        }
    };
    info!(session_id = %session.id(), %call_id, "agent started");
    if let Some(demo) = &demo {
        // The page's URL once the agent is in the call (no longer `starting`), so that whoever
        // opens it finds the agent there; `start_session` returns once the agent exists.
        let give_up = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let row = launcher.registry().get(&call_id, session.id()).await;
            let joined = matches!(&row, Ok(Some(r)) if r.status != switchboard_core::SessionStatus::Starting);
            if joined || session.finished() || tokio::time::Instant::now() >= give_up {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let url = demo.url(&call_id, &session.id().to_string());
        info!(%url, "demo page: join the call in a browser");
        open_in_browser(&url);
    }
    tokio::select! {
        end = session.wait() => info!(end_reason = %end.reason, detail = ?end.detail, "the agent's session ended"),
        () = crate::serve::shutdown_signal() => {}
    }
    launcher.stop().await;
    stop_demo(demo).await;
    Ok(())
}
