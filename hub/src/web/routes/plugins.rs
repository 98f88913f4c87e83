//! Plugins: the admin page and the JSON API (upload, delete, scope), and a class's choice.

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Form, Json, Router};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};

use crate::HubState;
use crate::db::plugins::PluginRow;
use crate::domain::plugins::{self, MAX_WASM_BYTES, PluginFault};
use crate::domain::tokens::format_time;
use crate::web::error::{ApiError, ApiJson, AppError, PageError};
use crate::web::identity::{CurrentUser, RequireAdmin};
use crate::web::render::{Layout, Page, redirect_with_flash};

impl From<PluginFault> for AppError {
    fn from(err: PluginFault) -> Self {
        match err {
            PluginFault::NotFound => AppError::NotFound("no such plugin".into()),
            PluginFault::Invalid(message) => AppError::BadRequest(message),
            PluginFault::Db(err) => err.into(),
        }
    }
}

/// An upload: the manifest's text and the component, base64-encoded.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Upload {
    manifest: String,
    wasm: String,
}

#[derive(Debug, Serialize)]
struct PluginView {
    #[serde(flatten)]
    row: PluginRow,
    uploaded: String,
}

impl From<PluginRow> for PluginView {
    fn from(row: PluginRow) -> Self {
        Self {
            uploaded: format_time(row.uploaded_at),
            row,
        }
    }
}

async fn list(
    State(state): State<Arc<HubState>>,
    _admin: RequireAdmin,
) -> Result<Json<Vec<PluginView>>, ApiError> {
    let plugins = state.db.plugins().await.map_err(AppError::from)?;
    Ok(Json(plugins.into_iter().map(PluginView::from).collect()))
}

#[derive(Debug, Serialize)]
struct Uploaded {
    plugin: PluginView,
    /// How each online agent took it.
    nodes: Vec<plugins::NodeInstall>,
}

async fn upload(
    State(state): State<Arc<HubState>>,
    RequireAdmin(user): RequireAdmin,
    ApiJson(upload): ApiJson<Upload>,
) -> Result<(StatusCode, Json<Uploaded>), ApiError> {
    let wasm = BASE64
        .decode(upload.wasm.trim())
        .map_err(|err| AppError::BadRequest(format!("wasm is not base64: {err}")))?;
    let (row, nodes) = plugins::upload(&state, &user.viewer, &upload.manifest, &wasm)
        .await
        .map_err(AppError::from)?;
    Ok((
        StatusCode::CREATED,
        Json(Uploaded {
            plugin: row.into(),
            nodes,
        }),
    ))
}

async fn delete(
    State(state): State<Arc<HubState>>,
    RequireAdmin(user): RequireAdmin,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    plugins::delete(&state, &user.viewer, &id)
        .await
        .map_err(AppError::from)?;
    Ok(Json(serde_json::json!({"ok": true})))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Scope {
    all_classes: bool,
}

async fn scope(
    State(state): State<Arc<HubState>>,
    RequireAdmin(user): RequireAdmin,
    Path(id): Path<String>,
    ApiJson(scope): ApiJson<Scope>,
) -> Result<Json<serde_json::Value>, ApiError> {
    plugins::set_for_all_classes(&state, &user.viewer, &id, scope.all_classes)
        .await
        .map_err(AppError::from)?;
    Ok(Json(serde_json::json!({"ok": true})))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Choice {
    plugins: Vec<String>,
}

async fn choose_for_class(
    State(state): State<Arc<HubState>>,
    user: CurrentUser,
    Path(id): Path<i64>,
    ApiJson(choice): ApiJson<Choice>,
) -> Result<Json<serde_json::Value>, ApiError> {
    crate::domain::classes::choose_plugins(&state, &user.viewer, id, &choice.plugins).await?;
    Ok(Json(serde_json::json!({"plugins": choice.plugins})))
}

/// The API routes, under `/api/v1`.
pub(in crate::web) fn api_router() -> Router<Arc<HubState>> {
    Router::new()
        .route(
            "/plugins",
            get(list)
                .post(upload)
                .layer(DefaultBodyLimit::max(MAX_WASM_BYTES * 4 / 3 + 64 * 1024)),
        )
        .route("/plugins/{id}", axum::routing::delete(delete))
        .route("/plugins/{id}/scope", post(scope))
        .route("/classes/{id}/plugins", put(choose_for_class))
}

/// A plugin on the admin page, with its site settings.
#[derive(Debug, Serialize)]
struct PluginLine {
    #[serde(flatten)]
    plugin: PluginView,
    settings: Vec<crate::domain::plugin_settings::SettingField>,
}

#[derive(Debug, Serialize)]
struct PluginsPage {
    plugins: Vec<PluginLine>,
    max_bytes: usize,
}

async fn page(
    State(state): State<Arc<HubState>>,
    RequireAdmin(user): RequireAdmin,
    headers: HeaderMap,
) -> Result<Page, PageError> {
    let mut lines = Vec::new();
    for row in state.db.plugins().await.map_err(AppError::from)? {
        // A plugin whose manifest no longer reads shows without settings.
        let settings = crate::domain::plugin_settings::fields(&state, &row.id, None)
            .await
            .unwrap_or_default();
        lines.push(PluginLine {
            plugin: PluginView::from(row),
            settings,
        });
    }
    Ok(Page::render(
        "pages/admin/plugins.html",
        &Layout::new(Some(&user), &headers, "plugins", "Plugins"),
        &PluginsPage {
            plugins: lines,
            max_bytes: MAX_WASM_BYTES,
        },
    )?)
}

#[derive(Debug, Deserialize)]
struct ScopeForm {
    all_classes: String,
}

async fn scope_form(
    State(state): State<Arc<HubState>>,
    RequireAdmin(user): RequireAdmin,
    Path(id): Path<String>,
    Form(form): Form<ScopeForm>,
) -> Result<Response, PageError> {
    let all = form.all_classes == "on";
    plugins::set_for_all_classes(&state, &user.viewer, &id, all)
        .await
        .map_err(AppError::from)?;
    let text = if all {
        format!("{id} now runs for every class.")
    } else {
        format!("{id} now runs only for classes that choose it.")
    };
    Ok(redirect_with_flash("/admin/plugins", "ok", &text))
}

async fn delete_form(
    State(state): State<Arc<HubState>>,
    RequireAdmin(user): RequireAdmin,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    plugins::delete(&state, &user.viewer, &id)
        .await
        .map_err(AppError::from)?;
    Ok(redirect_with_flash("/admin/plugins", "ok", &format!("{id} deleted.")).into_response())
}

/// The plugin guide, as it ships with this hub.
const GUIDE: &str = include_str!("../../../../plugins/README.md");

#[derive(Debug, Serialize)]
struct GuidePage {
    guide: &'static str,
}

async fn guide(RequireAdmin(user): RequireAdmin, headers: HeaderMap) -> Result<Page, PageError> {
    Ok(Page::render(
        "pages/admin/plugin_guide.html",
        &Layout::new(Some(&user), &headers, "plugins", "Plugin guide"),
        &GuidePage { guide: GUIDE },
    )?)
}

/// The admin pages.
pub(in crate::web) fn page_router() -> Router<Arc<HubState>> {
    Router::new()
        .route("/admin/plugins", get(page))
        .route("/admin/plugins/guide", get(guide))
        .route("/admin/plugins/{id}/scope", post(scope_form))
        .route("/admin/plugins/{id}/delete", post(delete_form))
}
