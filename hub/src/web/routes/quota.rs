//! Quota hours: a class's quota and its students' hours (API and the class page's forms).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use serde::Deserialize;

use crate::HubState;
use crate::domain::quota::{self, AddHours, ClassQuota, QuotaSettings};
use crate::web::error::{ApiError, ApiJson, AppError, PageError};
use crate::web::identity::CurrentUser;
use crate::web::render::redirect_with_flash;

async fn show(
    State(state): State<Arc<HubState>>,
    user: CurrentUser,
    Path(id): Path<i64>,
) -> Result<Json<ClassQuota>, ApiError> {
    Ok(Json(quota::class_quota(&state, &user.viewer, id).await?))
}

async fn set(
    State(state): State<Arc<HubState>>,
    user: CurrentUser,
    Path(id): Path<i64>,
    ApiJson(body): ApiJson<QuotaSettings>,
) -> Result<Json<ClassQuota>, ApiError> {
    Ok(Json(
        quota::set_class_quota(&state, &user.viewer, id, &body).await?,
    ))
}

async fn add(
    State(state): State<Arc<HubState>>,
    user: CurrentUser,
    Path(id): Path<i64>,
    ApiJson(body): ApiJson<AddHours>,
) -> Result<Json<ClassQuota>, ApiError> {
    Ok(Json(
        quota::add_hours(&state, &user.viewer, id, &body).await?,
    ))
}

pub(in crate::web) fn api_router() -> Router<Arc<HubState>> {
    Router::new()
        .route("/classes/{id}/quota", get(show).put(set))
        .route("/classes/{id}/quota/hours", post(add))
}

/// The class page's quota form: empty hours remove the quota.
#[derive(Debug, Deserialize)]
struct QuotaForm {
    #[serde(default)]
    hours: String,
    count_scheduled: Option<String>,
}

/// The class page's form to add hours: to one student, or to all when no one is named.
#[derive(Debug, Deserialize)]
struct AddForm {
    #[serde(default)]
    hours: String,
    #[serde(default)]
    username: String,
}

/// A whole number of hours from a form, or what is wrong with it.
fn hours_from(text: &str) -> Result<Option<u32>, String> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    text.parse()
        .map(Some)
        .map_err(|_| format!("hours must be a whole number, not {text:?}"))
}

async fn set_from_page(
    State(state): State<Arc<HubState>>,
    user: CurrentUser,
    Path(id): Path<i64>,
    Form(form): Form<QuotaForm>,
) -> Result<Response, PageError> {
    crate::domain::classes::owned_class(&state, &user.viewer, id).await?;
    let back = format!("/classes/{id}#quota");
    let settings = match hours_from(&form.hours) {
        Ok(hours) => QuotaSettings {
            hours,
            count_scheduled: form.count_scheduled.is_some(),
        },
        Err(reason) => {
            return Ok(redirect_with_flash(
                &back,
                "error",
                &crate::text::sentence(&reason),
            ));
        }
    };
    Ok(
        match quota::set_class_quota(&state, &user.viewer, id, &settings).await {
            Ok(saved) => {
                let said = match saved.settings.hours {
                    Some(hours) => format!("Each student has {hours} h."),
                    None => "The class has no quota now.".into(),
                };
                redirect_with_flash(&back, "ok", &said)
            }
            Err(err) => redirect_with_flash(&back, "error", &AppError::from(err).to_string()),
        },
    )
}

async fn add_from_page(
    State(state): State<Arc<HubState>>,
    user: CurrentUser,
    Path(id): Path<i64>,
    Form(form): Form<AddForm>,
) -> Result<Response, PageError> {
    crate::domain::classes::owned_class(&state, &user.viewer, id).await?;
    let back = format!("/classes/{id}#quota");
    let hours = match hours_from(&form.hours) {
        Ok(Some(hours)) => hours,
        Ok(None) => {
            return Ok(redirect_with_flash(
                &back,
                "error",
                "Say how many hours to add.",
            ));
        }
        Err(reason) => {
            return Ok(redirect_with_flash(
                &back,
                "error",
                &crate::text::sentence(&reason),
            ));
        }
    };
    let username = Some(form.username.trim().to_owned()).filter(|name| !name.is_empty());
    let add = AddHours { hours, username };
    Ok(
        match quota::add_hours(&state, &user.viewer, id, &add).await {
            Ok(_) => {
                let whom = add.username.as_deref().unwrap_or("every student");
                redirect_with_flash(&back, "ok", &format!("Added {hours} h for {whom}."))
            }
            Err(err) => redirect_with_flash(&back, "error", &AppError::from(err).to_string()),
        },
    )
}

pub(in crate::web) fn page_router() -> Router<Arc<HubState>> {
    Router::new()
        .route("/classes/{id}/quota", post(set_from_page))
        .route("/classes/{id}/quota/hours", post(add_from_page))
}
