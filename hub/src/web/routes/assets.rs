//! The portal's static files, compiled into the binary: no CDN, nothing to install.

use std::sync::Arc;

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::HubState;

/// `(name, content type, bytes)`.
const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "app.css",
        "text/css; charset=utf-8",
        include_bytes!("../../../assets/app.css"),
    ),
    (
        "live.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../../assets/live.js"),
    ),
    (
        "console.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../../assets/console.js"),
    ),
    (
        "favicon.svg",
        "image/svg+xml",
        include_bytes!("../../../assets/favicon.svg"),
    ),
];

/// The browser libraries of `vendor/npm.toml`, `(name/path, content type, bytes)`, embedded
/// by the build.
const VENDORED: &[(&str, &str, &[u8])] = include!(concat!(env!("OUT_DIR"), "/vendored_assets.rs"));

async fn asset(Path(name): Path<String>) -> Response {
    serve_from(ASSETS, &name)
}

async fn vendored(Path(path): Path<String>) -> Response {
    serve_from(VENDORED, &path)
}

fn serve_from(files: &[(&str, &'static str, &'static [u8])], name: &str) -> Response {
    match files.iter().find(|(asset, ..)| *asset == name) {
        Some((_, content_type, bytes)) => {
            let mut response = bytes.into_response();
            let headers = response.headers_mut();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
            headers.insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=3600"),
            );
            response
        }
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

pub(in crate::web) fn router() -> Router<Arc<HubState>> {
    Router::new()
        .route("/assets/{name}", get(asset))
        .route("/assets/vendor/{*path}", get(vendored))
}
