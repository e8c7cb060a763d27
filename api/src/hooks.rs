//! Permission hooks: one per action, run before any lookup so a denied caller learns nothing.
//!
//! Each hook receives the raw `call_id` from the path (before validation: the order of
//! checks is 413 → hook → 422 → 404) and the request's method, URI and headers, and may
//! reject with any status and detail. `None` means allow all (the anchor's default).

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use futures::future::BoxFuture;
use http::{HeaderMap, Method, StatusCode, Uri};
use switchboard_core::CallId;

/// What a hook sees of the request.
#[derive(Debug, Clone)]
pub struct RequestInfo {
    /// The method.
    pub method: Method,
    /// The URI (path and query).
    pub uri: Uri,
    /// The headers.
    pub headers: HeaderMap,
}

impl RequestInfo {
    pub(crate) fn from_parts(parts: &http::request::Parts) -> Self {
        Self {
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            headers: parts.headers.clone(),
        }
    }
}

/// A hook's refusal: any status, any JSON detail (answered as `{"detail": detail}`), and
/// response headers (`WWW-Authenticate` on a 401, say).
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    /// The status code.
    pub status: StatusCode,
    /// The detail.
    pub detail: serde_json::Value,
    /// Headers added to the response.
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
}

impl Rejection {
    /// A refusal with a string detail.
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        Self {
            status,
            detail: serde_json::Value::String(detail.into()),
            headers: Vec::new(),
        }
    }

    /// Adds a response header.
    pub fn with_header(mut self, name: http::HeaderName, value: http::HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    /// 401 with `detail`.
    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, detail)
    }

    /// 403 with `detail`.
    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, detail)
    }
}

type HookFn =
    dyn Fn(String, RequestInfo) -> BoxFuture<'static, Result<(), Rejection>> + Send + Sync;

/// A per-call permission check: an async function of the `call_id` and the request.
#[derive(Clone)]
pub struct Permission(Arc<HookFn>);

impl fmt::Debug for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Permission(..)")
    }
}

impl Permission {
    /// Wraps an async function `(call_id, request) -> Result<(), Rejection>`.
    pub fn new<F, Fut>(check: F) -> Self
    where
        F: Fn(String, RequestInfo) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), Rejection>> + Send + 'static,
    {
        Self(Arc::new(move |call_id, request| {
            Box::pin(check(call_id, request))
        }))
    }

    pub(crate) async fn check(
        &self,
        call_id: &str,
        parts: &http::request::Parts,
    ) -> Result<(), Rejection> {
        (self.0)(call_id.to_owned(), RequestInfo::from_parts(parts)).await
    }

    /// Runs the hook for `call_id` on a request's head (for routes added beside the default
    /// ones, such as the local call's WebSocket).
    pub async fn check_parts(
        &self,
        call_id: &str,
        parts: &http::request::Parts,
    ) -> Result<(), Rejection> {
        self.check(call_id, parts).await
    }
}

/// Which calls a `GET /sessions` caller may see.
#[derive(Clone, Default)]
pub enum CallFilter {
    /// Every call.
    #[default]
    All,
    /// Only calls for which the predicate holds.
    Only(Arc<dyn Fn(&CallId) -> bool + Send + Sync>),
}

impl fmt::Debug for CallFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::All => f.write_str("All"),
            Self::Only(_) => f.write_str("Only(..)"),
        }
    }
}

impl CallFilter {
    /// Whether sessions of `call_id` may be shown.
    pub fn allows(&self, call_id: &CallId) -> bool {
        match self {
            Self::All => true,
            Self::Only(predicate) => predicate(call_id),
        }
    }
}

type ListFn =
    dyn Fn(RequestInfo) -> BoxFuture<'static, Result<CallFilter, Rejection>> + Send + Sync;

/// The `GET /sessions` check: may reject, or allow with a filter on calls.
#[derive(Clone)]
pub struct ListPermission(Arc<ListFn>);

impl fmt::Debug for ListPermission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ListPermission(..)")
    }
}

impl ListPermission {
    /// Wraps an async function `(request) -> Result<CallFilter, Rejection>`.
    pub fn new<F, Fut>(check: F) -> Self
    where
        F: Fn(RequestInfo) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<CallFilter, Rejection>> + Send + 'static,
    {
        Self(Arc::new(move |request| Box::pin(check(request))))
    }

    pub(crate) async fn check(
        &self,
        parts: &http::request::Parts,
    ) -> Result<CallFilter, Rejection> {
        (self.0)(RequestInfo::from_parts(parts)).await
    }
}

/// The hooks, one per action. `None` allows everything.
#[derive(Debug, Clone, Default)]
pub struct PermissionHooks {
    /// `POST /calls/{call_id}/sessions`.
    pub can_start_session: Option<Permission>,
    /// `DELETE …/{session_id}` and `POST …/{session_id}/close`.
    pub can_close_session: Option<Permission>,
    /// `GET …/{session_id}` and `GET /calls/{call_id}/sessions`.
    pub can_view_session: Option<Permission>,
    /// `GET …/{session_id}/metrics`.
    pub can_view_metrics: Option<Permission>,
    /// `GET /sessions` (all calls), which may also filter the calls shown.
    pub can_list_sessions: Option<ListPermission>,
    /// `GET /calls/{call_id}/ws`: a person joins the local call (served by `serve`).
    pub can_join_call: Option<Permission>,
    /// `GET /metrics`: the fleet metrics (served by `serve`), figures across every call. Its
    /// call id is empty.
    pub can_view_fleet_metrics: Option<Permission>,
}

fn both(first: Option<Permission>, then: Option<Permission>) -> Option<Permission> {
    match (first, then) {
        (Some(a), Some(b)) => Some(Permission::new(
            move |call_id: String, request: RequestInfo| {
                let (a, b) = (a.clone(), b.clone());
                async move {
                    (a.0)(call_id.clone(), request.clone()).await?;
                    (b.0)(call_id, request).await
                }
            },
        )),
        (a, b) => a.or(b),
    }
}

impl PermissionHooks {
    /// These hooks, then `next`'s: an action is allowed when both allow it (the first
    /// refusal answers), and `GET /sessions` shows the calls both filters let through. How a
    /// built-in policy (authentication) and your own rules (business checks) combine.
    pub fn then(self, next: PermissionHooks) -> PermissionHooks {
        let list = match (self.can_list_sessions, next.can_list_sessions) {
            (Some(a), Some(b)) => Some(ListPermission::new(move |request: RequestInfo| {
                let (a, b) = (a.clone(), b.clone());
                async move {
                    let first = (a.0)(request.clone()).await?;
                    let second = (b.0)(request).await?;
                    Ok(match (first, second) {
                        (CallFilter::All, other) | (other, CallFilter::All) => other,
                        (CallFilter::Only(x), CallFilter::Only(y)) => {
                            CallFilter::Only(Arc::new(move |call| x(call) && y(call)))
                        }
                    })
                }
            })),
            (a, b) => a.or(b),
        };
        PermissionHooks {
            can_start_session: both(self.can_start_session, next.can_start_session),
            can_close_session: both(self.can_close_session, next.can_close_session),
            can_view_session: both(self.can_view_session, next.can_view_session),
            can_view_metrics: both(self.can_view_metrics, next.can_view_metrics),
            can_list_sessions: list,
            can_join_call: both(self.can_join_call, next.can_join_call),
            can_view_fleet_metrics: both(self.can_view_fleet_metrics, next.can_view_fleet_metrics),
        }
    }
}

pub(crate) async fn check(
    hook: Option<&Permission>,
    call_id: &str,
    parts: &http::request::Parts,
) -> Result<(), Rejection> {
    match hook {
        Some(hook) => hook.check(call_id, parts).await,
        None => Ok(()),
    }
}
