//! `serve_on`: `/ready` is 503 while warming up and while draining; shutdown closes every
//! session with `shutdown` before the server stops.

use std::sync::Arc;

use switchboard_api::ServeOptions;
use switchboard_core::{CallId, EndReason, SessionId, SessionStatus};
use switchboard_runner::serve::serve_on;
use tokio::net::TcpListener;

use crate::support::{Gates, gated_launcher, http, until_status};

/// `serve_on` on a free loopback port in a task; sending on the returned channel shuts it
/// down.
async fn spawn_server<A: switchboard_agent::Agent>(
    launcher: switchboard_agent::AgentLauncher<A>,
) -> (
    std::net::SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<anyhow::Result<()>>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve_on(
        launcher,
        ServeOptions::default(),
        listener,
        async {
            let _ = stopped.await;
        },
    ));
    (addr, stop, server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_is_503_while_warming_up_then_200() {
    let gates = Arc::new(Gates {
        hold_warmup: true,
        ..Default::default()
    });
    let launcher = gated_launcher(gates.clone()).build().unwrap();
    let (addr, stop, server) = spawn_server(launcher).await;
    assert_eq!(
        http(addr, "GET", "/health", None).await.0,
        200,
        "alive while warming up"
    );
    let (status, body) = http(addr, "GET", "/ready", None).await;
    assert_eq!(status, 503);
    assert!(body.contains("Server is not ready to accept requests"));
    gates.warmup.add_permits(1);
    until_status(addr, "/ready", 200).await;
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_turns_ready_503_closes_sessions_with_shutdown_then_stops() {
    let gates = Arc::new(Gates {
        hold_close: true,
        ..Default::default()
    });
    let launcher = gated_launcher(gates.clone()).build().unwrap();
    let registry = launcher.registry();
    let (addr, stop, server) = spawn_server(launcher).await;
    until_status(addr, "/ready", 200).await;
    let (status, body) = http(addr, "POST", "/calls/call-1/sessions", Some("{}")).await;
    assert_eq!(status, 201, "{body}");
    let id: serde_json::Value = serde_json::from_str(&body).unwrap();
    let id = SessionId::parse(id["session_id"].as_str().unwrap()).unwrap();

    stop.send(()).unwrap();
    // The agent's close is held: the server is draining.
    until_status(addr, "/ready", 503).await;
    let (status, _) = http(addr, "POST", "/calls/call-2/sessions", Some("{}")).await;
    assert_eq!(status, 503, "no new sessions while draining");
    assert!(!server.is_finished());
    gates.close.add_permits(1);
    server.await.unwrap().unwrap();

    let row = registry
        .get(&CallId::parse("call-1").unwrap(), id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.status, SessionStatus::Ended);
    assert_eq!(row.end_reason, Some(EndReason::Shutdown));
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "the listener is closed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_warmup_stops_the_server_with_an_error() {
    let launcher = switchboard_agent::AgentLauncher::builder(
        |_| async { anyhow::bail!("no model") },
        |_: Arc<crate::support::GatedAgent>, _| async { Ok(()) },
    )
    .build()
    .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = serve_on(
        launcher,
        ServeOptions::default(),
        listener,
        std::future::pending(),
    )
    .await
    .unwrap_err();
    assert!(format!("{err:#}").contains("no model"), "{err:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_is_503_while_the_registry_does_not_answer() {
    let registry = Arc::new(switchboard_core::testing::OutageRegistry::memory(Arc::new(
        switchboard_core::SystemClock,
    )));
    let launcher = gated_launcher(Arc::new(Gates::default()))
        .registry(registry.clone())
        .build()
        .unwrap();
    let (addr, stop, server) = spawn_server(launcher).await;
    until_status(addr, "/ready", 200).await;
    registry
        .outage
        .store(true, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(http(addr, "GET", "/ready", None).await.0, 503);
    assert_eq!(
        http(addr, "GET", "/health", None).await.0,
        200,
        "alive, just not ready"
    );
    registry
        .outage
        .store(false, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(http(addr, "GET", "/ready", None).await.0, 200);
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}

fn sample(text: &str, series: &str) -> u64 {
    switchboard_testkit::prometheus_sample(text, series) as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_counts_admissions_refusals_by_reason_and_live_sessions() {
    let launcher = gated_launcher(Arc::new(Gates::default()))
        .max_concurrent_sessions(2)
        .max_sessions_per_call(1)
        .build()
        .unwrap();
    let (addr, stop, server) = spawn_server(launcher).await;
    until_status(addr, "/ready", 200).await;
    assert_eq!(http(addr, "POST", "/calls/a/sessions", None).await.0, 201);
    assert_eq!(http(addr, "POST", "/calls/a/sessions", None).await.0, 429);
    assert_eq!(http(addr, "POST", "/calls/b/sessions", None).await.0, 201);
    assert_eq!(http(addr, "POST", "/calls/c/sessions", None).await.0, 429);
    let (status, text) = http(addr, "GET", "/metrics", None).await;
    assert_eq!(status, 200);
    assert_eq!(sample(&text, "switchboard_sessions_admitted_total"), 2);
    assert_eq!(
        sample(
            &text,
            "switchboard_sessions_refused_total{reason=\"per_call_limit\"}"
        ),
        1
    );
    assert_eq!(
        sample(
            &text,
            "switchboard_sessions_refused_total{reason=\"global_limit\"}"
        ),
        1
    );
    assert_eq!(
        sample(
            &text,
            "switchboard_sessions_refused_total{reason=\"unavailable\"}"
        ),
        0
    );
    let live: u64 = ["starting", "running"]
        .iter()
        .map(|s| sample(&text, &format!("switchboard_sessions{{status=\"{s}\"}}")))
        .sum();
    assert_eq!(live, 2);
    assert_eq!(sample(&text, "switchboard_max_concurrent_sessions"), 2);
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}
