//! The profile page: own password and personal API tokens.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use serde::{Deserialize, Serialize};

use crate::HubState;
use crate::domain::accounts::MIN_PASSWORD_LEN;
use crate::domain::tokens::format_time;
use crate::web::error::{AppError, PageError};
use crate::web::identity::CurrentUser;
use crate::web::render::{Layout, Page, redirect_with_flash};

#[derive(Debug, Serialize)]
struct TokenView {
    id: i64,
    name: String,
    created_at: String,
    last_used_at: Option<String>,
    revoked: bool,
}

#[derive(Debug, Serialize)]
struct ProfileView {
    tokens: Vec<TokenView>,
    new_token: Option<String>,
    min_password_len: usize,
    /// How the account signs in: `local`, or the source that keeps its password.
    source: String,
}

async fn render_profile(
    state: &HubState,
    user: &CurrentUser,
    headers: &HeaderMap,
    new_token: Option<String>,
) -> Result<Page, PageError> {
    let tokens = state
        .db
        .list_api_tokens(user.viewer.id)
        .await?
        .into_iter()
        .map(|token| TokenView {
            id: token.id,
            name: token.name,
            created_at: format_time(token.created_at),
            last_used_at: token.last_used_at.map(format_time),
            revoked: token.revoked_at.is_some(),
        })
        .collect();
    let source = state
        .db
        .user_by_id(user.viewer.id)
        .await?
        .map(|account| account.auth_source)
        .unwrap_or_default();
    let view = ProfileView {
        tokens,
        new_token,
        min_password_len: MIN_PASSWORD_LEN,
        source,
    };
    Ok(Page::render(
        "pages/portal/profile.html",
        &Layout::new(Some(user), headers, "profile", "Profile"),
        &view,
    )?)
}

async fn profile(
    State(state): State<Arc<HubState>>,
    user: CurrentUser,
    headers: HeaderMap,
) -> Result<Page, PageError> {
    render_profile(&state, &user, &headers, None).await
}

#[derive(Debug, Deserialize)]
struct PasswordForm {
    current: String,
    new: String,
    confirm: String,
}

async fn change_password(
    State(state): State<Arc<HubState>>,
    user: CurrentUser,
    Form(form): Form<PasswordForm>,
) -> Result<Response, PageError> {
    let Some(session) = &user.session else {
        return Err(AppError::Forbidden.into());
    };
    if form.new != form.confirm {
        return Ok(redirect_with_flash(
            "/profile",
            "error",
            "The two new passwords differ.",
        ));
    }
    Ok(
        match state
            .auth
            .change_password(session, &form.current, &form.new)
            .await
        {
            Ok(()) => redirect_with_flash("/profile", "ok", "Your password is changed."),
            Err(err) => redirect_with_flash("/profile", "error", &AppError::from(err).to_string()),
        },
    )
}

#[derive(Debug, Deserialize)]
struct TokenForm {
    name: String,
}

async fn create_token(
    State(state): State<Arc<HubState>>,
    user: CurrentUser,
    headers: HeaderMap,
    Form(form): Form<TokenForm>,
) -> Result<Response, PageError> {
    match state.auth.create_api_token(&user.viewer, &form.name).await {
        // Shown on this response only; never stored or put in a cookie.
        Ok(token) => Ok(render_profile(&state, &user, &headers, Some(token))
            .await?
            .into_response()),
        Err(err) => Ok(redirect_with_flash(
            "/profile",
            "error",
            &AppError::from(err).to_string(),
        )),
    }
}

async fn revoke_token(
    State(state): State<Arc<HubState>>,
    user: CurrentUser,
    Path(id): Path<i64>,
) -> Result<Response, PageError> {
    Ok(if state.auth.revoke_api_token(&user.viewer, id).await? {
        redirect_with_flash("/profile", "ok", "The token is revoked.")
    } else {
        redirect_with_flash("/profile", "error", "No such active token.")
    })
}

pub(in crate::web) fn router() -> Router<Arc<HubState>> {
    Router::new()
        .route("/profile", get(profile))
        .route("/profile/password", post(change_password))
        .route("/profile/tokens", post(create_token))
        .route("/profile/tokens/{id}/revoke", post(revoke_token))
}
