//! The OpenAPI 3.1 document, generated from the handlers and models, and `/docs`
//! (Swagger UI whose assets are compiled into the binary: it works offline).

use axum::Router;
use utoipa::OpenApi;
use utoipa_swagger_ui::SwaggerUi;

use crate::error::{ErrorBody, ValidationErrorBody, ValidationIssue};
use crate::handlers;
use crate::models::{
    SessionListItem, SessionListResponse, SessionMetricsResponse, SessionResponse,
    StartSessionRequest, StartSessionResponse,
};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Switchboard",
        description = "Spawn real-time AI agents into calls on demand: start, inspect, measure and close agent sessions."
    ),
    paths(
        handlers::start_session,
        handlers::list_call_sessions,
        handlers::get_session,
        handlers::close_session,
        handlers::close_session_beacon,
        handlers::get_session_metrics,
        handlers::list_sessions,
        handlers::health,
        handlers::ready,
    ),
    components(schemas(
        StartSessionRequest,
        StartSessionResponse,
        SessionResponse,
        SessionMetricsResponse,
        SessionListItem,
        SessionListResponse,
        ErrorBody,
        ValidationErrorBody,
        ValidationIssue,
    )),
    tags(
        (name = "sessions", description = "Agent sessions"),
        (name = "health", description = "Liveness and readiness"),
    )
)]
struct ApiDoc;

/// The OpenAPI document.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

pub(crate) fn docs_router() -> Router {
    SwaggerUi::new("/docs")
        .url("/openapi.json", document())
        .into()
}
