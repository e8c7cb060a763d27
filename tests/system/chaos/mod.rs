//! Faults and chaos on the serverless path, with the real agent binary as each task's
//! container (see `world.rs`): a registry outage of two intervals across several agents, and
//! a seeded run of random operations from concurrent clients, checked by an observer that
//! counts live processes and moto's tasks and recomputes the counters from the rows.
//!
//! `SWITCHBOARD_CHAOS_SEEDS` (comma-separated numbers, or `random`) and
//! `SWITCHBOARD_CHAOS_OPS` (operations per client) size a longer run; see docs/serverless.md.

mod world;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use switchboard_core::{
    CallId, EndReason, LimitOptions, Limits, SessionId, SessionStatus, TaskLauncher,
};
use switchboard_testkit::http::request;
use world::{Settings, World};

fn limits(max: i64, per_call: i64, interval: f64, lease: f64) -> Limits {
    Limits::new(LimitOptions {
        max_concurrent_sessions: Some(max),
        max_sessions_per_call: Some(per_call),
        maintenance_interval: interval,
        session_lease_seconds: Some(lease),
        ..LimitOptions::default()
    })
    .unwrap()
}

/// Polls `done` every 100 ms; panics with `what` after `within`.
async fn wait_until(within: Duration, what: &str, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done().await {
        assert!(Instant::now() < deadline, "not within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Starts a session's task as the API does (row, RunTask, ARN), with `limits` in its task's
/// environment.
async fn launch(world: &World, call: &str, limits: Limits) -> switchboard_core::Session {
    let session = world
        .admit_only(call, limits.session_lease())
        .await
        .expect("admitted");
    let arn = world
        .launcher_for(limits)
        .launch(&session)
        .await
        .expect("RunTask")
        .task_arn
        .expect("an ARN");
    use switchboard_core::SessionRegistry;
    world
        .registry
        .attach_task(&session.call_id, session.id, &arn, None)
        .await
        .unwrap();
    session
}

async fn row(world: &World, call: &CallId, id: SessionId) -> switchboard_core::Session {
    use switchboard_core::SessionRegistry;
    world.registry.get(call, id).await.unwrap().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_outage_of_two_intervals_keeps_the_agents_whose_lease_holds_and_stops_the_others_once()
 {
    let _one = crate::HEAVY.lock().await;
    // Interval 2 s (room for a loaded emulator's latency), outage 4 s. Three agents hold a
    // 20 s lease (it outlasts the outage), three a 6 s lease (it cannot: the agent gives up
    // one interval before it expires, at most 4 s after its last renewal).
    let short_limits = limits(10, 10, 2.0, 6.0);
    let long_limits = limits(10, 10, 2.0, 20.0);
    let outage = short_limits.maintenance_interval() * 2;
    let world = World::start(Settings {
        limits: short_limits,
        pool: 0,
        seed: 1,
    })
    .await;
    world.hold_events(); // the sweep, not an event, must find the short ones first
    let calls = ["outage-long", "outage-short"];
    let mut long = Vec::new();
    let mut short = Vec::new();
    for _ in 0..3 {
        long.push(launch(&world, calls[0], long_limits).await);
        short.push(launch(&world, calls[1], short_limits).await);
    }
    let all: Vec<_> = long.iter().chain(&short).cloned().collect();
    // Running, and each lease renewed by a heartbeat since (not just the admission's).
    wait_until(
        Duration::from_secs(60),
        "all six agents running and heartbeating",
        async || {
            for s in &all {
                let r = row(&world, &s.call_id, s.id).await;
                if r.status != SessionStatus::Running
                    || r.heartbeat_at.is_none_or(|hb| Some(hb) <= r.running_at)
                {
                    return false;
                }
            }
            world.alive_agents().await.len() == 6
        },
    )
    .await;

    // The outage: the agents' connections to the table are cut for 2 intervals.
    world.local.cut_all();
    tokio::time::sleep(outage).await;
    world.local.restore_all();
    let restored = switchboard_core::Timestamp::now_system();

    // The short-lease agents stop themselves before their lease expires; each session ends
    // lease_expired once (by its agent if the table came back in time, else by the sweep).
    wait_until(
        Duration::from_secs(30),
        "the short-lease sessions ended and their agents exited",
        async || {
            let exits = world.exits();
            for s in &short {
                if !row(&world, &s.call_id, s.id).await.is_ended()
                    || !exits.iter().any(|e| e.session_id == s.id.to_string())
                {
                    return false;
                }
            }
            true
        },
    )
    .await;
    let exits = world.exits();
    for s in &short {
        let r = row(&world, &s.call_id, s.id).await;
        assert_eq!(r.end_reason, Some(EndReason::LeaseExpired), "{r:?}");
        let exit = exits
            .iter()
            .find(|e| e.session_id == s.id.to_string())
            .expect("waited for");
        assert_eq!(exit.code, Some(1), "the lease was lost: exit 1");
        assert!(
            exit.at < r.lease_expires_at,
            "the agent exited at {:?}, after its lease expired at {:?}",
            exit.at,
            r.lease_expires_at
        );
        eprintln!(
            "short lease: exit {:?} {:?} before the lease expired; ended by {} {:?} after the outage",
            exit.code,
            r.lease_expires_at.saturating_since(exit.at),
            if r.end_detail.is_some() {
                "the sweep"
            } else {
                "its agent"
            },
            r.ended_at.unwrap().saturating_since(restored),
        );
        if r.end_detail.is_some() {
            assert!(
                r.ended_at.unwrap() >= r.lease_expires_at,
                "the sweep ended it before the lease expired: {r:?}"
            );
        }
    }

    // The long-lease agents kept running and renewed their leases after the outage.
    wait_until(
        Duration::from_secs(15),
        "the long-lease agents renewed their leases",
        async || {
            for s in &long {
                let r = row(&world, &s.call_id, s.id).await;
                if r.status != SessionStatus::Running
                    || r.heartbeat_at.is_none_or(|at| at <= restored)
                {
                    return false;
                }
            }
            true
        },
    )
    .await;
    let mut alive: Vec<String> = world
        .alive_agents()
        .await
        .into_iter()
        .map(|a| a.session_id)
        .collect();
    alive.sort();
    let mut expected: Vec<String> = long.iter().map(|s| s.id.to_string()).collect();
    expected.sort();
    assert_eq!(alive, expected, "exactly the long-lease agents are alive");

    // ECS's STOPPED events for the short ones arrive late, each 1–3 times: nothing ends again.
    world.release_events();
    wait_until(
        Duration::from_secs(30),
        "the events delivered",
        async || world.events_pending() == 0,
    )
    .await;
    let outcomes = world.event_outcomes();
    assert!(
        !outcomes.keys().any(|k| k.starts_with("ended")),
        "an event ended a session the sweep or the agent had ended: {outcomes:?}"
    );
    assert!(
        outcomes.get("already ended").copied().unwrap_or(0) >= 3,
        "{outcomes:?}"
    );
    eprintln!("late events: {outcomes:?}");
    world
        .await_consistent(&calls, Duration::from_secs(30))
        .await;

    // The survivors close normally.
    for s in &long {
        let path = format!("/calls/{}/sessions/{}", s.call_id, s.id);
        assert_eq!(
            request(&world.api, "DELETE", &path, &[], "").await.status,
            202
        );
    }
    world
        .await_consistent(&calls, Duration::from_secs(30))
        .await;
    for s in &long {
        let r = row(&world, &s.call_id, s.id).await;
        assert_eq!(r.end_reason, Some(EndReason::Requested), "{r:?}");
    }
    let violations = std::mem::take(&mut world.observations.lock().unwrap().violations);
    world.stop().await;
    assert!(violations.is_empty(), "{violations:#?}");
    world.discard_logs();
}

// ---- chaos ----

const CALLS: [&str; 3] = ["chaos-a", "chaos-b", "chaos-c"];

/// Seeds that once failed, then the base seed. 4: an agent lingering after its own end
/// (and a provisioning model shorter than that) showed 3 live agents in a call limited to 2.
const REGRESSION_SEEDS: [u64; 1] = [4];
const BASE_SEED: u64 = 20_261_128;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Op {
    Start,
    Close,
    Kill9,
    CrashBeforeRunTask,
    CrashBeforeArn,
    ReplayEvent,
    Outage,
    Pause,
    StartThenKillItsStandby,
    KillIdleStandby,
    Deploy,
}

/// Warm standbys in the chaos world.
const POOL: u32 = 2;

const WEIGHTS: [(Op, u32); 11] = [
    (Op::Start, 30),
    (Op::Close, 9),
    (Op::Kill9, 6),
    (Op::CrashBeforeRunTask, 4),
    (Op::CrashBeforeArn, 4),
    (Op::ReplayEvent, 10),
    (Op::Outage, 3),
    (Op::Pause, 14),
    (Op::StartThenKillItsStandby, 5),
    (Op::KillIdleStandby, 3),
    // Once per run (the first pick deploys; later picks are no-ops).
    (Op::Deploy, 2),
];

fn pick(rng: &mut fastrand::Rng) -> Op {
    let total: u32 = WEIGHTS.iter().map(|w| w.1).sum();
    let mut n = rng.u32(0..total);
    for (op, w) in WEIGHTS {
        if n < w {
            return op;
        }
        n -= w;
    }
    Op::Pause
}

#[derive(Debug, Default)]
struct Tally {
    ops: BTreeMap<String, u32>,
    statuses: BTreeMap<String, u32>,
    unexpected: Vec<String>,
}

struct Shared {
    world: Arc<World>,
    known: Mutex<Vec<(String, String)>>,
    tally: Mutex<Tally>,
    outage: AtomicBool,
    deployed: AtomicBool,
}

async fn client(shared: Arc<Shared>, mut rng: fastrand::Rng, ops: u32) {
    let world = &shared.world;
    for _ in 0..ops {
        let op = pick(&mut rng);
        let done = {
            let _op = world.op();
            perform(&shared, op, &mut rng).await
        };
        let key = format!("{op:?}{}", if done { "" } else { " (no-op)" });
        *shared.tally.lock().unwrap().ops.entry(key).or_default() += 1;
        tokio::time::sleep(Duration::from_millis(rng.u64(100..500))).await;
    }
}

/// Performs one operation; false if there was nothing to do it to.
async fn perform(shared: &Shared, op: Op, rng: &mut fastrand::Rng) -> bool {
    let world = &shared.world;
    let call = CALLS[rng.usize(0..CALLS.len())];
    match op {
        Op::Start => {
            let path = format!("/calls/{call}/sessions");
            let reply = request(&world.api, "POST", &path, &[], "").await;
            record(shared, "POST", reply.status, &[201, 429, 503], &reply.body);
            if reply.status == 201 {
                let id = reply.json()["session_id"].as_str().unwrap().to_owned();
                shared.known.lock().unwrap().push((call.to_owned(), id));
            }
            true
        }
        Op::Close => {
            // One of the last few started: mostly live ones, sometimes an ended one (404).
            let target = {
                let known = shared.known.lock().unwrap();
                let recent = known.len().saturating_sub(4);
                (!known.is_empty()).then(|| known[rng.usize(recent..known.len())].clone())
            };
            let Some((call, id)) = target else {
                return false;
            };
            let path = format!("/calls/{call}/sessions/{id}");
            let reply = request(&world.api, "DELETE", &path, &[], "").await;
            record(shared, "DELETE", reply.status, &[202, 404], &reply.body);
            true
        }
        Op::Kill9 => world.kill_one(rng).is_some(),
        Op::CrashBeforeRunTask => {
            let lease = world.settings.limits.session_lease();
            let Some(s) = world.admit_only(call, lease).await else {
                return false;
            };
            shared
                .known
                .lock()
                .unwrap()
                .push((call.to_owned(), s.id.to_string()));
            true
        }
        Op::CrashBeforeArn => {
            let Some(s) = world.admit_and_run_task(call).await else {
                return false;
            };
            shared
                .known
                .lock()
                .unwrap()
                .push((call.to_owned(), s.id.to_string()));
            true
        }
        Op::ReplayEvent => world.replay_event(rng),
        Op::Outage => {
            if shared.outage.swap(true, Ordering::SeqCst) {
                return false;
            }
            world.local.cut_all();
            tokio::time::sleep(world.settings.limits.maintenance_interval() * 2).await;
            world.local.restore_all();
            shared.outage.store(false, Ordering::SeqCst);
            true
        }
        Op::Pause => {
            tokio::time::sleep(Duration::from_millis(rng.u64(50..300))).await;
            true
        }
        Op::StartThenKillItsStandby => {
            let path = format!("/calls/{call}/sessions");
            let reply = request(&world.api, "POST", &path, &[], "").await;
            record(shared, "POST", reply.status, &[201, 429, 503], &reply.body);
            if reply.status != 201 {
                return false;
            }
            let id = reply.json()["session_id"].as_str().unwrap().to_owned();
            shared
                .known
                .lock()
                .unwrap()
                .push((call.to_owned(), id.clone()));
            // Claimed: killed most often before its agent joined (the wake-up is a 200 ms
            // poll). Started cold: nothing to kill.
            world.kill_claimed_standby(&id).await
        }
        Op::KillIdleStandby => world.kill_idle_standby(rng).await,
        Op::Deploy => {
            if shared.deployed.swap(true, Ordering::SeqCst) {
                return false;
            }
            let arn = world.deploy().await;
            eprintln!("chaos: deployed {arn}");
            true
        }
    }
}

fn record(shared: &Shared, method: &str, status: u16, expected: &[u16], body: &str) {
    let mut tally = shared.tally.lock().unwrap();
    *tally
        .statuses
        .entry(format!("{method} {status}"))
        .or_default() += 1;
    if !expected.contains(&status) {
        tally
            .unexpected
            .push(format!("{method} answered {status}: {body}"));
    }
}

fn seeds() -> Vec<u64> {
    match std::env::var("SWITCHBOARD_CHAOS_SEEDS") {
        Ok(v) if v.trim() == "random" => vec![fastrand::u64(..)],
        Ok(v) => v
            .split(',')
            .map(|s| s.trim().parse().expect("SWITCHBOARD_CHAOS_SEEDS: numbers"))
            .collect(),
        Err(_) => REGRESSION_SEEDS
            .iter()
            .copied()
            .chain([BASE_SEED])
            .collect(),
    }
}

fn ops_per_client() -> u32 {
    std::env::var("SWITCHBOARD_CHAOS_OPS")
        .ok()
        .map_or(80, |v| v.parse().expect("SWITCHBOARD_CHAOS_OPS: a number"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeded_chaos_never_sees_more_agents_than_a_limit_and_ends_consistent() {
    let _one = crate::HEAVY.lock().await;
    for seed in seeds() {
        chaos(seed, ops_per_client()).await;
    }
}

async fn chaos(seed: u64, ops: u32) {
    const CLIENTS: u64 = 3;
    eprintln!(
        "chaos seed {seed}, {CLIENTS} clients × {ops} operations (replay: SWITCHBOARD_CHAOS_SEEDS={seed})"
    );
    let started = Instant::now();
    let world = World::start(Settings {
        limits: limits(4, 2, 1.0, 3.0),
        pool: POOL,
        seed,
    })
    .await;
    let shared = Arc::new(Shared {
        world: world.clone(),
        known: Mutex::default(),
        tally: Mutex::default(),
        outage: AtomicBool::new(false),
        deployed: AtomicBool::new(false),
    });
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let rng = fastrand::Rng::with_seed(seed.wrapping_mul(31).wrapping_add(i + 1));
            tokio::spawn(client(shared.clone(), rng, ops))
        })
        .collect();
    for c in clients {
        c.await.expect("a client panicked");
    }
    let chaos_took = started.elapsed();

    // Quiescence: no operation, the table reachable, events delivered, leases settled.
    world
        .await_consistent(&CALLS, Duration::from_secs(60))
        .await;
    let live_at_quiescence = world.alive_agents().await.len();

    // Then every live session is closed through the API, and everything comes back to zero.
    for r in world.rows().await.iter().filter(|r| !r.is_ended()) {
        let path = format!("/calls/{}/sessions/{}", r.call_id, r.id);
        let status = request(&world.api, "DELETE", &path, &[], "").await.status;
        assert_eq!(status, 202, "closing {path}");
    }
    world
        .await_consistent(&CALLS, Duration::from_secs(30))
        .await;
    let rows = world.rows().await;
    let mut reasons: BTreeMap<String, u32> = BTreeMap::new();
    for r in &rows {
        *reasons
            .entry(r.end_reason.map_or("none".into(), |e| e.to_string()))
            .or_default() += 1;
    }
    let joined = rows.iter().filter(|r| r.joined()).count();
    let processes = world.agents_started();
    world.stop().await;

    let tally = shared.tally.lock().unwrap();
    let obs = world.observations.lock().unwrap();
    eprintln!(
        "chaos seed {seed}: chaos {chaos_took:?}, total {:?}\n  operations {:?}\n  API {:?}\n  events {:?}\n  sweeps {:?}\n  {} sessions, {processes} agent processes, {joined} joined; end reasons {reasons:?}\n  observer: {} samples, at most {} live agents and {} RUNNING tasks, an agent alive up to {:?} after recording its own end; {} live at quiescence",
        started.elapsed(),
        tally.ops,
        tally.statuses,
        world.event_outcomes(),
        world.sweep_totals(),
        rows.len(),
        obs.samples,
        obs.max_agents,
        obs.max_running_tasks,
        obs.alive_after_own_end,
        live_at_quiescence,
    );
    assert!(
        tally.unexpected.is_empty(),
        "seed {seed}: {:#?}",
        tally.unexpected
    );
    assert!(
        obs.violations.is_empty(),
        "seed {seed}: {:#?}\nagent logs: {}",
        obs.violations,
        world.logs().display()
    );
    assert!(
        world.ended_twice_by_events().is_empty(),
        "seed {seed}: ended twice by events: {:?}",
        world.ended_twice_by_events()
    );
    assert!(obs.samples > 0, "the observer never sampled");
    assert!(
        rows.iter().all(|r| r.is_ended() && r.end_reason.is_some()),
        "seed {seed}: every session ended with a reason"
    );
    // The reasons are true: a session whose agent never joined ended start_failed (or
    // requested, by its agent, which came up to a closed session), never as if it had run.
    let untrue: Vec<_> = rows
        .iter()
        .filter(|r| match r.end_reason {
            Some(EndReason::StartFailed) => r.running_at.is_some(),
            Some(EndReason::Requested) => false,
            _ => r.running_at.is_none(),
        })
        .map(|r| (r.id, r.end_reason, r.running_at, r.end_detail.clone()))
        .collect();
    assert!(
        untrue.is_empty(),
        "seed {seed}: untrue end reasons: {untrue:#?}"
    );
    world.discard_logs();
}
