//! Class rosters: a CSV upload on the class page (with the new accounts' passwords shown
//! once) and the same for scripts (`POST /api/v1/classes/{id}/roster` with the CSV as body).

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Multipart, Path, State};
use axum::http::HeaderMap;
use axum::routing::{get, post};
use axum::{Form, Router};
use serde::Serialize;

use crate::HubState;
use crate::db::rosters::RosterPerson;
use crate::domain::classes::roster::{self, RosterImport};
use crate::domain::classes::{self, ClassError};
use crate::web::cookies::percent_encode;
use crate::web::error::{ApiError, ApiJson, AppError, PageError};
use crate::web::identity::CurrentUser;
use crate::web::limits::MAX_UPLOAD_BYTES;
use crate::web::render::{Layout, Page};

type ApiResult<T> = Result<Json<T>, ApiError>;

/// The page after an upload: what was done, or why nothing was.
#[derive(Debug, Serialize)]
struct RosterResultView {
    class_id: i64,
    class_name: String,
    outcome: Option<RosterImport>,
    error: Option<String>,
    /// The new accounts and passwords as a CSV file to download (a `data:` URL).
    passwords_csv: Option<String>,
}

fn passwords_csv(outcome: &RosterImport) -> Option<String> {
    if outcome.created.is_empty() {
        return None;
    }
    let mut text = String::from("username,password\r\n");
    for account in &outcome.created {
        text.push_str(&format!("{},{}\r\n", account.username, account.password));
    }
    Some(format!(
        "data:text/csv;charset=utf-8,{}",
        percent_encode(&text)
    ))
}

/// The uploaded file of the form's `roster` field.
async fn uploaded_file(mut form: Multipart) -> Result<Bytes, AppError> {
    let unreadable = |err: axum::extract::multipart::MultipartError| {
        AppError::BadRequest(format!("the upload could not be read: {err}"))
    };
    while let Some(field) = form.next_field().await.map_err(unreadable)? {
        if field.name() == Some("roster") {
            return field.bytes().await.map_err(unreadable);
        }
    }
    Err(AppError::BadRequest("choose a CSV file to upload".into()))
}

async fn upload(
    State(state): State<Arc<HubState>>,
    user: CurrentUser,
    headers: HeaderMap,
    Path(id): Path<i64>,
    form: Multipart,
) -> Result<Page, PageError> {
    let class = classes::owned_class(&state, &user.viewer, id).await?;
    let file = uploaded_file(form).await?;
    let result = roster::import(&state, &user.viewer, id, &file).await;
    result_page(&user, &headers, &class, result)
}

#[derive(Debug, serde::Deserialize)]
struct GroupForm {
    #[serde(default)]
    group: String,
}

async fn sync_group(
    State(state): State<Arc<HubState>>,
    user: CurrentUser,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Form(form): Form<GroupForm>,
) -> Result<Page, PageError> {
    let class = classes::owned_class(&state, &user.viewer, id).await?;
    let result = roster::sync_group(&state, &user.viewer, id, Some(&form.group)).await;
    result_page(&user, &headers, &class, result)
}

/// The page that says what an import or a sync did, or why it did nothing.
fn result_page(
    user: &CurrentUser,
    headers: &HeaderMap,
    class: &crate::db::classes::ClassRow,
    result: Result<RosterImport, ClassError>,
) -> Result<Page, PageError> {
    let (outcome, error) = match result {
        Ok(outcome) => (Some(outcome), None),
        Err(ClassError::Invalid(message) | ClassError::Conflict(message)) => (None, Some(message)),
        Err(err) => return Err(AppError::from(err).into()),
    };
    let view = RosterResultView {
        class_id: class.id,
        class_name: class.name.clone(),
        passwords_csv: outcome.as_ref().and_then(passwords_csv),
        outcome,
        error,
    };
    let title = format!("Roster of {}", class.name);
    Ok(Page::render(
        "pages/classes/roster.html",
        &Layout::new(Some(user), headers, "classes", &title),
        &view,
    )?)
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupRequest {
    /// The group's DN; absent: the one the class follows already.
    #[serde(default)]
    group: Option<String>,
}

async fn api_sync_group(
    State(state): State<Arc<HubState>>,
    user: CurrentUser,
    Path(id): Path<i64>,
    ApiJson(body): ApiJson<GroupRequest>,
) -> ApiResult<RosterImport> {
    Ok(Json(
        roster::sync_group(&state, &user.viewer, id, body.group.as_deref()).await?,
    ))
}

async fn api_upload(
    State(state): State<Arc<HubState>>,
    user: CurrentUser,
    Path(id): Path<i64>,
    file: Bytes,
) -> ApiResult<RosterImport> {
    Ok(Json(roster::import(&state, &user.viewer, id, &file).await?))
}

#[derive(Debug, Serialize)]
struct Roster {
    people: Vec<RosterPerson>,
}

async fn api_roster(
    State(state): State<Arc<HubState>>,
    user: CurrentUser,
    Path(id): Path<i64>,
) -> ApiResult<Roster> {
    classes::class_in_view(&state, &user.viewer, id).await?;
    Ok(Json(Roster {
        people: state.db.class_roster(id).await?,
    }))
}

pub(in crate::web) fn page_router() -> Router<Arc<HubState>> {
    Router::new()
        .route(
            "/classes/{id}/roster",
            post(upload).layer(DefaultBodyLimit::max(MAX_UPLOAD_BYTES)),
        )
        .route("/classes/{id}/roster/group", post(sync_group))
}

pub(in crate::web) fn api_router() -> Router<Arc<HubState>> {
    Router::new()
        .route(
            "/classes/{id}/roster",
            get(api_roster)
                .post(api_upload)
                .layer(DefaultBodyLimit::max(MAX_UPLOAD_BYTES)),
        )
        .route("/classes/{id}/roster/group", post(api_sync_group))
}
