//! The demo agent's tests, one binary: its conversation and metrics on paused time, and the
//! real `demo-agent` binary under `serve` (SIGTERM drains and exits 0 with sessions ended
//! `shutdown`) and `run`.
#![allow(unreachable_pub)]

mod binary;
mod browser;
mod cluster;
mod conversation;
mod local_call;
mod task;
