//! `MemoryRegistry` runs the conformance suite unchanged, plus its own memory bounds.

use std::sync::Arc;
use std::time::Duration;

use switchboard_core::conformance::{Harness, T0, call};
use switchboard_core::registry::{EndRequest, ListQuery};
use switchboard_core::{
    EndReason, ManualClock, MemoryRegistry, MemoryRegistryConfig, SessionRegistry,
};

async fn make(clock: Arc<ManualClock>) -> Arc<dyn SessionRegistry> {
    Arc::new(MemoryRegistry::new(clock))
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
