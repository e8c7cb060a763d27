//! agent-task's integration tests, one binary: the anchor's launcher tests ported one for one
//! (`anchor_launcher`, `anchor_with_registry`) and the supervisor's guarantees on paused time
//! (`supervisor`), and the local call protocol (`local_call`).

// Helpers are `pub` for readability; the test binary exports nothing.
#![allow(unreachable_pub)]

mod anchor_launcher;
mod anchor_with_registry;
mod local_call;
#[cfg(feature = "openai")]
mod openai;
mod supervisor;
mod support;
