//! The Runner: what turns a user's agent into a program,
//! `Runner::new(AgentLauncher::builder(create_agent, join_call)).cli()`.
//!
//! # Layout
//! - [`cli`]: the command line (clap): `serve`, `run` and `task`, with the launcher options as
//!   flags over the `SWITCHBOARD_*` environment variables, over the values set in code; the
//!   launcher is built (and its options validated) once, after all of them.
//! - [`serve`]: the local server: the API router over the in-process launcher, readiness,
//!   and the graceful shutdown (Ctrl-C/SIGTERM → `/ready` 503 → sessions end `shutdown`).
//! - `task` and `standby` (feature `aws`): the ECS task's entry point, hosting one session
//!   admitted by the API, or waiting warm in the pool for one.
//! - [`telemetry`]: structured logs (text, or JSON with `--log-format json`).
//! - `splash`: the banner, on interactive terminals only.
//!
//! # Must not depend on
//! No `lambda_*` crate (the Lambda functions are `switchboard-functions`), and `aws-*` only
//! behind the `aws` feature (`task`, `serve --registry dynamodb`), so the quick start never
//! builds the AWS SDK.

pub mod cli;
pub mod serve;
mod splash;
#[cfg(feature = "aws")]
mod standby;
#[cfg(feature = "aws")]
mod task;
pub mod telemetry;

use std::process::ExitCode;

use switchboard_agent::{Agent, AgentLauncherBuilder};
pub use switchboard_api::ServeOptions;

/// An agent program: a launcher's builder and how to serve it. The builder is built once the
/// command line is read, so the flags apply over the options set in code and an invalid
/// option is reported (exit code 2) by the runner itself.
pub struct Runner<A> {
    builder: AgentLauncherBuilder<A>,
    serve_options: ServeOptions,
    extension: Option<Box<dyn cli::CliExtension<A>>>,
}

impl<A> std::fmt::Debug for Runner<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner")
            .field("builder", &self.builder)
            .finish_non_exhaustive()
    }
}

impl<A: Agent> Runner<A> {
    /// A runner for the launcher `builder` makes, with the default serve options.
    pub fn new(builder: AgentLauncherBuilder<A>) -> Self {
        Self {
            builder,
            serve_options: ServeOptions::default(),
            extension: None,
        }
    }

    /// With the program's own arguments on `serve`, `run` and `task`.
    pub fn with_cli_extension(mut self, extension: impl cli::CliExtension<A> + 'static) -> Self {
        self.extension = Some(Box::new(extension));
        self
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
        cli::main_with(
            self.builder,
            self.serve_options,
            self.extension.as_deref(),
            args,
        )
    }
}
