//! The `switchboard` binary's own arguments on `serve`, `run` and `task`: the agent's command
//! after `--`, `--prewarm`, `--agent-memory-limit-mb` and `--agent-close-grace-seconds`.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, FromArgMatches};
use switchboard_agent::AgentLauncherBuilder;
use switchboard_runner::Runner;
use switchboard_runner::cli::CliExtension;

use crate::agent::{ProcessAgent, ProcessAgents, ProcessOptions};
use crate::child::AgentCommand;

/// The process agents' arguments.
#[derive(Debug, Clone, Args)]
pub struct ProcessArgs {
    /// Agent processes kept started and past their imports, waiting for a session
    /// [env: SWITCHBOARD_PREWARM].
    #[arg(long, env = "SWITCHBOARD_PREWARM", default_value_t = 0, value_parser = clap::value_parser!(u16).range(0..=1000))]
    pub prewarm: u16,
    /// The most resident memory (RSS) an agent's process tree may use, in MB (2^20 bytes),
    /// sampled every 0.5 s; over it the session ends `agent_failed`
    /// [env: SWITCHBOARD_AGENT_MEMORY_LIMIT_MB].
    #[arg(long, env = "SWITCHBOARD_AGENT_MEMORY_LIMIT_MB", value_parser = clap::value_parser!(u64).range(1..=1_048_576))]
    pub agent_memory_limit_mb: Option<u64>,
    /// Seconds an agent process has to exit after `close` before SIGTERM (then 2 s to
    /// SIGKILL) [env: SWITCHBOARD_AGENT_CLOSE_GRACE_SECONDS].
    #[arg(
        long,
        env = "SWITCHBOARD_AGENT_CLOSE_GRACE_SECONDS",
        default_value_t = 5.0
    )]
    pub agent_close_grace_seconds: f64,
    /// The agent's command as a JSON array of strings, for images and task definitions
    /// (`["python3","/agent/agent.py"]`); what follows `--` wins
    /// [env: SWITCHBOARD_AGENT_COMMAND].
    #[arg(long, env = "SWITCHBOARD_AGENT_COMMAND", value_name = "JSON_ARRAY")]
    pub agent_command: Option<String>,
    /// The agent's command, one process per session: `-- python3 agent.py`.
    #[arg(
        last = true,
        required_unless_present = "agent_command",
        value_name = "AGENT_COMMAND"
    )]
    pub command: Vec<OsString>,
}

impl ProcessArgs {
    /// The command: after `--`, else the JSON array.
    fn command(&self, subcommand: &str) -> anyhow::Result<Vec<OsString>> {
        if !self.command.is_empty() {
            return Ok(self.command.clone());
        }
        let Some(json) = &self.agent_command else {
            anyhow::bail!("no agent command: switchboard {subcommand} [options] -- <command>");
        };
        let parts: Vec<String> = serde_json::from_str(json).map_err(|e| {
            anyhow::anyhow!(
                "SWITCHBOARD_AGENT_COMMAND must be a JSON array of strings such as [\"python3\",\"agent.py\"], not {json:?}: {e}"
            )
        })?;
        if parts.is_empty() {
            anyhow::bail!("SWITCHBOARD_AGENT_COMMAND is an empty array: it needs a program");
        }
        Ok(parts.into_iter().map(OsString::from).collect())
    }
}

/// The `switchboard` binary's runner: every agent is a child process running the command
/// given after `--`.
pub fn runner() -> Runner<ProcessAgent> {
    let agents = ProcessAgents::new();
    Runner::new(agents.launcher_builder()).with_cli_extension(Extension { agents })
}

struct Extension {
    agents: Arc<ProcessAgents>,
}

/// Whether this process may execute `path` (its user, not any user).
fn executable(path: &Path) -> bool {
    nix::unistd::access(path, nix::unistd::AccessFlags::X_OK).is_ok()
}

/// Where `program` is: itself when it names a path, else the first match on `PATH`.
fn resolve(program: &OsString) -> anyhow::Result<PathBuf> {
    let path = Path::new(program);
    if path.components().count() > 1 {
        return match std::fs::metadata(path) {
            Ok(m) if m.is_file() && executable(path) => Ok(path.to_owned()),
            Ok(m) if m.is_file() => anyhow::bail!("the agent command {path:?} is not executable"),
            Ok(_) => anyhow::bail!("the agent command {path:?} is not a file"),
            Err(e) => anyhow::bail!("the agent command {path:?} cannot be run: {e}"),
        };
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(path))
        .find(|candidate| candidate.is_file() && executable(candidate))
        .ok_or_else(|| anyhow::anyhow!("the agent command {program:?} is not on PATH"))
}

impl CliExtension<ProcessAgent> for Extension {
    fn augment(&self, subcommand: clap::Command) -> clap::Command {
        ProcessArgs::augment_args(subcommand)
    }

    fn configure(
        &self,
        subcommand: &str,
        matches: &clap::ArgMatches,
        builder: AgentLauncherBuilder<ProcessAgent>,
    ) -> anyhow::Result<(AgentLauncherBuilder<ProcessAgent>, serde_json::Value)> {
        let args = ProcessArgs::from_arg_matches(matches)?;
        let command = args.command(subcommand)?;
        let Some((program, rest)) = command.split_first() else {
            anyhow::bail!("no agent command: switchboard {subcommand} [options] -- <command>");
        };
        let grace = args.agent_close_grace_seconds;
        if !(grace.is_finite() && (0.0..=3600.0).contains(&grace)) {
            anyhow::bail!("--agent-close-grace-seconds must be between 0 and 3600, not {grace}");
        }
        let resolved = resolve(program)?;
        // A standby task is one prewarmed child; a task hosts one session, so its child is
        // never replaced.
        let standby = subcommand == "task"
            && matches
                .try_get_one::<bool>("standby")
                .ok()
                .flatten()
                .copied()
                .unwrap_or(false);
        let mut options = ProcessOptions::new(AgentCommand {
            program: resolved.clone().into_os_string(),
            args: rest.to_vec(),
        });
        // A task hosts one session: a standby keeps exactly one prewarmed child, any other
        // task none (its session is already there).
        options.prewarm = match (subcommand, standby) {
            ("task", true) => 1,
            ("task", false) => 0,
            _ => usize::from(args.prewarm),
        };
        options.refill = subcommand != "task";
        options.memory_limit_bytes = args.agent_memory_limit_mb.map(|mb| mb << 20);
        options.close_grace = Duration::from_secs_f64(grace);
        let bound = options.close_bound();
        let shown = serde_json::json!({
            "command": std::iter::once(resolved.to_string_lossy().into_owned())
                .chain(rest.iter().map(|a| a.to_string_lossy().into_owned()))
                .collect::<Vec<_>>(),
            "prewarm": options.prewarm,
            "agent_memory_limit_mb": args.agent_memory_limit_mb,
            "agent_close_grace_seconds": grace,
            "protocol": crate::protocol::PROTOCOL_VERSION,
        });
        self.agents.configure(options)?;
        Ok((builder.agent_close_timeout(bound), shown))
    }

    fn finished(&self) {
        self.agents.stop_prewarmed();
    }
}
