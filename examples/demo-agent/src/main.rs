//! `demo-agent`: the example agent as a program (`serve`, `run`).

use std::process::ExitCode;

use switchboard_agent::AgentLauncher;
use switchboard_runner::Runner;

// mimalloc: fewer cycles in malloc/free on the request path and less fragmentation with
// many small per-session allocations (see docs/benchmarks.md).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let launcher =
        match AgentLauncher::builder(demo_agent::create_agent, demo_agent::join_call).build() {
            Ok(launcher) => launcher,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        };
    Runner::new(launcher).cli()
}
