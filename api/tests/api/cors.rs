//! CORS: preflight and simple requests, with the anchor's defaults and with a restricted
//! configuration; credentials mirrored; never a literal `*` with credentials.

use axum::body::Body;
use http::{Method, Request, StatusCode};
use switchboard_api::{CorsOptions, ServeOptions};

use crate::support::{TestApp, TestResponse, spawn_app, spawn_app_with};

async fn preflight(app: &TestApp, origin: &str, method: &str, headers: &str) -> TestResponse {
    let request = Request::builder()
        .method(Method::OPTIONS)
        .uri("/calls/c/sessions")
        .header("origin", origin)
        .header("access-control-request-method", method)
        .header("access-control-request-headers", headers)
        .body(Body::empty())
        .unwrap();
    app.send(request).await
}

async fn simple(app: &TestApp, origin: &str) -> TestResponse {
    let request = Request::builder()
        .uri("/health")
        .header("origin", origin)
        .body(Body::empty())
        .unwrap();
    app.send(request).await
}

fn never_star_with_credentials(r: &TestResponse) {
    if r.header("access-control-allow-credentials") == Some("true") {
        for name in [
            "access-control-allow-origin",
            "access-control-allow-methods",
            "access-control-allow-headers",
        ] {
            assert_ne!(r.header(name), Some("*"), "{name} is * with credentials");
        }
    }
}

#[tokio::test]
async fn defaults_mirror_origin_method_and_headers_with_credentials() {
    let app = spawn_app().await;
    let r = preflight(
        &app,
        "https://app.example",
        "POST",
        "authorization,content-type",
    )
    .await;
    assert!(r.status.is_success(), "{}", r.status);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
    assert_eq!(r.header("access-control-allow-methods"), Some("POST"));
    assert_eq!(
        r.header("access-control-allow-headers"),
        Some("authorization,content-type")
    );
    never_star_with_credentials(&r);

    let r = simple(&app, "https://other.example").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://other.example")
    );
    assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
    assert!(
        r.headers.get_all("vary").iter().any(|v| v
            .to_str()
            .unwrap()
            .to_ascii_lowercase()
            .contains("origin"))
    );
    never_star_with_credentials(&r);
}

#[tokio::test]
async fn a_restricted_configuration_allows_only_what_it_lists() {
    let cors = CorsOptions {
        allow_origins: vec!["https://myapp.com".into()],
        allow_methods: vec!["GET".into(), "POST".into(), "delete".into()],
        allow_headers: vec!["Authorization".into()],
        allow_credentials: true,
    };
    let app = spawn_app_with(
        |b| b,
        ServeOptions {
            cors,
            ..Default::default()
        },
    )
    .await;
    let r = preflight(&app, "https://myapp.com", "DELETE", "authorization").await;
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://myapp.com")
    );
    let methods = r
        .header("access-control-allow-methods")
        .unwrap()
        .replace(' ', "");
    assert_eq!(methods, "GET,POST,DELETE");
    assert_eq!(
        r.header("access-control-allow-headers"),
        Some("authorization")
    );
    never_star_with_credentials(&r);

    let r = preflight(&app, "https://evil.example", "DELETE", "authorization").await;
    assert_eq!(
        r.header("access-control-allow-origin"),
        None,
        "unlisted origin"
    );
    let r = simple(&app, "https://evil.example").await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "CORS does not block the server side"
    );
    assert_eq!(r.header("access-control-allow-origin"), None);
}

#[tokio::test]
async fn star_without_credentials_is_a_literal_star() {
    let cors = CorsOptions {
        allow_credentials: false,
        ..Default::default()
    };
    let app = spawn_app_with(
        |b| b,
        ServeOptions {
            cors,
            ..Default::default()
        },
    )
    .await;
    let r = simple(&app, "https://app.example").await;
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    assert_eq!(r.header("access-control-allow-credentials"), None);
}

#[test]
fn invalid_cors_values_are_configuration_errors() {
    let cors = CorsOptions {
        allow_headers: vec!["bad header".into()],
        ..Default::default()
    };
    let err = cors.layer().unwrap_err().to_string();
    assert_eq!(err, "invalid CORS option cors_allow_headers: 'bad header'");
}
