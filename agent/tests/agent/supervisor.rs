//! The supervisor's guarantees, on paused time: closes act at once in-process, limits close
//! within one interval, a lost lease stops the agent before it expires, a slow factory blocks
//! nobody, and every way a session ends frees its slots exactly once.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use switchboard_agent::{AgentLauncher, AgentSession};
use switchboard_core::metrics::{Counter, Latency};
use switchboard_core::registry::{EndRequest, ListQuery};
use switchboard_core::{
    CallType, Clock, EndReason, Error, LimitKind, Metadata, Session, SessionRegistry,
    SessionStatus, TokioClock,
};
use tokio::time::Instant;

use crate::support::{FlakyRegistry, TestAgent, call, secs_between, started};

#[tokio::test(start_paused = true)]
async fn an_in_process_close_completes_with_no_virtual_time_advanced() {
    let (launcher, _) = started(|b| b).await;
    let session = launcher
        .start_session(call("busy-1"), CallType::default(), None)
        .await
        .unwrap();
    let before = Instant::now();
    launcher
        .request_close_session(&call("busy-1"), session.id())
        .await
        .unwrap();
    let end = session.wait().await;
    assert_eq!(Instant::now(), before, "no virtual time passed");
    assert_eq!(end.reason, EndReason::Requested);
    assert!(end.recorded);
    let row = launcher
        .get_session_info(&call("busy-1"), session.id())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.status, SessionStatus::Ended);
    assert!(session.agent().unwrap().closed());
    let again = launcher
        .request_close_session(&call("busy-1"), session.id())
        .await;
    assert!(
        matches!(again, Err(Error::NotFound)),
        "closing an ended session is 404"
    );
}

#[tokio::test(start_paused = true)]
async fn a_close_flag_set_elsewhere_is_seen_within_one_interval() {
    let (launcher, _) = started(|b| b.maintenance_interval(5.0)).await;
    let session = launcher
        .start_session(call("busy-1"), CallType::default(), None)
        .await
        .unwrap();
    // Another node sets the flag in the shared registry; this node is not told directly.
    launcher
        .registry()
        .request_close(&call("busy-1"), session.id())
        .await
        .unwrap();
    let before = Instant::now();
    let end = session.wait().await;
    assert!(
        before.elapsed() <= Duration::from_secs(5),
        "{:?}",
        before.elapsed()
    );
    assert_eq!(end.reason, EndReason::Requested);
}

#[tokio::test(start_paused = true)]
async fn idle_closes_within_one_interval_of_the_timeout() {
    let (launcher, _) = started(|b| b.agent_idle_timeout(10.0).maintenance_interval(5.0)).await;
    let joined = Instant::now();
    let session = launcher
        .start_session(call("alone-1"), CallType::default(), None)
        .await
        .unwrap();
    let end = session.wait().await;
    let elapsed = joined.elapsed().as_secs_f64();
    assert_eq!(end.reason, EndReason::Idle);
    assert!((10.0..=15.0).contains(&elapsed), "closed after {elapsed}s");
}

#[tokio::test(start_paused = true)]
async fn the_idle_clock_starts_when_the_last_participant_leaves() {
    let (launcher, _) = started(|b| b.agent_idle_timeout(10.0)).await;
    let t0 = Instant::now();
    let session = launcher
        .start_session(call("visit-1"), CallType::default(), None)
        .await
        .unwrap();
    let end = session.wait().await;
    let elapsed = t0.elapsed().as_secs_f64();
    assert_eq!(end.reason, EndReason::Idle);
    // The visitor leaves at 3 s; idle from then on for 10 s.
    assert!((13.0..=18.0).contains(&elapsed), "closed after {elapsed}s");
}

#[tokio::test(start_paused = true)]
async fn max_duration_closes_within_one_interval() {
    let (launcher, _) = started(|b| {
        b.max_session_duration_seconds(60.0)
            .maintenance_interval(5.0)
    })
    .await;
    let t0 = Instant::now();
    let session = launcher
        .start_session(call("busy-1"), CallType::default(), None)
        .await
        .unwrap();
    let end = session.wait().await;
    let elapsed = t0.elapsed().as_secs_f64();
    assert_eq!(end.reason, EndReason::MaxDuration);
    assert!((60.0..=65.0).contains(&elapsed), "closed after {elapsed}s");
}

/// A busy session on a registry that can fail, 5 s interval, 30 s lease, after its two
/// good heartbeats (5 s, 10 s).
async fn busy_after_two_heartbeats() -> (
    Arc<dyn Clock>,
    Arc<FlakyRegistry>,
    AgentLauncher<TestAgent>,
    AgentSession<TestAgent>,
) {
    let clock: Arc<dyn Clock> = Arc::new(TokioClock::new());
    let registry = Arc::new(FlakyRegistry::memory(clock.clone()));
    let (launcher, _) = started(|b| {
        b.clock(clock.clone())
            .registry(registry.clone())
            .maintenance_interval(5.0)
            .session_lease_seconds(30.0)
    })
    .await;
    let session = launcher
        .start_session(call("busy-1"), CallType::default(), None)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(12)).await;
    (clock, registry, launcher, session)
}

/// The `busy-1` session's row, read past the injected faults.
async fn busy_row(registry: &FlakyRegistry, session: &AgentSession<TestAgent>) -> Session {
    registry
        .inner
        .get(&call("busy-1"), session.id())
        .await
        .unwrap()
        .expect("the row")
}

#[tokio::test(start_paused = true)]
async fn a_supervisor_that_cannot_renew_its_lease_stops_its_agent_before_the_lease_expires() {
    let (clock, registry, _launcher, session) = busy_after_two_heartbeats().await;
    let row = busy_row(&registry, &session).await;
    let lease_expires_at = row.lease_expires_at;
    registry.outage.store(true, Ordering::SeqCst);

    let end = session.wait().await;
    assert_eq!(end.reason, EndReason::LeaseExpired);
    assert!(
        !end.recorded,
        "the registry is down: nothing could be written"
    );
    let stopped_at = clock.now();
    assert!(
        stopped_at < lease_expires_at,
        "agent stopped {}s after the lease expired",
        secs_between(lease_expires_at, stopped_at)
    );
    assert!(session.agent().unwrap().closed());
    // The row is still live (the registry was down); its slot is held until the lease expires.
    let row = busy_row(&registry, &session).await;
    assert_ne!(row.status, SessionStatus::Ended);

    // The outage ends; the next sweep after expiry frees the slot, reason lease_expired.
    registry.outage.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(30)).await;
    let row = busy_row(&registry, &session).await;
    assert_eq!(row.status, SessionStatus::Ended);
    assert_eq!(row.end_reason, Some(EndReason::LeaseExpired));
    assert!(
        row.ended_at.unwrap() >= lease_expires_at,
        "never freed before the lease expired"
    );
    assert_eq!(
        registry.inner.counts(&call("busy-1")).await.unwrap().global,
        0
    );
}

#[tokio::test(start_paused = true)]
async fn a_metrics_flush_that_never_answers_stops_the_agent_before_its_lease_expires() {
    let (clock, registry, launcher, session) = busy_after_two_heartbeats().await;
    // The store answers heartbeats but no longer flushes; the agent has new metrics to flush.
    registry.hang_flushes.store(true, Ordering::SeqCst);
    session.metrics().on_tool_call(Duration::from_millis(12));

    // Without a bound on the flush, the supervisor would wait on it forever.
    let end = tokio::time::timeout(Duration::from_secs(120), session.wait())
        .await
        .expect("the supervisor is still waiting on the hung flush");
    assert_eq!(end.reason, EndReason::LeaseExpired);
    let stopped_at = clock.now();
    // The heartbeat at 15 s renewed the lease to 45 s; the flush after it hung.
    let row = busy_row(&registry, &session).await;
    assert!(
        stopped_at < row.lease_expires_at,
        "agent stopped {}s after the lease expired",
        secs_between(row.lease_expires_at, stopped_at)
    );
    assert!(session.agent().unwrap().closed());
    launcher.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_short_outage_does_not_stop_the_agent() {
    let clock: Arc<dyn Clock> = Arc::new(TokioClock::new());
    let registry = Arc::new(FlakyRegistry::memory(clock.clone()));
    let (launcher, _) = started(|b| {
        b.clock(clock.clone())
            .registry(registry.clone())
            .maintenance_interval(5.0)
    })
    .await;
    let session = launcher
        .start_session(call("busy-1"), CallType::default(), None)
        .await
        .unwrap();
    registry.outage.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(15)).await;
    registry.outage.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert!(!session.finished());
    let row = busy_row(&registry, &session).await;
    assert!(
        row.lease_expires_at > clock.now(),
        "the lease was renewed after the outage"
    );
    launcher.stop().await;
}

#[tokio::test(start_paused = true)]
async fn the_lease_sweep_ends_sessions_whose_node_vanished() {
    let clock: Arc<dyn Clock> = Arc::new(TokioClock::new());
    let registry: Arc<dyn SessionRegistry> =
        Arc::new(switchboard_core::MemoryRegistry::new(clock.clone()));
    // A "dead node": sessions admitted in the shared registry that nobody supervises, one
    // whose agent had joined (running) and one still starting.
    let mut orphans = Vec::new();
    for name in ["orphan-running", "orphan-starting"] {
        match registry
            .start(switchboard_core::conformance::request(&call(name)))
            .await
            .unwrap()
        {
            switchboard_core::registry::StartOutcome::Created(s) => orphans.push(s),
            other => panic!("{other:?}"),
        }
    }
    registry
        .mark_running(&orphans[0].call_id, orphans[0].id)
        .await
        .unwrap();
    let (_launcher, _) = started(|b| b.clock(clock.clone()).registry(registry.clone())).await;
    tokio::time::sleep(Duration::from_secs(29)).await;
    for orphan in &orphans {
        let row = registry
            .get(&orphan.call_id, orphan.id)
            .await
            .unwrap()
            .unwrap();
        assert!(!row.is_ended(), "the lease still holds: {row:?}");
    }
    tokio::time::sleep(Duration::from_secs(10)).await;
    let mut reasons = Vec::new();
    for orphan in &orphans {
        let row = registry
            .get(&orphan.call_id, orphan.id)
            .await
            .unwrap()
            .unwrap();
        assert!(row.ended_at.unwrap() >= row.lease_expires_at, "{row:?}");
        reasons.push(row.end_reason);
    }
    // The agent that joined ran until its node vanished; the other never started.
    assert_eq!(
        reasons,
        [Some(EndReason::LeaseExpired), Some(EndReason::StartFailed)]
    );
    let counts = registry.counts(&orphans[0].call_id).await.unwrap();
    assert_eq!(counts.global, 0, "both slots released");
}

#[tokio::test(start_paused = true)]
async fn a_create_agent_that_never_returns_does_not_delay_another_start() {
    // No join deadline here: what a stuck start holds, for as long as it is stuck.
    let (launcher, _) = started(|b| b.agent_join_timeout(0.0)).await;
    let stuck = {
        let launcher = launcher.clone();
        tokio::spawn(async move {
            launcher
                .start_session(call("stuck-1"), CallType::default(), None)
                .await
        })
    };
    tokio::task::yield_now().await;
    let before = Instant::now();
    let other = launcher
        .start_session(call("busy-1"), CallType::default(), None)
        .await
        .unwrap();
    assert_eq!(Instant::now(), before, "the other start did not wait");
    assert!(other.agent().is_some());
    assert!(!stuck.is_finished());
    // The stuck session still holds a live, leased row (its supervisor heartbeats meanwhile).
    tokio::time::sleep(Duration::from_secs(120)).await;
    let page = launcher
        .registry()
        .list(ListQuery {
            call_id: Some(call("stuck-1")),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(page.sessions.len(), 1);
    assert_eq!(page.sessions[0].session.status, SessionStatus::Starting);
    // Shutdown ends it too, and the stuck start returns.
    launcher.stop().await;
    let stuck_result = stuck.await.unwrap();
    assert!(stuck_result.is_ok(), "{stuck_result:?}");
    let row = &launcher
        .registry()
        .list(ListQuery {
            call_id: Some(call("stuck-1")),
            include_ended: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .sessions[0]
        .session;
    assert_eq!(row.end_reason, Some(EndReason::Shutdown));
}

#[tokio::test(start_paused = true)]
async fn a_failing_join_call_ends_agent_failed_and_frees_the_slot() {
    let (launcher, _) = started(|b| b.max_concurrent_sessions(1)).await;
    let s = launcher
        .start_session(call("fail-1"), CallType::default(), None)
        .await
        .unwrap();
    let end = s.wait().await;
    assert_eq!(end.reason, EndReason::AgentFailed);
    assert_eq!(end.detail.as_deref(), Some("call refused the agent"));
    let row = launcher
        .get_session_info(&call("fail-1"), s.id())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.end_detail.as_deref(), Some("call refused the agent"));
    launcher
        .start_session(call("busy-2"), CallType::default(), None)
        .await
        .unwrap();
    launcher.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_failing_create_agent_is_a_launch_failure_that_frees_the_slot() {
    let (launcher, _) = started(|b| b.max_concurrent_sessions(1)).await;
    let err = launcher
        .start_session(call("createfail-1"), CallType::default(), None)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::LaunchFailed(_)), "{err:?}");
    let page = launcher
        .registry()
        .list(ListQuery {
            call_id: Some(call("createfail-1")),
            include_ended: true,
            ..Default::default()
        })
        .await
        .unwrap();
    let row = &page.sessions[0].session;
    assert_eq!(row.end_reason, Some(EndReason::StartFailed));
    assert!(
        row.end_detail
            .as_deref()
            .unwrap()
            .contains("no credentials for the model")
    );
    launcher
        .start_session(call("busy-2"), CallType::default(), None)
        .await
        .unwrap();
    launcher.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_failing_warmup_closes_the_agent_and_ends_start_failed() {
    let (launcher, probe) = started(|b| b).await;
    let closes_before = probe.closes.load(Ordering::SeqCst);
    let err = launcher
        .start_session(call("warmfail-1"), CallType::default(), None)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::LaunchFailed(_)));
    assert_eq!(
        probe.closes.load(Ordering::SeqCst),
        closes_before + 1,
        "the agent was closed"
    );
    assert_eq!(
        launcher
            .registry()
            .counts(&call("warmfail-1"))
            .await
            .unwrap()
            .global,
        0
    );
}

#[tokio::test(start_paused = true)]
async fn metrics_flush_only_when_changed_and_the_end_keeps_the_final_values() {
    let (launcher, _) = started(|b| b.maintenance_interval(1.0)).await;
    let s = launcher
        .start_session(call("busy-1"), CallType::default(), None)
        .await
        .unwrap();
    let agent = s.agent().unwrap();
    agent.metrics().on_llm_response(
        Duration::from_millis(200),
        Some(Duration::from_millis(80)),
        switchboard_core::metrics::Usage::new(10, 20),
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let registry = launcher.registry();
    let first = registry
        .get_metrics(&call("busy-1"), s.id())
        .await
        .unwrap()
        .unwrap()
        .report
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let unchanged = registry
        .get_metrics(&call("busy-1"), s.id())
        .await
        .unwrap()
        .unwrap()
        .report
        .unwrap();
    assert_eq!(
        unchanged.generated_at, first.generated_at,
        "no flush without a change"
    );
    agent.metrics().on_tool_call(Duration::from_millis(5));
    launcher.close_session(s.id(), true).await;
    let page = registry
        .list(ListQuery {
            call_id: Some(call("busy-1")),
            include_ended: true,
            ..Default::default()
        })
        .await
        .unwrap();
    let last = page.sessions[0].final_metrics.as_ref().unwrap();
    assert_eq!(last.metrics.total(Counter::LlmToolCalls), 1);
    assert_eq!(
        last.metrics.latency(Latency::LlmLatencyMs).avg_ms(),
        Some(200.0)
    );
}

#[tokio::test(start_paused = true)]
async fn a_session_ended_elsewhere_stops_its_agent_without_rewriting_the_end() {
    let (launcher, _) = started(|b| b.maintenance_interval(5.0)).await;
    let s = launcher
        .start_session(call("busy-1"), CallType::default(), None)
        .await
        .unwrap();
    launcher
        .registry()
        .end(
            &call("busy-1"),
            s.id(),
            EndRequest::new(EndReason::TaskStopped).detail("reaper"),
        )
        .await
        .unwrap();
    let end = s.wait().await;
    assert!(!end.recorded);
    assert!(s.agent().unwrap().closed());
    let row = launcher
        .get_session_info(&call("busy-1"), s.id())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        row.end_reason,
        Some(EndReason::TaskStopped),
        "the first end stands"
    );
}

#[tokio::test(start_paused = true)]
async fn with_the_join_deadline_off_a_session_that_never_joins_stays_starting_and_its_clocks_do_not_run()
 {
    let (launcher, _) = started(|b| {
        b.agent_idle_timeout(1.0)
            .max_session_duration_seconds(2.0)
            .agent_join_timeout(0.0)
    })
    .await;
    let s = launcher
        .start_session(call("nojoin-1"), CallType::default(), None)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(600)).await;
    assert!(!s.finished());
    let row = launcher
        .get_session_info(&call("nojoin-1"), s.id())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.status, SessionStatus::Starting);
    launcher.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_session_that_never_joins_ends_start_failed_at_its_join_deadline_and_frees_its_slot() {
    let (launcher, _) = started(|b| {
        b.max_concurrent_sessions(1)
            .agent_idle_timeout(1.0)
            .max_session_duration_seconds(2.0)
            .agent_join_timeout(10.0)
    })
    .await;
    let created = Instant::now();
    let s = launcher
        .start_session(call("nojoin-1"), CallType::default(), None)
        .await
        .unwrap();
    // Neither the idle clock nor the maximum duration runs before the agent joins.
    tokio::time::sleep(Duration::from_millis(9_900)).await;
    assert!(!s.finished(), "ended before its join deadline");
    let end = s.wait().await;
    assert_eq!(
        created.elapsed(),
        Duration::from_secs(10),
        "10 s from create_agent"
    );
    assert_eq!(end.reason, EndReason::StartFailed);
    assert!(end.recorded);
    let detail = end.detail.unwrap();
    assert_eq!(
        detail,
        "the agent did not join its call within 10s of create_agent (agent_join_timeout)"
    );
    let row = launcher
        .get_session_info(&call("nojoin-1"), s.id())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.end_reason, Some(EndReason::StartFailed));
    assert_eq!(row.end_detail.as_deref(), Some(detail.as_str()));
    assert!(s.agent().unwrap().closed(), "the agent was closed");
    // Its slot came back.
    launcher
        .start_session(call("busy-1"), CallType::default(), None)
        .await
        .expect("the slot is free again");
    launcher.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_create_agent_that_never_returns_fails_its_start_at_the_join_deadline() {
    // The default deadline, 60 s, counts from create_agent: a factory stuck that long fails
    // the start (whoever waits for it hears why) and frees the slot.
    let (launcher, _) = started(|b| b.max_concurrent_sessions(1)).await;
    let before = Instant::now();
    let stuck = launcher
        .start_session(call("stuck-1"), CallType::default(), None)
        .await
        .expect_err("a start whose agent is never created fails");
    assert_eq!(before.elapsed(), Duration::from_secs(60));
    assert!(
        matches!(&stuck, switchboard_core::Error::LaunchFailed(e) if format!("{e:#}").contains("within 60s of create_agent (agent_join_timeout)")),
        "{stuck:?}"
    );
    let row = &launcher
        .registry()
        .list(ListQuery {
            call_id: Some(call("stuck-1")),
            include_ended: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .sessions[0]
        .session;
    assert_eq!(row.end_reason, Some(EndReason::StartFailed));
    assert!(
        row.end_detail
            .as_deref()
            .is_some_and(|d| d.contains("agent_join_timeout")),
        "{row:?}"
    );
    launcher
        .start_session(call("busy-1"), CallType::default(), None)
        .await
        .expect("the slot is free again");
    launcher.stop().await;
}

#[tokio::test(start_paused = true)]
async fn metadata_reaches_create_agent() {
    let (launcher, _) = started(|b| b).await;
    let metadata = Metadata::parse(serde_json::json!({"user": "u-7"})).unwrap();
    let s = launcher
        .start_session(call("busy-1"), CallType::default(), Some(metadata.clone()))
        .await
        .unwrap();
    assert_eq!(s.agent().unwrap().metadata, Some(metadata));
    launcher.stop().await;
}

#[tokio::test(start_paused = true)]
async fn lifecycle_readiness_and_shutdown() {
    let (launcher, _) = crate::support::launcher_with(|b| b);
    assert!(!launcher.ready());
    let refused = launcher
        .start_session(call("busy-1"), CallType::default(), None)
        .await;
    assert!(
        matches!(refused, Err(Error::Unavailable { .. })),
        "not started: {refused:?}"
    );
    launcher.start().await.unwrap();
    assert!(launcher.ready());
    assert!(launcher.task_launcher().is_ready());
    let again = launcher.start().await.unwrap_err();
    assert_eq!(
        again.to_string(),
        "conflict: AgentLauncher is already running"
    );
    let s = launcher
        .start_session(call("busy-1"), CallType::default(), None)
        .await
        .unwrap();
    launcher.drain();
    assert!(!launcher.ready());
    let refused = launcher
        .start_session(call("busy-2"), CallType::default(), None)
        .await;
    assert!(
        matches!(refused, Err(Error::Unavailable { .. })),
        "draining: {refused:?}"
    );
    assert!(!s.finished(), "draining does not close running sessions");
    launcher.stop().await;
    assert_eq!(s.end().unwrap().reason, EndReason::Shutdown);
    assert!(!launcher.running());
    assert_eq!(
        launcher
            .registry()
            .counts(&call("busy-1"))
            .await
            .unwrap()
            .global,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_starts_on_real_time_admit_exactly_the_limit() {
    let (launcher, _) = started(|b| b.max_concurrent_sessions(10)).await;
    let tasks: Vec<_> = (0..100)
        .map(|i| {
            let launcher = launcher.clone();
            tokio::spawn(async move {
                launcher
                    .start_session(call(&format!("busy-{i}")), CallType::default(), None)
                    .await
            })
        })
        .collect();
    let mut admitted = 0;
    let mut refused = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => admitted += 1,
            Err(Error::LimitReached(LimitKind::Global)) => refused += 1,
            Err(e) => panic!("{e:?}"),
        }
    }
    assert_eq!((admitted, refused), (10, 90));
    assert_eq!(launcher.node_sessions().len(), 10);
    launcher.stop().await;
    let _: &AgentLauncher<_> = &launcher;
}

/// An ECS task comes up after its admission: with most of the lease spent, or all of it
/// (Fargate provisioning can outlast the lease). The supervisor renews first and runs.
#[tokio::test(start_paused = true)]
async fn a_session_hosted_after_most_or_all_of_its_lease_is_spent_renews_it_and_runs() {
    let clock: Arc<dyn Clock> = Arc::new(TokioClock::new());
    let registry: Arc<dyn SessionRegistry> =
        Arc::new(switchboard_core::MemoryRegistry::new(clock.clone()));
    let (launcher, _) = crate::support::launcher_with(|b| {
        b.clock(clock.clone())
            .registry(registry.clone())
            .maintenance_interval(1.0)
            .session_lease_seconds(Some(3.0))
    });
    for (name, late) in [("busy-late", 2.5), ("busy-later", 10.0)] {
        let request = switchboard_core::registry::StartRequest {
            lease: Duration::from_secs(3),
            ..switchboard_core::conformance::request(&call(name))
        };
        let switchboard_core::registry::StartOutcome::Created(admitted) =
            registry.start(request).await.unwrap()
        else {
            unreachable!()
        };
        tokio::time::sleep(Duration::from_secs_f64(late)).await;
        let session = launcher.host_session(admitted.clone()).await.unwrap();
        // It joins, and keeps its lease across many intervals.
        tokio::time::sleep(Duration::from_secs(20)).await;
        let row = registry
            .get(&call(name), session.id())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(row.status, SessionStatus::Running, "{name}: {row:?}");
        assert!(row.lease_expires_at > clock.now(), "{name}: {row:?}");
        registry
            .request_close(&call(name), session.id())
            .await
            .unwrap();
        let end = session.wait().await;
        assert_eq!(end.reason, EndReason::Requested, "{name}");
        assert!(end.recorded, "{name}");
    }
}
