//! The command line's arguments (clap): every sub-command's flags. Launcher options are flags
//! only: their `SWITCHBOARD_*` environment variables are read by
//! [`LimitOptions::apply_env`](switchboard_core::LimitOptions::apply_env), the one decoder
//! the ECS task's encoder (`Limits::supervisor_env`) and the Lambda functions share, and the
//! flags apply on top.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use switchboard_core::LimitOptions;

use crate::telemetry::{LogFormat, LogLevel};

/// An agent program.
#[derive(Debug, Parser)]
#[command(
    version,
    about = "Run AI agents in calls: a local HTTP server that spawns agents on demand, one agent in the console, or the agent of an ECS task."
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

/// The launcher options (the anchor's). Each falls back to its `SWITCHBOARD_*` variable, then
/// to the value set in code, then to the anchor's default.
#[derive(Debug, Clone, Default, Args)]
pub struct LauncherArgs {
    /// Maximum concurrent sessions across all calls [env: SWITCHBOARD_MAX_CONCURRENT_SESSIONS].
    #[arg(long)]
    pub max_concurrent_sessions: Option<i64>,
    /// Maximum concurrent sessions per call [env: SWITCHBOARD_MAX_SESSIONS_PER_CALL].
    #[arg(long)]
    pub max_sessions_per_call: Option<i64>,
    /// Seconds after joining before a session is closed (`max_duration`)
    /// [env: SWITCHBOARD_MAX_SESSION_DURATION_SECONDS].
    #[arg(long)]
    pub max_session_duration_seconds: Option<f64>,
    /// Seconds an agent may stay alone in its call before it is closed (`idle`); 0 disables
    /// [env: SWITCHBOARD_AGENT_IDLE_TIMEOUT].
    #[arg(long)]
    pub agent_idle_timeout: Option<f64>,
    /// Seconds from `create_agent` until the agent must be in its call, or the session ends
    /// `start_failed`; 0 disables [env: SWITCHBOARD_AGENT_JOIN_TIMEOUT].
    #[arg(long)]
    pub agent_join_timeout: Option<f64>,
    /// Seconds between heartbeats, metrics flushes and lease sweeps
    /// [env: SWITCHBOARD_MAINTENANCE_INTERVAL].
    #[arg(long)]
    pub maintenance_interval: Option<f64>,
    /// Seconds a session's lease lasts without a heartbeat (≥ 3 × the interval)
    /// [env: SWITCHBOARD_SESSION_LEASE_SECONDS].
    #[arg(long)]
    pub session_lease_seconds: Option<f64>,
    /// Seconds an ended session stays readable (with its final metrics)
    /// [env: SWITCHBOARD_SESSION_RETENTION_SECONDS].
    #[arg(long)]
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
        if let Some(v) = self.agent_join_timeout {
            options.agent_join_timeout = v;
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

/// Options every sub-command has.
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
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
