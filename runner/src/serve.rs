//! The local server and the shutdown sequence shared by `serve` and `run`.

use std::future::Future;
use std::net::SocketAddr;

use anyhow::Context;
use switchboard_agent_task::{Agent, AgentLauncher};
use switchboard_api::{AppState, ServeOptions};
use tokio::net::TcpListener;
use tracing::{info, warn};

/// Resolves on Ctrl-C or SIGTERM (ECS, Kubernetes and systemd stop with SIGTERM).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            warn!(error = %e, "could not listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sigterm) => {
                sigterm.recv().await;
            }
            Err(e) => {
                warn!(error = %e, "could not listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => info!(signal = "SIGINT", "shutting down"),
        () = terminate => info!(signal = "SIGTERM", "shutting down"),
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
    let state = AppState::new(
        launcher.registry(),
        launcher.task_launcher(),
        *launcher.limits(),
    )
    .with_readiness(switchboard_api::registry_readiness(launcher.registry()));
    let router = switchboard_api::router(state, options).context("invalid server options")?;
    let address = listener.local_addr().context("listener has no address")?;
    let (stop_http, http_stopped) = tokio::sync::oneshot::channel::<()>();
    let mut server = tokio::spawn(
        axum::serve(listener, router)
            .with_graceful_shutdown(async {
                let _ = http_stopped.await;
            })
            .into_future(),
    );
    info!(%address, url = %format!("http://{address}"), "listening");
    if let Err(e) = launcher.start().await {
        let _ = stop_http.send(());
        let _ = server.await;
        return Err(anyhow::Error::new(e).context("the agent launcher could not start"));
    }
    info!(%address, docs = %format!("http://{address}/docs"), "ready");
    tokio::pin!(shutdown);
    tokio::select! {
        () = &mut shutdown => {}
        result = &mut server => {
            launcher.stop().await;
            return match result {
                Ok(Ok(())) => Err(anyhow::anyhow!("the HTTP server stopped unexpectedly")),
                Ok(Err(e)) => Err(anyhow::Error::new(e).context("the HTTP server failed")),
                Err(e) => Err(anyhow::Error::new(e).context("the HTTP server task failed")),
            };
        }
    }
    launcher.drain();
    let sessions = launcher.local_sessions().len();
    info!(sessions, "draining: closing every session");
    launcher.stop().await;
    let _ = stop_http.send(());
    server
        .await
        .context("the HTTP server task failed")?
        .context("the HTTP server failed")?;
    info!("stopped");
    Ok(())
}
