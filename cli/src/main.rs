//! `switchboard`: serve, run and task for an agent in any language. Each session's agent is a
//! child process running the command after `--`, speaking the protocol of
//! docs/process-agents.md:
//!
//! ```text
//! switchboard serve -- python3 examples/python-agent/agent.py
//! ```

fn main() -> std::process::ExitCode {
    switchboard_process::runner().cli()
}
