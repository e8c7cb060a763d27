//! The OpenAPI 3.1 document, generated from the handlers and models, and `/docs`
//! (Swagger UI whose assets are compiled into the binary: it works offline).

use axum::Router;
use utoipa::OpenApi;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{Object, ObjectBuilder, Schema, SchemaFormat, Type};

use crate::error::{ErrorBody, LocStep, ValidationErrorBody, ValidationIssue};
use crate::handlers;
use crate::models::{
    PoolDefinition, PoolResponse, SessionListItem, SessionListResponse, SessionMetricsResponse,
    SessionResponse, StandbyItem, StartSessionRequest, StartSessionResponse,
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
        handlers::get_pool,
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
        PoolResponse,
        PoolDefinition,
        StandbyItem,
        ErrorBody,
        ValidationErrorBody,
        ValidationIssue,
        LocStep,
    )),
    tags(
        (name = "sessions", description = "Agent sessions"),
        (name = "pool", description = "The warm pool of standby agents (ECS)"),
        (name = "health", description = "Liveness and readiness"),
    )
)]
struct ApiDoc;

/// The OpenAPI document.
pub fn document() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    constrain_parameters(&mut doc);
    declare_auth_and_limits(&mut doc);
    doc
}

fn error_response(description: &str) -> RefOr<utoipa::openapi::Response> {
    RefOr::T(
        utoipa::openapi::ResponseBuilder::new()
            .description(description)
            .content(
                "application/json",
                utoipa::openapi::Content::new(Some(utoipa::openapi::Ref::from_schema_name(
                    "ErrorBody",
                ))),
            )
            .build(),
    )
}

/// The bearer scheme of the JWT policy (`AUTH_MODE=jwt`; with `none`, the default, no token
/// is needed, hence the empty alternative), its 401/403 on the session routes, the beacon's
/// `?token=`, and the request-size limits (414, 431) that every route applies.
fn declare_auth_and_limits(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::path::{ParameterBuilder, ParameterIn};
    use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityRequirement, SecurityScheme};
    if let Some(components) = doc.components.as_mut() {
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                Http::builder()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "With AUTH_MODE=jwt: a JWT with `sub`, `exp`, a `scope` \
                         (sessions:start, sessions:close, sessions:view, metrics:view) and \
                         optionally `calls` / `call_prefix`. See docs/api.md.",
                    ))
                    .build(),
            ),
        );
    }
    for (path, item) in doc.paths.paths.iter_mut() {
        let guarded = path.starts_with("/calls") || path == "/sessions" || path == "/pool";
        let beacon = path.ends_with("/close");
        let operations = [&mut item.get, &mut item.post, &mut item.delete];
        for operation in operations.into_iter().flatten() {
            let responses = &mut operation.responses.responses;
            responses.insert("414".into(), error_response("Path and query over 32 KiB"));
            responses.insert(
                "431".into(),
                error_response("A header over 8 KiB, or headers over 32 KiB in all"),
            );
            if !guarded {
                continue;
            }
            responses.insert(
                "401".into(),
                error_response(
                    "AUTH_MODE=jwt: no token, or a malformed, badly signed or expired one",
                ),
            );
            responses.insert(
                "403".into(),
                error_response("AUTH_MODE=jwt: the token lacks this action's scope or this call"),
            );
            operation.security = Some(vec![
                SecurityRequirement::new("bearer", Vec::<String>::new()),
                SecurityRequirement::default(),
            ]);
            if beacon {
                operation
                    .parameters
                    .get_or_insert_with(Vec::new)
                    .push(RefOr::T(
                        ParameterBuilder::new()
                            .name("token")
                            .parameter_in(ParameterIn::Query)
                            .required(utoipa::openapi::Required::False)
                            .description(Some(
                                "The bearer token, for navigator.sendBeacon (which cannot send \
                             headers); only this route reads it",
                            ))
                            .schema(Some(
                                ObjectBuilder::new()
                                    .schema_type(Type::String)
                                    .max_length(Some(crate::MAX_TOKEN_CHARS)),
                            ))
                            .build(),
                    ));
            }
        }
    }
}

/// Call ids and types: 1–256 bytes (JSON Schema counts characters: 256 is the bound for ASCII),
/// no control characters (Unicode `Cc`), no `/`.
const NAME_PATTERN: &str = r"^[^/\u0000-\u001f\u007f-\u009f]+$";

fn name_schema() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .max_length(Some(switchboard_core::ids::MAX_NAME_BYTES))
        .pattern(Some(NAME_PATTERN))
        .build()
}

/// States in the document what the parsers enforce on each parameter, so clients and
/// fuzzers (schemathesis, run by the test command) know which values are valid.
fn constrain_parameters(doc: &mut utoipa::openapi::OpenApi) {
    for item in doc.paths.paths.values_mut() {
        let operations = [&mut item.get, &mut item.post, &mut item.delete];
        for operation in operations.into_iter().flatten() {
            for parameter in operation.parameters.iter_mut().flatten() {
                let RefOr::T(parameter) = parameter else {
                    continue;
                };
                let schema = match parameter.name.as_str() {
                    "call_id" => name_schema(),
                    "session_id" => ObjectBuilder::new()
                        .schema_type(Type::String)
                        .format(Some(SchemaFormat::Custom("uuid".into())))
                        .build(),
                    "limit" => ObjectBuilder::new()
                        .schema_type(Type::Integer)
                        .minimum(Some(1))
                        .maximum(Some(switchboard_core::registry::MAX_PAGE_SIZE))
                        .build(),
                    "Idempotency-Key" => ObjectBuilder::new()
                        .schema_type(Type::String)
                        .min_length(Some(1))
                        .max_length(Some(switchboard_core::IdempotencyKey::MAX_LEN))
                        .pattern(Some("^[!-~]+$"))
                        .build(),
                    _ => continue,
                };
                parameter.schema = Some(RefOr::T(Schema::Object(schema)));
            }
        }
    }
    if let Some(RefOr::T(Schema::Object(request))) = doc
        .components
        .as_mut()
        .and_then(|c| c.schemas.get_mut("StartSessionRequest"))
        && let Some(RefOr::T(Schema::Object(call_type))) = request.properties.get_mut("call_type")
    {
        // A string: `null` is refused (422 `string_type`), as the anchor does; absent means
        // the default.
        let mut constrained = name_schema();
        constrained.description = call_type.description.take();
        constrained.default = call_type.default.take();
        constrained.examples = std::mem::take(&mut call_type.examples);
        *call_type = constrained;
    }
}

/// `/openapi.json`, and Swagger UI at `/docs` (200, as the anchor answers: a client that does
/// not follow redirects sees the page) and `/docs/`.
///
/// Swagger UI's own files link each other relatively (`./swagger-ui.css`), so `/docs` (no
/// slash) carries `<base href="docs/">`, and the document is named relatively
/// (`../openapi.json`): the page works wherever the API is mounted, behind a stage or
/// `cargo lambda watch`'s `/lambda-url/api/` as at the root.
pub(crate) fn docs_router() -> Router {
    use std::sync::Arc;

    use axum::extract::Path;
    use axum::routing::get;

    let config = Arc::new(utoipa_swagger_ui::Config::new(["../openapi.json"]));
    let (index, slash, rest) = (config.clone(), config.clone(), config);
    let doc = document();
    Router::new()
        .route(
            "/openapi.json",
            get(move || {
                let doc = doc.clone();
                async move { axum::Json(doc) }
            }),
        )
        .route(
            "/docs",
            get(move || {
                let config = index.clone();
                async move { docs_page(config).await }
            }),
        )
        .route(
            "/docs/",
            get(move || {
                let config = slash.clone();
                async move { swagger_file("", config) }
            }),
        )
        .route(
            "/docs/{*rest}",
            get(move |Path(path): Path<String>| {
                let config = rest.clone();
                async move { swagger_file(&path, config) }
            }),
        )
}

/// Swagger UI's page at `/docs`, its relative links resolved under `docs/`.
async fn docs_page(
    config: std::sync::Arc<utoipa_swagger_ui::Config<'static>>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let response = swagger_file("", config);
    if !response.status().is_success() {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    let html =
        String::from_utf8_lossy(&bytes).replacen("<head>", "<head>\n    <base href=\"docs/\">", 1);
    parts.headers.remove(http::header::CONTENT_LENGTH);
    (parts, html).into_response()
}

/// One of Swagger UI's files (compiled into the binary), or 404.
fn swagger_file(
    path: &str,
    config: std::sync::Arc<utoipa_swagger_ui::Config<'static>>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    match utoipa_swagger_ui::serve(path, config) {
        Ok(Some(file)) => {
            let mut response = (
                [(http::header::CONTENT_TYPE, file.content_type)],
                file.bytes.into_owned(),
            )
                .into_response();
            if file.gzpipped {
                response.headers_mut().insert(
                    http::header::CONTENT_ENCODING,
                    http::HeaderValue::from_static("gzip"),
                );
            }
            response
        }
        Ok(None) => crate::error::ApiError::RouteNotFound.into_response(),
        Err(e) => {
            tracing::error!(error = %e, path, "Swagger UI could not serve a file");
            http::StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}
