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
        let origins = allow(
            &self.allow_origins,
            creds,
            AllowOrigin::mirror_request,
            AllowOrigin::any,
            |values| {
                Ok(AllowOrigin::list(parse(
                    "cors_allow_origins",
                    values,
                    |v| HeaderValue::from_str(v).ok(),
                )?))
            },
        )?;
        let methods = allow(
            &self.allow_methods,
            creds,
            AllowMethods::mirror_request,
            AllowMethods::any,
            |values| {
                Ok(AllowMethods::list(parse(
                    "cors_allow_methods",
                    values,
                    |v| Method::from_bytes(v.to_ascii_uppercase().as_bytes()).ok(),
                )?))
            },
        )?;
        let headers = allow(
            &self.allow_headers,
            creds,
            AllowHeaders::mirror_request,
            AllowHeaders::any,
            |values| {
                Ok(AllowHeaders::list(parse(
                    "cors_allow_headers",
                    values,
                    |v| HeaderName::from_bytes(v.as_bytes()).ok(),
                )?))
            },
        )?;
        Ok(CorsLayer::new()
            .allow_origin(origins)
            .allow_methods(methods)
            .allow_headers(headers)
            .allow_credentials(creds))
    }
}

/// The rule for one dimension: `*` with credentials mirrors the request, `*` without allows
/// any, and anything else is the listed values.
fn allow<T>(
    values: &[String],
    credentials: bool,
    mirror: fn() -> T,
    any: fn() -> T,
    list: impl FnOnce(&[String]) -> Result<T, ConfigError>,
) -> Result<T, ConfigError> {
    match (is_any(values), credentials) {
        (true, true) => Ok(mirror()),
        (true, false) => Ok(any()),
        (false, _) => list(values),
    }
}
