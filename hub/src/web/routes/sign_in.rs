//! Signing in through an OpenID Connect provider: the button's redirect and the callback.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use serde::Deserialize;

use super::auth::{LoginView, login_page, with_session_cookie};
use crate::HubState;
use crate::domain::audit::{self, Actor, Outcome};
use crate::domain::sign_in::SignInError;
use crate::domain::sign_in::oidc::LOGIN_WINDOW;
use crate::secrets::secrets_equal;
use crate::web::cookies;
use crate::web::error::{AppError, PageError};
use crate::web::identity::ClientAddr;

#[derive(Debug, Deserialize)]
struct StartQuery {
    next: Option<String>,
}

/// What a provider sends the browser back with.
#[derive(Debug, Deserialize)]
struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// The sign-in page again, saying why signing in did not work.
fn refused(
    state: &HubState,
    headers: &HeaderMap,
    status: StatusCode,
    message: String,
) -> Result<Response, PageError> {
    let view = LoginView {
        next: "/vms",
        username: "",
        error: Some(message),
        heading: None,
    };
    let mut response = (status, login_page(state, headers, &view)?).into_response();
    clear_state_cookie(state, &mut response);
    Ok(response)
}

fn clear_state_cookie(state: &HubState, response: &mut Response) {
    let cookie = cookies::set(
        cookies::OIDC_STATE,
        "",
        Some(0),
        state.config.secure_cookies(),
    );
    if let Ok(value) = cookie.parse() {
        response
            .headers_mut()
            .append(axum::http::header::SET_COOKIE, value);
    }
}

fn status_of(err: &SignInError) -> StatusCode {
    match err {
        SignInError::Refused(_) | SignInError::Disabled => StatusCode::FORBIDDEN,
        SignInError::Unavailable(_) => StatusCode::BAD_GATEWAY,
        SignInError::Db(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// `GET /login/oidc/{id}`: off to the provider.
async fn start(
    State(state): State<Arc<HubState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(query): Query<StartQuery>,
) -> Result<Response, PageError> {
    let provider = state
        .sign_in
        .provider(&id)
        .ok_or_else(|| AppError::NotFound(format!("no sign-in provider is called {id:?}")))?;
    let next = crate::web::local_path(query.next.as_deref(), "/vms");
    match provider.begin(&state.sign_in.pending, next).await {
        Ok(redirect) => {
            let mut response = Redirect::to(&redirect.url).into_response();
            let cookie = cookies::set(
                cookies::OIDC_STATE,
                &redirect.state,
                Some(LOGIN_WINDOW.as_secs()),
                state.config.secure_cookies(),
            );
            if let Ok(value) = cookie.parse() {
                response
                    .headers_mut()
                    .append(axum::http::header::SET_COOKIE, value);
            }
            Ok(response)
        }
        Err(err) => refused(&state, &headers, status_of(&err), err.to_string()),
    }
}

/// `GET /login/oidc/{id}/callback`: the provider sends the browser back here.
async fn callback(
    State(state): State<Arc<HubState>>,
    ClientAddr(address): ClientAddr,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(query): Query<CallbackQuery>,
) -> Result<Response, PageError> {
    let provider = state
        .sign_in
        .provider(&id)
        .ok_or_else(|| AppError::NotFound(format!("no sign-in provider is called {id:?}")))?;
    // The state must be the one this browser was given, and still be waiting; only then is
    // anything in the answer believed (or shown: an error text in a link is anyone's).
    let browser_state = cookies::get(&headers, cookies::OIDC_STATE).unwrap_or_default();
    let returned_state = query.state.as_deref().unwrap_or_default();
    let pending = (!returned_state.is_empty() && secrets_equal(browser_state, returned_state))
        .then(|| state.sign_in.pending.take(returned_state))
        .flatten();
    let deny = |status: StatusCode, message: String| {
        let target = format!("oidc:{id}");
        let detail = format!("{message}; from {address}");
        let db = state.db.clone();
        async move {
            audit::record(
                &db,
                Actor::Anonymous,
                "auth.login",
                &target,
                Outcome::Denied,
                &detail,
            )
            .await;
            (status, message)
        }
    };
    let Some(pending) = pending else {
        let message = "this sign-in is not one this browser started, or it took too long; \
                       start again"
            .to_owned();
        let (status, message) = deny(StatusCode::BAD_REQUEST, message).await;
        return refused(&state, &headers, status, message);
    };
    if let Some(error) = &query.error {
        let detail = query.error_description.as_deref().unwrap_or(error);
        let message = format!("{} did not sign you in: {detail}", provider.label);
        let (status, message) = deny(StatusCode::FORBIDDEN, message).await;
        return refused(&state, &headers, status, message);
    }
    let Some(code) = &query.code else {
        let message = "the provider's answer is incomplete; start again".to_owned();
        let (status, message) = deny(StatusCode::BAD_REQUEST, message).await;
        return refused(&state, &headers, status, message);
    };
    let next = pending.next.clone();
    let identity = match provider.finish(pending, code).await {
        Ok(identity) => identity,
        Err(err) => {
            let (status, message) = deny(status_of(&err), err.to_string()).await;
            return refused(&state, &headers, status, message);
        }
    };
    match state.auth.external_login(&identity, address).await {
        Ok((_, secret)) => {
            let mut response =
                with_session_cookie(&state, Redirect::to(&next).into_response(), &secret);
            clear_state_cookie(&state, &mut response);
            Ok(response)
        }
        Err(err) => {
            let error = AppError::from(err);
            if matches!(error, AppError::Internal(_)) {
                return Err(error.into());
            }
            refused(&state, &headers, StatusCode::FORBIDDEN, error.to_string())
        }
    }
}

pub(in crate::web) fn router() -> Router<Arc<HubState>> {
    Router::new()
        .route("/login/oidc/{id}", get(start))
        .route("/login/oidc/{id}/callback", get(callback))
}
