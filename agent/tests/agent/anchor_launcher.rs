//! The anchor's `tests/test_agents/test_agent_launcher.py::TestAgentLauncher`, ported one for
//! one (anchor-study §9.1). Where the anchor patches `idle_for`/`on_call_for`, these tests drive
//! the real presence and duration clocks on paused time.

use std::sync::atomic::Ordering;
use std::time::Duration;

use switchboard_core::{CallType, EndReason, Error, LimitKind};

use crate::support::{call, launcher_with, started};

#[tokio::test(start_paused = true)]
async fn test_warmup() {
    let (launcher, probe) = launcher_with(|b| b);
    assert!(!launcher.warmed_up());
    launcher.warmup().await.unwrap();
    assert!(launcher.warmed_up());
    assert_eq!(probe.warmups.load(Ordering::SeqCst), 1);
    assert_eq!(probe.model_loads.load(Ordering::SeqCst), 1);
    assert_eq!(
        probe.closes.load(Ordering::SeqCst),
        1,
        "the warmup agent is closed"
    );
    launcher.warmup().await.unwrap();
    assert_eq!(probe.warmups.load(Ordering::SeqCst), 1, "warmup runs once");
}

#[tokio::test(start_paused = true)]
async fn test_launch() {
    let (launcher, probe) = started(|b| b).await;
    let session = launcher
        .start_session(call("alone-1"), CallType::default(), None)
        .await
        .unwrap();
    let agent = session
        .agent()
        .expect("the agent exists when start_session returns");
    assert!(agent.warmed.load(Ordering::SeqCst));
    assert_eq!(
        probe.model_loads.load(Ordering::SeqCst),
        1,
        "models load once per process"
    );
    launcher.stop().await;
}

#[tokio::test(start_paused = true)]
async fn test_idle_sessions_stopped() {
    let (launcher, _) = started(|b| b.agent_idle_timeout(1.0).maintenance_interval(0.5)).await;
    let s1 = launcher
        .start_session(call("alone-1"), CallType::default(), None)
        .await
        .unwrap();
    let s2 = launcher
        .start_session(call("alone-2"), CallType::default(), None)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(s1.finished() && s2.finished());
    assert_eq!(s1.end().unwrap().reason, EndReason::Idle);
    assert_eq!(s2.end().unwrap().reason, EndReason::Idle);
}

#[tokio::test(start_paused = true)]
async fn test_idle_sessions_alive_with_idle_timeout_zero() {
    let (launcher, _) = started(|b| b.agent_idle_timeout(0.0).maintenance_interval(0.5)).await;
    let s1 = launcher
        .start_session(call("alone-1"), CallType::default(), None)
        .await
        .unwrap();
    let s2 = launcher
        .start_session(call("alone-2"), CallType::default(), None)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert!(!s1.finished() && !s2.finished());
    launcher.stop().await;
}

#[tokio::test(start_paused = true)]
async fn test_active_agents_alive() {
    let (launcher, _) = started(|b| b.agent_idle_timeout(1.0).maintenance_interval(0.5)).await;
    let s1 = launcher
        .start_session(call("busy-1"), CallType::default(), None)
        .await
        .unwrap();
    let s2 = launcher
        .start_session(call("busy-2"), CallType::default(), None)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!s1.finished() && !s2.finished());
    launcher.stop().await;
}

#[tokio::test(start_paused = true)]
async fn test_start_session() {
    let (launcher, _) = started(|b| b).await;
    let session = launcher
        .start_session(call("finish-1"), CallType::default(), None)
        .await
        .unwrap();
    assert_eq!(session.call_id().as_str(), "finish-1");
    assert!(session.agent().is_some());
    assert!(!session.finished());
    assert!(session.started_at().unix_micros() > 0);
    assert_eq!(
        launcher.get_session(session.id()).unwrap().id(),
        session.id()
    );
    // join_call returns after 2 s
    let end = session.wait().await;
    assert_eq!(end.reason, EndReason::AgentFinished);
    assert!(session.finished());
    assert!(launcher.get_session(session.id()).is_none());
}

#[tokio::test(start_paused = true)]
async fn test_close_session_exists() {
    let (launcher, _) = started(|b| b).await;
    let session = launcher
        .start_session(call("busy-1"), CallType::default(), None)
        .await
        .unwrap();
    assert!(launcher.close_session(session.id(), true).await);
    assert!(session.finished());
    assert_eq!(session.end().unwrap().reason, EndReason::Requested);
    assert!(launcher.get_session(session.id()).is_none());
}

#[tokio::test(start_paused = true)]
async fn test_close_session_doesnt_exist() {
    let (launcher, _) = started(|b| b).await;
    assert!(
        !launcher
            .close_session(switchboard_core::SessionId::generate(), true)
            .await
    );
}

#[tokio::test(start_paused = true)]
async fn test_get_session_doesnt_exist() {
    let (launcher, _) = started(|b| b).await;
    assert!(
        launcher
            .get_session(switchboard_core::SessionId::generate())
            .is_none()
    );
}

#[tokio::test(start_paused = true)]
async fn test_stop_multiple_sessions() {
    let (launcher, probe) = started(|b| b).await;
    let mut sessions = Vec::new();
    for _ in 0..3 {
        sessions.push(
            launcher
                .start_session(call("busy-same"), CallType::default(), None)
                .await
                .unwrap(),
        );
    }
    launcher.stop().await;
    for s in &sessions {
        assert!(s.finished());
        assert_eq!(s.end().unwrap().reason, EndReason::Shutdown);
        assert!(s.agent().unwrap().closed());
    }
    assert_eq!(
        probe.closes.load(Ordering::SeqCst),
        4,
        "3 agents + the warmup agent"
    );
    assert!(launcher.node_sessions().is_empty());
}

#[tokio::test(start_paused = true)]
async fn test_session_cleaned_up_after_finish() {
    let (launcher, _) = started(|b| b).await;
    let session = launcher
        .start_session(call("finish-1"), CallType::default(), None)
        .await
        .unwrap();
    session.wait().await;
    assert!(launcher.get_session(session.id()).is_none());
    assert!(launcher.node_sessions().is_empty());
}

/// The anchor cancels the asyncio task from outside; in Rust the equivalent external failure
/// of `join_call` is a panic or an error, and the session is cleaned up the same way.
#[tokio::test(start_paused = true)]
async fn test_session_cleaned_up_after_cancel() {
    let (launcher, _) = started(|b| b).await;
    let session = launcher
        .start_session(call("panic-1"), CallType::default(), None)
        .await
        .unwrap();
    let end = session.wait().await;
    assert_eq!(end.reason, EndReason::AgentFailed);
    assert_eq!(end.detail.as_deref(), Some("join_call panicked"));
    assert!(launcher.get_session(session.id()).is_none());
    assert!(session.agent().unwrap().closed());
}

fn build_err(configure: impl FnOnce(crate::support::Builder) -> crate::support::Builder) -> String {
    let builder = switchboard_agent::AgentLauncher::builder(
        |_| async { anyhow::bail!("never called") },
        |_, _| async { Ok(()) },
    );
    configure(builder).build().unwrap_err().to_string()
}

#[test]
fn test_max_concurrent_agents_invalid() {
    for bad in [0, -1] {
        assert_eq!(
            build_err(|b| b.max_concurrent_sessions(bad)),
            "max_concurrent_sessions must be > 0 or None"
        );
    }
}

#[test]
fn test_max_sessions_per_call_invalid() {
    for bad in [0, -1] {
        assert_eq!(
            build_err(|b| b.max_sessions_per_call(bad)),
            "max_sessions_per_call must be > 0 or None"
        );
    }
}

#[test]
fn test_max_session_duration_seconds_invalid() {
    for bad in [0.0, -1.0] {
        assert_eq!(
            build_err(|b| b.max_session_duration_seconds(bad)),
            "max_session_duration_seconds must be > 0 or None"
        );
    }
}

#[test]
fn test_interval_and_idle_timeout_invalid() {
    for bad in [0.0, -1.0] {
        assert_eq!(
            build_err(|b| b.maintenance_interval(bad)),
            "maintenance_interval must be > 0"
        );
    }
    assert_eq!(
        build_err(|b| b.agent_idle_timeout(-1.0)),
        "agent_idle_timeout must be >= 0"
    );
}

#[tokio::test(start_paused = true)]
async fn test_max_concurrent_agents_exceeded() {
    let (launcher, _) = started(|b| b.max_concurrent_sessions(2)).await;
    let s1 = launcher
        .start_session(call("busy-1"), CallType::default(), None)
        .await
        .unwrap();
    launcher
        .start_session(call("busy-2"), CallType::default(), None)
        .await
        .unwrap();
    let third = launcher
        .start_session(call("busy-3"), CallType::default(), None)
        .await;
    assert!(
        matches!(third, Err(Error::LimitReached(LimitKind::Global))),
        "{third:?}"
    );
    assert!(launcher.close_session(s1.id(), true).await);
    launcher
        .start_session(call("busy-3"), CallType::default(), None)
        .await
        .unwrap();
    launcher.stop().await;
}

#[tokio::test(start_paused = true)]
async fn test_max_concurrent_agents_can_create_after_session_ends() {
    let (launcher, _) = started(|b| b.max_concurrent_sessions(2)).await;
    let s1 = launcher
        .start_session(call("finish-1"), CallType::default(), None)
        .await
        .unwrap();
    launcher
        .start_session(call("busy-2"), CallType::default(), None)
        .await
        .unwrap();
    s1.wait().await;
    launcher
        .start_session(call("busy-3"), CallType::default(), None)
        .await
        .unwrap();
    launcher.stop().await;
}

#[tokio::test(start_paused = true)]
async fn test_max_sessions_per_call_exceeded() {
    let (launcher, _) = started(|b| b.max_sessions_per_call(2)).await;
    let s1 = launcher
        .start_session(call("busy-a"), CallType::default(), None)
        .await
        .unwrap();
    launcher
        .start_session(call("busy-a"), CallType::default(), None)
        .await
        .unwrap();
    let third = launcher
        .start_session(call("busy-a"), CallType::default(), None)
        .await;
    assert!(
        matches!(third, Err(Error::LimitReached(LimitKind::PerCall))),
        "{third:?}"
    );
    launcher
        .start_session(call("busy-b"), CallType::default(), None)
        .await
        .unwrap();
    assert!(launcher.close_session(s1.id(), true).await);
    launcher
        .start_session(call("busy-a"), CallType::default(), None)
        .await
        .unwrap();
    launcher.stop().await;
}

#[tokio::test(start_paused = true)]
async fn test_max_sessions_per_call_can_create_after_session_ends() {
    let (launcher, _) = started(|b| b.max_sessions_per_call(2)).await;
    let s1 = launcher
        .start_session(call("finish-a"), CallType::default(), None)
        .await
        .unwrap();
    launcher
        .start_session(call("finish-a"), CallType::default(), None)
        .await
        .unwrap();
    s1.wait().await;
    launcher
        .start_session(call("finish-a"), CallType::default(), None)
        .await
        .unwrap();
    launcher.stop().await;
}

#[tokio::test(start_paused = true)]
async fn test_max_concurrent_agents_none_allows_unlimited() {
    let (launcher, _) = started(|b| b).await;
    for i in 0..10 {
        launcher
            .start_session(call(&format!("busy-{i}")), CallType::default(), None)
            .await
            .unwrap();
    }
    assert_eq!(launcher.node_sessions().len(), 10);
    launcher.stop().await;
}

#[tokio::test(start_paused = true)]
async fn test_max_sessions_per_call_none_allows_unlimited() {
    let (launcher, _) = started(|b| b).await;
    for _ in 0..10 {
        launcher
            .start_session(call("busy-same"), CallType::default(), None)
            .await
            .unwrap();
    }
    assert_eq!(launcher.node_sessions().len(), 10);
    launcher.stop().await;
}

#[tokio::test(start_paused = true)]
async fn test_max_session_duration_exceeded() {
    let (launcher, _) = started(|b| {
        b.max_session_duration_seconds(1.0)
            .agent_idle_timeout(0.0)
            .maintenance_interval(0.5)
    })
    .await;
    let s = launcher
        .start_session(call("busy-1"), CallType::default(), None)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(s.finished());
    assert_eq!(s.end().unwrap().reason, EndReason::MaxDuration);
}

#[tokio::test(start_paused = true)]
async fn test_sessions_alive_with_max_session_duration_none() {
    let (launcher, _) = started(|b| b.agent_idle_timeout(10.0)).await;
    let s = launcher
        .start_session(call("busy-1"), CallType::default(), None)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert!(!s.finished());
    launcher.stop().await;
}
