//! A class's schedule: the API for scripts and the class page's forms.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use serde::{Deserialize, Serialize};

use crate::HubState;
use crate::domain::schedules::{self, ClassSchedule, NewRule};
use crate::web::error::{ApiError, ApiJson, AppError, PageError};
use crate::web::identity::CurrentUser;
use crate::web::render::redirect_with_flash;

async fn show(
    State(state): State<Arc<HubState>>,
    user: CurrentUser,
    Path(id): Path<i64>,
) -> Result<Json<ClassSchedule>, ApiError> {
    Ok(Json(
        schedules::class_schedule(&state, &user.viewer, id).await?,
    ))
}

async fn add(
    State(state): State<Arc<HubState>>,
    user: CurrentUser,
    Path(id): Path<i64>,
    ApiJson(body): ApiJson<NewRule>,
) -> Result<Response, ApiError> {
    let rule = schedules::add_rule(&state, &user.viewer, id, &body).await?;
    Ok((StatusCode::CREATED, Json(rule)).into_response())
}

#[derive(Debug, Serialize)]
struct Removed {
    ok: bool,
}

async fn remove(
    State(state): State<Arc<HubState>>,
    user: CurrentUser,
    Path((id, rule)): Path<(i64, i64)>,
) -> Result<Json<Removed>, ApiError> {
    schedules::remove_rule(&state, &user.viewer, id, rule).await?;
    Ok(Json(Removed { ok: true }))
}

pub(in crate::web) fn api_router() -> Router<Arc<HubState>> {
    Router::new()
        .route("/classes/{id}/schedule", get(show))
        .route("/classes/{id}/schedule/rules", post(add))
        .route(
            "/classes/{id}/schedule/rules/{rule}",
            axum::routing::delete(remove),
        )
}

/// The class page's rule form: one checkbox per weekday, blanks for what is left out.
#[derive(Debug, Deserialize)]
struct RuleForm {
    #[serde(default)]
    repeat: String,
    #[serde(default)]
    date: String,
    #[serde(default)]
    until: String,
    #[serde(default)]
    start: String,
    #[serde(default)]
    stop: String,
    #[serde(default)]
    time_zone: String,
    #[serde(default)]
    note: String,
    day_mon: Option<String>,
    day_tue: Option<String>,
    day_wed: Option<String>,
    day_thu: Option<String>,
    day_fri: Option<String>,
    day_sat: Option<String>,
    day_sun: Option<String>,
}

impl RuleForm {
    fn into_rule(self) -> NewRule {
        let days = [
            ("mon", &self.day_mon),
            ("tue", &self.day_tue),
            ("wed", &self.day_wed),
            ("thu", &self.day_thu),
            ("fri", &self.day_fri),
            ("sat", &self.day_sat),
            ("sun", &self.day_sun),
        ];
        let weekdays = if self.repeat == "weekly" {
            days.iter()
                .filter(|(_, ticked)| ticked.is_some())
                .map(|(name, _)| (*name).to_owned())
                .collect()
        } else {
            Vec::new()
        };
        let given = |text: String| Some(text).filter(|text| !text.trim().is_empty());
        NewRule {
            repeat: self.repeat,
            date: self.date,
            until: if weekdays.is_empty() {
                None
            } else {
                given(self.until)
            },
            weekdays,
            start: given(self.start),
            stop: given(self.stop),
            time_zone: given(self.time_zone),
            note: given(self.note),
        }
    }
}

async fn add_from_page(
    State(state): State<Arc<HubState>>,
    user: CurrentUser,
    Path(id): Path<i64>,
    Form(form): Form<RuleForm>,
) -> Result<Response, PageError> {
    // A class the viewer does not own is no page at all; a bad rule is said on the page.
    crate::domain::classes::owned_class(&state, &user.viewer, id).await?;
    let back = format!("/classes/{id}#schedule");
    Ok(
        match schedules::add_rule(&state, &user.viewer, id, &form.into_rule()).await {
            Ok(rule) => redirect_with_flash(&back, "ok", &format!("Added: {}.", rule.summary)),
            Err(err) => redirect_with_flash(&back, "error", &AppError::from(err).to_string()),
        },
    )
}

async fn remove_from_page(
    State(state): State<Arc<HubState>>,
    user: CurrentUser,
    Path((id, rule)): Path<(i64, i64)>,
) -> Result<Response, PageError> {
    schedules::remove_rule(&state, &user.viewer, id, rule).await?;
    Ok(redirect_with_flash(
        &format!("/classes/{id}#schedule"),
        "ok",
        "The rule is removed.",
    ))
}

pub(in crate::web) fn page_router() -> Router<Arc<HubState>> {
    Router::new()
        .route("/classes/{id}/schedule", post(add_from_page))
        .route(
            "/classes/{id}/schedule/{rule}/delete",
            post(remove_from_page),
        )
}
