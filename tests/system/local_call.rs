//! The local call end to end, with a Rust WebSocket client against the real local server
//! (`serve_on` on 127.0.0.1 port 0) and the demo agent: people join, the agent joins through
//! the API, greets, answers through its model and tool, bad frames get error frames and never
//! end the call, and when the last person leaves the idle timeout closes the session.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use switchboard_agent::AgentLauncher;
use switchboard_api::ServeOptions;
use switchboard_runner::serve::serve_on;
use switchboard_testkit::http::{Reply, request};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How long a test waits for one expected frame before failing.
const FRAME_WAIT: Duration = Duration::from_secs(10);

pub struct Server {
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Server {
    /// The demo agent under `serve_on`, with a 1 s idle timeout and a 0.2 s interval.
    pub async fn start(options: ServeOptions) -> Self {
        let launcher = AgentLauncher::builder(demo_agent::create_agent, demo_agent::join_call)
            .agent_idle_timeout(1.0)
            .maintenance_interval(0.2)
            .build()
            .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(serve_on(launcher, options, listener, async {
            let _ = stopped.await;
        }));
        let server = Self {
            addr,
            stop: Some(stop),
            task,
        };
        let deadline = Instant::now() + FRAME_WAIT;
        while server.http("GET", "/ready", "").await.status != 200 {
            assert!(Instant::now() < deadline, "the server never became ready");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        server
    }

    pub async fn http(&self, method: &str, path: &str, body: &str) -> Reply {
        request(
            &self.addr.to_string(),
            method,
            path,
            &[("Content-Type", "application/json")],
            body,
        )
        .await
    }

    /// Starts the demo agent in `call`; returns its session id.
    pub async fn start_agent(&self, call: &str) -> String {
        let reply = self
            .http("POST", &format!("/calls/{call}/sessions"), "{}")
            .await;
        assert_eq!(reply.status, 201, "{}", reply.body);
        reply.json()["session_id"].as_str().unwrap().to_owned()
    }

    pub async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        (&mut self.task).await.unwrap().unwrap();
    }
}

/// Opens `/calls/{call}/ws` (with extra request headers).
pub async fn connect(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Socket, tokio_tungstenite::tungstenite::Error> {
    let mut request = format!("ws://{addr}{path}").into_client_request().unwrap();
    for (name, value) in headers {
        request.headers_mut().insert(
            tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    tokio_tungstenite::connect_async(request)
        .await
        .map(|(socket, _)| socket)
}

pub async fn send(socket: &mut Socket, frame: Value) {
    socket
        .send(Message::text(frame.to_string()))
        .await
        .expect("send");
}

/// The next protocol frame (pings and pongs skipped); panics on close or after FRAME_WAIT.
pub async fn next(socket: &mut Socket) -> Value {
    loop {
        let message = tokio::time::timeout(FRAME_WAIT, socket.next())
            .await
            .expect("no frame in time")
            .expect("the socket closed")
            .expect("a socket error");
        match message {
            Message::Text(text) => {
                let frame: Value = serde_json::from_str(&text).unwrap();
                assert_eq!(frame["v"], 1, "every frame carries the version: {frame}");
                return frame;
            }
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
}

/// Frames until one of `kind` (the others are returned too, in order).
pub async fn until(socket: &mut Socket, kind: &str) -> (Value, Vec<Value>) {
    let mut before = Vec::new();
    loop {
        let frame = next(socket).await;
        if frame["type"] == kind {
            return (frame, before);
        }
        before.push(frame);
    }
}

/// Joins as `name`; returns the `welcome` frame.
pub async fn join(socket: &mut Socket, name: &str) -> Value {
    send(socket, json!({"v": 1, "type": "join", "name": name})).await;
    let welcome = next(socket).await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    welcome
}

/// The next `message` frame from an agent.
pub async fn agent_says(socket: &mut Socket) -> String {
    loop {
        let (frame, _) = until(socket, "message").await;
        if frame["from"]["agent"] == true {
            return frame["text"].as_str().unwrap().to_owned();
        }
    }
}

async fn session(server: &Server, call: &str, session_id: &str) -> Value {
    server
        .http("GET", &format!("/calls/{call}/sessions/{session_id}"), "")
        .await
        .json()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn people_talk_with_the_agent_and_the_idle_timeout_closes_when_the_last_one_leaves() {
    let server = Server::start(ServeOptions::default()).await;
    let call = "ws-talk";
    let mut ada = connect(server.addr, &format!("/calls/{call}/ws"), &[])
        .await
        .unwrap();
    let welcome = join(&mut ada, "Ada").await;
    assert_eq!(welcome["call_id"], call);
    assert_eq!(welcome["you"]["name"], "Ada");
    assert_eq!(welcome["you"]["agent"], false);
    assert_eq!(welcome["participants"], json!([]), "nobody else yet");

    // The agent joins through the API: Ada sees it arrive, then its greeting.
    let session_id = server.start_agent(call).await;
    let (joined, _) = until(&mut ada, "joined").await;
    assert_eq!(joined["participant"]["agent"], true);
    assert_eq!(joined["participant"]["name"], "Assistant");
    assert_eq!(agent_says(&mut ada).await, demo_agent::GREETING);
    // The supervisor marks the session running once it sees the agent joined (its own write,
    // a moment after the greeting).
    let deadline = Instant::now() + FRAME_WAIT;
    loop {
        let status = session(&server, call, &session_id).await["status"].clone();
        if status == "running" {
            break;
        }
        assert_eq!(status, "starting", "never running");
        assert!(Instant::now() < deadline, "never running");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // A question: Ada's own message comes back first, then the agent's answer (the tool).
    let asked = Instant::now();
    send(
        &mut ada,
        json!({"v": 1, "type": "say", "text": "What's the weather in Paris?"}),
    )
    .await;
    let (echo, _) = until(&mut ada, "message").await;
    assert_eq!(echo["from"]["id"], welcome["you"]["id"]);
    assert_eq!(echo["text"], "What's the weather in Paris?");
    assert!(
        chrono_like(echo["at"].as_str().unwrap()),
        "RFC 3339: {echo}"
    );
    assert_eq!(
        agent_says(&mut ada).await,
        "The weather in Paris is sunny and 72°F."
    );
    eprintln!(
        "round trip, question → agent's answer through the local call: {:?}",
        asked.elapsed()
    );

    // A second person: Ada sees them join, the agent welcomes them by name, both hear it.
    let mut bob = connect(server.addr, &format!("/calls/{call}/ws"), &[])
        .await
        .unwrap();
    let bob_welcome = join(&mut bob, "Bob").await;
    let others: Vec<&str> = bob_welcome["participants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(others, ["Assistant", "Ada"], "agents first, then people");
    let (joined, _) = until(&mut ada, "joined").await;
    assert_eq!(joined["participant"]["name"], "Bob");
    let welcome_bob = format!("Welcome, Bob! {}", demo_agent::GREETING);
    assert_eq!(agent_says(&mut ada).await, welcome_bob);
    assert_eq!(agent_says(&mut bob).await, welcome_bob);

    // Bob leaves with a frame, Ada sees it; the agent is not alone (Ada is there).
    send(&mut bob, json!({"v": 1, "type": "leave"})).await;
    let (left, _) = until(&mut ada, "left").await;
    assert_eq!(left["participant"]["name"], "Bob");

    // The metrics reach the API from what the agent did (flushed every 0.2 s).
    let metrics_path = format!("/calls/{call}/sessions/{session_id}/metrics");
    let deadline = Instant::now() + FRAME_WAIT;
    loop {
        let metrics = server.http("GET", &metrics_path, "").await.json();
        if metrics["metrics"]["llm_tool_calls__total"] == 1 {
            assert!(
                metrics["metrics"]["llm_output_tokens__total"]
                    .as_u64()
                    .unwrap()
                    > 0
            );
            assert!(metrics["metrics"]["llm_latency_ms__avg"].is_number());
            break;
        }
        assert!(
            Instant::now() < deadline,
            "metrics never flushed: {metrics}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Still running well past the idle timeout while Ada stays...
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        session(&server, call, &session_id).await["status"],
        "running"
    );
    // ...and once she closes her socket, the agent is alone: the idle timeout (1 s) ends it.
    let left_at = Instant::now();
    ada.close(None).await.unwrap();
    drop(ada);
    let deadline = Instant::now() + FRAME_WAIT;
    let session_path = format!("/calls/{call}/sessions/{session_id}");
    loop {
        // An ended session is 404 on its own route (as the anchor's).
        let reply = server.http("GET", &session_path, "").await;
        if reply.status == 404 {
            break;
        }
        assert!(Instant::now() < deadline, "never closed: {}", reply.body);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let after = left_at.elapsed();
    assert!(
        after >= Duration::from_millis(900),
        "closed {after:?} after the last person left: before the idle timeout"
    );
    let listed = server
        .http(
            "GET",
            &format!("/calls/{call}/sessions?include_ended=true"),
            "",
        )
        .await
        .json();
    assert_eq!(listed["sessions"][0]["end_reason"], "idle", "{listed}");
    server.stop().await;
}

fn chrono_like(at: &str) -> bool {
    at.len() >= 20 && at.as_bytes()[10] == b'T' && at.ends_with('Z')
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_get_error_frames_and_the_call_goes_on() {
    let server = Server::start(ServeOptions::default()).await;
    let mut socket = connect(server.addr, "/calls/ws-bad/ws", &[]).await.unwrap();
    // Before join: say and leave are refused.
    for frame in [
        json!({"v": 1, "type": "say", "text": "hi"}),
        json!({"v": 1, "type": "leave"}),
    ] {
        send(&mut socket, frame).await;
        let error = next(&mut socket).await;
        assert_eq!(error["type"], "error");
        assert_eq!(error["code"], "not_joined", "{error}");
    }
    join(&mut socket, "Eve").await;
    let cases: Vec<(Message, &str)> = vec![
        (Message::text("not json"), "invalid_json"),
        (Message::text("[1, 2]"), "invalid_json"),
        (
            Message::text(r#"{"v": 2, "type": "say", "text": "hi"}"#),
            "unsupported_version",
        ),
        (
            Message::text(r#"{"v": 1, "type": "shout"}"#),
            "unknown_type",
        ),
        (Message::text(r#"{"v": 1, "type": "say"}"#), "invalid_frame"),
        (
            Message::text(r#"{"v": 1, "type": "say", "text": ""}"#),
            "invalid_frame",
        ),
        (
            Message::text(r#"{"v": 1, "type": "say", "text": "hi", "extra": 1}"#),
            "invalid_frame",
        ),
        (
            Message::text(json!({"v": 1, "type": "say", "text": "x".repeat(4001)}).to_string()),
            "invalid_frame",
        ),
        (
            Message::text(json!({"v": 1, "type": "say", "text": "x".repeat(20_000)}).to_string()),
            "frame_too_large",
        ),
        (Message::binary(vec![0u8, 1, 2]), "binary_not_supported"),
        (
            Message::text(r#"{"v": 1, "type": "join", "name": "Eve again"}"#),
            "already_joined",
        ),
    ];
    for (message, code) in cases {
        socket.send(message).await.unwrap();
        let error = next(&mut socket).await;
        assert_eq!(error["type"], "error");
        assert_eq!(error["code"], code, "{error}");
        assert!(!error["detail"].as_str().unwrap().is_empty());
    }
    // The connection and the call go on.
    send(
        &mut socket,
        json!({"v": 1, "type": "say", "text": "still here"}),
    )
    .await;
    let (message, _) = until(&mut socket, "message").await;
    assert_eq!(message["text"], "still here");

    // A message beyond what the socket reads at all closes it (1009), not the server.
    socket
        .send(Message::text("x".repeat(
            switchboard_local_call::route::MAX_SOCKET_MESSAGE_BYTES + 1,
        )))
        .await
        .unwrap();
    let closed = tokio::time::timeout(FRAME_WAIT, async {
        loop {
            match socket.next().await {
                Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return None,
            }
        }
    })
    .await
    .expect("the socket was not closed");
    assert_eq!(
        closed,
        Some(1009),
        "the socket closes with 1009 (message too big), not by dropping the connection"
    );
    assert_eq!(server.http("GET", "/health", "").await.status, 200);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_route_refuses_what_is_not_a_websocket_join_with_json_details() {
    let server = Server::start(ServeOptions::default()).await;
    // A plain GET: 426 with a detail and `Upgrade: websocket`.
    let reply = server.http("GET", "/calls/ws-plain/ws", "").await;
    assert_eq!(reply.status, 426, "{}", reply.body);
    assert!(
        reply.json()["detail"]
            .as_str()
            .unwrap()
            .contains("WebSocket")
    );
    assert!(
        reply
            .headers
            .iter()
            .any(|(k, v)| k == "upgrade" && v == "websocket")
    );
    // An invalid call id: 422 before any upgrade.
    let reply = server.http("GET", "/calls/bad%01id/ws", "").await;
    assert_eq!(reply.status, 422, "{}", reply.body);
    assert_eq!(reply.json()["detail"][0]["loc"], json!(["path", "call_id"]));
    let error = connect(server.addr, "/calls/bad%01id/ws", &[]).await;
    assert!(error.is_err(), "no upgrade for an invalid call id");
    // An overlong token: 422.
    let long = "a".repeat(switchboard_api::MAX_TOKEN_CHARS + 1);
    let reply = server
        .http("GET", &format!("/calls/ws-plain/ws?token={long}"), "")
        .await;
    assert_eq!(reply.status, 422, "{}", reply.body);
    // Other methods: 405 with a detail.
    let reply = server.http("POST", "/calls/ws-plain/ws", "").await;
    assert_eq!(reply.status, 405);
    assert!(reply.json()["detail"].is_string());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_tells_people_the_call_ended_after_the_agent_left() {
    let server = Server::start(ServeOptions::default()).await;
    let mut socket = connect(server.addr, "/calls/ws-stop/ws", &[])
        .await
        .unwrap();
    join(&mut socket, "Ada").await;
    server.start_agent("ws-stop").await;
    assert_eq!(agent_says(&mut socket).await, demo_agent::GREETING);
    let stopping = tokio::spawn(server.stop());
    let (left, before) = until(&mut socket, "left").await;
    assert_eq!(
        left["participant"]["agent"], true,
        "the agent leaves first: {before:?}"
    );
    let (ended, _) = until(&mut socket, "ended").await;
    assert_eq!(ended["reason"], "shutdown");
    stopping.await.unwrap();
}

const SECRET: &[u8] = b"an hs256 secret of at least thirty-two bytes";

fn token(claims: Value, key: &[u8]) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(key).unwrap(),
    )
    .unwrap()
}

fn claims(scope: &str, calls: Option<&[&str]>, exp_in: i64) -> Value {
    let now = jsonwebtoken::get_current_timestamp() as i64;
    let mut claims = json!({"sub": "tester", "exp": now + exp_in, "scope": scope});
    if let Some(calls) = calls {
        claims["calls"] = json!(calls);
    }
    claims
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_jwt_joining_needs_calls_join_on_that_call() {
    let policy = Arc::new(switchboard_api::auth::JwtPolicy::new("HS256", SECRET).unwrap());
    let server = Server::start(ServeOptions {
        hooks: policy.hooks(),
        ..ServeOptions::default()
    })
    .await;
    let other_scopes = "sessions:start sessions:close sessions:view metrics:view";
    let refused = [
        ("no token", None, 401),
        ("garbage", Some("not-a-jwt".to_owned()), 401),
        (
            "another secret",
            Some(token(
                claims("calls:join", None, 600),
                b"another secret of at least thirty-two bytes!",
            )),
            401,
        ),
        (
            "expired",
            Some(token(claims("calls:join", None, -3600), SECRET)),
            401,
        ),
        (
            "every scope but calls:join",
            Some(token(claims(other_scopes, None, 600), SECRET)),
            403,
        ),
        (
            "another call",
            Some(token(
                claims("calls:join", Some(&["elsewhere"]), 600),
                SECRET,
            )),
            403,
        ),
    ];
    for (case, token, status) in refused {
        // In the query (how a browser sends it) and in the header: the same answer, before
        // any upgrade, with no token echoed.
        let by_query = match &token {
            Some(t) => format!("/calls/jwt-call/ws?token={t}"),
            None => "/calls/jwt-call/ws".to_owned(),
        };
        let upgrade_headers = [
            ("Connection", "Upgrade"),
            ("Upgrade", "websocket"),
            ("Sec-WebSocket-Version", "13"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ];
        let reply = request(
            &server.addr.to_string(),
            "GET",
            &by_query,
            &upgrade_headers,
            "",
        )
        .await;
        assert_eq!(reply.status, status, "{case} (query): {}", reply.body);
        assert!(reply.json()["detail"].is_string(), "{case}");
        if let Some(t) = &token {
            assert!(!reply.body.contains(t.as_str()), "{case}: token echoed");
            let bearer = format!("Bearer {t}");
            let mut headers = upgrade_headers.to_vec();
            headers.push(("Authorization", &bearer));
            let reply = request(
                &server.addr.to_string(),
                "GET",
                "/calls/jwt-call/ws",
                &headers,
                "",
            )
            .await;
            assert_eq!(reply.status, status, "{case} (header): {}", reply.body);
        }
        if status == 401 {
            assert!(
                reply
                    .headers
                    .iter()
                    .any(|(k, v)| k == "www-authenticate" && v.starts_with("Bearer")),
                "{case}"
            );
        }
        assert!(
            connect(server.addr, &by_query, &[]).await.is_err(),
            "{case}: no upgrade"
        );
    }
    // The right token joins, by query or by header.
    let good = token(claims("calls:join", Some(&["jwt-call"]), 600), SECRET);
    let mut by_query = connect(
        server.addr,
        &format!("/calls/jwt-call/ws?token={good}"),
        &[],
    )
    .await
    .unwrap();
    join(&mut by_query, "Ada").await;
    let bearer = format!("Bearer {good}");
    let mut by_header = connect(
        server.addr,
        "/calls/jwt-call/ws",
        &[("Authorization", &bearer)],
    )
    .await
    .unwrap();
    join(&mut by_header, "Bob").await;
    let (joined, _) = until(&mut by_query, "joined").await;
    assert_eq!(joined["participant"]["name"], "Bob");
    // A call-join token does nothing else: starting an agent needs sessions:start.
    let reply = request(
        &server.addr.to_string(),
        "POST",
        "/calls/jwt-call/sessions",
        &[("Authorization", &bearer)],
        "{}",
    )
    .await;
    assert_eq!(reply.status, 403, "{}", reply.body);
    server.stop().await;
}
