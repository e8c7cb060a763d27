//! The OpenAPI 3.1 document, generated from the handlers and models, and `/docs`
//! (Swagger UI whose assets are compiled into the binary: it works offline).

use axum::Router;
use utoipa::OpenApi;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{Object, ObjectBuilder, Schema, SchemaFormat, Type};
use utoipa_swagger_ui::SwaggerUi;

use crate::error::{ErrorBody, LocStep, ValidationErrorBody, ValidationIssue};
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
        LocStep,
    )),
    tags(
        (name = "sessions", description = "Agent sessions"),
        (name = "health", description = "Liveness and readiness"),
    )
)]
struct ApiDoc;

/// The OpenAPI document.
pub fn document() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    constrain_parameters(&mut doc);
    doc
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

pub(crate) fn docs_router() -> Router {
    SwaggerUi::new("/docs")
        .url("/openapi.json", document())
        .into()
}
