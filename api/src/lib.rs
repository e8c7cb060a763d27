//! The HTTP API: one axum [`Router`] that every mode serves, `serve` locally and the `api`
//! Lambda function in AWS, with the wire contract of docs/api.md.
//!
//! # Layout
//! - [`router`]: builds the router from an [`AppState`] and [`ServeOptions`].
//! - [`state`]: [`AppState`], the ports the handlers use (`SessionRegistry`, `TaskLauncher`).
//! - [`hooks`]: permission hooks (`can_start_session`, ...) run before any lookup.
//! - [`auth`]: the built-in policies on those hooks: allow-all and [`auth::JwtPolicy`].
//! - [`cors`]: CORS with the anchor's defaults and origin mirroring for `*` + credentials.
//! - [`error`]: [`ApiError`], the single status table; every error body is `{"detail": ...}`.
//! - [`models`]: request and response bodies (with their OpenAPI schemas).
//! - [`openapi`]: the OpenAPI 3.1 document, served at `/openapi.json`, and `/docs`.
//!
//! # Must not depend on
//! No `aws-*` or `lambda_*` crate and no agent runtime: the API talks to the ports only, so the
//! same router runs in-process and behind API Gateway.

pub mod auth;
pub mod cors;
pub mod error;
mod handlers;
pub mod hooks;
#[cfg(feature = "jwks")]
pub mod jwks;
pub mod models;
pub mod openapi;
mod request;
pub mod state;

use axum::Router;
use axum::routing::{get, post};
use tower_http::trace::TraceLayer;

pub use cors::CorsOptions;
pub use error::ApiError;
pub use hooks::{CallFilter, ListPermission, Permission, PermissionHooks, Rejection, RequestInfo};
pub use request::check_query_token;
pub use state::{AppState, DEFAULT_REQUEST_DEADLINE, ReadinessCheck, registry_readiness};

/// The largest request body accepted (16 KiB); larger is 413.
pub const MAX_BODY_BYTES: usize = 16 * 1024;
/// The longest path and query accepted (32 KiB: a percent-encoded 256-byte call id, a session
/// id and the longest beacon `?token=`, even percent-encoded, fit); longer is 414.
pub const MAX_URI_BYTES: usize = 32 * 1024;
/// The longest beacon `?token=` accepted, in characters (2,048: a JWT for one call is a few
/// hundred; longer is 422, or 401 under the JWT policy). Send big tokens in the header.
pub const MAX_TOKEN_CHARS: usize = 2048;
/// The largest single header value accepted (8 KiB: a bearer token with room to spare);
/// larger is 431.
pub const MAX_HEADER_BYTES: usize = 8 * 1024;
/// The largest total of header names and values accepted (32 KiB); larger is 431.
pub const MAX_HEADERS_BYTES: usize = 32 * 1024;

/// How the router is assembled (the anchor's `ServeOptions`).
#[derive(Default)]
pub struct ServeOptions {
    /// CORS; defaults to the anchor's `*`/`*`/`*` with credentials (mirrored).
    pub cors: CorsOptions,
    /// Permission hooks; every hook defaults to allow-all, as the anchor.
    pub hooks: PermissionHooks,
    /// Your own routes, served beside the default ones and under the same CORS and trace
    /// layers (the anchor's `runner.fast_api.add_api_route`). Middleware for everything goes
    /// on the returned router with `.layer(..)`.
    pub extra_routes: Option<Router>,
    /// A router to serve as-is instead of the default one: no default routes, no CORS, no
    /// hooks (the anchor's `ServeOptions(fast_api=app)`).
    pub custom_router: Option<Router>,
}

impl std::fmt::Debug for ServeOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeOptions")
            .field("cors", &self.cors)
            .field("hooks", &self.hooks)
            .field("extra_routes", &self.extra_routes.is_some())
            .field("custom_router", &self.custom_router.is_some())
            .finish()
    }
}

/// Invalid router configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A CORS value is not a valid header value, method or origin.
    #[error("invalid CORS option {option}: '{value}'")]
    Cors {
        /// Which option.
        option: &'static str,
        /// The offending value.
        value: String,
    },
}

/// Builds the router: every endpoint of docs/api.md, `/openapi.json` and `/docs`, CORS and a
/// trace layer. Add routes and middleware to the result like to any axum router.
pub fn router(state: AppState, options: ServeOptions) -> Result<Router, ConfigError> {
    if let Some(custom) = options.custom_router {
        tracing::warn!("a custom router was given; serving it as-is without the default routes");
        return Ok(custom);
    }
    let cors = options.cors.layer()?;
    let state = state.with_hooks(options.hooks);
    let api = Router::new()
        .route(
            "/calls/{call_id}/sessions",
            post(handlers::start_session).get(handlers::list_call_sessions),
        )
        .route(
            "/calls/{call_id}/sessions/{session_id}",
            get(handlers::get_session).delete(handlers::close_session),
        )
        .route(
            "/calls/{call_id}/sessions/{session_id}/close",
            post(handlers::close_session_beacon),
        )
        .route(
            "/calls/{call_id}/sessions/{session_id}/metrics",
            get(handlers::get_session_metrics),
        )
        .route("/sessions", get(handlers::list_sessions))
        .route("/pool", get(handlers::get_pool))
        .route("/health", get(handlers::health))
        .route("/ready", get(handlers::ready))
        .with_state(state);
    let api = match options.extra_routes {
        Some(extra) => api.merge(extra),
        None => api,
    };
    Ok(api
        .merge(openapi::docs_router())
        .fallback(handlers::not_found)
        .method_not_allowed_fallback(handlers::method_not_allowed)
        .layer(cors)
        .layer(axum::middleware::from_fn(request_limits))
        .layer(TraceLayer::new_for_http().make_span_with(request_span))
        .layer(axum::middleware::map_response(one_value_per_header)))
}

/// Each response header once: values of a repeated header (CORS's `vary` and a handler's
/// `vary: accept`) joined with commas, as RFC 9110 §5.3 allows for list-valued fields.
/// `set-cookie` is the exception it names and stays repeated. API Gateway's HTTP API response
/// has one value per header, and `lambda_http` sends only the first of repeated ones.
async fn one_value_per_header(mut response: axum::response::Response) -> axum::response::Response {
    let headers = response.headers_mut();
    let repeated: Vec<http::HeaderName> = headers
        .keys()
        .filter(|name| {
            *name != http::header::SET_COOKIE && headers.get_all(*name).iter().nth(1).is_some()
        })
        .cloned()
        .collect();
    for name in repeated {
        let mut seen = Vec::new();
        for value in headers.get_all(&name) {
            for item in value.to_str().unwrap_or_default().split(',') {
                let item = item.trim();
                if !item.is_empty() && !seen.iter().any(|s: &String| s.eq_ignore_ascii_case(item)) {
                    seen.push(item.to_owned());
                }
            }
        }
        if let Ok(joined) = http::HeaderValue::from_str(&seen.join(", ")) {
            headers.insert(name, joined);
        }
    }
    response
}

/// 414 and 431 before anything else runs (CORS included): a hostile client's oversized
/// request costs one length check and never reaches a hook or the registry.
async fn request_limits(
    request: http::Request<axum::body::Body>,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let uri = request.uri();
    let uri_bytes = uri.path().len() + uri.query().map_or(0, |q| q.len() + 1);
    if uri_bytes > MAX_URI_BYTES {
        return ApiError::UriTooLong.into_response();
    }
    let mut total = 0;
    for (name, value) in request.headers() {
        if value.len() > MAX_HEADER_BYTES {
            return ApiError::HeadersTooLarge.into_response();
        }
        total += name.as_str().len() + value.len();
    }
    if total > MAX_HEADERS_BYTES {
        return ApiError::HeadersTooLarge.into_response();
    }
    next.run(request).await
}

/// The request's span: method and path, never the query (the beacon's `?token=` must not
/// reach the logs).
fn request_span(request: &http::Request<axum::body::Body>) -> tracing::Span {
    tracing::debug_span!(
        "request",
        method = %request.method(),
        path = %request.uri().path(),
        version = ?request.version(),
    )
}
