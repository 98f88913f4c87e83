//! Plugin settings in the portal and the API: an admin's for the whole site, a class
//! owner's for their class (only the settings the plugin lets classes have).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Form, Json, Router};

use crate::HubState;
use crate::domain::classes;
use crate::domain::plugin_settings::{self, SettingField};
use crate::web::error::{ApiError, ApiJson, AppError, PageError};
use crate::web::identity::{CurrentUser, RequireAdmin};
use crate::web::render::redirect_with_flash;

/// A form's fields, without its CSRF token.
fn settings_of(mut form: BTreeMap<String, String>) -> BTreeMap<String, String> {
    form.remove("csrf");
    form
}

/// API values (`"text"`, `4`, `true`; `null` unsets) as the text a form would give.
fn api_values(values: BTreeMap<String, serde_json::Value>) -> BTreeMap<String, String> {
    values
        .into_iter()
        .map(|(name, value)| {
            let text = match value {
                serde_json::Value::Null => String::new(),
                serde_json::Value::String(text) => text,
                other => other.to_string(),
            };
            (name, text)
        })
        .collect()
}

async fn site_form(
    State(state): State<Arc<HubState>>,
    RequireAdmin(user): RequireAdmin,
    Path(plugin): Path<String>,
    Form(form): Form<BTreeMap<String, String>>,
) -> Result<Response, PageError> {
    plugin_settings::save(&state, &user.viewer, &plugin, None, &settings_of(form))
        .await
        .map_err(AppError::from)?;
    Ok(redirect_with_flash(
        "/admin/plugins",
        "ok",
        &format!("The settings of {plugin} are saved; new steps use them."),
    ))
}

async fn class_form(
    State(state): State<Arc<HubState>>,
    user: CurrentUser,
    Path((class_id, plugin)): Path<(i64, String)>,
    Form(form): Form<BTreeMap<String, String>>,
) -> Result<Response, PageError> {
    save_for_class(&state, &user, class_id, &plugin, &settings_of(form)).await?;
    Ok(redirect_with_flash(
        &format!("/classes/{class_id}#plugins"),
        "ok",
        &format!("The class's settings of {plugin} are saved; new steps use them."),
    ))
}

/// Saves a class's settings of a plugin that runs for it, if the viewer owns the class.
async fn save_for_class(
    state: &HubState,
    user: &CurrentUser,
    class_id: i64,
    plugin: &str,
    values: &BTreeMap<String, String>,
) -> Result<(), AppError> {
    classes::owned_class(state, &user.viewer, class_id).await?;
    if !state
        .db
        .class_plugins(class_id)
        .await?
        .iter()
        .any(|id| id == plugin)
    {
        return Err(AppError::BadRequest(format!(
            "plugin {plugin} does not run for this class"
        )));
    }
    plugin_settings::save(state, &user.viewer, plugin, Some(class_id), values).await?;
    Ok(())
}

async fn site_api(
    State(state): State<Arc<HubState>>,
    RequireAdmin(_): RequireAdmin,
    Path(plugin): Path<String>,
) -> Result<Json<Vec<SettingField>>, ApiError> {
    Ok(Json(
        plugin_settings::fields(&state, &plugin, None)
            .await
            .map_err(AppError::from)?,
    ))
}

async fn put_site_api(
    State(state): State<Arc<HubState>>,
    RequireAdmin(user): RequireAdmin,
    Path(plugin): Path<String>,
    ApiJson(values): ApiJson<BTreeMap<String, serde_json::Value>>,
) -> Result<Json<Vec<SettingField>>, ApiError> {
    plugin_settings::save(&state, &user.viewer, &plugin, None, &api_values(values))
        .await
        .map_err(AppError::from)?;
    site_api(State(state), RequireAdmin(user), Path(plugin)).await
}

async fn class_api(
    State(state): State<Arc<HubState>>,
    user: CurrentUser,
    Path((class_id, plugin)): Path<(i64, String)>,
) -> Result<Json<Vec<SettingField>>, ApiError> {
    classes::owned_class(&state, &user.viewer, class_id)
        .await
        .map_err(AppError::from)?;
    Ok(Json(
        plugin_settings::fields(&state, &plugin, Some(class_id))
            .await
            .map_err(AppError::from)?,
    ))
}

async fn put_class_api(
    State(state): State<Arc<HubState>>,
    user: CurrentUser,
    Path((class_id, plugin)): Path<(i64, String)>,
    ApiJson(values): ApiJson<BTreeMap<String, serde_json::Value>>,
) -> Result<Json<Vec<SettingField>>, ApiError> {
    save_for_class(&state, &user, class_id, &plugin, &api_values(values)).await?;
    class_api(State(state), user, Path((class_id, plugin))).await
}

/// The pages' forms.
pub(in crate::web) fn page_router() -> Router<Arc<HubState>> {
    Router::new()
        .route("/admin/plugins/{id}/settings", post(site_form))
        .route("/classes/{id}/plugins/{plugin}/settings", post(class_form))
}

/// The API, under `/api/v1`.
pub(in crate::web) fn api_router() -> Router<Arc<HubState>> {
    Router::new()
        .route("/plugins/{id}/settings", get(site_api).put(put_site_api))
        .route(
            "/classes/{id}/plugins/{plugin}/settings",
            get(class_api).put(put_class_api),
        )
}
