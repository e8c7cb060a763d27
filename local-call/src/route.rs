//! The local call on the local server: `GET /calls/{call_id}/ws` (people join a call over a
//! WebSocket, protocol v1 of [`crate::protocol`]) and the demo page at `/`.
//!
//! The route's checks run in the API's order: the `can_join_call` hook (401/403, the JWT
//! policy's `calls:join` scope; a browser passes its token as `?token=`), then 422 for an
//! invalid call id or an overlong token, then 426 for a request that is not a WebSocket
//! upgrade. Every refusal is JSON with a `detail`, like the rest of the API.
//!
//! A connection's first frame must be `join` (within [`JOIN_TIMEOUT`]); after it, `say` and
//! `leave`. A bad frame gets an `error` frame and the connection goes on. A message over
//! [`MAX_SOCKET_MESSAGE_BYTES`] is refused by the WebSocket layer before it is read whole,
//! and the socket closes with code 1009.
//! On shutdown every person gets `ended` (reason `shutdown`) and the socket closes.

use std::sync::Arc;
use std::time::Duration;

use crate::hub::{CallHub, PersonHandle};
use crate::protocol::{
    ClientFrame, EncodedFrame, ErrorCode, FrameError, MAX_FRAME_BYTES, ServerFrame, encode,
    parse_client_frame,
};
use axum::Router;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, Path, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::StatusCode;
use switchboard_api::{ApiError, Permission, Rejection};
use switchboard_core::CallId;
use tokio::sync::{mpsc, watch};
use tracing::{debug, info};

/// How long a connection may wait before its `join`.
pub const JOIN_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest WebSocket message read at all. Larger than the protocol's
/// [`MAX_FRAME_BYTES`] so that a frame between the two gets the protocol's
/// `frame_too_large` error rather than a closed socket.
pub const MAX_SOCKET_MESSAGE_BYTES: usize = 4 * MAX_FRAME_BYTES;

/// The demo page: join a call, chat with its agent, watch its metrics, close its session.
pub const DEMO_HTML: &str = include_str!("../static/demo.html");

/// What the local call's routes share.
#[derive(Debug, Clone)]
pub struct LocalCall {
    hub: Arc<CallHub>,
    can_join_call: Option<Permission>,
    shutdown: watch::Receiver<bool>,
}

impl LocalCall {
    /// The routes on `hub`, guarded by `can_join_call`; connections end when `shutdown`
    /// turns true.
    pub fn new(
        hub: Arc<CallHub>,
        can_join_call: Option<Permission>,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        Self {
            hub,
            can_join_call,
            shutdown,
        }
    }

    /// `GET /` (the demo page) and `GET /calls/{call_id}/ws`.
    pub fn routes(self) -> Router {
        Router::new()
            .route("/", get(demo_page))
            .route("/calls/{call_id}/ws", get(join))
            .with_state(self)
    }
}

async fn demo_page() -> Response {
    (
        [
            (http::header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (http::header::CACHE_CONTROL, "no-cache"),
        ],
        DEMO_HTML,
    )
        .into_response()
}

async fn join(State(local): State<LocalCall>, request: Request) -> Response {
    match upgrade(&local, request).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

async fn upgrade(local: &LocalCall, request: Request) -> Result<Response, ApiError> {
    let (mut parts, _) = request.into_parts();
    let Path(raw): Path<String> = Path::from_request_parts(&mut parts, &())
        .await
        .map_err(|e| ApiError::invalid(&["path", "call_id"], e.body_text(), "value_error"))?;
    if let Some(hook) = &local.can_join_call {
        hook.check_parts(&raw, &parts)
            .await
            .map_err(|r| ApiError::Rejected(Box::new(r)))?;
    }
    let call_id = CallId::parse(&raw)
        .map_err(|e| ApiError::invalid(&["path", "call_id"], e.to_string(), "value_error"))?;
    switchboard_api::check_query_token(&parts.uri)?;
    let upgrade = WebSocketUpgrade::from_request_parts(&mut parts, &())
        .await
        .map_err(|e| {
            ApiError::Rejected(Box::new(
                Rejection::new(
                    StatusCode::UPGRADE_REQUIRED,
                    format!("This route is a WebSocket (protocol v1): {}", e.body_text()),
                )
                .with_header(
                    http::header::UPGRADE,
                    http::HeaderValue::from_static("websocket"),
                ),
            ))
        })?;
    let hub = local.hub.clone();
    let shutdown = local.shutdown.clone();
    Ok(upgrade
        .max_message_size(MAX_SOCKET_MESSAGE_BYTES)
        .max_frame_size(MAX_SOCKET_MESSAGE_BYTES)
        .on_upgrade(move |socket| person(socket, hub, call_id.as_str().to_owned(), shutdown)))
}

/// What a connection has become after its `join`.
struct Joined {
    handle: PersonHandle,
    frames: mpsc::Receiver<EncodedFrame>,
}

async fn send(socket: &mut WebSocket, frame: &ServerFrame) -> bool {
    send_text(socket, encode(frame)).await
}

async fn send_text(socket: &mut WebSocket, text: impl Into<String>) -> bool {
    socket.send(Message::Text(text.into().into())).await.is_ok()
}

async fn close(socket: &mut WebSocket, code: u16, reason: &'static str) {
    let _ = socket
        .send(Message::Close(Some(CloseFrame {
            code,
            reason: reason.into(),
        })))
        .await;
}

/// Whether a read failed on a message over [`MAX_SOCKET_MESSAGE_BYTES`].
fn too_big(error: axum::Error) -> bool {
    error
        .into_inner()
        .downcast_ref::<tungstenite::Error>()
        .is_some_and(|e| matches!(e, tungstenite::Error::Capacity(_)))
}

/// Resolves once the server shuts down (never if the sender is gone without saying so).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    if shutdown.wait_for(|stop| *stop).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// The next frame for a joined person; `None` when the hub dropped them (too slow).
async fn next_frame(joined: &mut Option<Joined>) -> Option<EncodedFrame> {
    match joined {
        Some(joined) => joined.frames.recv().await,
        None => std::future::pending().await,
    }
}

/// One person's connection, from upgrade to close.
async fn person(
    mut socket: WebSocket,
    hub: Arc<CallHub>,
    call_id: String,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut joined: Option<Joined> = None;
    let join_deadline = tokio::time::sleep(JOIN_TIMEOUT);
    tokio::pin!(join_deadline);
    loop {
        tokio::select! {
            biased;
            () = stopped(&mut shutdown) => {
                // What happened before the shutdown (the agents leaving) is said first.
                if let Some(person) = &mut joined {
                    while let Ok(frame) = person.frames.try_recv() {
                        if !send_text(&mut socket, frame.text()).await {
                            break;
                        }
                    }
                }
                send(&mut socket, &ServerFrame::Ended { reason: "shutdown".into() }).await;
                close(&mut socket, 1001, "server shutting down").await;
                break;
            }
            () = &mut join_deadline, if joined.is_none() => {
                let error = FrameError::new(ErrorCode::NotJoined, format!("no join within {} s", JOIN_TIMEOUT.as_secs()));
                send(&mut socket, &error.to_frame()).await;
                close(&mut socket, 1008, "no join").await;
                break;
            }
            frame = next_frame(&mut joined) => match frame {
                Some(frame) => {
                    if !send_text(&mut socket, frame.text()).await {
                        break;
                    }
                }
                None => {
                    // The hub dropped this person: their queue was full (a reader too slow).
                    close(&mut socket, 1008, "too slow: messages were not read").await;
                    break;
                }
            },
            message = socket.recv() => {
                let text = match message {
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(Message::Binary(_))) => {
                        let error = FrameError::new(ErrorCode::BinaryNotSupported, "only text frames carry protocol v1");
                        if !send(&mut socket, &error.to_frame()).await {
                            break;
                        }
                        continue;
                    }
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    Some(Err(error)) => {
                        if too_big(error) {
                            close(&mut socket, 1009, "message too big").await;
                        }
                        break;
                    }
                    Some(Ok(Message::Close(_))) | None => break,
                };
                match (parse_client_frame(text.as_str()), &mut joined) {
                    (Err(error), _) => {
                        if !send(&mut socket, &error.to_frame()).await {
                            break;
                        }
                    }
                    (Ok(ClientFrame::Join { name }), None) => {
                        let (handle, frames) = hub.join_person(&call_id, &name);
                        info!(call_id, participant = %handle.participant().id, "person joined the local call");
                        joined = Some(Joined { handle, frames });
                    }
                    (Ok(ClientFrame::Join { .. }), Some(_)) => {
                        let error = FrameError::new(ErrorCode::AlreadyJoined, "this connection already joined");
                        if !send(&mut socket, &error.to_frame()).await {
                            break;
                        }
                    }
                    (Ok(ClientFrame::Say { .. } | ClientFrame::Leave), None) => {
                        let error = FrameError::new(ErrorCode::NotJoined, "send join first");
                        if !send(&mut socket, &error.to_frame()).await {
                            break;
                        }
                    }
                    (Ok(ClientFrame::Say { text }), Some(person)) => {
                        if !person.handle.say(&text) {
                            close(&mut socket, 1008, "no longer in the call").await;
                            break;
                        }
                    }
                    (Ok(ClientFrame::Leave), Some(_)) => {
                        close(&mut socket, 1000, "left").await;
                        break;
                    }
                }
            }
        }
    }
    if let Some(mut person) = joined {
        debug!(call_id, participant = %person.handle.participant().id, "person left the local call");
        person.handle.leave();
    }
}
