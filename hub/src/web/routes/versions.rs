//! A class's template versions: publish, roll back and how many are kept, for scripts (the
//! API) and the class page's forms.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use serde::{Deserialize, Serialize};

use crate::HubState;
use crate::db::states::Rollout;
use crate::domain::classes::versions::{self, RolloutChoice, VersionView};
use crate::web::error::{ApiError, ApiJson, AppError, PageError};
use crate::web::identity::CurrentUser;
use crate::web::render::redirect_with_flash;

/// How the API names a rollout choice.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum RolloutName {
    Now,
    NextReset,
    NewStudents,
}

impl From<RolloutName> for Rollout {
    fn from(name: RolloutName) -> Self {
        match name {
            RolloutName::Now => Rollout::Now,
            RolloutName::NextReset => Rollout::NextReset,
            RolloutName::NewStudents => Rollout::NewStudents,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishRequest {
    #[serde(default)]
    note: String,
    rollout: RolloutName,
    /// Minutes running VMs are warned before a re-image shuts them down. Default: 10.
    #[serde(default)]
    warn_minutes: Option<u32>,
}

/// The default warning before running VMs are shut down for a re-image.
const DEFAULT_WARN_MINUTES: u32 = 10;

#[derive(Debug, Serialize)]
struct Published {
    version: i64,
    job: i64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RollbackRequest {
    rollout: RolloutName,
    #[serde(default)]
    warn_minutes: Option<u32>,
}

#[derive(Debug, Serialize)]
struct JobStarted {
    job: i64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeepRequest {
    keep: u32,
}

#[derive(Debug, Serialize)]
struct Kept {
    keep: u32,
}

async fn list(
    State(state): State<Arc<HubState>>,
    user: CurrentUser,
    Path(id): Path<i64>,
) -> Result<Json<Vec<VersionView>>, ApiError> {
    Ok(Json(versions::versions(&state, &user.viewer, id).await?))
}

async fn publish(
    State(state): State<Arc<HubState>>,
    user: CurrentUser,
    Path(id): Path<i64>,
    ApiJson(body): ApiJson<PublishRequest>,
) -> Result<Response, ApiError> {
    let choice = RolloutChoice {
        rollout: body.rollout.into(),
        warn_minutes: body.warn_minutes.unwrap_or(DEFAULT_WARN_MINUTES),
    };
    let (version, job) = versions::publish(&state, &user.viewer, id, &body.note, choice).await?;
    Ok((StatusCode::ACCEPTED, Json(Published { version, job })).into_response())
}

async fn roll_back(
    State(state): State<Arc<HubState>>,
    user: CurrentUser,
    Path((id, number)): Path<(i64, i64)>,
    ApiJson(body): ApiJson<RollbackRequest>,
) -> Result<Response, ApiError> {
    let choice = RolloutChoice {
        rollout: body.rollout.into(),
        warn_minutes: body.warn_minutes.unwrap_or(DEFAULT_WARN_MINUTES),
    };
    let job = versions::roll_back(&state, &user.viewer, id, number, choice).await?;
    Ok((StatusCode::ACCEPTED, Json(JobStarted { job })).into_response())
}

async fn keep(
    State(state): State<Arc<HubState>>,
    user: CurrentUser,
    Path(id): Path<i64>,
    ApiJson(body): ApiJson<KeepRequest>,
) -> Result<Json<Kept>, ApiError> {
    versions::set_kept_versions(&state, &user.viewer, id, body.keep).await?;
    Ok(Json(Kept { keep: body.keep }))
}

pub(in crate::web) fn api_router() -> Router<Arc<HubState>> {
    Router::new()
        .route("/classes/{id}/versions", get(list).post(publish))
        .route("/classes/{id}/versions/{number}/rollback", post(roll_back))
        .route("/classes/{id}/versions/keep", post(keep))
}

/// The class page's publish and rollback forms.
#[derive(Debug, Deserialize)]
struct RolloutForm {
    #[serde(default)]
    note: String,
    #[serde(default)]
    rollout: String,
    #[serde(default)]
    warn_minutes: String,
}

impl RolloutForm {
    fn choice(&self) -> Result<RolloutChoice, AppError> {
        let rollout = Rollout::parse(self.rollout.trim()).ok_or_else(|| {
            AppError::BadRequest("choose how the class's VMs move to the version".into())
        })?;
        let warn_minutes = match self.warn_minutes.trim() {
            "" => DEFAULT_WARN_MINUTES,
            text => text.parse().map_err(|_| {
                AppError::BadRequest("the warning is a whole number of minutes".into())
            })?,
        };
        Ok(RolloutChoice {
            rollout,
            warn_minutes,
        })
    }
}

#[derive(Debug, Deserialize)]
struct KeepForm {
    #[serde(default)]
    keep: String,
}

/// Back to the versions on the class page, saying how it went.
fn back(id: i64, outcome: Result<String, AppError>) -> Response {
    let to = format!("/classes/{id}#versions");
    match outcome {
        Ok(message) => redirect_with_flash(&to, "ok", &message),
        Err(err) => redirect_with_flash(&to, "error", &err.to_string()),
    }
}

async fn publish_from_page(
    State(state): State<Arc<HubState>>,
    user: CurrentUser,
    Path(id): Path<i64>,
    Form(form): Form<RolloutForm>,
) -> Result<Response, PageError> {
    crate::domain::classes::owned_class(&state, &user.viewer, id).await?;
    let outcome = async {
        let choice = form.choice()?;
        let (number, _) = versions::publish(&state, &user.viewer, id, &form.note, choice).await?;
        Ok(format!(
            "Publishing version {number}: the teacher VM shuts down while its disks are copied."
        ))
    }
    .await;
    Ok(back(id, outcome))
}

async fn roll_back_from_page(
    State(state): State<Arc<HubState>>,
    user: CurrentUser,
    Path((id, number)): Path<(i64, i64)>,
    Form(form): Form<RolloutForm>,
) -> Result<Response, PageError> {
    crate::domain::classes::owned_class(&state, &user.viewer, id).await?;
    let outcome = async {
        let choice = form.choice()?;
        versions::roll_back(&state, &user.viewer, id, number, choice).await?;
        Ok(format!("Rolling back to version {number}."))
    }
    .await;
    Ok(back(id, outcome))
}

async fn keep_from_page(
    State(state): State<Arc<HubState>>,
    user: CurrentUser,
    Path(id): Path<i64>,
    Form(form): Form<KeepForm>,
) -> Result<Response, PageError> {
    crate::domain::classes::owned_class(&state, &user.viewer, id).await?;
    let outcome = async {
        let keep: u32 = form
            .keep
            .trim()
            .parse()
            .map_err(|_| AppError::BadRequest("keep a whole number of versions".into()))?;
        versions::set_kept_versions(&state, &user.viewer, id, keep).await?;
        Ok(format!("The class keeps {keep} versions."))
    }
    .await;
    Ok(back(id, outcome))
}

pub(in crate::web) fn page_router() -> Router<Arc<HubState>> {
    Router::new()
        .route("/classes/{id}/publish", post(publish_from_page))
        .route(
            "/classes/{id}/versions/{number}/rollback",
            post(roll_back_from_page),
        )
        .route("/classes/{id}/versions/keep", post(keep_from_page))
}
