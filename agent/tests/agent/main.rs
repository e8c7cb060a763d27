//! The agent runtime's integration tests, one binary: the anchor's launcher tests ported one
//! for one (`anchor_launcher`, `anchor_with_registry`) and the supervisor's guarantees on
//! paused time (`supervisor`).

// Helpers are `pub` for readability; the test binary exports nothing.
#![allow(unreachable_pub)]

mod anchor_launcher;
mod anchor_with_registry;
mod supervisor;
mod support;
