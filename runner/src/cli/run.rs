//! `run`: one agent in one call, in the console, with the demo page for that call on
//! 127.0.0.1 (unless `--no-demo`).
//!
//! The demo page's server serves what the one session needs and nothing more: the page, the
//! call's WebSocket, and the session's own routes (its row, its metrics, its close). Starting
//! other sessions, listing them, the pool and the docs are `serve`'s; here they answer 404
//! with a detail saying so.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use axum::extract::{MatchedPath, RawPathParams, Request};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{Method, StatusCode};
use switchboard_agent::{Agent, AgentLauncher, AgentLauncherBuilder};
use switchboard_api::ServeOptions;
use switchboard_core::{CallId, CallType, SessionId, SessionStatus};
use tracing::info;

use super::args::RunArgs;
use super::{EffectiveConfig, LimitsConfig, configured, fail, print_config, runtime};
use crate::serve::Http;
use crate::telemetry::{self, LogLevel};

/// The effective configuration `run --print-config` prints.
#[derive(Debug, serde::Serialize)]
struct RunConfig<'a> {
    call_id: &'a str,
    call_type: &'a str,
    log_level: &'a str,
    no_demo: bool,
    demo_port: u16,
    video_track_override: &'a Option<std::path::PathBuf>,
}

pub(super) fn run<A: Agent>(
    builder: AgentLauncherBuilder<A>,
    args: RunArgs,
    agent: Option<serde_json::Value>,
) -> u8 {
    let level = if args.common.debug {
        LogLevel::Debug
    } else {
        args.log_level
    };
    telemetry::init(&telemetry::filter(level, level), args.common.log_format);
    let (builder, limits) = match configured(builder, &args.common.launcher) {
        Ok(configured) => configured,
        Err(e) => return fail(2, &e),
    };
    let call_id = args
        .call_id
        .clone()
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    let parsed = CallId::parse(&call_id).and_then(|c| Ok((c, CallType::parse(&args.call_type)?)));
    let (call_id, call_type) = match parsed {
        Ok(ids) => ids,
        Err(e) => return fail(2, &anyhow::Error::new(e).context("invalid call")),
    };
    if args.common.print_config {
        return print_config(&EffectiveConfig {
            command: "run",
            settings: RunConfig {
                call_id: call_id.as_str(),
                call_type: call_type.as_str(),
                log_level: level.directive(),
                no_demo: args.no_demo,
                demo_port: args.demo_port,
                video_track_override: &args.video_track_override,
            },
            limits: Some(LimitsConfig::from(&limits)),
            agent,
        });
    }
    let launcher = match builder
        .video_track_override(args.video_track_override.clone())
        .build()
    {
        Ok(launcher) => launcher,
        Err(e) => {
            return fail(
                2,
                &anyhow::Error::new(e).context("invalid launcher options"),
            );
        }
    };
    crate::splash::show(
        args.common.no_splash,
        &format!("running one agent in call {call_type}:{call_id}"),
    );
    let demo = (!args.no_demo).then_some(args.demo_port);
    let result = runtime().and_then(|rt| rt.block_on(run_one(launcher, call_id, call_type, demo)));
    match result {
        Ok(()) => 0,
        Err(e) => fail(1, &e),
    }
}

/// The demo page's server under `run`: the page, the call and the session's routes on
/// 127.0.0.1.
struct DemoServer {
    address: std::net::SocketAddr,
    http: Http,
    /// The session the routes serve, once it exists.
    session: Arc<OnceLock<SessionId>>,
}

impl DemoServer {
    async fn start<A: Agent>(
        launcher: &AgentLauncher<A>,
        call_id: &CallId,
        port: u16,
    ) -> anyhow::Result<Self> {
        use anyhow::Context;
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .with_context(|| format!("could not listen on 127.0.0.1:{port} for the demo page"))?;
        let address = listener
            .local_addr()
            .context("the demo listener has no address")?;
        let (stop_calls, calls_stopped) = tokio::sync::watch::channel(false);
        let session = Arc::new(OnceLock::new());
        let scope = Arc::new(OneSession {
            call_id: call_id.clone(),
            session: session.clone(),
        });
        let router = crate::serve::local_router(launcher, ServeOptions::default(), calls_stopped)?
            .layer(axum::middleware::from_fn(
                move |params: RawPathParams, req: Request, next: Next| {
                    let scope = scope.clone();
                    async move { scope.check(params, req, next).await }
                },
            ));
        Ok(Self {
            address,
            http: Http::spawn(listener, router, stop_calls),
            session,
        })
    }

    /// The page for `call_id`, attached to `session_id`, joining on load.
    fn url(&self, call_id: &CallId, session_id: &str) -> String {
        let query: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("call_id", call_id.as_str())
            .append_pair("session_id", session_id)
            .append_pair("join", "1")
            .finish();
        format!("http://{}/?{query}", self.address)
    }

    async fn stop(self) {
        if let Err(e) = self.http.stop().await {
            tracing::warn!(error = %format!("{e:#}"), "the demo page's server failed");
        }
    }
}

/// The routes of `run`'s one session.
struct OneSession {
    call_id: CallId,
    session: Arc<OnceLock<SessionId>>,
}

impl OneSession {
    /// Passes the requests for this call and session on; answers every other with 404.
    async fn check(&self, params: RawPathParams, req: Request, next: Next) -> Response {
        let route = req
            .extensions()
            .get::<MatchedPath>()
            .map(|m| m.as_str().to_owned());
        let params: HashMap<&str, &str> = params.iter().collect();
        let this_call = params.get("call_id") == Some(&self.call_id.as_str());
        // Parsed, as the handlers do (any case, with or without hyphens).
        let this_session = self.session.get().is_some_and(|id| {
            params
                .get("session_id")
                .and_then(|raw| SessionId::parse(raw).ok())
                == Some(*id)
        });
        let method = req.method().clone();
        let allowed = match route.as_deref() {
            Some("/" | "/health" | "/ready") => method == Method::GET || method == Method::HEAD,
            Some("/calls/{call_id}/ws") => this_call,
            Some("/calls/{call_id}/sessions/{session_id}") => {
                this_call && this_session && (method == Method::GET || method == Method::DELETE)
            }
            Some(
                "/calls/{call_id}/sessions/{session_id}/metrics"
                | "/calls/{call_id}/sessions/{session_id}/close",
            ) => this_call && this_session,
            _ => false,
        };
        if allowed {
            return next.run(req).await;
        }
        let session = self
            .session
            .get()
            .map_or_else(|| "not started yet".to_owned(), ToString::to_string);
        let detail = format!(
            "`run` serves only its one session (call '{}', session {session}): the demo page, the call's WebSocket and that session's routes; the rest of the API is `serve`'s",
            self.call_id
        );
        (
            StatusCode::NOT_FOUND,
            axum::Json(serde_json::json!({ "detail": detail })),
        )
            .into_response()
    }
}

/// Opens `url` in the desktop's browser when there is someone to see it (a terminal).
fn open_in_browser(url: &str) {
    use std::io::IsTerminal;
    if !std::io::stderr().is_terminal() {
        return;
    }
    let opener = if cfg!(target_os = "macos") {
        "open"
    } else {
        "xdg-open"
    };
    let opened = std::process::Command::new(opener)
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    if let Err(e) = opened {
        tracing::debug!(opener, error = %e, "could not open a browser; open the URL by hand");
    }
}

async fn run_one<A: Agent>(
    launcher: AgentLauncher<A>,
    call_id: CallId,
    call_type: CallType,
    demo_port: Option<u16>,
) -> anyhow::Result<()> {
    // The demo page's server first: the agent then joins the local call (the offered edge).
    let demo = match demo_port {
        Some(port) => Some(DemoServer::start(&launcher, &call_id, port).await?),
        None => None,
    };
    let stop_demo = |demo: Option<DemoServer>| async move {
        if let Some(demo) = demo {
            demo.stop().await;
        }
    };
    if let Err(e) = launcher.start().await {
        stop_demo(demo).await;
        return Err(anyhow::Error::new(e).context("the agent launcher could not start"));
    }
    let session = match launcher
        .start_session(call_id.clone(), call_type, None)
        .await
    {
        Ok(s) => s,
        Err(e) => {
            launcher.stop().await;
            stop_demo(demo).await;
            return Err(anyhow::Error::new(e).context("the agent could not start"));
        }
    };
    info!(session_id = %session.id(), %call_id, "agent started");
    if let Some(demo) = &demo {
        let _ = demo.session.set(session.id());
        // The page's URL once the agent is in the call (no longer `starting`), so that whoever
        // opens it finds the agent there; `start_session` returns once the agent exists.
        let give_up = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let row = launcher.registry().get(&call_id, session.id()).await;
            let joined = matches!(&row, Ok(Some(r)) if r.status != SessionStatus::Starting);
            if joined || session.finished() || tokio::time::Instant::now() >= give_up {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let url = demo.url(&call_id, &session.id().to_string());
        info!(%url, "demo page: join the call in a browser");
        open_in_browser(&url);
    }
    tokio::select! {
        end = session.wait() => info!(end_reason = %end.reason, detail = ?end.detail, "the agent's session ended"),
        () = crate::serve::shutdown_signal() => {}
    }
    launcher.stop().await;
    stop_demo(demo).await;
    Ok(())
}
