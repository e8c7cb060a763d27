//! `/openapi.json` is OpenAPI 3.1 and lists every route with its error responses; `/docs` is
//! an interactive page whose every asset is same-origin and served by the router.

use http::StatusCode;
use serde_json::Value;

use crate::support::spawn_app;

#[tokio::test]
async fn the_openapi_document_lists_every_route_with_its_errors() {
    let app = spawn_app().await;
    let r = app.get("/openapi.json").await;
    assert_eq!(r.status, StatusCode::OK);
    let doc = r.json();
    assert_eq!(doc["openapi"], "3.1.0");
    let expected = [
        (
            "/calls/{call_id}/sessions",
            "post",
            &["201", "413", "422", "429", "500", "503"][..],
        ),
        ("/calls/{call_id}/sessions", "get", &["200", "422"][..]),
        (
            "/calls/{call_id}/sessions/{session_id}",
            "get",
            &["200", "404", "422"][..],
        ),
        (
            "/calls/{call_id}/sessions/{session_id}",
            "delete",
            &["202", "404", "422"][..],
        ),
        (
            "/calls/{call_id}/sessions/{session_id}/close",
            "post",
            &["202", "404", "422"][..],
        ),
        (
            "/calls/{call_id}/sessions/{session_id}/metrics",
            "get",
            &["200", "404", "422"][..],
        ),
        ("/sessions", "get", &["200", "422"][..]),
        ("/pool", "get", &["200", "401", "403", "404", "503"][..]),
        ("/health", "get", &["200"][..]),
        ("/ready", "get", &["200", "503"][..]),
    ];
    for (path, method, statuses) in expected {
        let op = &doc["paths"][path][method];
        assert!(op.is_object(), "{method} {path} missing");
        for status in statuses {
            assert!(
                op["responses"][status].is_object(),
                "{method} {path} lacks {status}"
            );
        }
    }
    let paths = doc["paths"].as_object().unwrap();
    assert_eq!(paths.len(), 8);
    assert!(doc["components"]["schemas"]["StartSessionResponse"].is_object());
}

/// Same-origin references in an HTML or JS asset (`src=`, `href=`, `url:`).
fn references(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for marker in ["src=\"", "href=\"", "url: \"", "url: '", "\"url\":\""] {
        let mut rest = text;
        while let Some(i) = rest.find(marker) {
            rest = &rest[i + marker.len()..];
            let end = rest.find(['"', '\'']).unwrap_or(rest.len());
            out.push(rest[..end].to_owned());
        }
    }
    out
}

#[tokio::test]
async fn docs_without_a_slash_is_the_page_itself_and_resolves_its_assets_under_docs() {
    // The anchor answers 200 at /docs; a client that does not follow redirects saw nothing.
    let app = spawn_app().await;
    let r = app.get("/docs").await;
    assert_eq!(r.status, StatusCode::OK, "not a redirect");
    assert!(r.header("content-type").unwrap().starts_with("text/html"));
    let html = r.text();
    // Its relative links (./swagger-ui.css) resolve under docs/ wherever the API is mounted.
    assert!(html.contains("<base href=\"docs/\">"), "{html}");
    let slash = app.get("/docs/").await;
    assert_eq!(slash.status, StatusCode::OK);
    assert!(
        !slash.text().contains("<base"),
        "/docs/ resolves them itself"
    );
    // The document is named relative to the page too (../openapi.json from docs/).
    let initializer = app.get("/docs/swagger-initializer.js").await.text();
    assert!(initializer.contains("\"../openapi.json\""), "{initializer}");
    assert_eq!(
        app.get("/docs/no-such-file.css").await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn every_response_header_appears_once() {
    // CORS's vary and the list's `vary: accept` were two headers; API Gateway's HTTP API
    // (lambda_http) keeps one value per header, so the second was lost on AWS.
    let app = spawn_app().await;
    let r = app
        .call_with(
            http::Method::GET,
            "/sessions",
            &[("origin", "https://app.example")],
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    for name in r.headers.keys() {
        assert_eq!(
            r.headers.get_all(name).iter().count(),
            1,
            "{name} appears once: {:?}",
            r.headers
        );
    }
    let vary = r.header("vary").unwrap().to_ascii_lowercase();
    for part in ["origin", "accept"] {
        assert!(vary.contains(part), "{vary}");
    }
}

#[tokio::test]
async fn docs_assets_are_all_served_locally() {
    let app = spawn_app().await;
    let r = app.get("/docs/").await;
    assert_eq!(r.status, StatusCode::OK);
    let html = r.text();
    assert!(html.contains("swagger"), "an interactive API page");
    let mut assets = references(&html);
    assert!(!assets.is_empty());
    let initializer = app.get("/docs/swagger-initializer.js").await;
    assert_eq!(initializer.status, StatusCode::OK);
    assets.extend(references(&initializer.text()));
    for asset in assets {
        assert!(
            !asset.starts_with("http") && !asset.starts_with("//"),
            "external asset {asset}"
        );
        let path = if asset.starts_with('/') {
            asset.clone()
        } else if let Some(up) = asset.strip_prefix("../") {
            format!("/{up}")
        } else {
            format!("/docs/{}", asset.trim_start_matches("./"))
        };
        let got = app.get(&path).await;
        assert_eq!(got.status, StatusCode::OK, "{path}");
        if path == "/openapi.json" {
            assert_eq!(got.json()["openapi"], Value::from("3.1.0"));
        }
    }
}
