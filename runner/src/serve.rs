//! The local server and the shutdown sequence shared by `serve` and `run`.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use axum::response::IntoResponse;
use switchboard_agent::{Agent, AgentLauncher};
use switchboard_api::{AppState, ServeOptions};
use switchboard_core::fleet::FleetMetrics;

use switchboard_local_call::{CallHub, HubEdge, LocalCall};
use tokio::net::TcpListener;
use tracing::{info, warn};

/// Resolves on Ctrl-C or SIGTERM (ECS, Kubernetes and systemd stop with SIGTERM).
///
/// The handlers are installed when this is *called*, not when the future is first polled: a
/// process that is PID 1 in its container (the agent task without an init) ignores a SIGTERM
/// that arrives before its handler exists, and then waits for SIGKILL. Call it first, inside
/// the runtime.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    let (sigterm, sigint) = {
        use tokio::signal::unix::{SignalKind, signal};
        let listen = |kind: SignalKind, name: &'static str| {
            signal(kind)
                .inspect_err(
                    |e| warn!(error = %e, signal = name, "could not listen for the signal"),
                )
                .ok()
        };
        (
            listen(SignalKind::terminate(), "SIGTERM"),
            listen(SignalKind::interrupt(), "SIGINT"),
        )
    };
    async move {
        #[cfg(unix)]
        {
            let recv = |signal: Option<tokio::signal::unix::Signal>| async move {
                match signal {
                    Some(mut signal) => {
                        signal.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                () = recv(sigint) => info!(signal = "SIGINT", "shutting down"),
                () = recv(sigterm) => info!(signal = "SIGTERM", "shutting down"),
            }
        }
        #[cfg(not(unix))]
        {
            if let Err(e) = tokio::signal::ctrl_c().await {
                warn!(error = %e, "could not listen for Ctrl-C");
                std::future::pending::<()>().await;
            }
            info!(signal = "SIGINT", "shutting down");
        }
    }
}

/// Binds `addr` and serves until `shutdown` resolves.
pub async fn serve<A: Agent>(
    launcher: AgentLauncher<A>,
    options: ServeOptions,
    addr: SocketAddr,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("could not listen on {addr}"))?;
    serve_on(launcher, options, listener, shutdown).await
}

/// `listener` with `TCP_NODELAY` on every connection. Without it, a small write that follows
/// another (the local call's echo, then the agent's answer, on one WebSocket) waits for the
/// peer's delayed ACK: about 40 ms on Linux, measured by `switchboard-bench call`.
pub(crate) fn no_delay(
    listener: TcpListener,
) -> axum::serve::TapIo<TcpListener, fn(&mut tokio::net::TcpStream)> {
    use axum::serve::ListenerExt;
    listener.tap_io(|stream: &mut tokio::net::TcpStream| {
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY");
        }
    })
}

/// The API router over `launcher`, with the local call's routes (the demo page at `/` and
/// `GET /calls/{call_id}/ws`) beside the program's own extra routes. The call's rooms are a
/// new [`CallHub`], offered to the launcher's agents as their edge ([`HubEdge`]), so people
/// and agents meet in them. People's sockets end when `calls_stopped` turns true.
pub fn local_router<A: Agent>(
    launcher: &AgentLauncher<A>,
    options: ServeOptions,
    calls_stopped: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<axum::Router> {
    let fleet = launcher.fleet_metrics().clone();
    let state = AppState::new(
        launcher.registry(),
        launcher.task_launcher(),
        *launcher.limits(),
    )
    .with_readiness(switchboard_api::registry_readiness(launcher.registry()))
    .with_fleet(fleet.clone());
    let hub = CallHub::new(launcher.clock());
    launcher.offer_edge(Arc::new(HubEdge::new(hub.clone())));
    let calls = LocalCall::new(hub, options.hooks.can_join_call.clone(), calls_stopped)
        .routes()
        .merge(fleet_metrics_route(
            fleet,
            options.hooks.can_view_fleet_metrics.clone(),
        ));
    let extra_routes = Some(match options.extra_routes {
        Some(extra) => calls.merge(extra),
        None => calls,
    });
    let options = ServeOptions {
        extra_routes,
        ..options
    };
    switchboard_api::router(state, options).context("invalid server options")
}

/// The content type of the Prometheus text format.
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// `GET /metrics`: the fleet metrics in the Prometheus text format, behind the
/// `can_view_fleet_metrics` hook (under `AUTH_MODE=jwt`, a token with `metrics:view` for every
/// call).
fn fleet_metrics_route(
    fleet: Arc<FleetMetrics>,
    hook: Option<switchboard_api::Permission>,
) -> axum::Router {
    let handler = move |request: axum::extract::Request| {
        let (fleet, hook) = (fleet.clone(), hook.clone());
        async move {
            let (parts, _body) = request.into_parts();
            if let Some(hook) = hook
                && let Err(rejection) = hook.check_parts("", &parts).await
            {
                return switchboard_api::ApiError::Rejected(Box::new(rejection)).into_response();
            }
            (
                [(http::header::CONTENT_TYPE, PROMETHEUS_TEXT)],
                fleet.render_prometheus(),
            )
                .into_response()
        }
    };
    axum::Router::new().route("/metrics", axum::routing::get(handler))
}

/// How long a stopping `serve` waits for the webhook queue to deliver the last events.
pub const EVENTS_DRAIN: std::time::Duration = std::time::Duration::from_secs(10);

/// Serves on `listener` until `shutdown` resolves, then drains.
///
/// The listener accepts at once, so `/health` answers and `/ready` says 503 while the
/// launcher warms up. On shutdown: `/ready` turns 503 and new starts are refused, every
/// session is closed with `shutdown` and waited for, then the HTTP server stops after the
/// requests in flight.
pub async fn serve_on<A: Agent>(
    launcher: AgentLauncher<A>,
    options: ServeOptions,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let (stop_calls, calls_stopped) = tokio::sync::watch::channel(false);
    let router = local_router(&launcher, options, calls_stopped)?;
    let address = listener.local_addr().context("listener has no address")?;
    let mut http = Http::spawn(listener, router, stop_calls);
    info!(%address, url = %format!("http://{address}"), "listening");
    if let Err(e) = launcher.start().await {
        let _ = http.stop().await;
        return Err(anyhow::Error::new(e).context("the agent launcher could not start"));
    }
    info!(%address, docs = %format!("http://{address}/docs"), demo = %format!("http://{address}/"), "ready");
    tokio::pin!(shutdown);
    tokio::select! {
        () = &mut shutdown => {}
        result = &mut http.server => {
            launcher.stop().await;
            let _ = launcher.fleet_metrics().drain_events(EVENTS_DRAIN).await;
            return match result {
                Ok(Ok(())) => Err(anyhow::anyhow!("the HTTP server stopped unexpectedly")),
                Ok(Err(e)) => Err(anyhow::Error::new(e).context("the HTTP server failed")),
                Err(e) => Err(anyhow::Error::new(e).context("the HTTP server task failed")),
            };
        }
    }
    launcher.drain();
    let sessions = launcher.node_sessions().len();
    info!(sessions, "draining: closing every session");
    launcher.stop().await;
    // The sessions' ends are queued; give their webhooks a moment.
    let left = launcher.fleet_metrics().drain_events(EVENTS_DRAIN).await;
    if left > 0 {
        warn!(left, "stopping with webhook events undelivered");
    }
    // The agents have left (people saw them go); now the people's sockets close.
    http.stop().await?;
    info!("stopped");
    Ok(())
}

/// An HTTP server on its own task, stopped in the order a drain needs: the people's sockets
/// (the local call's), then HTTP once the requests in flight are answered.
pub(crate) struct Http {
    stop_calls: tokio::sync::watch::Sender<bool>,
    stop_http: tokio::sync::oneshot::Sender<()>,
    pub(crate) server: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Http {
    /// Serves `router` on `listener` (with `TCP_NODELAY`); `stop_calls` ends the local call's
    /// sockets.
    pub(crate) fn spawn(
        listener: TcpListener,
        router: axum::Router,
        stop_calls: tokio::sync::watch::Sender<bool>,
    ) -> Self {
        let (stop_http, http_stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(
            axum::serve(no_delay(listener), router)
                .with_graceful_shutdown(async {
                    let _ = http_stopped.await;
                })
                .into_future(),
        );
        Self {
            stop_calls,
            stop_http,
            server,
        }
    }

    /// Closes the people's sockets, then stops HTTP after the requests in flight.
    pub(crate) async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop_calls.send(true);
        let _ = self.stop_http.send(());
        self.server
            .await
            .context("the HTTP server task failed")?
            .context("the HTTP server failed")
    }
}
