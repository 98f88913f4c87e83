//! Who is asking, for every request: a middleware resolves the API token or session cookie
//! once and checks CSRF on state-changing requests; extractors hand the result to handlers
//! and refuse the ones a role may not reach.
//!
//! CSRF: a request authenticated by its session cookie that changes state must carry the
//! session's CSRF token, in the `X-CSRF-Token` header or a `csrf` form field. Requests with
//! a bearer token carry no ambient credential and need none. The login form, made before any
//! session exists, uses a double-submit token: a cookie and a form field that must match.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::cookies;
pub(crate) use super::current_user::CurrentUser;
use super::error::{ApiError, AppError, PageError};
use super::limits::{MAX_FORM_BYTES, MAX_UPLOAD_BYTES};
use crate::HubState;
use crate::domain::auth::{ActiveSession, Credential};
use crate::domain::viewer::Viewer;
use crate::secrets::secrets_equal;

/// The header that carries the CSRF token for scripts.
pub(crate) const CSRF_HEADER: &str = "x-csrf-token";

/// How a request was authenticated.
#[derive(Debug, Clone)]
pub(crate) enum Identity {
    Anonymous,
    Session(ActiveSession),
    Token { viewer: Viewer, hash: String },
}

/// The path (and query) as the client sent it, before nested routers strip prefixes.
#[derive(Debug, Clone)]
pub(crate) struct OriginalPath(pub(crate) String);

/// The client's address: the peer, or the first `X-Forwarded-For` hop when trusted.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClientAddr(pub IpAddr);

fn is_api(path: &str) -> bool {
    path.starts_with("/api/")
}

/// An error in the format the path calls for.
fn reject(path: &str, error: AppError) -> Response {
    if is_api(path) {
        ApiError {
            error,
            staff: false,
        }
        .into_response()
    } else {
        PageError {
            error,
            staff: false,
            path: path.to_owned(),
        }
        .into_response()
    }
}

fn client_addr(state: &HubState, request: &Request) -> IpAddr {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |info| info.0.ip());
    let forwarded: Vec<&str> = request
        .headers()
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .collect();
    crate::client_addr::client_address(peer, forwarded.into_iter(), &state.config.trusted_proxies)
}

pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim)
}

async fn resolve(state: &HubState, headers: &HeaderMap) -> Result<Identity, AppError> {
    if let Some(token) = bearer(headers) {
        return match state.auth.api_token(token).await? {
            Some(viewer) => Ok(Identity::Token {
                viewer,
                hash: crate::secrets::hash_secret(token),
            }),
            // A wrong token is an error, never a fallback to the cookie.
            None => Err(AppError::Unauthenticated),
        };
    }
    match cookies::get(headers, cookies::SESSION) {
        Some(id) => Ok(state
            .auth
            .session(id)
            .await?
            .map_or(Identity::Anonymous, Identity::Session)),
        None => Ok(Identity::Anonymous),
    }
}

/// Where Prometheus reads the hub's metrics.
pub(crate) const METRICS_PATH: &str = "/metrics";

/// Self-registration through an invite link: anonymous, like the login form.
fn is_registration(path: &str) -> bool {
    path.starts_with("/join/") && path.ends_with("/register")
}

fn changes_state(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/x-www-form-urlencoded"))
}

fn multipart_boundary(headers: &HeaderMap) -> Option<String> {
    let content_type = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    multer::parse_boundary(content_type).ok()
}

/// The `csrf` field of a file upload (`multipart/form-data`): the body is read (up to
/// [`MAX_UPLOAD_BYTES`]) and put back for the handler.
async fn presented_in_upload(
    request: Request,
    boundary: String,
) -> Result<(Option<String>, Request), AppError> {
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, MAX_UPLOAD_BYTES)
        .await
        .map_err(|_| {
            AppError::BadRequest(format!("uploads are limited to {MAX_UPLOAD_BYTES} bytes"))
        })?;
    let stream =
        futures_util::stream::once(std::future::ready(Ok::<_, std::io::Error>(bytes.clone())));
    let mut fields = multer::Multipart::new(stream, boundary);
    let mut token = None;
    while let Ok(Some(field)) = fields.next_field().await {
        if field.name() == Some("csrf") {
            token = field.text().await.ok();
            break;
        }
    }
    Ok((token, Request::from_parts(parts, Body::from(bytes))))
}

/// The CSRF token a request presents: the header, or else the form field (the body is read
/// and put back).
async fn presented_csrf(request: Request) -> Result<(Option<String>, Request), AppError> {
    if let Some(value) = request.headers().get(CSRF_HEADER) {
        let token = value.to_str().ok().map(str::to_owned);
        return Ok((token, request));
    }
    if let Some(boundary) = multipart_boundary(request.headers()) {
        return presented_in_upload(request, boundary).await;
    }
    if !is_form(request.headers()) {
        return Ok((None, request));
    }
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, MAX_FORM_BYTES)
        .await
        .map_err(|_| {
            AppError::BadRequest(format!("forms are limited to {MAX_FORM_BYTES} bytes"))
        })?;
    let token = form_urlencoded::parse(&bytes)
        .find(|(key, _)| key == "csrf")
        .map(|(_, value)| value.into_owned());
    Ok((token, Request::from_parts(parts, Body::from(bytes))))
}

/// The middleware: resolves the identity, checks CSRF, and stores both for the extractors.
pub(crate) async fn authenticate(
    State(state): State<Arc<HubState>>,
    mut request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path().to_owned();
    let path_and_query = request
        .uri()
        .path_and_query()
        .map_or("/", |pq| pq.as_str())
        .to_owned();
    let address = client_addr(&state, &request);
    if path == METRICS_PATH {
        // Scrapers are not accounts: their bearer token is the metrics token, which the
        // route checks together with the address (see `routes::metrics`).
        request.extensions_mut().insert(ClientAddr(address));
        return next.run(request).await;
    }
    let identity = match resolve(&state, request.headers()).await {
        Ok(identity) => identity,
        Err(error) => return reject(&path, error),
    };
    if changes_state(request.method()) {
        let expected = match &identity {
            Identity::Token { .. } => None,
            Identity::Session(session) => Some(session.csrf_token.clone()),
            Identity::Anonymous if path == "/login" || is_registration(&path) => Some(
                cookies::get(request.headers(), cookies::LOGIN_CSRF)
                    .unwrap_or_default()
                    .to_owned(),
            ),
            // Anything else is refused by its handler as unauthenticated.
            Identity::Anonymous => None,
        };
        if let Some(expected) = expected {
            let (presented, rebuilt) = match presented_csrf(request).await {
                Ok(found) => found,
                Err(error) => return reject(&path, error),
            };
            request = rebuilt;
            let valid = presented
                .is_some_and(|token| !expected.is_empty() && secrets_equal(&token, &expected));
            if !valid {
                return reject(&path, AppError::Csrf);
            }
        }
    }
    request.extensions_mut().insert(ClientAddr(address));
    request
        .extensions_mut()
        .insert(OriginalPath(path_and_query));
    request.extensions_mut().insert(identity);
    next.run(request).await
}

/// An extractor's refusal, answered in the format the path calls for.
#[derive(Debug)]
pub(crate) struct AuthRejection {
    error: AppError,
    path: String,
}

impl IntoResponse for AuthRejection {
    fn into_response(self) -> Response {
        reject(&self.path, self.error)
    }
}

fn original_path(parts: &Parts) -> String {
    parts.extensions.get::<OriginalPath>().map_or_else(
        || parts.uri.path().to_owned(),
        |original| original.0.clone(),
    )
}

fn identity(parts: &Parts) -> Identity {
    parts
        .extensions
        .get::<Identity>()
        .cloned()
        .unwrap_or(Identity::Anonymous)
}

impl<S: Send + Sync> FromRequestParts<S> for CurrentUser {
    type Rejection = AuthRejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        match identity(parts) {
            Identity::Session(session) => Ok(CurrentUser {
                viewer: session.viewer.clone(),
                credential: Credential::Session {
                    id_hash: session.id_hash.clone(),
                },
                session: Some(session),
            }),
            Identity::Token { viewer, hash } => Ok(CurrentUser {
                viewer,
                session: None,
                credential: Credential::Token { hash },
            }),
            Identity::Anonymous => Err(AuthRejection {
                error: AppError::Unauthenticated,
                path: original_path(parts),
            }),
        }
    }
}

/// The visitor, signed in or not.
#[derive(Debug, Clone)]
pub(crate) struct MaybeUser(pub Option<CurrentUser>);

impl<S: Send + Sync> FromRequestParts<S> for MaybeUser {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Ok(MaybeUser(
            CurrentUser::from_request_parts(parts, state).await.ok(),
        ))
    }
}

macro_rules! role_extractor {
    ($(#[$doc:meta])* $name:ident, $allowed:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone)]
        pub(crate) struct $name(pub(crate) CurrentUser);

        impl<S: Send + Sync> FromRequestParts<S> for $name {
            type Rejection = AuthRejection;

            async fn from_request_parts(
                parts: &mut Parts,
                state: &S,
            ) -> Result<Self, Self::Rejection> {
                let user = CurrentUser::from_request_parts(parts, state).await?;
                let allowed: fn(&Viewer) -> bool = $allowed;
                if allowed(&user.viewer) {
                    Ok($name(user))
                } else {
                    Err(AuthRejection {
                        error: AppError::Forbidden,
                        path: original_path(parts),
                    })
                }
            }
        }
    };
}

role_extractor!(
    /// A signed-in admin.
    RequireAdmin,
    Viewer::is_admin
);
role_extractor!(
    /// A signed-in teacher or admin.
    RequireStaff,
    Viewer::is_staff
);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<ClientAddr>()
            .copied()
            .unwrap_or(ClientAddr(IpAddr::V4(Ipv4Addr::UNSPECIFIED))))
    }
}
