//! The Lambda functions' tests, one binary: configuration errors, the `api` handler driven by
//! real API Gateway HTTP API v2 events (through lambda_http's own adapter) against moto, and
//! the end-to-end run under `cargo lambda watch`.
#![allow(unreachable_pub)]

mod auth;
mod chaos;
mod config;
mod events;
mod handler;
mod iam;
mod lambda_watch;
mod reaper;
