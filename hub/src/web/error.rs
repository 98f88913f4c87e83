//! The web layer's one error type. Internal causes are logged; people see a plain message,
//! as JSON under `/api` and as a page elsewhere.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde_json::json;

use crate::agents::CallError;
use crate::db::DbError;
use crate::domain::accounts::AccountError;
use crate::domain::auth::LoginError;
use crate::domain::consoles::ConsoleError;
use crate::domain::remote::tunnel::TunnelError;
use crate::domain::vms::VmOpError;
use proxlab_protocol::ErrorKind;

/// What went wrong, as far as the client is concerned.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AppError {
    #[error("sign in first")]
    Unauthenticated,
    #[error("you are not allowed to do that")]
    Forbidden,
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Conflict(String),
    #[error("the security token of this form is missing or stale; reload the page and try again")]
    Csrf,
    #[error("{message}")]
    TooManyRequests {
        message: String,
        retry_after_secs: u64,
    },
    /// A node could not do what was asked; `detail` is shown only to staff.
    #[error("{message}")]
    Node { message: String, detail: String },
    #[error("something went wrong on the server; it has been logged")]
    Internal(#[source] anyhow::Error),
}

impl AppError {
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            AppError::Unauthenticated => StatusCode::UNAUTHORIZED,
            AppError::Forbidden | AppError::Csrf => StatusCode::FORBIDDEN,
            AppError::NotFound(_) => StatusCode::NOT_FOUND,
            AppError::BadRequest(_) => StatusCode::BAD_REQUEST,
            AppError::Conflict(_) => StatusCode::CONFLICT,
            AppError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            AppError::Node { .. } => StatusCode::BAD_GATEWAY,
            AppError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A stable machine-readable code for API clients.
    pub(crate) fn code(&self) -> &'static str {
        match self {
            AppError::Unauthenticated => "unauthenticated",
            AppError::Forbidden => "forbidden",
            AppError::NotFound(_) => "not-found",
            AppError::BadRequest(_) => "bad-request",
            AppError::Conflict(_) => "conflict",
            AppError::Csrf => "csrf",
            AppError::TooManyRequests { .. } => "too-many-requests",
            AppError::Node { .. } => "node-error",
            AppError::Internal(_) => "internal",
        }
    }

    fn log(&self) {
        if let AppError::Internal(err) = self {
            tracing::error!(err = format!("{err:#}"), "request failed");
        }
    }

    fn retry_after(&self, response: &mut Response) {
        if let AppError::TooManyRequests {
            retry_after_secs, ..
        } = self
            && let Ok(value) = HeaderValue::from_str(&retry_after_secs.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
    }

    /// The message for a viewer, as a sentence. What the node said is in [`Self::detail_for`].
    pub(crate) fn message_for(&self, staff: bool) -> String {
        let message = crate::text::sentence(&self.to_string());
        match self {
            AppError::Node { .. } if !staff => {
                format!("{message} Your teacher or administrator can see the details.")
            }
            _ => message,
        }
    }

    /// The technical details behind the message, for staff only.
    pub(crate) fn detail_for(&self, staff: bool) -> Option<&str> {
        match self {
            AppError::Node { detail, .. } if staff && !detail.is_empty() => Some(detail),
            _ => None,
        }
    }
}

impl From<DbError> for AppError {
    fn from(err: DbError) -> Self {
        match err {
            DbError::NotFound => AppError::NotFound("not found".into()),
            DbError::Conflict(message) => AppError::Conflict(message),
            other => AppError::Internal(other.into()),
        }
    }
}

impl From<crate::domain::admin::AdminError> for AppError {
    fn from(err: crate::domain::admin::AdminError) -> Self {
        use crate::domain::admin::AdminError;
        match err {
            AdminError::Forbidden => AppError::Forbidden,
            AdminError::Invalid(message) => AppError::BadRequest(message),
            AdminError::NotFound(message) => AppError::NotFound(message),
            AdminError::Db(err) => err.into(),
        }
    }
}

impl From<AccountError> for AppError {
    fn from(err: AccountError) -> Self {
        match err {
            AccountError::Invalid(message) => AppError::BadRequest(message),
            AccountError::Db(err) => err.into(),
        }
    }
}

impl From<LoginError> for AppError {
    fn from(err: LoginError) -> Self {
        match err {
            LoginError::Throttled(wait) => AppError::TooManyRequests {
                message: err.to_string(),
                retry_after_secs: wait.as_secs().max(1),
            },
            LoginError::BadCredentials
            | LoginError::Disabled
            | LoginError::LocalLoginOff
            | LoginError::Refused(_) => AppError::BadRequest(err.to_string()),
            // The directory behind the hub failed, as a node can.
            LoginError::Unavailable(message) => AppError::Node {
                message,
                detail: String::new(),
            },
            LoginError::Db(err) => err.into(),
        }
    }
}

impl From<VmOpError> for AppError {
    fn from(err: VmOpError) -> Self {
        let (message, detail) = err.explain();
        match err {
            VmOpError::NotFound => AppError::NotFound(message),
            VmOpError::NotAllowed(_) => AppError::Conflict(message),
            VmOpError::Forbidden(_) => AppError::Forbidden,
            // The node says the VM is gone, or busy: that is the VM's state, not a failure of
            // the node.
            VmOpError::Node {
                source: CallError::Remote(remote),
                ..
            } if remote.kind == ErrorKind::NotFound => AppError::NotFound(message),
            VmOpError::Node {
                source: CallError::Remote(remote),
                ..
            } if remote.kind == ErrorKind::Conflict => AppError::Conflict(message),
            VmOpError::Node { .. } => AppError::Node { message, detail },
            VmOpError::Db(err) => err.into(),
        }
    }
}

impl From<ConsoleError> for AppError {
    fn from(err: ConsoleError) -> Self {
        match err {
            ConsoleError::Vm(err) => err.into(),
            ConsoleError::Db(err) => err.into(),
            ConsoleError::Limit(limit) => AppError::TooManyRequests {
                message: limit.to_string(),
                retry_after_secs: 10,
            },
            ConsoleError::Node(source) => AppError::Node {
                message: "the VM's node could not open its console".into(),
                detail: source.to_string(),
            },
            ConsoleError::Tunnel(err) => err.into(),
            other @ (ConsoleError::NotRunning(_)
            | ConsoleError::NoSerialPort
            | ConsoleError::TicketExpired
            | ConsoleError::TicketSpent
            | ConsoleError::TicketUnknown) => AppError::Conflict(other.to_string()),
        }
    }
}

impl From<TunnelError> for AppError {
    fn from(err: TunnelError) -> Self {
        match err {
            TunnelError::Node(source) => AppError::Node {
                message: "the VM's node could not be reached".into(),
                detail: source.to_string(),
            },
            TunnelError::Refused(_) => AppError::Conflict(err.to_string()),
            TunnelError::NoAddress(_) | TunnelError::Unreachable(_) => {
                AppError::Conflict(err.to_string())
            }
        }
    }
}

impl From<super::render::RenderError> for AppError {
    fn from(err: super::render::RenderError) -> Self {
        AppError::Internal(err.into())
    }
}

impl From<anyhow::Error> for AppError {
    fn from(err: anyhow::Error) -> Self {
        AppError::Internal(err)
    }
}

/// An error answered as JSON: `{"error": {"code", "message"}}`.
#[derive(Debug)]
pub(crate) struct ApiError {
    pub error: AppError,
    /// Whether the caller is staff (sees node details).
    pub staff: bool,
}

impl<E: Into<AppError>> From<E> for ApiError {
    fn from(err: E) -> Self {
        Self {
            error: err.into(),
            staff: false,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.error.log();
        let mut error =
            json!({"code": self.error.code(), "message": self.error.message_for(self.staff)});
        if let Some(detail) = self.error.detail_for(self.staff) {
            error["detail"] = json!(detail);
        }
        let body = json!({ "error": error });
        let mut response = (self.error.status(), Json(body)).into_response();
        self.error.retry_after(&mut response);
        response
    }
}

/// An error answered as a page. Unauthenticated visitors are sent to the login page.
#[derive(Debug)]
pub(crate) struct PageError {
    pub error: AppError,
    pub staff: bool,
    /// Where to come back to after signing in.
    pub path: String,
}

impl<E: Into<AppError>> From<E> for PageError {
    fn from(err: E) -> Self {
        Self {
            error: err.into(),
            staff: false,
            path: "/".into(),
        }
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        self.error.log();
        if matches!(self.error, AppError::Unauthenticated) {
            let next = super::cookies::percent_encode(&self.path);
            return Redirect::to(&format!("/login?next={next}")).into_response();
        }
        let page = super::render::error_page(
            self.error.status(),
            &self.error.message_for(self.staff),
            self.error.detail_for(self.staff),
        );
        let mut response = (self.error.status(), Html(page)).into_response();
        self.error.retry_after(&mut response);
        response
    }
}

/// A JSON request body whose problems are answered in the API's error format. Every body the
/// API takes is a JSON object: an array or a bare value is refused, even where the fields
/// would line up.
#[derive(Debug)]
pub(crate) struct ApiJson<T>(pub(crate) T);

impl<S, T> axum::extract::FromRequest<S> for ApiJson<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: axum::extract::Request, state: &S) -> Result<Self, ApiError> {
        let value = match Json::<serde_json::Value>::from_request(request, state).await {
            Ok(Json(value)) => value,
            Err(rejection) => return Err(AppError::BadRequest(rejection.body_text()).into()),
        };
        object_body(value).map(ApiJson)
    }
}

impl<S, T> axum::extract::OptionalFromRequest<S> for ApiJson<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    /// No body at all is `None`; anything else must be a valid object.
    async fn from_request(
        request: axum::extract::Request,
        state: &S,
    ) -> Result<Option<Self>, ApiError> {
        let (parts, body) = request.into_parts();
        let bytes = axum::body::to_bytes(body, super::limits::MAX_FORM_BYTES)
            .await
            .map_err(|err| ApiError::from(AppError::BadRequest(err.to_string())))?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(None);
        }
        let request = axum::extract::Request::from_parts(parts, axum::body::Body::from(bytes));
        <Self as axum::extract::FromRequest<S>>::from_request(request, state)
            .await
            .map(Some)
    }
}

fn object_body<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> Result<T, ApiError> {
    if !value.is_object() {
        return Err(AppError::BadRequest("the body must be a JSON object".into()).into());
    }
    serde_json::from_value(value)
        .map_err(|err| AppError::BadRequest(format!("the body does not fit: {err}")).into())
}

/// Makes every error the API answers `{"error": {"code", "message"}}`, whoever produced it:
/// axum's own rejections (a path id that is not a number, a query string that does not
/// parse, a method the route does not take) come as plain text or empty bodies otherwise.
/// Their words become the message; 422 becomes 400, like every other refused input.
pub(crate) async fn api_errors(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let method = request.method().clone();
    let response = next.run(request).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 16 * 1024)
        .await
        .map(|bytes| String::from_utf8_lossy(&bytes).trim().to_owned())
        .unwrap_or_default();
    let (status, code) = match status {
        StatusCode::UNPROCESSABLE_ENTITY | StatusCode::BAD_REQUEST => {
            (StatusCode::BAD_REQUEST, "bad-request")
        }
        StatusCode::UNAUTHORIZED => (status, "unauthenticated"),
        StatusCode::FORBIDDEN => (status, "forbidden"),
        StatusCode::NOT_FOUND => (status, "not-found"),
        StatusCode::METHOD_NOT_ALLOWED => (status, "method-not-allowed"),
        StatusCode::CONFLICT => (status, "conflict"),
        StatusCode::PAYLOAD_TOO_LARGE => (status, "too-large"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => (status, "unsupported-media-type"),
        _ if status.is_server_error() => (status, "internal"),
        _ => (status, "bad-request"),
    };
    let message = if !text.is_empty() {
        text
    } else if status == StatusCode::METHOD_NOT_ALLOWED {
        format!("this route does not take {method}")
    } else {
        status
            .canonical_reason()
            .unwrap_or("the request failed")
            .to_lowercase()
    };
    let body = json!({"error": {"code": code, "message": message}}).to_string();
    parts.status = status;
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Response::from_parts(parts, axum::body::Body::from(body))
}
