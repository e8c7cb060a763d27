//! The Lambda functions' tests, one binary: configuration errors, the `api` handler driven by
//! real API Gateway HTTP API v2 events (through lambda_http's own adapter) against moto, the
//! reaper's handling of events and sweeps. The end-to-end runs under `cargo lambda watch` are
//! system tests (tests/system).
#![allow(unreachable_pub)]

mod auth;
mod config;
mod events;
mod handler;
mod iam;
mod reaper;
mod relay;
mod standby;
