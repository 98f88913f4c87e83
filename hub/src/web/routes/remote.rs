//! Reaching VMs over the network: forwarded ports (with the SSH command and the `.rdp` file
//! that use them) and each class's access settings.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use crate::HubState;
use crate::db::remote_access::ClassAccess;
use crate::domain::remote::access;
use crate::domain::remote::forwards::{self, ForwardError, ForwardView, Service};
use crate::domain::tokens::format_time;
use crate::domain::vms;
use crate::web::error::{ApiError, ApiJson, AppError};
use crate::web::identity::{ClientAddr, CurrentUser};
use crate::web::vm_key;

impl From<ForwardError> for AppError {
    fn from(err: ForwardError) -> Self {
        match err {
            ForwardError::Vm(err) => err.into(),
            ForwardError::Tunnel(err) => err.into(),
            ForwardError::NoFreePort => AppError::TooManyRequests {
                message: err.to_string(),
                retry_after_secs: 60,
            },
            ForwardError::Off | ForwardError::NotRunning(_) => AppError::Conflict(err.to_string()),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ForwardRequest {
    service: Service,
}

/// An open forwarded port, with how to use it.
#[derive(Debug, Serialize)]
struct ForwardAnswer {
    #[serde(flatten)]
    forward: ForwardView,
    expires: String,
    /// For SSH: the command to type (the username is the VM's own).
    #[serde(skip_serializing_if = "Option::is_none")]
    ssh_command: Option<String>,
    /// For RDP: where the connection file is.
    #[serde(skip_serializing_if = "Option::is_none")]
    rdp_file: Option<String>,
}

impl From<ForwardView> for ForwardAnswer {
    fn from(forward: ForwardView) -> Self {
        let ssh_command = (forward.service == Service::Ssh)
            .then(|| format!("ssh -p {} USER@{}", forward.port, forward.host));
        let rdp_file = (forward.service == Service::Rdp).then(|| {
            format!(
                "/api/v1/vms/{}/forwards/{}/connect.rdp",
                forward.id, forward.port
            )
        });
        Self {
            expires: format_time(forward.expires_at),
            forward,
            ssh_command,
            rdp_file,
        }
    }
}

async fn open_forward(
    State(state): State<Arc<HubState>>,
    user: CurrentUser,
    ClientAddr(requester): ClientAddr,
    Path(vmid): Path<String>,
    ApiJson(request): ApiJson<ForwardRequest>,
) -> Result<Response, ApiError> {
    let vmid = vm_key(&state, &user.viewer, &vmid).await?;
    let view = forwards::open(&state, &user.viewer, vmid, request.service, requester)
        .await
        .map_err(|err| ApiError {
            error: err.into(),
            staff: user.viewer.is_staff(),
        })?;
    Ok((StatusCode::CREATED, Json(ForwardAnswer::from(view))).into_response())
}

async fn list_forwards(
    State(state): State<Arc<HubState>>,
    user: CurrentUser,
    Path(vmid): Path<String>,
) -> Result<Json<Vec<ForwardAnswer>>, ApiError> {
    let vmid = vm_key(&state, &user.viewer, &vmid).await?;
    vms::visible_vm(&state, &user.viewer, vmid).await?;
    let open = state.forwards.of_vm(vmid);
    Ok(Json(open.into_iter().map(ForwardAnswer::from).collect()))
}

/// The Remote Desktop connection file of an open RDP forward.
async fn rdp_file(
    State(state): State<Arc<HubState>>,
    user: CurrentUser,
    Path((vmid, port)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let vmid = vm_key(&state, &user.viewer, &vmid).await?;
    let vm = vms::visible_vm(&state, &user.viewer, vmid).await?;
    let forward = state
        .forwards
        .of_vm(vmid)
        .into_iter()
        .find(|forward| forward.service == Service::Rdp && port == forward.port.to_string())
        .ok_or_else(|| {
            AppError::NotFound("no RDP port is open for this VM; ask for one first".into())
        })?;
    let file = rdp_file_text(&forward.host, forward.port);
    // VM names are DNS labels (letters, digits, hyphens): safe in a header as they are.
    let name: String = vm
        .name
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .collect();
    let disposition = format!("attachment; filename=\"{name}.rdp\"");
    Ok((
        [
            (header::CONTENT_TYPE, "application/x-rdp".to_owned()),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        file,
    )
        .into_response())
}

/// A Remote Desktop connection file: the address, and defaults that suit a lab VM (full
/// screen on the user's monitors, clipboard, no printers or drives shared).
fn rdp_file_text(host: &str, port: u16) -> String {
    [
        format!("full address:s:{host}:{port}"),
        "screen mode id:i:2".into(),
        "use multimon:i:0".into(),
        "dynamic resolution:i:1".into(),
        "smart sizing:i:1".into(),
        "redirectclipboard:i:1".into(),
        "redirectprinters:i:0".into(),
        "redirectdrives:i:0".into(),
        "audiomode:i:0".into(),
        "prompt for credentials:i:1".into(),
        "authentication level:i:2".into(),
        "autoreconnection enabled:i:1".into(),
    ]
    .join("\r\n")
        + "\r\n"
}

async fn class_access(
    State(state): State<Arc<HubState>>,
    user: CurrentUser,
    Path(id): Path<i64>,
) -> Result<Json<ClassAccess>, ApiError> {
    Ok(Json(access::for_class(&state, &user.viewer, id).await?))
}

async fn set_class_access(
    State(state): State<Arc<HubState>>,
    user: CurrentUser,
    Path(id): Path<i64>,
    ApiJson(body): ApiJson<ClassAccess>,
) -> Result<Json<ClassAccess>, ApiError> {
    access::set_for_class(&state, &user.viewer, id, &body).await?;
    Ok(Json(body))
}

pub(in crate::web) fn api_router() -> Router<Arc<HubState>> {
    Router::new()
        .route(
            "/vms/{vmid}/forwards",
            get(list_forwards).post(open_forward),
        )
        .route("/vms/{vmid}/forwards/{port}/connect.rdp", get(rdp_file))
        .route(
            "/classes/{id}/access",
            get(class_access).put(set_class_access),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rdp_files_name_the_forwarded_address_with_crlf_lines() {
        let text = rdp_file_text("lab.example.org", 40001);
        assert!(text.starts_with("full address:s:lab.example.org:40001\r\n"));
        assert!(text.lines().all(|line| line.matches(':').count() >= 2));
        assert!(text.ends_with("\r\n"));
    }
}
