//! The endpoint handlers. Each follows the contract's order of checks:
//! 413 → permission hook (401/403) → 422 → 404.

use axum::Json;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use switchboard_core::fleet::Refusal;
use switchboard_core::registry::ListQuery;
use switchboard_core::service::{self, StartSession, Started};
use switchboard_core::{Error, LimitKind, SessionId};

use crate::error::{ApiError, ErrorBody, ValidationErrorBody};
use crate::hooks::{self, CallFilter};
use crate::models::{
    PoolResponse, SessionListItem, SessionListResponse, SessionMetricsResponse, SessionResponse,
    StartSessionRequest, StartSessionResponse,
};
use crate::request::{
    call_id_issue, fail_if_any, idempotency_key, list_params, parse_call_id, path_params,
    read_body, start_body,
};
use crate::state::AppState;

fn session_id(raw: &str) -> Result<SessionId, ApiError> {
    SessionId::parse(raw).map_err(|_| ApiError::SessionNotFound(raw.to_owned()))
}

/// Start an agent for a call.
#[utoipa::path(
    post,
    path = "/calls/{call_id}/sessions",
    tag = "sessions",
    params(
        ("call_id" = String, Path, description = "The call (1–256 bytes, no control characters, no '/')"),
        ("Idempotency-Key" = Option<String>, Header, description = "Replays return the first response for 24 h (per call)"),
    ),
    request_body(content = Option<StartSessionRequest>, content_type = "application/json", description = "Optional; an empty body means the defaults"),
    responses(
        (status = 201, description = "The session was admitted and its agent launched", body = StartSessionResponse),
        (status = 413, description = "Body over 16 KiB", body = ErrorBody),
        (status = 422, description = "Invalid call id, body or header", body = ValidationErrorBody),
        (status = 429, description = "A session limit was reached", body = ErrorBody),
        (status = 500, description = "Failed to start agent", body = ErrorBody),
        (status = 503, description = "Capacity or the store is transiently unavailable", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    )
)]
pub(crate) async fn start_session(
    State(app): State<AppState>,
    request: Request,
) -> Result<Response, ApiError> {
    start(app, request).await
}

/// Counts a start the use case refused (in the start's own task, so a client that hung up
/// is counted too). A 503 for a start that goes on in the background is not a refusal.
fn count_refusal(
    fleet: &dyn switchboard_core::fleet::FleetObserver,
    result: &Result<Started, Error>,
) {
    match result {
        Err(Error::LimitReached(LimitKind::Global)) => fleet.refused(Refusal::GlobalLimit),
        Err(Error::LimitReached(LimitKind::PerCall)) => fleet.refused(Refusal::PerCallLimit),
        Err(Error::Unavailable { .. }) => fleet.refused(Refusal::Unavailable),
        _ => {}
    }
}

async fn start(app: AppState, request: Request) -> Result<Response, ApiError> {
    let (mut parts, body) = request.into_parts();
    let raw = path_params(&mut parts).await?;
    let bytes = read_body(&parts, body).await?;
    hooks::check(app.hooks.can_start_session.as_ref(), &raw.call_id, &parts).await?;
    let mut issues = Vec::new();
    let call_id = call_id_issue(&raw.call_id).map_err(|i| issues.push(i)).ok();
    let body = start_body(&parts, &bytes, &mut issues);
    let idempotency_key = idempotency_key(&parts, &mut issues);
    fail_if_any(issues)?;
    let (Some(call_id), Some(body)) = (call_id, body) else {
        return Err(ApiError::Internal(anyhow::anyhow!(
            "validation passed without values"
        )));
    };
    let call_type = body.call_type.clone();
    let deadline = app.request_deadline;
    let bounded = app.bounded_starts;
    let request = StartSession {
        call_type: body.call_type,
        metadata: body.metadata,
        idempotency_key,
        // Lambda: every phase ends by the deadline, so the response below is the end of it.
        deadline: bounded.then(|| tokio::time::Instant::now() + deadline),
    };
    // Run the start in its own task: a client that disconnects mid-launch must not leave a
    // half-started session behind, and (unless bounded) a launch slower than the deadline
    // goes on without it.
    let start = tokio::spawn(async move {
        let started = service::start_session(
            &*app.registry,
            &*app.launcher,
            &app.limits,
            call_id,
            request,
        )
        .await;
        count_refusal(&*app.fleet, &started);
        started
    });
    // A bounded start answers by its deadline itself (plus the moment its cut takes).
    let wait = if bounded {
        deadline + std::time::Duration::from_secs(1)
    } else {
        deadline
    };
    let started = match tokio::time::timeout(wait, start).await {
        Ok(joined) => joined
            .map_err(|e| ApiError::Internal(anyhow::Error::new(e).context("start task failed")))?
            .map_err(|e| ApiError::from_domain(e, ""))?,
        Err(_) => {
            return Err(ApiError::Unavailable {
                retry_after: std::time::Duration::from_secs(1),
                source: anyhow::anyhow!(
                    "the agent was not started within {deadline:?}; the start goes on"
                ),
            });
        }
    };
    let receipt = started.receipt;
    let response = StartSessionResponse {
        session_id: receipt.session_id.to_string(),
        call_id: receipt.call_id.to_string(),
        session_started_at: receipt.created_at.to_rfc3339(),
        call_type: call_type.to_string(),
        status: "starting".into(),
    };
    Ok((StatusCode::CREATED, Json(response)).into_response())
}

/// Get a session.
#[utoipa::path(
    get,
    path = "/calls/{call_id}/sessions/{session_id}",
    tag = "sessions",
    params(("call_id" = String, Path), ("session_id" = String, Path)),
    responses(
        (status = 200, description = "OK", body = SessionResponse),
        (status = 404, description = "No such session under this call, or it has ended", body = ErrorBody),
        (status = 422, description = "Invalid input (a FastAPI-shaped list of issues)", body = ValidationErrorBody),
    )
)]
pub(crate) async fn get_session(
    State(app): State<AppState>,
    request: Request,
) -> Result<Response, ApiError> {
    let (mut parts, _) = request.into_parts();
    let raw = path_params(&mut parts).await?;
    hooks::check(app.hooks.can_view_session.as_ref(), &raw.call_id, &parts).await?;
    let call_id = parse_call_id(&raw.call_id)?;
    let id = session_id(&raw.session_id)?;
    match app.registry.get(&call_id, id).await {
        Ok(Some(session)) if !session.is_ended() => {
            Ok(Json(SessionResponse::from(&session)).into_response())
        }
        Ok(_) => Err(ApiError::SessionNotFound(raw.session_id)),
        Err(e) => Err(ApiError::from_domain(e, &raw.session_id)),
    }
}

/// Get a session's metrics (all 25 anchor names plus percentiles, always present).
#[utoipa::path(
    get,
    path = "/calls/{call_id}/sessions/{session_id}/metrics",
    tag = "sessions",
    params(("call_id" = String, Path), ("session_id" = String, Path)),
    responses(
        (status = 200, description = "OK", body = SessionMetricsResponse),
        (status = 404, description = "No such session under this call, or it has ended", body = ErrorBody),
        (status = 422, description = "Invalid input (a FastAPI-shaped list of issues)", body = ValidationErrorBody),
    )
)]
pub(crate) async fn get_session_metrics(
    State(app): State<AppState>,
    request: Request,
) -> Result<Response, ApiError> {
    let (mut parts, _) = request.into_parts();
    let raw = path_params(&mut parts).await?;
    hooks::check(app.hooks.can_view_metrics.as_ref(), &raw.call_id, &parts).await?;
    let call_id = parse_call_id(&raw.call_id)?;
    let id = session_id(&raw.session_id)?;
    match app.registry.get_metrics(&call_id, id).await {
        Ok(Some(m)) if !m.session.is_ended() => {
            Ok(Json(SessionMetricsResponse::new(&m.session, m.report.as_ref())).into_response())
        }
        Ok(_) => Err(ApiError::SessionNotFound(raw.session_id)),
        Err(e) => Err(ApiError::from_domain(e, &raw.session_id)),
    }
}

async fn close(app: AppState, request: Request, beacon: bool) -> Result<Response, ApiError> {
    let (mut parts, _) = request.into_parts();
    let raw = path_params(&mut parts).await?;
    hooks::check(app.hooks.can_close_session.as_ref(), &raw.call_id, &parts).await?;
    if beacon {
        crate::request::check_query_token(&parts.uri)?;
    }
    let call_id = parse_call_id(&raw.call_id)?;
    let id = session_id(&raw.session_id)?;
    service::request_close(&*app.registry, &*app.launcher, &call_id, id)
        .await
        .map_err(|e| ApiError::from_domain(e, &raw.session_id))?;
    Ok(StatusCode::ACCEPTED.into_response())
}

/// What both close routes (DELETE and the beacon's POST) answer.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // Only its OpenAPI description is used.
enum CloseAnswers {
    /// Close requested
    #[response(status = 202)]
    Requested,
    /// No such session under this call, or it has ended
    #[response(status = 404)]
    NotFound(ErrorBody),
    /// Invalid input (a FastAPI-shaped list of issues)
    #[response(status = 422)]
    Invalid(ValidationErrorBody),
}

/// Request a session's close. Asynchronous: the agent leaves at once in-process, within one
/// maintenance interval across nodes.
#[utoipa::path(
    delete,
    path = "/calls/{call_id}/sessions/{session_id}",
    tag = "sessions",
    params(("call_id" = String, Path), ("session_id" = String, Path)),
    responses(CloseAnswers)
)]
pub(crate) async fn close_session(
    State(app): State<AppState>,
    request: Request,
) -> Result<Response, ApiError> {
    close(app, request, false).await
}

/// Request a session's close with `navigator.sendBeacon` (POST; any body is ignored).
#[utoipa::path(
    post,
    path = "/calls/{call_id}/sessions/{session_id}/close",
    tag = "sessions",
    params(("call_id" = String, Path), ("session_id" = String, Path)),
    responses(CloseAnswers)
)]
pub(crate) async fn close_session_beacon(
    State(app): State<AppState>,
    request: Request,
) -> Result<Response, ApiError> {
    close(app, request, true).await
}

async fn list(
    app: &AppState,
    call_id: Option<switchboard_core::CallId>,
    params: crate::request::ListParams,
    filter: &CallFilter,
) -> Result<Response, ApiError> {
    let query = ListQuery {
        call_id,
        include_ended: params.include_ended,
        limit: params.limit,
        next_token: params.next_token,
        with_metrics: params.include_metrics,
    };
    let page = app.registry.list(query).await.map_err(|e| match e {
        Error::Invalid(msg) => ApiError::invalid(&["query", "next_token"], msg, "value_error"),
        other => ApiError::from_domain(other, ""),
    })?;
    let sessions = page
        .sessions
        .iter()
        .filter(|l| filter.allows(&l.session.call_id))
        .map(|listed| SessionListItem::new(listed, params.include_metrics))
        .collect();
    Ok(Json(SessionListResponse {
        sessions,
        next_token: page.next_token,
    })
    .into_response())
}

/// List a call's sessions (live by default), in creation order.
#[utoipa::path(
    get,
    path = "/calls/{call_id}/sessions",
    tag = "sessions",
    params(
        ("call_id" = String, Path),
        ("include_ended" = Option<bool>, Query, description = "Also list ended sessions (kept for the retention period)"),
        ("include_metrics" = Option<bool>, Query, description = "Live sessions carry their latest metrics too (ended ones always carry their final metrics)"),
        ("limit" = Option<u32>, Query, description = "Page size, 1–500 (default 50)"),
        ("next_token" = Option<String>, Query, description = "The previous page's next_token"),
    ),
    responses((status = 200, description = "OK", body = SessionListResponse), (status = 422, description = "Invalid input (a FastAPI-shaped list of issues)", body = ValidationErrorBody))
)]
pub(crate) async fn list_call_sessions(
    State(app): State<AppState>,
    request: Request,
) -> Result<Response, ApiError> {
    let (mut parts, _) = request.into_parts();
    let raw = path_params(&mut parts).await?;
    hooks::check(app.hooks.can_view_session.as_ref(), &raw.call_id, &parts).await?;
    let mut issues = Vec::new();
    let call_id = call_id_issue(&raw.call_id).map_err(|i| issues.push(i)).ok();
    let params = list_params(&parts, &mut issues);
    fail_if_any(issues)?;
    list(&app, call_id, params, &CallFilter::All).await
}

/// List sessions across all calls (for dashboards), in call then creation order.
#[utoipa::path(
    get,
    path = "/sessions",
    tag = "sessions",
    params(
        ("include_ended" = Option<bool>, Query, description = "Also list ended sessions"),
        ("include_metrics" = Option<bool>, Query, description = "Live sessions carry their latest metrics too (ended ones always carry their final metrics)"),
        ("limit" = Option<u32>, Query, description = "Page size, 1–500 (default 50)"),
        ("next_token" = Option<String>, Query, description = "The previous page's next_token"),
    ),
    responses(
        (status = 200, description = "The sessions as JSON; a browser that asks for HTML first (`Accept: text/html`) gets the sessions dashboard page, which loads them from this same route", content(
            (SessionListResponse = "application/json"),
            (String = "text/html")
        )),
        (status = 422, description = "Invalid input (a FastAPI-shaped list of issues)", body = ValidationErrorBody)
    )
)]
pub(crate) async fn list_sessions(
    State(app): State<AppState>,
    request: Request,
) -> Result<Response, ApiError> {
    let (parts, _) = request.into_parts();
    if prefers_html(&parts.headers) {
        // The dashboard's shell is static and carries no data: the sessions reach it
        // through this route as JSON, under `can_list_sessions` like any other client.
        return Ok(dashboard());
    }
    let filter = match &app.hooks.can_list_sessions {
        Some(hook) => hook.check(&parts).await?,
        None => CallFilter::All,
    };
    let mut issues = Vec::new();
    let params = list_params(&parts, &mut issues);
    fail_if_any(issues)?;
    let mut response = list(&app, None, params, &filter).await?;
    response
        .headers_mut()
        .insert(http::header::VARY, http::HeaderValue::from_static("accept"));
    Ok(response)
}

/// The sessions dashboard (`GET /sessions` from a browser).
pub(crate) const DASHBOARD_HTML: &str = include_str!("../static/dashboard.html");

fn dashboard() -> Response {
    (
        [
            (http::header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (http::header::VARY, "accept"),
            (http::header::CACHE_CONTROL, "no-cache"),
        ],
        DASHBOARD_HTML,
    )
        .into_response()
}

/// Whether `Accept` ranks `text/html` above JSON (a browser's navigation does; `fetch`,
/// curl and SDKs send `*/*` or `application/json` and get JSON). Ties go to JSON.
fn prefers_html(headers: &http::HeaderMap) -> bool {
    let (mut html, mut json) = (0.0_f32, 0.0_f32);
    for value in headers.get_all(http::header::ACCEPT) {
        let Ok(value) = value.to_str() else { continue };
        for range in value.split(',') {
            let mut params = range.split(';');
            let media = params.next().unwrap_or_default().trim();
            let q = params
                .filter_map(|p| p.trim().strip_prefix("q="))
                .find_map(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            if media.eq_ignore_ascii_case("text/html") {
                html = html.max(q);
            } else if media.eq_ignore_ascii_case("application/json") || media == "*/*" {
                json = json.max(q);
            }
        }
    }
    html > json
}

/// The warm pool: standbys per task definition and state, and each standby. Guarded like
/// `GET /sessions` (the `can_list_sessions` hook; with JWT, `sessions:view`), and fleet-wide:
/// a token that may view only some calls is refused.
#[utoipa::path(
    get,
    path = "/pool",
    tag = "pool",
    responses(
        (status = 200, description = "The warm pool", body = PoolResponse),
        (status = 401, description = "Not authenticated", body = ErrorBody),
        (status = 403, description = "Not allowed to view every call", body = ErrorBody),
        (status = 404, description = "No warm pool is kept here", body = ErrorBody),
        (status = 503, description = "The registry is unavailable", body = ErrorBody),
    )
)]
pub(crate) async fn get_pool(
    State(app): State<AppState>,
    request: Request,
) -> Result<Response, ApiError> {
    let (parts, _) = request.into_parts();
    if let Some(hook) = &app.hooks.can_list_sessions
        && !matches!(hook.check(&parts).await?, CallFilter::All)
    {
        return Err(hooks::Rejection::forbidden(
            "The warm pool is fleet-wide: it needs permission to view every call",
        )
        .into());
    }
    match app.launcher.pool().await {
        None => Err(ApiError::NoPool),
        Some(Ok(pool)) => Ok(Json(PoolResponse::from(&pool)).into_response()),
        Some(Err(e)) => Err(ApiError::from_domain(e, "")),
    }
}

/// Liveness: 200 while the process serves requests.
#[utoipa::path(get, path = "/health", tag = "health", responses((status = 200, description = "Alive")))]
pub(crate) async fn health() -> StatusCode {
    StatusCode::OK
}

/// Readiness: 200 when new agents can be started; 503 while starting up or draining.
#[utoipa::path(
    get,
    path = "/ready",
    tag = "health",
    responses((status = 200, description = "Ready"), (status = 503, description = "Not ready", body = ErrorBody))
)]
pub(crate) async fn ready(State(app): State<AppState>) -> Result<StatusCode, ApiError> {
    if app.is_ready().await {
        Ok(StatusCode::OK)
    } else {
        Err(ApiError::NotReady)
    }
}

pub(crate) async fn not_found() -> ApiError {
    ApiError::RouteNotFound
}

pub(crate) async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

#[cfg(test)]
mod tests {
    use super::prefers_html;

    fn accept(value: &str) -> http::HeaderMap {
        let mut headers = http::HeaderMap::new();
        headers.insert(http::header::ACCEPT, value.parse().unwrap());
        headers
    }

    #[test]
    fn only_a_client_that_ranks_html_first_gets_the_dashboard() {
        let browser = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";
        assert!(prefers_html(&accept(browser)));
        assert!(prefers_html(&accept("text/html")));
        assert!(prefers_html(&accept("application/json;q=0.5, TEXT/HTML")));
        for json in [
            "*/*",
            "application/json",
            "text/html, application/json",
            "text/html;q=0.5, application/json",
            "text/html;q=0",
            "text/plain",
        ] {
            assert!(!prefers_html(&accept(json)), "{json}");
        }
        assert!(!prefers_html(&http::HeaderMap::new()), "no Accept: JSON");
    }
}
