//! `GET /pool` and the sessions' `start_type` / `start_latency_ms`: a launcher that keeps a
//! pool answers it (counts per task definition and state, lapsed leases not counted); one
//! that keeps none (`serve`) is a 404 with a detail; it is guarded like `GET /sessions`, and
//! fleet-wide.

use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, StatusCode};
use serde_json::{Value, json};
use switchboard_api::auth::JwtPolicy;
use switchboard_api::{AppState, ServeOptions};
use switchboard_core::{
    CallId, LaunchError, Launched, Limits, ManualClock, MemoryRegistry, PoolStatus, Session,
    SessionId, SessionRegistry, Standby, StandbyState, StartType, TaskLauncher, Timestamp,
};

use crate::support::spawn_app;

const T0: Timestamp = Timestamp::from_unix_micros(1_767_225_600_000_000);
const CURRENT: &str = "arn:aws:ecs:us-east-1:1:task-definition/agent:2";
const OLD: &str = "arn:aws:ecs:us-east-1:1:task-definition/agent:1";

/// A launcher with a fixed pool that starts every session warm.
#[derive(Debug)]
struct Pooled;

fn standby(n: u32, definition: &str, state: StandbyState, lease_s: i64) -> Standby {
    Standby {
        task_arn: format!("arn:aws:ecs:us-east-1:1:task/c/{n}"),
        task_definition: definition.to_owned(),
        state,
        lease_expires_at: Timestamp::from_unix_micros(T0.unix_micros() + lease_s * 1_000_000),
        since: T0,
        session: (state == StandbyState::Claimed).then(|| {
            (
                CallId::parse("call-a").unwrap(),
                SessionId::parse("01a2324d-a4cd-729a-9b1d-ae5c6ed7f335").unwrap(),
            )
        }),
    }
}

#[async_trait::async_trait]
impl TaskLauncher for Pooled {
    async fn launch(&self, _session: &Session) -> Result<Launched, LaunchError> {
        Ok(Launched {
            task_arn: Some("arn:aws:ecs:us-east-1:1:task/c/1".into()),
            start_type: Some(StartType::Warm),
            recorded: false,
        })
    }

    async fn pool(&self) -> Option<switchboard_core::Result<PoolStatus>> {
        Some(Ok(PoolStatus {
            target_size: 3,
            task_definition: CURRENT.into(),
            standbys: vec![
                standby(1, CURRENT, StandbyState::Idle, 30),
                standby(2, CURRENT, StandbyState::Idle, -1),
                standby(3, CURRENT, StandbyState::Provisioning, 600),
                standby(4, CURRENT, StandbyState::Claimed, 30),
                standby(5, OLD, StandbyState::Idle, 30),
            ],
            at: T0,
        }))
    }
}

struct App {
    router: axum::Router,
    registry: Arc<MemoryRegistry>,
    clock: Arc<ManualClock>,
}

fn app(options: ServeOptions) -> App {
    let clock = Arc::new(ManualClock::new(T0));
    let registry = Arc::new(MemoryRegistry::new(clock.clone()));
    let state = AppState::new(registry.clone(), Arc::new(Pooled), Limits::default());
    App {
        router: switchboard_api::router(state, options).unwrap(),
        registry,
        clock,
    }
}

async fn call(
    router: &axum::Router,
    method: Method,
    uri: &str,
    token: Option<&str>,
) -> (StatusCode, Value) {
    let mut request = Request::builder().method(method).uri(uri);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let response = tower::ServiceExt::oneshot(
        router.clone(),
        request.body(axum::body::Body::empty()).unwrap(),
    )
    .await
    .unwrap();
    let status = response.status();
    let body = http_body_util::BodyExt::collect(response.into_body())
        .await
        .unwrap()
        .to_bytes();
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

#[tokio::test]
async fn serve_keeps_no_pool_and_says_so() {
    let app = spawn_app().await;
    let r = app.get("/pool").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(
        r.detail()
            .as_str()
            .unwrap()
            .starts_with("No warm pool is kept here"),
        "{}",
        r.text()
    );
}

#[tokio::test]
async fn the_pool_is_counted_per_task_definition_and_state_without_lapsed_leases() {
    let app = app(ServeOptions::default());
    let (status, body) = call(&app.router, Method::GET, "/pool", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["target_size"], 3);
    assert_eq!(body["task_definition"], CURRENT);
    assert_eq!(
        body["definitions"],
        json!([
            {"task_definition": CURRENT, "current": true, "idle": 1, "claimed": 1, "provisioning": 1},
            {"task_definition": OLD, "current": false, "idle": 1, "claimed": 0, "provisioning": 0},
        ])
    );
    let standbys = body["standbys"].as_array().unwrap();
    assert_eq!(standbys.len(), 5);
    assert_eq!(standbys[1]["lease_lapsed"], true);
    assert_eq!(standbys[3]["state"], "claimed");
    assert_eq!(standbys[3]["call_id"], "call-a");
    assert_eq!(standbys[0]["session_id"], Value::Null);
}

#[tokio::test]
async fn sessions_carry_their_start_type_and_latency() {
    let app = app(ServeOptions::default());
    let (status, created) = call(&app.router, Method::POST, "/calls/c1/sessions", None).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["session_id"].as_str().unwrap().to_owned();
    let (_, got) = call(
        &app.router,
        Method::GET,
        &format!("/calls/c1/sessions/{id}"),
        None,
    )
    .await;
    assert_eq!(got["start_type"], "warm");
    assert_eq!(got["start_latency_ms"], Value::Null, "not joined yet");
    app.clock.advance(Duration::from_millis(187));
    app.registry
        .mark_running(
            &CallId::parse("c1").unwrap(),
            SessionId::parse(&id).unwrap(),
        )
        .await
        .unwrap();
    let (_, got) = call(
        &app.router,
        Method::GET,
        &format!("/calls/c1/sessions/{id}"),
        None,
    )
    .await;
    assert_eq!(got["start_latency_ms"], 187);
    let (_, listed) = call(&app.router, Method::GET, "/sessions", None).await;
    assert_eq!(listed["sessions"][0]["start_type"], "warm");
    assert_eq!(listed["sessions"][0]["start_latency_ms"], 187);
}

#[tokio::test]
async fn the_pool_is_guarded_like_the_lists_and_fleet_wide() {
    const SECRET: &[u8] = b"an hs256 secret of at least thirty-two bytes";
    let app = app(ServeOptions {
        hooks: Arc::new(JwtPolicy::new("HS256", SECRET).unwrap()).hooks(),
        ..ServeOptions::default()
    });
    let sign = |claims: Value| {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(SECRET).unwrap(),
        )
        .unwrap()
    };
    let exp = jsonwebtoken::get_current_timestamp() + 600;
    let (status, _) = call(&app.router, Method::GET, "/pool", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let no_scope = sign(json!({"sub": "u", "exp": exp, "scope": "sessions:start"}));
    let (status, _) = call(&app.router, Method::GET, "/pool", Some(&no_scope)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let some_calls =
        sign(json!({"sub": "u", "exp": exp, "scope": "sessions:view", "calls": ["call-a"]}));
    let (status, body) = call(&app.router, Method::GET, "/pool", Some(&some_calls)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        body["detail"],
        "The warm pool is fleet-wide: it needs permission to view every call"
    );
    let viewer = sign(json!({"sub": "u", "exp": exp, "scope": "sessions:view"}));
    let (status, _) = call(&app.router, Method::GET, "/pool", Some(&viewer)).await;
    assert_eq!(status, StatusCode::OK);
}
