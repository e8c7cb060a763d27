//! `MemoryRegistry` runs the conformance suite unchanged, plus its own memory bounds.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use switchboard_core::conformance::{Harness, LEASE, T0, call};
use switchboard_core::events::{EventType, SessionEvent};
use switchboard_core::fleet::{EventSink, FleetMetrics};
use switchboard_core::registry::{EndRequest, ListQuery};
use switchboard_core::{
    EndReason, ManualClock, MemoryRegistry, MemoryRegistryConfig, SessionRegistry, SessionStatus,
};

/// Observed, as `serve` runs it: every case also runs the fleet metrics and an event sink.
async fn make(clock: Arc<ManualClock>) -> Arc<dyn SessionRegistry> {
    let fleet = Arc::new(FleetMetrics::new(clock.clone(), Some(10)));
    let _ = fleet.publish_events_to(Arc::new(Recorded::default()));
    Arc::new(MemoryRegistry::new(clock).observed(fleet))
}

/// The events a sink received, in order.
#[derive(Debug, Default)]
struct Recorded(Mutex<Vec<SessionEvent>>);

impl EventSink for Recorded {
    fn publish(&self, event: SessionEvent) {
        self.0.lock().unwrap().push(event);
    }
}

#[tokio::test]
async fn every_status_change_reaches_the_observer_in_order_once() {
    let clock = Arc::new(ManualClock::new(T0));
    let fleet = Arc::new(FleetMetrics::new(clock.clone(), Some(2)));
    let events = Arc::new(Recorded::default());
    fleet.publish_events_to(events.clone()).unwrap();
    let h = Harness {
        registry: Arc::new(MemoryRegistry::new(clock.clone()).observed(fleet.clone())),
        clock,
    };
    let c = call("call-a");
    let a = h.start(&c).await;
    let b = h.start(&c).await;
    assert_eq!(fleet.live(SessionStatus::Starting), 2);
    h.clock.advance(Duration::from_millis(300));
    h.registry.mark_running(&c, a.id).await.unwrap();
    h.registry.mark_running(&c, a.id).await.unwrap();
    h.registry.heartbeat(&c, a.id, LEASE).await.unwrap();
    h.registry.request_close(&c, a.id).await.unwrap();
    h.registry.request_close(&c, a.id).await.unwrap();
    assert_eq!(
        [
            SessionStatus::Starting,
            SessionStatus::Running,
            SessionStatus::Closing
        ]
        .map(|s| fleet.live(s)),
        [1, 0, 1]
    );
    h.clock.advance(Duration::from_millis(50));
    h.registry
        .end(&c, a.id, EndRequest::new(EndReason::Requested))
        .await
        .unwrap();
    h.registry
        .end(&c, a.id, EndRequest::new(EndReason::Requested))
        .await
        .unwrap();
    h.registry
        .end(&c, b.id, EndRequest::new(EndReason::StartFailed))
        .await
        .unwrap();
    let got: Vec<_> = events
        .0
        .lock()
        .unwrap()
        .iter()
        .map(|e| (e.data.session_id.clone(), e.kind, e.data.sequence))
        .collect();
    let (a, b) = (a.id.to_string(), b.id.to_string());
    assert_eq!(
        got,
        [
            (a.clone(), EventType::Started, 1),
            (b.clone(), EventType::Started, 1),
            (a.clone(), EventType::Running, 2),
            (a, EventType::Ended, 3),
            (b, EventType::Ended, 3),
        ]
    );
    assert_eq!(
        [
            SessionStatus::Starting,
            SessionStatus::Running,
            SessionStatus::Closing
        ]
        .map(|s| fleet.live(s)),
        [0, 0, 0]
    );
    assert_eq!(fleet.ended(EndReason::Requested), 1);
    assert_eq!(fleet.ended(EndReason::StartFailed), 1);
    // Both slots were taken for the 300 ms until a joined and 50 ms after.
    assert_eq!(fleet.saturated(), Duration::from_millis(350));
    let text = fleet.render_prometheus();
    assert!(
        text.contains("switchboard_sessions_admitted_total 2\n"),
        "{text}"
    );
    assert!(
        text.contains("switchboard_session_start_seconds_count 1\n"),
        "{text}"
    );
    assert!(
        text.contains("switchboard_session_close_seconds_bucket{le=\"0.05\"} 1\n"),
        "{text}"
    );
}

switchboard_core::registry_conformance!(make);

#[tokio::test]
async fn ended_sessions_are_capped_oldest_first() {
    let clock = Arc::new(ManualClock::new(T0));
    let config = MemoryRegistryConfig {
        max_ended_sessions: 3,
        ..Default::default()
    };
    let h = Harness {
        registry: Arc::new(MemoryRegistry::with_config(clock.clone(), config)),
        clock,
    };
    let c = call("call-a");
    let mut sessions = Vec::new();
    for _ in 0..5 {
        let s = h.start(&c).await;
        h.registry
            .end(&c, s.id, EndRequest::new(EndReason::Requested))
            .await
            .unwrap();
        sessions.push(s);
        h.clock.advance(Duration::from_millis(1));
    }
    let page = h
        .registry
        .list(ListQuery {
            call_id: Some(c),
            include_ended: true,
            ..Default::default()
        })
        .await
        .unwrap();
    let kept: Vec<_> = page.sessions.iter().map(|l| l.session.id).collect();
    assert_eq!(kept, sessions[2..].iter().map(|s| s.id).collect::<Vec<_>>());
}
