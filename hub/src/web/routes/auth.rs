//! Signing in and out.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use serde::{Deserialize, Serialize};

use crate::HubState;
use crate::domain::sign_in::settings::LocalLogin;
use crate::secrets::new_secret;
use crate::web::cookies;
use crate::web::error::{AppError, PageError};
use crate::web::identity::{ClientAddr, CurrentUser, MaybeUser};
use crate::web::render::{Layout, Page};

#[derive(Debug, Deserialize)]
struct LoginQuery {
    next: Option<String>,
}

#[derive(Debug, Deserialize)]
struct LoginForm {
    username: String,
    password: String,
    next: Option<String>,
}

/// What a sign-in form's token starts with.
const LOGIN_TOKEN_PREFIX: &str = "pll_";

#[derive(Debug, Serialize)]
pub(in crate::web) struct LoginView<'a> {
    pub(in crate::web) next: &'a str,
    pub(in crate::web) username: &'a str,
    pub(in crate::web) error: Option<String>,
    /// What signing in is for, when it is for something ("Sign in to join Networks 101").
    pub(in crate::web) heading: Option<String>,
}

/// Only local paths are followed after signing in, never another site.
fn safe_next(next: Option<&str>) -> &str {
    crate::web::local_path(next, "/vms")
}

/// A page for visitors who are not signed in, with a double-submit CSRF token in a cookie and
/// in the layout for its forms. The browser's token is kept when it has one, so a sign-in
/// form opened in a second tab does not make the first one's stale.
pub(in crate::web) fn anonymous_page<T: Serialize>(
    state: &HubState,
    headers: &HeaderMap,
    template: &str,
    title: &str,
    view: &T,
) -> Result<Page, AppError> {
    let token = cookies::get(headers, cookies::LOGIN_CSRF)
        .filter(|token| token.starts_with(LOGIN_TOKEN_PREFIX) && token.len() >= 40)
        .map_or_else(|| new_secret(LOGIN_TOKEN_PREFIX), str::to_owned);
    let layout = Layout::new(None, headers, "login", title).with_csrf(token.clone());
    Ok(
        Page::render(template, &layout, view)?.with_cookie(cookies::set(
            cookies::LOGIN_CSRF,
            &token,
            None,
            state.config.secure_cookies(),
        )),
    )
}

/// Signs a browser in: the session cookie, and the pre-login token gone.
pub(in crate::web) fn with_session_cookie(
    state: &HubState,
    mut response: Response,
    secret: &crate::domain::auth::SessionSecret,
) -> Response {
    let secure = state.config.secure_cookies();
    let lifetime = state.auth.policy().lifetime.as_secs();
    for cookie in [
        cookies::set(cookies::SESSION, &secret.id, Some(lifetime), secure),
        cookies::set(cookies::LOGIN_CSRF, "", Some(0), secure),
    ] {
        if let Ok(value) = cookie.parse() {
            response
                .headers_mut()
                .append(axum::http::header::SET_COOKIE, value);
        }
    }
    response
}

/// A "Sign in with ..." button.
#[derive(Debug, Serialize)]
pub(in crate::web) struct ProviderButton {
    label: String,
    /// Where the button goes, with where to go after signing in.
    href: String,
}

/// The sign-in page's view with the ways to sign in this hub offers.
#[derive(Debug, Serialize)]
struct SignInChoices<'a> {
    #[serde(flatten)]
    view: &'a LoginView<'a>,
    providers: Vec<ProviderButton>,
    /// Local passwords are for admins only: the form is folded away.
    admins_only: bool,
}

/// The "Sign in with ..." buttons, each bringing the person back to `next`.
pub(in crate::web) fn provider_buttons(state: &HubState, next: &str) -> Vec<ProviderButton> {
    state
        .sign_in
        .providers
        .iter()
        .map(|provider| ProviderButton {
            label: format!("Sign in with {}", provider.label),
            href: format!(
                "/login/oidc/{}?next={}",
                provider.id,
                cookies::percent_encode(next)
            ),
        })
        .collect()
}

pub(in crate::web) fn login_page(
    state: &HubState,
    headers: &HeaderMap,
    view: &LoginView<'_>,
) -> Result<Page, AppError> {
    let title = view.heading.as_deref().unwrap_or("Sign in");
    let choices = SignInChoices {
        view,
        providers: provider_buttons(state, view.next),
        admins_only: state.sign_in.local_login == LocalLogin::Admins
            && !state.sign_in.providers.is_empty(),
    };
    anonymous_page(state, headers, "pages/auth/login.html", title, &choices)
}

async fn show_login(
    State(state): State<Arc<HubState>>,
    MaybeUser(user): MaybeUser,
    headers: HeaderMap,
    Query(query): Query<LoginQuery>,
) -> Result<Response, PageError> {
    let next = safe_next(query.next.as_deref());
    if user.is_some() {
        return Ok(Redirect::to(next).into_response());
    }
    let view = LoginView {
        next,
        username: "",
        error: None,
        heading: None,
    };
    Ok(login_page(&state, &headers, &view)?.into_response())
}

async fn login(
    State(state): State<Arc<HubState>>,
    ClientAddr(address): ClientAddr,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Result<Response, PageError> {
    let next = safe_next(form.next.as_deref());
    match state
        .auth
        .login(&form.username, &form.password, address)
        .await
    {
        Ok((_, secret)) => Ok(with_session_cookie(
            &state,
            Redirect::to(next).into_response(),
            &secret,
        )),
        Err(err) => {
            let error = AppError::from(err);
            if matches!(error, AppError::Internal(_)) {
                return Err(error.into());
            }
            let status = error.status();
            let view = LoginView {
                next,
                username: form.username.trim(),
                error: Some(error.to_string()),
                heading: None,
            };
            let mut response = (status, login_page(&state, &headers, &view)?).into_response();
            if let AppError::TooManyRequests {
                retry_after_secs, ..
            } = error
            {
                response
                    .headers_mut()
                    .insert(axum::http::header::RETRY_AFTER, retry_after_secs.into());
            }
            Ok(response)
        }
    }
}

async fn logout(
    State(state): State<Arc<HubState>>,
    user: CurrentUser,
) -> Result<Response, PageError> {
    if let Some(session) = &user.session {
        state.auth.logout(session).await?;
    }
    let mut response = Redirect::to(&after_logout(&state, &user).await?).into_response();
    let cookie = cookies::set(cookies::SESSION, "", Some(0), state.config.secure_cookies());
    if let Ok(value) = cookie.parse() {
        response
            .headers_mut()
            .append(axum::http::header::SET_COOKIE, value);
    }
    Ok(response)
}

/// Where a browser goes after signing out: the sign-in page, by way of the provider's own
/// sign-out when the account signs in through one that offers it.
async fn after_logout(state: &HubState, user: &CurrentUser) -> Result<String, AppError> {
    let account = state.db.user_by_id(user.viewer.id).await?;
    let provider = account
        .as_ref()
        .and_then(|account| state.sign_in.provider_of_source(&account.auth_source));
    let back_to = state.config.site_url().map(|site| format!("{site}/login"));
    if let (Some(provider), Some(back_to)) = (provider, back_to)
        && let Some(url) = provider.logout_url(&back_to).await
    {
        return Ok(url);
    }
    Ok("/login".to_owned())
}

pub(in crate::web) fn router() -> Router<Arc<HubState>> {
    Router::new()
        .route("/login", get(show_login).post(login))
        .route("/logout", post(logout))
}

#[cfg(test)]
mod tests {
    use super::safe_next;

    #[test]
    fn only_local_paths_are_followed() {
        assert_eq!(safe_next(Some("/vms/101")), "/vms/101");
        assert_eq!(safe_next(Some("//evil.example/")), "/vms");
        assert_eq!(safe_next(Some("https://evil.example/")), "/vms");
        assert_eq!(safe_next(Some("/\\evil.example")), "/vms");
        assert_eq!(safe_next(None), "/vms");
    }
}
