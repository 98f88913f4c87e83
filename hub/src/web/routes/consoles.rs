//! Consoles: the console page, the API that issues tickets, the WebSocket a ticket opens,
//! and the admins' list of open consoles.

use std::sync::Arc;

use crate::domain::consoles::kind::SessionKind;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, delete, get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use crate::HubState;
use crate::db::remote_access::ClassAccess;
use crate::domain::consoles::sessions::ConsoleSession;
use crate::domain::consoles::{self, ConsoleError, OpenConsole};
use crate::domain::remote::access;
use crate::domain::remote::tunnel::Tunnel;
use crate::domain::tokens::format_time;
use crate::domain::vms;
use crate::web::console_bridge::{self, MAX_MESSAGE_BYTES};
use crate::web::error::{ApiError, ApiJson, AppError, PageError};
use crate::web::identity::{CurrentUser, RequireAdmin};
use crate::web::render::{Layout, Page, redirect_with_flash};
use crate::web::ssh_bridge;
use crate::web::views::{VmView, human_bytes};
use crate::web::vm_key;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConsoleRequest {
    kind: SessionKind,
}

/// A console ticket, as the browser gets it.
#[derive(Debug, Serialize)]
struct ConsoleTicketView {
    kind: SessionKind,
    /// The WebSocket to open (same origin), once, before `expires_at`.
    url: String,
    /// For VNC: the password for the VM's VNC server.
    #[serde(skip_serializing_if = "Option::is_none")]
    password: Option<String>,
    expires_at: String,
}

async fn issue(
    State(state): State<Arc<HubState>>,
    user: CurrentUser,
    Path(vmid): Path<String>,
    ApiJson(request): ApiJson<ConsoleRequest>,
) -> Result<Response, ApiError> {
    let vmid = vm_key(&state, &user.viewer, &vmid).await?;
    if !request.kind.opened_by_ticket() {
        return Err(AppError::BadRequest(
            "kind is vnc, serial or ssh (forwarded ports: POST /api/v1/vms/{vmid}/forwards)".into(),
        )
        .into());
    }
    let issued = consoles::issue(&state, &user.viewer, vmid, request.kind)
        .await
        .map_err(|err| ApiError {
            error: err.into(),
            staff: user.viewer.is_staff(),
        })?;
    let view = ConsoleTicketView {
        kind: request.kind,
        url: format!("/api/v1/console/{}", issued.ticket),
        password: issued.password,
        expires_at: format_time(issued.expires_at),
    };
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

/// Whether the request comes from a page of this portal: a browser always sends `Origin` with
/// a WebSocket, and it must name the host the request went to. Clients that are not browsers
/// (scripts with an API token) send none.
fn same_origin(headers: &HeaderMap, uri: &Uri, site_url: Option<&str>) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    let Some((_, origin_host)) = origin.split_once("://") else {
        return false;
    };
    if site_url.is_some_and(|site| site.trim_end_matches('/') == origin) {
        return true;
    }
    // HTTP/1.1 names the host in `Host`, HTTP/2 in the URI's authority.
    let host = headers
        .get(header::HOST)
        .and_then(|host| host.to_str().ok())
        .or_else(|| uri.authority().map(|authority| authority.as_str()));
    host.is_some_and(|host| host.eq_ignore_ascii_case(origin_host))
}

/// The console WebSocket: a GET upgrade over HTTP/1.1 (an extended CONNECT over HTTP/2 is
/// let through too, for servers that enable it; only GET is advertised).
async fn socket(
    method: Method,
    State(state): State<Arc<HubState>>,
    user: CurrentUser,
    headers: HeaderMap,
    uri: Uri,
    Path(ticket): Path<String>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    if method != Method::GET && method != Method::CONNECT {
        let allow = [(header::ALLOW, HeaderValue::from_static("GET"))];
        return Ok((StatusCode::METHOD_NOT_ALLOWED, allow).into_response());
    }
    let upgrade = upgrade.map_err(|_| {
        AppError::BadRequest("this address is a console: open it as a WebSocket".into())
    })?;
    if !same_origin(&headers, &uri, state.config.site_url().as_deref()) {
        tracing::warn!(user = %user.viewer.username, "console WebSocket from another origin refused");
        return Err(AppError::Forbidden.into());
    }
    // The checks answer after the upgrade, so the page can say why in the close frame.
    Ok(upgrade
        .protocols(["binary"])
        .max_message_size(MAX_MESSAGE_BYTES)
        .max_frame_size(MAX_MESSAGE_BYTES)
        .on_upgrade(move |mut socket| async move {
            let viewer = user.viewer;
            let mut console = match consoles::connect(&state, &viewer, &ticket).await {
                Ok(console) => console,
                Err(err) => return refuse(&mut socket, &err).await,
            };
            if console.record.session().kind == SessionKind::Ssh {
                let OpenConsole {
                    record,
                    to_agent,
                    from_agent,
                } = console;
                let tunnel = Tunnel {
                    to_vm: to_agent,
                    from_vm: from_agent,
                };
                let reason =
                    ssh_bridge::run(state.clone(), &viewer, socket, record.session(), tunnel).await;
                return record.record_end(&state, &viewer, &reason).await;
            }
            let reason = console_bridge::run(&state, socket, &mut console).await;
            console.record.record_end(&state, &viewer, &reason).await;
        }))
}

/// Closes a WebSocket whose console could not be opened, with why.
async fn refuse(socket: &mut axum::extract::ws::WebSocket, err: &ConsoleError) {
    use axum::extract::ws::{CloseFrame, Message};
    let reason = crate::text::truncate_bytes(&crate::text::sentence(&err.to_string()), 123);
    let close = Message::Close(Some(CloseFrame {
        code: err.close_code(),
        reason: reason.into(),
    }));
    let _ = socket.send(close).await;
}

/// An open console, as admins see it.
#[derive(Debug, Serialize)]
struct SessionView {
    id: u64,
    username: String,
    /// The VM's key (`CLUSTER-VMID`) and VMID.
    vm: crate::vm_key::VmKey,
    vmid: u32,
    kind: SessionKind,
    since: String,
    bytes_to_vm: u64,
    bytes_from_vm: u64,
    idle_secs: u64,
    /// For people: the bytes each way and how long nothing has passed.
    traffic: String,
}

impl From<&ConsoleSession> for SessionView {
    fn from(session: &ConsoleSession) -> Self {
        use std::sync::atomic::Ordering::Relaxed;
        let (to_vm, from_vm) = (
            session.bytes_to_vm.load(Relaxed),
            session.bytes_from_vm.load(Relaxed),
        );
        Self {
            traffic: format!(
                "{} from the VM, {} to it; idle {} s",
                human_bytes(from_vm),
                human_bytes(to_vm),
                session.idle_secs()
            ),
            id: session.id,
            username: session.username.clone(),
            vm: session.vm,
            vmid: session.vm.vmid,
            kind: session.kind,
            since: format_time(session.started_at),
            bytes_to_vm: to_vm,
            bytes_from_vm: from_vm,
            idle_secs: session.idle_secs(),
        }
    }
}

fn parse_session_id(text: &str) -> Result<u64, AppError> {
    text.parse()
        .map_err(|_| AppError::NotFound(format!("{text:?} is not a console id")))
}

fn open_sessions(state: &HubState) -> Vec<SessionView> {
    state
        .consoles
        .list()
        .iter()
        .map(|session| SessionView::from(session.as_ref()))
        .collect()
}

async fn list_api(
    State(state): State<Arc<HubState>>,
    RequireAdmin(_): RequireAdmin,
) -> Json<Vec<SessionView>> {
    Json(open_sessions(&state))
}

async fn end_api(
    State(state): State<Arc<HubState>>,
    RequireAdmin(user): RequireAdmin,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = parse_session_id(&id)?;
    if consoles::end_session(&state, &user.viewer, id).await? {
        Ok(Json(serde_json::json!({"ended": id})).into_response())
    } else {
        Err(AppError::NotFound(format!("no console {id} is open")).into())
    }
}

#[derive(Debug, Serialize)]
struct ConsolePageView {
    vm: VmView,
    /// The ways in the viewer may use.
    access: ClassAccess,
    /// Whether the hub forwards ports (for SSH and RDP apps).
    forwarding: bool,
}

async fn page(
    State(state): State<Arc<HubState>>,
    user: CurrentUser,
    headers: HeaderMap,
    Path(vmid): Path<String>,
) -> Result<Response, PageError> {
    let vmid = vm_key(&state, &user.viewer, &vmid).await?;
    let vm = vms::visible_vm(&state, &user.viewer, vmid)
        .await
        .map_err(AppError::from)?;
    let title = format!("Console of {}", vm.name);
    let access = access::allowed_for(&state, &user.viewer, &vm)
        .await
        .map_err(AppError::from)?;
    let view = ConsolePageView {
        vm: VmView::new(&vm),
        access,
        forwarding: state.forwards.enabled(),
    };
    let mut response = Page::render(
        "pages/portal/console.html",
        &Layout::new(Some(&user), &headers, "vms", &title),
        &view,
    )?
    .into_response();
    response.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(crate::web::CONSOLE_CONTENT_SECURITY_POLICY),
    );
    Ok(response)
}

#[derive(Debug, Serialize)]
struct SessionsPageView {
    sessions: Vec<SessionView>,
}

async fn admin_page(
    State(state): State<Arc<HubState>>,
    RequireAdmin(user): RequireAdmin,
    headers: HeaderMap,
) -> Result<Page, PageError> {
    let view = SessionsPageView {
        sessions: open_sessions(&state),
    };
    Ok(Page::render(
        "pages/admin/consoles.html",
        &Layout::new(Some(&user), &headers, "consoles", "Open consoles"),
        &view,
    )?)
}

async fn end_form(
    State(state): State<Arc<HubState>>,
    RequireAdmin(user): RequireAdmin,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    let id = parse_session_id(&id)?;
    let ended = consoles::end_session(&state, &user.viewer, id)
        .await
        .map_err(AppError::from)?;
    Ok(if ended {
        redirect_with_flash("/admin/consoles", "ok", "The console was ended.")
    } else {
        redirect_with_flash(
            "/admin/consoles",
            "error",
            "That console is closed already.",
        )
    })
}

pub(in crate::web) fn api_router() -> Router<Arc<HubState>> {
    Router::new()
        .route("/vms/{vmid}/console", post(issue))
        .route("/console/{ticket}", any(socket))
        .route("/consoles", get(list_api))
        .route("/consoles/{id}", delete(end_api))
}

pub(in crate::web) fn page_router() -> Router<Arc<HubState>> {
    Router::new()
        .route("/vms/{vmid}/console", get(page))
        .route("/admin/consoles", get(admin_page))
        .route("/admin/consoles/{id}/end", post(end_form))
}
