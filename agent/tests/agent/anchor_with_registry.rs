//! The anchor's `TestAgentLauncherWithStorage` (anchor-study §9.2), ported: the launcher and
//! the registry agree on every session.

use std::time::Duration;

use switchboard_core::metrics::Counter;
use switchboard_core::{CallType, EndReason, SessionId, SessionStatus};

use crate::support::{call, started};

#[tokio::test(start_paused = true)]
async fn test_start_session() {
    let (launcher, _) = started(|b| b).await;
    let session = launcher
        .start_session(call("test"), CallType::default(), None)
        .await
        .unwrap();
    assert!(launcher.get_session(session.id()).is_some());
    let info = launcher
        .get_session_info(&call("test"), session.id())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(info.id, session.id());
    assert_eq!(info.call_id.as_str(), "test");
    assert_eq!(info.created_at, session.started_at());
    assert_eq!(
        info.status,
        SessionStatus::Running,
        "the test agent joined during start"
    );
    launcher.stop().await;
}

#[tokio::test(start_paused = true)]
async fn test_close_session() {
    let (launcher, _) = started(|b| b).await;
    let session = launcher
        .start_session(call("busy-call"), CallType::default(), None)
        .await
        .unwrap();
    assert!(launcher.close_session(session.id(), true).await);
    assert!(session.finished());
    assert!(launcher.get_session(session.id()).is_none());
    // The anchor deletes the record; we keep it, ended, for the history (docs/api.md).
    let info = launcher
        .get_session_info(&call("busy-call"), session.id())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(info.status, SessionStatus::Ended);
    assert_eq!(info.end_reason, Some(EndReason::Requested));
}

#[tokio::test(start_paused = true)]
async fn test_request_close_session() {
    let (launcher, _) = started(|b| b.maintenance_interval(0.5)).await;
    let session = launcher
        .start_session(call("busy-call"), CallType::default(), None)
        .await
        .unwrap();
    launcher
        .request_close_session(&call("busy-call"), session.id())
        .await
        .unwrap();
    let end = tokio::time::timeout(Duration::from_millis(1500), session.wait())
        .await
        .unwrap();
    assert_eq!(end.reason, EndReason::Requested);
    assert!(launcher.get_session(session.id()).is_none());
}

#[tokio::test(start_paused = true)]
async fn test_metrics_flushed_to_registry() {
    let (launcher, _) = started(|b| b.maintenance_interval(0.5)).await;
    let session = launcher
        .start_session(call("busy-call"), CallType::default(), None)
        .await
        .unwrap();
    let agent = session.agent().unwrap();
    agent.metrics().add(Counter::LlmInputTokens, 100);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let registry = launcher.registry();
    let got = registry
        .get_metrics(&call("busy-call"), session.id())
        .await
        .unwrap()
        .unwrap();
    let report = got.report.expect("flushed");
    assert_eq!(report.metrics.total(Counter::LlmInputTokens), 100);
    assert!(report.generated_at > session.started_at());
    launcher.stop().await;
}

#[tokio::test(start_paused = true)]
async fn test_get_session_info_not_found() {
    let (launcher, _) = started(|b| b).await;
    assert!(
        launcher
            .get_session_info(&call("test"), SessionId::generate())
            .await
            .unwrap()
            .is_none()
    );
}
