//! The JSON API under `/api/v1`: the portal's data and actions for scripts, with the same
//! authorization as the pages. Clients authenticate with a personal API token
//! (`Authorization: Bearer ...`) or, from the portal's own scripts, the session cookie plus
//! the `X-CSRF-Token` header on changes.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;

use super::portal::VmQuery;
use crate::HubState;
use crate::db::inventory::VmFilter;
use crate::domain::access::{self, VmAction};
use crate::domain::vms;
use crate::vm_key::VmKey;
use crate::web::error::{ApiError, AppError};
use crate::web::identity::{CurrentUser, RequireAdmin, RequireStaff};
use crate::web::views::{NodeView, TemplateView, VmView};
use crate::web::vm_key;

/// The OpenAPI description of this API.
const OPENAPI: &str = include_str!("../../../openapi.json");

type ApiResult<T> = Result<Json<T>, ApiError>;

/// Errors for a user: staff see what the node said.
fn for_user(user: &CurrentUser) -> impl Fn(AppError) -> ApiError + '_ {
    move |error| ApiError {
        error,
        staff: user.viewer.is_staff(),
    }
}

#[derive(Debug, Serialize)]
struct SessionView {
    user: crate::domain::viewer::Viewer,
    /// Send as `X-CSRF-Token` with cookie-authenticated changes; empty for token clients.
    csrf_token: String,
}

async fn session(user: CurrentUser) -> Json<SessionView> {
    Json(SessionView {
        csrf_token: user.csrf_token().to_owned(),
        user: user.viewer,
    })
}

#[derive(Debug, Serialize)]
struct VmList {
    vms: Vec<VmView>,
    /// How many VMs match, across all pages.
    total: u64,
    offset: u32,
    limit: u32,
}

async fn list_vms(
    State(state): State<Arc<HubState>>,
    user: CurrentUser,
    Query(query): Query<VmQuery>,
) -> ApiResult<VmList> {
    query.check()?;
    let filter = access::restrict_to_viewer(&user.viewer, query.to_filter());
    let vms = state.db.find_vms(&filter).await?;
    let page = query.page();
    Ok(Json(VmList {
        vms: vms.iter().map(VmView::new).collect(),
        total: state.db.count_vms(&filter).await?,
        offset: page.offset,
        limit: page.limit,
    }))
}

async fn get_vm(
    State(state): State<Arc<HubState>>,
    user: CurrentUser,
    Path(vmid): Path<String>,
) -> ApiResult<VmView> {
    let vmid = vm_key(&state, &user.viewer, &vmid).await?;
    let vm = vms::visible_vm(&state, &user.viewer, vmid).await?;
    Ok(Json(VmView::new(&vm)))
}

async fn vm_action(
    State(state): State<Arc<HubState>>,
    user: CurrentUser,
    Path((vmid, action)): Path<(String, String)>,
) -> ApiResult<VmView> {
    let errors = for_user(&user);
    let vmid = vm_key(&state, &user.viewer, &vmid).await?;
    let action = VmAction::parse(&action)
        .ok_or_else(|| AppError::NotFound(format!("there is no VM action {action:?}")))?;
    let status = vms::power(&state, &user.viewer, vmid, action)
        .await
        .map_err(|err| errors(err.into()))?;
    // The agent's answer is newer than what the inventory stored so far.
    let mut vm = vms::visible_vm(&state, &user.viewer, vmid).await?;
    vm.status = status;
    Ok(Json(VmView::new(&vm)))
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct AssignTo {
    username: String,
    /// Hand the VM's disk on as it is, instead of resetting a class VM someone else held.
    #[serde(default)]
    keep_disk: bool,
}

/// Who a VM is assigned to now.
#[derive(Debug, Serialize)]
struct Assigned {
    /// `CLUSTER-VMID`.
    id: VmKey,
    vmid: u32,
    assignee: Option<String>,
}

async fn assign(
    State(state): State<Arc<HubState>>,
    user: CurrentUser,
    Path(vmid): Path<String>,
    crate::web::error::ApiJson(body): crate::web::error::ApiJson<AssignTo>,
) -> ApiResult<Assigned> {
    let vmid = vm_key(&state, &user.viewer, &vmid).await?;
    let handover = if body.keep_disk {
        vms::Handover::KeepDisk
    } else {
        vms::Handover::Fresh
    };
    vms::assign(&state, &user.viewer, vmid, Some(&body.username), handover).await?;
    Ok(Json(Assigned {
        id: vmid,
        vmid: vmid.vmid,
        assignee: Some(body.username),
    }))
}

async fn unassign(
    State(state): State<Arc<HubState>>,
    user: CurrentUser,
    Path(vmid): Path<String>,
) -> ApiResult<Assigned> {
    let vmid = vm_key(&state, &user.viewer, &vmid).await?;
    vms::assign(&state, &user.viewer, vmid, None, vms::Handover::Fresh).await?;
    Ok(Json(Assigned {
        id: vmid,
        vmid: vmid.vmid,
        assignee: None,
    }))
}

#[derive(Debug, Serialize)]
struct NodeList {
    nodes: Vec<NodeView>,
}

async fn list_nodes(
    State(state): State<Arc<HubState>>,
    _admin: RequireAdmin,
) -> ApiResult<NodeList> {
    let nodes = state.db.node_overviews().await?;
    Ok(Json(NodeList {
        nodes: nodes.iter().map(NodeView::from).collect(),
    }))
}

#[derive(Debug, Serialize)]
struct TemplateList {
    templates: Vec<TemplateView>,
}

async fn list_templates(
    State(state): State<Arc<HubState>>,
    _staff: RequireStaff,
) -> ApiResult<TemplateList> {
    let filter = VmFilter::templates();
    let templates = state.db.find_vms(&filter).await?;
    Ok(Json(TemplateList {
        templates: templates.iter().map(TemplateView::from).collect(),
    }))
}

async fn openapi() -> Response {
    let mut response = OPENAPI.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

async fn not_found() -> ApiError {
    AppError::NotFound("no such API route".into()).into()
}

pub(in crate::web) fn router() -> Router<Arc<HubState>> {
    Router::new()
        .route("/session", get(session))
        .route("/vms", get(list_vms))
        .route("/vms/{vmid}", get(get_vm))
        .route("/vms/{vmid}/assign", post(assign))
        .route("/vms/{vmid}/unassign", post(unassign))
        .route("/vms/{vmid}/{action}", post(vm_action))
        .route("/nodes", get(list_nodes))
        .route("/templates", get(list_templates))
        .route("/events", get(super::events::events))
        .route("/events/catch-up", get(super::events::catch_up))
        .route("/openapi.json", get(openapi))
        .merge(super::classes_api::router())
        .merge(super::plugins::api_router())
        .merge(super::plugin_settings::api_router())
        .merge(super::consoles::api_router())
        .merge(super::remote::api_router())
        .merge(super::schedules::api_router())
        .merge(super::idle::api_router())
        .merge(super::quota::api_router())
        .merge(super::usage::api_router())
        .merge(super::versions::api_router())
        .merge(super::hardware::api_router())
        .merge(super::rosters::api_router())
        .merge(super::builds::api_router())
        .merge(super::adopt::api_router())
        .fallback(not_found)
        .layer(axum::middleware::from_fn(crate::web::error::api_errors))
}
