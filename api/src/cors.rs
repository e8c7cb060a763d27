//! CORS in one place (the router; the SAM template declares none).
//!
//! Defaults are the anchor's: origins, methods and headers `*`, credentials allowed. Browsers
//! reject a literal `*` with credentials (and tower-http panics on it), so `*` together with
//! credentials means mirroring the request's origin, method and headers.

use http::{HeaderName, HeaderValue, Method};
use tower_http::cors::{AllowHeaders, AllowMethods, AllowOrigin, CorsLayer};

use crate::ConfigError;

/// CORS configuration.
#[derive(Debug, Clone)]
pub struct CorsOptions {
    /// Allowed origins (`*` = any).
    pub allow_origins: Vec<String>,
    /// Allowed methods (`*` = any).
    pub allow_methods: Vec<String>,
    /// Allowed request headers (`*` = any).
    pub allow_headers: Vec<String>,
    /// Whether credentials (cookies, Authorization) are allowed.
    pub allow_credentials: bool,
}

impl Default for CorsOptions {
    fn default() -> Self {
        Self {
            allow_origins: vec!["*".into()],
            allow_methods: vec!["*".into()],
            allow_headers: vec!["*".into()],
            allow_credentials: true,
        }
    }
}

fn is_any(values: &[String]) -> bool {
    values.iter().any(|v| v.trim() == "*")
}

fn parse<T>(
    option: &'static str,
    values: &[String],
    f: impl Fn(&str) -> Option<T>,
) -> Result<Vec<T>, ConfigError> {
    values
        .iter()
        .map(|v| {
            f(v.trim()).ok_or_else(|| ConfigError::Cors {
                option,
                value: v.clone(),
            })
        })
        .collect()
}

impl CorsOptions {
    /// The tower-http layer for these options.
    pub fn layer(&self) -> Result<CorsLayer, ConfigError> {
        let creds = self.allow_credentials;
        let origins = if is_any(&self.allow_origins) {
            if creds {
                AllowOrigin::mirror_request()
            } else {
                AllowOrigin::any()
            }
        } else {
            AllowOrigin::list(parse("cors_allow_origins", &self.allow_origins, |v| {
                HeaderValue::from_str(v).ok()
            })?)
        };
        let methods = if is_any(&self.allow_methods) {
            if creds {
                AllowMethods::mirror_request()
            } else {
                AllowMethods::any()
            }
        } else {
            AllowMethods::list(parse("cors_allow_methods", &self.allow_methods, |v| {
                Method::from_bytes(v.to_ascii_uppercase().as_bytes()).ok()
            })?)
        };
        let headers = if is_any(&self.allow_headers) {
            if creds {
                AllowHeaders::mirror_request()
            } else {
                AllowHeaders::any()
            }
        } else {
            AllowHeaders::list(parse("cors_allow_headers", &self.allow_headers, |v| {
                HeaderName::from_bytes(v.as_bytes()).ok()
            })?)
        };
        Ok(CorsLayer::new()
            .allow_origin(origins)
            .allow_methods(methods)
            .allow_headers(headers)
            .allow_credentials(creds))
    }
}
