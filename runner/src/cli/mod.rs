//! The command line: `serve` (the local server), `run` (one agent in the console) and `task`
//! (the agent of one ECS task).
//!
//! Launcher options resolve as flag > `SWITCHBOARD_*` environment variable > the value set in
//! code on the `AgentLauncher` builder > the anchor's default, and are validated once, after
//! all of them.
//!
//! # Layout
//! - [`args`]: every sub-command's flags (clap).
//! - `serve`, `run`: the two local sub-commands; `task` is the `task` module's (feature `aws`).
//! - here: the dispatch, the effective configuration `--print-config` prints, and the exits.

pub mod args;
mod run;
mod serve;

use anyhow::Context;
use serde::Serialize;
use switchboard_agent::{Agent, AgentLauncherBuilder};
use switchboard_api::ServeOptions;
use switchboard_core::Limits;
use tracing::error;

pub use self::args::{
    Cli, Command, CommonArgs, LauncherArgs, RegistryKind, RunArgs, ServeArgs, TaskArgs,
};
use crate::telemetry::{self, LogLevel};

/// What a binary without the `aws` feature says when asked for what needs it.
#[cfg_attr(feature = "aws", allow(dead_code))]
pub(crate) const NEEDS_AWS: &str = "needs a binary built with the `aws` feature: in your own agent's crate, enable the `aws` feature of its `switchboard` dependency (switchboard = { git = \"…\", features = [\"aws\"] }); in this repository, cargo build -p demo-agent --features aws";

/// The launcher options as `--print-config` prints them.
#[derive(Debug, Serialize)]
pub(crate) struct LimitsConfig {
    max_concurrent_sessions: Option<u32>,
    max_sessions_per_call: Option<u32>,
    max_session_duration_seconds: Option<f64>,
    agent_idle_timeout: f64,
    agent_join_timeout: f64,
    maintenance_interval: f64,
    session_lease_seconds: f64,
    session_retention: f64,
}

impl From<&Limits> for LimitsConfig {
    fn from(limits: &Limits) -> Self {
        Self {
            max_concurrent_sessions: limits.max_concurrent_sessions(),
            max_sessions_per_call: limits.max_sessions_per_call(),
            max_session_duration_seconds: limits.max_session_duration().map(|d| d.as_secs_f64()),
            agent_idle_timeout: limits.agent_idle_timeout().map_or(0.0, |d| d.as_secs_f64()),
            agent_join_timeout: limits.agent_join_timeout().map_or(0.0, |d| d.as_secs_f64()),
            maintenance_interval: limits.maintenance_interval().as_secs_f64(),
            session_lease_seconds: limits.session_lease().as_secs_f64(),
            session_retention: limits.session_retention().as_secs_f64(),
        }
    }
}

/// The effective configuration of a sub-command: its name, its own settings, the launcher
/// options (`None` when they are invalid).
#[derive(Debug, Serialize)]
pub(crate) struct EffectiveConfig<T> {
    command: &'static str,
    #[serde(flatten)]
    settings: T,
    limits: Option<LimitsConfig>,
    /// The program's own settings (a [`CliExtension`]'s), when it has any.
    #[serde(skip_serializing_if = "Option::is_none")]
    agent: Option<serde_json::Value>,
}

/// Prints `config` as one JSON line; exit code 0, or 2 when the options are invalid.
fn print_config<T: Serialize>(config: &EffectiveConfig<T>) -> u8 {
    use std::io::Write;
    let line = serde_json::to_string(config).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
    let _ = writeln!(std::io::stdout(), "{line}");
    if config.limits.is_some() { 0 } else { 2 }
}

/// `builder` with the environment's, then the flags' options over the code's, validated.
fn configured<A: Agent>(
    builder: AgentLauncherBuilder<A>,
    flags: &LauncherArgs,
) -> anyhow::Result<(AgentLauncherBuilder<A>, Limits)> {
    let mut bad_variable = None;
    let builder = builder.update_options(|options| {
        if let Err(e) = options.apply_env(|name| std::env::var(name).ok()) {
            bad_variable = Some(e);
        }
        flags.apply(options);
    });
    if let Some(e) = bad_variable {
        return Err(anyhow::Error::new(e).context("invalid launcher options"));
    }
    let limits = builder.limits().context("invalid launcher options")?;
    Ok((builder, limits))
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
pub fn main<A, I, T>(builder: AgentLauncherBuilder<A>, options: ServeOptions, args: I) -> u8
where
    A: Agent,
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    main_with(builder, options, None, args)
}

/// A program's own command-line arguments, added to `serve`, `run` and `task` (the
/// `switchboard` binary's agent command, `--prewarm` and memory limit).
pub trait CliExtension<A>: Send + Sync {
    /// Adds the arguments to one sub-command (`serve`, `run` or `task`).
    fn augment(&self, subcommand: clap::Command) -> clap::Command;
    /// Reads them once the command line is parsed, adjusting the launcher's builder; an error
    /// is an invalid command line (exit code 2). Returns what `--print-config` shows under
    /// `agent`.
    fn configure(
        &self,
        subcommand: &str,
        matches: &clap::ArgMatches,
        builder: AgentLauncherBuilder<A>,
    ) -> anyhow::Result<(AgentLauncherBuilder<A>, serde_json::Value)>;

    /// Called once the sub-command has finished (its runtime stopped), before the exit.
    fn finished(&self) {}
}

/// [`main`], with a program's own arguments.
pub fn main_with<A, I, T>(
    builder: AgentLauncherBuilder<A>,
    options: ServeOptions,
    extension: Option<&dyn CliExtension<A>>,
    args: I,
) -> u8
where
    A: Agent,
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    use clap::{CommandFactory, FromArgMatches};
    let mut command = Cli::command();
    if let Some(extension) = extension {
        for name in ["serve", "run", "task"] {
            command = command.mut_subcommand(name, |sub| extension.augment(sub));
        }
    }
    let parsed = command
        .try_get_matches_from(args)
        .and_then(|matches| Cli::from_arg_matches(&matches).map(|cli| (cli, matches)));
    let (cli, matches) = match parsed {
        Ok(parsed) => parsed,
        Err(e) => {
            let _ = e.print();
            return u8::try_from(e.exit_code()).unwrap_or(2);
        }
    };
    let configured = match (extension, matches.subcommand()) {
        (Some(extension), Some((name, sub))) => extension
            .configure(name, sub, builder)
            .map(|(builder, shown)| (builder, Some(shown))),
        _ => Ok((builder, None)),
    };
    let code = match (cli.command, configured) {
        (Command::Serve(args), Ok((builder, agent))) => serve::serve(builder, options, args, agent),
        (Command::Run(args), Ok((builder, agent))) => run::run(builder, args, agent),
        (Command::Task(args), Ok((builder, agent))) => task(Ok(builder), args, agent),
        // A task reports it as it reports a bad launcher option: the row ends `start_failed`
        // and its slot comes back.
        (Command::Task(args), Err(e)) => {
            task::<A>(Err(e.context("invalid agent options")), args, None)
        }
        (_, Err(e)) => {
            eprintln!("error: {e:#}");
            return 2;
        }
    };
    if let Some(extension) = extension {
        extension.finished();
    }
    code
}

/// The effective configuration `task --print-config` prints.
#[derive(Debug, Serialize)]
struct TaskConfig<'a> {
    session_id: &'a Option<String>,
    call_id: &'a Option<String>,
    call_type: &'a str,
    table: &'a Option<String>,
}

fn task<A: Agent>(
    builder: anyhow::Result<AgentLauncherBuilder<A>>,
    args: TaskArgs,
    agent: Option<serde_json::Value>,
) -> u8 {
    let level = if args.common.debug {
        LogLevel::Debug
    } else {
        args.log_level
    };
    telemetry::init(&telemetry::filter(level, level), args.common.log_format);
    let configured = builder.and_then(|builder| configured(builder, &args.common.launcher));
    if args.common.print_config {
        return print_config(&EffectiveConfig {
            command: "task",
            settings: TaskConfig {
                session_id: &args.session_id,
                call_id: &args.call_id,
                call_type: &args.call_type,
                table: &args.table,
            },
            limits: configured.as_ref().ok().map(|(_, l)| LimitsConfig::from(l)),
            agent,
        });
    }
    task_main(configured, args)
}

#[cfg(feature = "aws")]
fn task_main<A: Agent>(
    configured: anyhow::Result<(AgentLauncherBuilder<A>, Limits)>,
    args: TaskArgs,
) -> u8 {
    match runtime() {
        Ok(rt) => {
            let code = rt.block_on(crate::task::run(configured, args));
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
    _configured: anyhow::Result<(AgentLauncherBuilder<A>, Limits)>,
    _args: TaskArgs,
) -> u8 {
    fail(2, &anyhow::anyhow!("`task` {NEEDS_AWS}"))
}
