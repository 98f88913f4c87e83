//! The HTTP side of the hub: the only module that touches axum and Tera.
//!
//! Every request passes the [`identity::authenticate`] middleware (who is asking, CSRF) and
//! gets the security headers; each area has its own router.

mod console_bridge;
mod cookies;
mod current_user;
mod error;
mod form_fields;
mod identity;
mod limits;
pub mod live;
mod render;
mod routes;
pub mod serve;
mod ssh_bridge;
pub mod tls;
mod views;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use limits::MAX_FORM_BYTES;

use crate::HubState;
use crate::db::inventory::{VmRefError, power_state_text};
use crate::domain::viewer::Viewer;
use crate::vm_key::{VmKey, VmRef};
use error::AppError;

/// The answer of `GET /health`.
#[derive(Debug, Serialize)]
struct Health {
    status: &'static str,
    version: &'static str,
    nodes_online: usize,
    nodes_total: usize,
}

async fn health(
    State(state): State<Arc<HubState>>,
) -> Result<Json<Health>, (axum::http::StatusCode, &'static str)> {
    let nodes = state.db.list_nodes().await.map_err(|err| {
        tracing::error!(%err, "health check cannot read the database");
        (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "database unavailable",
        )
    })?;
    Ok(Json(Health {
        status: "ok",
        version: env!("CARGO_PKG_VERSION"),
        nodes_online: state.registry.online_nodes().len(),
        nodes_total: nodes
            .iter()
            .filter(|node| node.revoked_at.is_none())
            .count(),
    }))
}

/// Everything is served from the hub itself: scripts, styles, data and frames.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; img-src 'self' data:; \
     style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'; \
     form-action 'self'; base-uri 'none'; object-src 'none'";

/// The console page's policy: the same, except that styles may be set inline, because the
/// terminal (xterm.js) writes its layout into `<style>` elements it makes. Scripts stay as
/// strict as everywhere else.
pub(crate) const CONSOLE_CONTENT_SECURITY_POLICY: &str = "default-src 'self'; \
     img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; script-src 'self'; \
     connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'; \
     object-src 'none'";

async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    // A page may bring a stricter or page-specific policy of its own (the console page does).
    headers
        .entry(header::CONTENT_SECURITY_POLICY)
        .or_insert(HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    for (name, value) in [
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "same-origin"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    // Pages and API answers carry a user's data: no cache keeps them, unless a route says
    // otherwise (the static assets do).
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

/// Counts every answered request by method, route template and status.
async fn count_request(request: Request, next: Next) -> Response {
    let method: &'static str = match request.method().as_str() {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "OPTIONS" => "OPTIONS",
        _ => "other",
    };
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
        .to_owned();
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    crate::metrics::metrics().http_request(
        method,
        &route,
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}

/// The hub's HTTP routes.
pub fn router(state: Arc<HubState>) -> Router {
    Router::new()
        .merge(routes::auth::router())
        .merge(routes::sign_in::router())
        .merge(routes::portal::router())
        .merge(routes::profile::router())
        .merge(routes::admin::router())
        .merge(routes::plugins::page_router())
        .merge(routes::plugin_settings::page_router())
        .merge(routes::classes::router())
        .merge(routes::consoles::page_router())
        .merge(routes::schedules::page_router())
        .merge(routes::versions::page_router())
        .merge(routes::hardware::page_router())
        .merge(routes::builds::page_router())
        .merge(routes::adopt::page_router())
        .merge(routes::idle::page_router())
        .merge(routes::quota::page_router())
        .merge(routes::usage::page_router())
        .merge(routes::rosters::page_router())
        .merge(routes::assets::router())
        .nest("/api/v1", routes::api::router())
        .merge(routes::metrics::router())
        .route("/health", get(health))
        .fallback(page_not_found)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            identity::authenticate,
        ))
        .layer(middleware::from_fn(security_headers))
        .layer(middleware::from_fn(count_request))
        .layer(DefaultBodyLimit::max(MAX_FORM_BYTES))
        .with_state(state)
}

/// Any address the portal does not serve: a page that says so, not the browser's own.
async fn page_not_found() -> error::PageError {
    AppError::NotFound("there is no page at this address".into()).into()
}

/// The VM a path names: `CLUSTER-VMID`, or a bare VMID while only one VM on the hub has it
/// (every VM address before clusters). A bare VMID that several clusters share names the
/// one the viewer may see; when they may see several, the answer lists those (and only
/// those: what a user may not see is not found, see [`crate::domain::access`]).
pub(crate) async fn vm_key(
    state: &HubState,
    viewer: &Viewer,
    text: &str,
) -> Result<VmKey, AppError> {
    let vm: VmRef = text
        .parse()
        .map_err(|err: crate::vm_key::BadVmRef| AppError::NotFound(err.to_string()))?;
    vm_ref_key(state, viewer, vm).await
}

/// The VM a reference names (see [`vm_key`]).
pub(crate) async fn vm_ref_key(
    state: &HubState,
    viewer: &Viewer,
    vm: VmRef,
) -> Result<VmKey, AppError> {
    let candidates = match state.db.resolve_vm(vm).await {
        Ok(key) => return Ok(key),
        Err(VmRefError::NotFound) => Vec::new(),
        Err(VmRefError::Ambiguous(candidates)) => {
            crate::domain::vms::visible_among(&state.db, viewer, candidates).await?
        }
        Err(VmRefError::Db(err)) => return Err(err.into()),
    };
    match candidates.as_slice() {
        [] => Err(AppError::NotFound("there is no such VM".into())),
        [key] => Ok(*key),
        _ => Err(AppError::Conflict(
            VmRefError::Ambiguous(candidates).to_string(),
        )),
    }
}

/// A local path to go back to after a form or a sign-in, or `fallback`: an absolute path on
/// this site and nothing a browser could read as another origin. Browsers drop tabs and line
/// breaks from URLs and read `\\` as `/`, so `/\t/evil.example` would become
/// `//evil.example`: only visible ASCII is accepted, without backslashes, and never `//`.
fn local_path<'a>(path: Option<&'a str>, fallback: &'a str) -> &'a str {
    match path {
        Some(path)
            if path.starts_with('/')
                && !path.starts_with("//")
                && path.bytes().all(|b| b.is_ascii_graphic() && b != b'\\') =>
        {
            path
        }
        _ => fallback,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_paths_only() {
        assert_eq!(local_path(Some("/vms/101"), "/vms"), "/vms/101");
        assert_eq!(local_path(Some("//evil"), "/vms"), "/vms");
        assert_eq!(local_path(Some("https://evil"), "/vms"), "/vms");
        assert_eq!(local_path(None, "/vms"), "/vms");
        for hostile in [
            "/\t/evil.example/x",
            "/\n/evil.example/x",
            "/\r\n/evil.example",
            "/ /evil.example",
            "/\\evil.example",
            "\\\\evil.example",
            "/vms\r\nSet-Cookie: x=1",
            "/vms/\u{7f}",
            "/caf\u{e9}",
        ] {
            assert_eq!(local_path(Some(hostile), "/vms"), "/vms", "{hostile:?}");
        }
        assert_eq!(
            local_path(Some("/classes/3?tab=vms"), "/vms"),
            "/classes/3?tab=vms"
        );
    }
}
