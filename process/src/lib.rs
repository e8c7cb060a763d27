//! Process agents: an agent in any language, one child process per session, supervised by
//! the agent runtime (admission, lease and heartbeat, close flag, idle and maximum duration,
//! metrics flushes and the SIGTERM drain stay the runtime's; the child implements none of
//! them).
//!
//! # Layout
//! - [`protocol`]: the versioned messages between the runtime and a child (one JSON object
//!   per line on an inherited Unix socket, fd 3; docs/process-agents.md).
//! - `child`: spawning one child in its own process group, its logs, its messages, its exit,
//!   and the close path (`close`, grace, SIGTERM, SIGKILL).
//! - `pool`: prewarmed children (`--prewarm N`).
//! - [`memory`]: the sampler of each child's process-tree RSS (`--agent-memory-limit-mb`).
//! - [`agent`]: [`ProcessAgents`] and [`ProcessAgent`], the runtime's `Agent` for children.
//! - [`cli`]: the `switchboard` binary's arguments and its [`Runner`](switchboard_runner::Runner).
//!
//! # Must not depend on
//! No `axum`, `aws-*` or `lambda_*` crate: the runner brings serve, run and task.

pub mod agent;
mod child;
pub mod cli;
mod lines;
pub mod memory;
mod pool;
pub mod protocol;

pub use agent::{ProcessAgent, ProcessAgents, ProcessOptions};
pub use child::AgentCommand;
pub use cli::{ProcessArgs, runner};
