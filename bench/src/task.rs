//! `task`: the agent-task path (ECS mode) measured with real `demo-agent task` processes on a
//! DynamoDB table (moto, or anything at `AWS_ENDPOINT_URL`).
//!
//! Per maintenance interval it admits N sessions as the api function does (one `start`
//! transaction), starts one `demo-agent task` process per session with the environment an ECS
//! override gives it, and measures:
//! - **start**: admission → `running` from the row's own timestamps (the agent's process start,
//!   registry reads, agent creation and join), and spawn → `running` as seen from outside;
//! - **idle RSS** of a joined task, heartbeating, nobody talking;
//! - **close**: the close flag set (what `DELETE` does in ECS mode) → the process exited, for
//!   all N closed at one instant, so each exits at its own next heartbeat: bounded by one
//!   interval plus the end write.
//!
//! ECS's own provisioning (image pull, ENI) is not in these figures: on Fargate it adds tens
//! of seconds before the process starts, which the lease logic absorbs (docs/serverless.md).

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use switchboard_aws::DynamoRegistry;
use switchboard_aws::dynamodb::{client_from_env, create_table};
use switchboard_core::metrics::LatencySketch;
use switchboard_core::registry::{StartOutcome, StartRequest};
use switchboard_core::{
    CallId, CallType, Session, SessionId, SessionRegistry, SessionStatus, SystemClock,
};
use tokio::process::{Child, Command};

use crate::Sampled;

/// What `task` measured: one run per maintenance interval.
#[derive(Debug, serde::Serialize)]
pub(crate) struct TaskReport {
    pub(crate) table: String,
    pub(crate) runs: Vec<TaskRun>,
}

/// One run of `task`.
#[derive(Debug, serde::Serialize)]
pub(crate) struct TaskRun {
    pub(crate) interval_seconds: f64,
    pub(crate) tasks: usize,
    pub(crate) admit_to_running: Sampled,
    pub(crate) spawn_to_running: Sampled,
    pub(crate) idle_rss_bytes_median: u64,
    pub(crate) close_to_exit: Sampled,
}

impl TaskReport {
    pub(crate) fn print(&self, out: &mut String) {
        for run in &self.runs {
            let ms = |v: Option<f64>| v.unwrap_or(0.0);
            *out += &format!(
                "task, interval {} s, {} processes: admission → running p50 {:.0} ms, p95 {:.0} ms; spawn → running p50 {:.0} ms; idle RSS {:.1} MiB; close → exit p50 {:.0} ms, p95 {:.0} ms, max {:.0} ms\n",
                run.interval_seconds,
                run.tasks,
                ms(run.admit_to_running.p50_ms),
                ms(run.admit_to_running.p95_ms),
                ms(run.spawn_to_running.p50_ms),
                run.idle_rss_bytes_median as f64 / 1048576.0,
                ms(run.close_to_exit.p50_ms),
                ms(run.close_to_exit.p95_ms),
                ms(run.close_to_exit.max_ms),
            );
        }
    }
}

async fn admit(registry: &DynamoRegistry, call: &str) -> anyhow::Result<Session> {
    let request = StartRequest {
        session_id: SessionId::generate(),
        call_id: CallId::parse(call)?,
        call_type: CallType::default(),
        metadata: None,
        idempotency: None,
        max_concurrent_sessions: None,
        max_sessions_per_call: None,
        lease: Duration::from_secs(30),
    };
    match registry.start(request).await? {
        StartOutcome::Created(session) => Ok(session),
        StartOutcome::Replayed(_) => bail!("a fresh session id was replayed"),
    }
}

fn spawn_task(
    agent: &Path,
    table: &str,
    session: &Session,
    interval: f64,
) -> anyhow::Result<Child> {
    Command::new(agent)
        .args(["task", "--log-format", "json"])
        .env("SESSION_ID", session.id.to_string())
        .env("CALL_ID", session.call_id.as_str())
        .env("CALL_TYPE", session.call_type.as_str())
        .env("TABLE_NAME", table)
        .env("SWITCHBOARD_MAINTENANCE_INTERVAL", interval.to_string())
        // The scripted participant stays for the whole measurement.
        .env("DEMO_PARTICIPANT_SECONDS", "600")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| {
            format!(
                "could not start {} (build it with `cargo build --release -p demo-agent --features aws`)",
                agent.display()
            )
        })
}

/// Polls the row until the agent joined; returns it.
async fn until_running(registry: &DynamoRegistry, session: &Session) -> anyhow::Result<Session> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let row = registry
            .get(&session.call_id, session.id)
            .await?
            .context("the row disappeared")?;
        match row.status {
            SessionStatus::Running => return Ok(row),
            SessionStatus::Ended => {
                bail!("{} ended before it ran: {:?}", session.id, row.end_detail)
            }
            _ if Instant::now() > deadline => bail!("{} not running after 60 s", session.id),
            _ => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

/// Runs the measurement for each interval (seconds) with `tasks` processes each.
pub(crate) async fn measure(
    agent: &Path,
    table: &str,
    tasks: usize,
    intervals: &[f64],
) -> anyhow::Result<TaskReport> {
    let client = client_from_env().await;
    create_table(&client, table)
        .await
        .with_context(|| format!("could not create table {table} (it must not exist yet)"))?;
    let registry = Arc::new(DynamoRegistry::new(client, table, Arc::new(SystemClock)));
    let mut runs = Vec::new();
    for &interval in intervals {
        let (admit_to_running, spawn_to_running, close_to_exit) = (
            LatencySketch::new(),
            LatencySketch::new(),
            LatencySketch::new(),
        );
        let mut running = Vec::new();
        let mut joins = Vec::new();
        for i in 0..tasks {
            let session = admit(&registry, &format!("bench-task-{interval}-{i}")).await?;
            let spawned = Instant::now();
            let child = spawn_task(agent, table, &session, interval)?;
            // Watched from the moment it is spawned, while the next ones start.
            let (registry, watched) = (registry.clone(), session.clone());
            joins.push(tokio::spawn(async move {
                let row = until_running(&registry, &watched).await?;
                Ok::<_, anyhow::Error>((row, spawned.elapsed()))
            }));
            running.push((session, child));
            // Spread the heartbeat phases over the interval, as independent tasks have.
            tokio::time::sleep(Duration::from_secs_f64(interval / tasks as f64)).await;
        }
        for join in joins {
            let (row, seen_after) = join.await??;
            spawn_to_running.record(seen_after.as_secs_f64() * 1000.0);
            let joined = row.running_at.context("running without running_at")?;
            admit_to_running.record(joined.saturating_since(row.created_at).as_secs_f64() * 1000.0);
        }
        // Idle: joined, heartbeating, nobody talking.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let mut rss = Vec::new();
        for (_, child) in &running {
            rss.push(crate::rss_bytes_of(
                child.id().context("a task exited while idle")?,
            )?);
        }
        // Close all at one instant; each exits at its own next heartbeat.
        let asked = Instant::now();
        for (session, _) in &running {
            registry.request_close(&session.call_id, session.id).await?;
        }
        let exits = futures_exits(running.into_iter().map(|(_, child)| child)).await;
        for exit in exits {
            let (code, at) = exit?;
            if code != Some(0) {
                bail!("a task exited with {code:?} after its close");
            }
            close_to_exit.record(at.saturating_duration_since(asked).as_secs_f64() * 1000.0);
        }
        rss.sort_unstable();
        runs.push(TaskRun {
            interval_seconds: interval,
            tasks,
            admit_to_running: Sampled::of(&admit_to_running),
            spawn_to_running: Sampled::of(&spawn_to_running),
            idle_rss_bytes_median: rss[rss.len() / 2],
            close_to_exit: Sampled::of(&close_to_exit),
        });
    }
    Ok(TaskReport {
        table: table.to_owned(),
        runs,
    })
}

/// Waits for every child at once; each result is its exit code and the instant it exited.
async fn futures_exits(
    children: impl Iterator<Item = Child>,
) -> Vec<anyhow::Result<(Option<i32>, Instant)>> {
    let waits: Vec<_> = children
        .map(|mut child| {
            tokio::spawn(async move {
                let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
                    .await
                    .context("a task did not exit within 60 s of its close")??;
                Ok::<_, anyhow::Error>((status.code(), Instant::now()))
            })
        })
        .collect();
    let mut out = Vec::new();
    for wait in waits {
        out.push(wait.await.map_err(anyhow::Error::new).and_then(|r| r));
    }
    out
}
