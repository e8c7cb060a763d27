//! The Runner: what turns a user's agent into a program, `Runner::new(launcher).cli()`.
//!
//! # Layout
//! - [`cli`]: the command line (clap): `serve` and `run`, with the launcher options as flags
//!   that fall back to `SWITCHBOARD_*` environment variables, then to the values set in code.
//! - [`serve`]: the local server: the API router over the in-process launcher, readiness,
//!   and the graceful shutdown (Ctrl-C/SIGTERM → `/ready` 503 → sessions end `shutdown`).
//! - [`telemetry`]: structured logs (text, or JSON with `--log-format json`).
//! - `splash`: the banner, on interactive terminals only.
//!
//! # Must not depend on
//! No `aws-*` or `lambda_*` crate: the ECS `task` sub-command and the Lambda functions come with
//! the AWS issues, behind their own crates and features.

pub mod cli;
pub mod serve;
mod splash;
#[cfg(feature = "aws")]
mod standby;
#[cfg(feature = "aws")]
mod task;
pub mod telemetry;

use std::process::ExitCode;

use switchboard_agent::{Agent, AgentLauncher};
use switchboard_api::ServeOptions;

/// An agent program: a launcher and how to serve it.
pub struct Runner<A> {
    launcher: AgentLauncher<A>,
    serve_options: ServeOptions,
}

impl<A> std::fmt::Debug for Runner<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner")
            .field("launcher", &self.launcher)
            .finish_non_exhaustive()
    }
}

impl<A: Agent> Runner<A> {
    /// A runner for `launcher` with the default serve options.
    pub fn new(launcher: AgentLauncher<A>) -> Self {
        Self {
            launcher,
            serve_options: ServeOptions::default(),
        }
    }

    /// With CORS, permission hooks, extra routes or a custom router.
    pub fn with_serve_options(mut self, options: ServeOptions) -> Self {
        self.serve_options = options;
        self
    }

    /// Parses the process's command line and runs the chosen sub-command to completion.
    pub fn cli(self) -> ExitCode {
        self.cli_from(std::env::args_os())
    }

    /// Like [`cli`](Self::cli), from explicit arguments (the first is the program name).
    pub fn cli_from<I, T>(self, args: I) -> ExitCode
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        ExitCode::from(self.cli_code_from(args))
    }

    /// Like [`cli_from`](Self::cli_from), returning the numeric exit code (0 success,
    /// 1 runtime failure, 2 invalid command line or configuration).
    pub fn cli_code_from<I, T>(self, args: I) -> u8
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        cli::main(self.launcher, self.serve_options, args)
    }
}
