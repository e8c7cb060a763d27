//! `demo-agent`: the example agent as a program (`serve`, `run`, and `task` with `aws`).

use switchboard::prelude::*;

// mimalloc: fewer cycles in malloc/free on the request path and less fragmentation with
// many small per-session allocations (see docs/benchmarks.md).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    Runner::new(AgentLauncher::builder(
        demo_agent::create_agent,
        demo_agent::join_call,
    ))
    .cli()
}
