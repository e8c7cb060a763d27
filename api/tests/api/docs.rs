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
    assert_eq!(paths.len(), 7);
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
async fn docs_assets_are_all_served_locally() {
    let app = spawn_app().await;
    let mut r = app.get("/docs").await;
    if r.status.is_redirection() {
        let location = r.header("location").unwrap().to_owned();
        r = app.get(&location).await;
    }
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
