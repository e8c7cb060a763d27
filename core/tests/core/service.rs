//! `service::start_session` under a deadline (the Lambda `api` function's bounded starts).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use switchboard_core::conformance::{T0, call};
use switchboard_core::registry::ListQuery;
use switchboard_core::service::{StartSession, start_session};
use switchboard_core::{
    EndReason, Error, LaunchError, Launched, Limits, ManualClock, MemoryRegistry, Session,
    SessionRegistry, TaskLauncher,
};

#[derive(Debug, Default)]
struct Flagging {
    called: AtomicBool,
}

#[async_trait::async_trait]
impl TaskLauncher for Flagging {
    async fn launch(&self, _session: &Session) -> Result<Launched, LaunchError> {
        self.called.store(true, Ordering::SeqCst);
        Ok(Launched::default())
    }
}

#[tokio::test(start_paused = true)]
async fn a_start_admitted_too_late_to_launch_ends_start_failed_at_once() {
    // Less than the 1 s reserve left after admission: no RunTask is sent, so the start has
    // definitely failed. Its slots (and key) come back now, not at the reaper's sweep.
    let registry = MemoryRegistry::new(Arc::new(ManualClock::new(T0)));
    let launcher = Flagging::default();
    let c = call("late");
    let err = start_session(
        &registry,
        &launcher,
        &Limits::default(),
        c.clone(),
        StartSession {
            deadline: Some(tokio::time::Instant::now() + Duration::from_millis(500)),
            ..StartSession::default()
        },
    )
    .await
    .unwrap_err();
    assert!(matches!(err, Error::Unavailable { .. }), "{err:?}");
    assert!(!launcher.called.load(Ordering::SeqCst), "nothing launched");
    let page = registry
        .list(ListQuery {
            call_id: Some(c.clone()),
            include_ended: true,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(page.sessions.len(), 1);
    assert_eq!(
        page.sessions[0].session.end_reason,
        Some(EndReason::StartFailed)
    );
    assert_eq!(registry.counts(&c).await.unwrap().global, 0, "slot back");
}
