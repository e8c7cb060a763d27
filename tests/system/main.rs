//! System tests, one binary: the real binaries (found and built once by
//! `switchboard_testkit::bins`) against the emulator the test command starts.
//!
//! - `lambda_watch`: the functions under `cargo lambda watch`, with the local ECS running
//!   the agent tasks;
//! - `chaos`: faults and seeded chaos on the serverless path, on the local ECS;
//! - `local_stack`: `infra/serverless-local.sh` itself, end to end;
//! - `reaper`: a SIGKILLed agent task ended by the sweep;
//! - `task`: the agent task's process (its environment, leases, signals);
//! - `cluster`: two `serve` nodes on one table;
//! - `binary`, `local_call`, `browser`: `serve` and `run`, the local call, the pages.
#![allow(unreachable_pub)]

mod binary;
mod browser;
mod chaos;
mod cluster;
mod events;
mod lambda_watch;
mod local_call;
mod local_stack;
mod process;
mod reaper;
mod task;

use std::sync::Arc;

/// One heavy test at a time: the chaos worlds and the local stack each run a dozen processes
/// against one emulator on 2 cores, and their short leases leave no room for another's load;
/// the browser tests take it too (Chromium once missed its 20 s start beside a chaos world),
/// and so do the two-node cluster tests (200 starts saw a minute of 503s beside one).
pub static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

use switchboard_local_ecs::{Config, EventSink, LocalEcs};

/// A local ECS for a test's cluster: the demo agent (the tests' copy) with JSON logs and a
/// participant that stays, the IAM recording passed on, no sweeps; `edit` adjusts the rest.
pub async fn local_ecs(
    cluster: &str,
    sink: Arc<dyn EventSink>,
    edit: impl FnOnce(&mut Config),
) -> LocalEcs {
    let agent = switchboard_testkit::bins::bin("demo-agent");
    let mut config = Config::new(cluster, &agent, &switchboard_testkit::endpoint());
    config.sweep_every = None;
    config.logs = std::env::temp_dir().join(format!("switchboard-tasks-{cluster}"));
    config.env = vec![
        ("SWITCHBOARD_LOG_FORMAT".to_owned(), "json".to_owned()),
        ("DEMO_PARTICIPANT_SECONDS".to_owned(), "3600".to_owned()),
    ];
    config.env.extend(switchboard_testkit::recording_env());
    edit(&mut config);
    LocalEcs::start(config, switchboard_testkit::ecs_client(), sink)
        .await
        .expect("the local ECS")
}

/// A loopback port free now (for a process that must be told its port).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}
