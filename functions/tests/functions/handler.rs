//! The `api` handler from API Gateway HTTP API v2 events, against moto's DynamoDB and ECS.

use std::collections::HashMap;

use axum::Router;
use serde_json::json;
use switchboard_functions::{ApiConfig, api_router};

use crate::events::{Event, get, invoke};

struct Api {
    router: Router,
    ecs: aws_sdk_ecs::Client,
    cluster: String,
}

/// The `api` function's variables for a fresh deployment on moto: its own table, cluster and
/// task definition, the default-VPC subnet. Returns them with the ECS client and the cluster.
pub(crate) async fn deployment_vars() -> (HashMap<&'static str, String>, aws_sdk_ecs::Client, String)
{
    let table = switchboard_testkit::table(&switchboard_testkit::client().await).await;
    let ecs = switchboard_testkit::ecs_client();
    let (cluster, definition) = switchboard_testkit::ecs_cluster(&ecs).await;
    let mut vars = crate::config::complete();
    vars.insert("TABLE_NAME", table);
    vars.insert("ECS_CLUSTER", cluster.clone());
    vars.insert("TASK_DEFINITION", definition);
    vars.insert("SUBNETS", switchboard_testkit::subnet());
    (vars, ecs, cluster)
}

async fn api(edit: impl FnOnce(&mut HashMap<&'static str, String>)) -> Api {
    let sdk = switchboard_testkit::sdk_config().await;
    let (mut vars, ecs, cluster) = deployment_vars().await;
    vars.insert("SWITCHBOARD_MAX_CONCURRENT_SESSIONS", "3".into());
    vars.insert("SWITCHBOARD_MAX_SESSIONS_PER_CALL", "2".into());
    edit(&mut vars);
    let config = ApiConfig::from_lookup(|name| vars.get(name).cloned()).expect("config");
    Api {
        router: api_router(&config, &sdk).expect("router"),
        ecs,
        cluster,
    }
}

fn start(call: &str) -> Event {
    get(format!("/calls/{call}/sessions"))
        .method("POST")
        .json(json!({"call_type": "default", "metadata": {"user": "u-1"}}))
}

#[tokio::test]
async fn health_ready_docs_openapi_and_preflight_need_no_credentials() {
    let api = api(|_| {}).await;
    let health = invoke(&api.router, &get("/health").unauthenticated()).await;
    assert_eq!(health.status, 200, "{health:?}");
    let ready = invoke(&api.router, &get("/ready").unauthenticated()).await;
    assert_eq!(ready.status, 200, "the table answers: {ready:?}");
    let openapi = invoke(&api.router, &get("/openapi.json").unauthenticated()).await;
    assert_eq!(openapi.status, 200);
    assert!(
        openapi.json()["openapi"]
            .as_str()
            .unwrap()
            .starts_with("3.1")
    );
    let docs = invoke(&api.router, &get("/docs/").unauthenticated()).await;
    assert_eq!(docs.status, 200);
    assert!(docs.body.contains("swagger"), "the Swagger UI page");
    let preflight = invoke(
        &api.router,
        &get("/calls/c/sessions")
            .method("OPTIONS")
            .unauthenticated()
            .header("origin", "https://app.example")
            .header("access-control-request-method", "POST"),
    )
    .await;
    assert_eq!(preflight.status, 200, "{preflight:?}");
    assert_eq!(
        preflight.header("access-control-allow-origin"),
        None,
        "no origin is allowed unless CORS_ALLOW_ORIGINS names it"
    );
}

#[tokio::test]
async fn cors_allows_exactly_the_origins_the_deployer_names() {
    let api = api(|vars| {
        vars.insert("CORS_ALLOW_ORIGINS", "https://app.example".into());
    })
    .await;
    let preflight = |origin: &'static str| {
        get("/calls/c/sessions")
            .method("OPTIONS")
            .unauthenticated()
            .header("origin", origin)
            .header("access-control-request-method", "POST")
    };
    let allowed = invoke(&api.router, &preflight("https://app.example")).await;
    assert_eq!(allowed.status, 200, "{allowed:?}");
    assert_eq!(
        allowed.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    let other = invoke(&api.router, &preflight("https://evil.example")).await;
    assert_eq!(
        other.header("access-control-allow-origin"),
        None,
        "{other:?}"
    );
}

#[tokio::test]
async fn a_rejected_launch_releases_its_idempotency_key_and_history_lists_it() {
    // Every grant of the api function's role is a call its code makes: this is the path that
    // deletes an Idempotency-Key (a definite launch failure ends the session start_failed and
    // gives the key back), and the one that scans for history.
    let api = api(|vars| {
        vars.insert("TASK_DEFINITION", "switchboard-no-such-definition:1".into());
    })
    .await;
    let keyed = || start("call-rejected").header("idempotency-key", "retry-me-1");
    let first = invoke(&api.router, &keyed()).await;
    assert_eq!(first.status, 500, "{first:?}");
    assert_eq!(first.json()["detail"], "Failed to start agent");
    let again = invoke(&api.router, &keyed()).await;
    assert_eq!(
        again.status, 500,
        "the key was released: a new attempt, not a replay of the failed one: {again:?}"
    );
    let history = invoke(&api.router, &get("/sessions?include_ended=true&limit=10")).await;
    assert_eq!(history.status, 200, "{history:?}");
    let ended: Vec<_> = history.json()["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["call_id"] == "call-rejected")
        .map(|s| s["end_reason"].clone())
        .collect();
    assert_eq!(ended, [json!("start_failed"), json!("start_failed")]);
}

#[tokio::test]
async fn a_session_lifecycle_through_api_gateway_events() {
    let api = api(|_| {}).await;
    let created = invoke(&api.router, &start("call-1")).await;
    assert_eq!(created.status, 201, "{created:?}");
    assert_eq!(created.header("content-type"), Some("application/json"));
    let body = created.json();
    let id = body["session_id"].as_str().unwrap().to_owned();
    assert_eq!(body["call_id"], "call-1");
    assert_eq!(body["status"], "starting");

    // One RunTask, whose overrides carry the session (never its metadata).
    let tasks = switchboard_testkit::tasks_started_by(&api.ecs, &api.cluster, &id).await;
    assert_eq!(tasks.len(), 1);
    let env = switchboard_testkit::task_environment(&api.ecs, &api.cluster, &tasks[0]).await;
    assert_eq!(env["SESSION_ID"], id);
    assert_eq!(env["CALL_ID"], "call-1");
    assert!(
        !env.values().any(|v| v.contains("u-1")),
        "metadata stays in the table"
    );

    let path = format!("/calls/call-1/sessions/{id}");
    let got = invoke(&api.router, &get(&path)).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.json()["status"], "starting");
    assert_eq!(got.json()["session_started_at"], body["session_started_at"]);

    let metrics = invoke(&api.router, &get(format!("{path}/metrics"))).await;
    assert_eq!(metrics.status, 200);
    let m = metrics.json();
    assert_eq!(m["metrics_generated_at"], body["session_started_at"]);
    assert_eq!(
        m["metrics"].as_object().unwrap().len(),
        70,
        "every name, before any flush"
    );

    let listed = invoke(&api.router, &get("/calls/call-1/sessions")).await;
    assert_eq!(listed.status, 200);
    assert_eq!(listed.json()["sessions"][0]["session_id"], id.as_str());
    let all = invoke(&api.router, &get("/sessions").query("limit=500")).await;
    assert_eq!(all.status, 200);
    assert!(all.body.contains(&id));

    let deleted = invoke(&api.router, &get(&path).method("DELETE")).await;
    assert_eq!(deleted.status, 202, "{deleted:?}");
    assert_eq!(deleted.body, "");
    let closing = invoke(&api.router, &get(&path)).await.json();
    assert_eq!(closing["status"], "closing", "the task acts on the flag");
    assert!(
        closing["close_requested_at"]
            .as_str()
            .unwrap()
            .ends_with('Z')
    );
    let beacon = invoke(&api.router, &get(format!("{path}/close")).method("POST")).await;
    assert_eq!(beacon.status, 202, "closing twice is fine");
}

#[tokio::test]
async fn limits_hold_and_refusals_are_429_with_the_anchor_messages() {
    let api = api(|_| {}).await;
    assert_eq!(invoke(&api.router, &start("call-a")).await.status, 201);
    assert_eq!(invoke(&api.router, &start("call-a")).await.status, 201);
    let per_call = invoke(&api.router, &start("call-a")).await;
    assert_eq!(per_call.status, 429);
    assert_eq!(
        per_call.json()["detail"],
        "Reached maximum number of sessions for this call"
    );
    assert_eq!(invoke(&api.router, &start("call-b")).await.status, 201);
    let global = invoke(&api.router, &start("call-c")).await;
    assert_eq!(global.status, 429);
    assert_eq!(
        global.json()["detail"],
        "Reached maximum number of concurrent sessions"
    );
}

#[tokio::test]
async fn a_base64_body_is_decoded_and_bad_input_is_a_4xx() {
    let api = api(|_| {}).await;
    let event = get("/calls/call-b64/sessions")
        .method("POST")
        .header("content-type", "application/json")
        .base64_body(br#"{"call_type":"video"}"#);
    let created = invoke(&api.router, &event).await;
    assert_eq!(created.status, 201, "{created:?}");
    assert_eq!(created.json()["call_type"], "video");

    let malformed = get("/calls/call-x/sessions")
        .method("POST")
        .header("content-type", "application/json");
    let malformed = Event {
        body: Some("{not json".into()),
        ..malformed
    };
    let reply = invoke(&api.router, &malformed).await;
    assert_eq!(reply.status, 422);
    assert!(reply.json()["detail"].is_array());
    let missing = invoke(&api.router, &get("/calls/call-x/sessions/some-id")).await;
    assert_eq!(missing.status, 404);
    assert_eq!(
        missing.json()["detail"],
        "Session with id 'some-id' not found"
    );
    let token = invoke(&api.router, &get("/sessions").query("next_token=garbage")).await;
    assert_eq!(token.status, 422, "{token:?}");
}

#[tokio::test]
async fn a_failing_run_task_is_500_and_leaves_no_slot_taken() {
    let api = api(|vars| {
        vars.insert("TASK_DEFINITION", "no-such-definition:1".into());
        vars.insert("SWITCHBOARD_MAX_CONCURRENT_SESSIONS", "1".into());
    })
    .await;
    for _ in 0..3 {
        let failed = invoke(&api.router, &start("call-f")).await;
        assert_eq!(
            failed.status, 500,
            "not 429: the slot was given back ({failed:?})"
        );
        assert_eq!(failed.json()["detail"], "Failed to start agent");
    }
    let ended = invoke(
        &api.router,
        &get("/calls/call-f/sessions").query("include_ended=true"),
    )
    .await
    .json();
    let sessions = ended["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 3);
    assert!(sessions.iter().all(|s| s["end_reason"] == "start_failed"));
}

#[tokio::test]
async fn ready_is_503_when_the_table_is_missing() {
    let api = api(|vars| {
        vars.insert("TABLE_NAME", "no-such-table".into());
    })
    .await;
    let ready = invoke(&api.router, &get("/ready").unauthenticated()).await;
    assert_eq!(ready.status, 503);
    assert_eq!(
        ready.json()["detail"],
        "Server is not ready to accept requests"
    );
    let health = invoke(&api.router, &get("/health").unauthenticated()).await;
    assert_eq!(health.status, 200, "health is liveness only");
}
