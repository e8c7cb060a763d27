//! The Runner's tests, one binary: the command line (every option and environment fallback,
//! flag > env > code, checked through a re-executed child process so the environment is real)
//! and the server's lifecycle (readiness while warming up and draining, shutdown).
#![allow(unreachable_pub)]

mod cli;
mod serve;
mod support;
