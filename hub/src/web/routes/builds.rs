//! Templates built from an ISO: the *New from ISO* form, the list of builds and *Convert to
//! template*, for the Templates page and the API.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use proxlab_protocol::vm_ops::GuestOs;
use serde::{Deserialize, Serialize};

use crate::HubState;
use crate::db::builds::NodeSources;
use crate::domain::builds::{self, BuildError, BuildRequest, BuildView};
use crate::vm_key::VmKey;
use crate::web::error::{ApiError, ApiJson, AppError, PageError};
use crate::web::form_fields::optional_number;
use crate::web::identity::RequireStaff;
use crate::web::render::{Layout, Page, redirect_with_flash};

impl From<BuildError> for AppError {
    fn from(err: BuildError) -> Self {
        match err {
            BuildError::NotFound => AppError::NotFound("no such build".into()),
            BuildError::Forbidden => AppError::Forbidden,
            BuildError::Invalid(message) => AppError::BadRequest(message),
            BuildError::Conflict(message) => AppError::Conflict(message),
            BuildError::Vm(err) => err.into(),
            BuildError::Db(err) => err.into(),
        }
    }
}

/// A build as the API takes it; the machine defaults to what the OS wants.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewBuildJson {
    name: String,
    node: String,
    iso: String,
    storage: String,
    os: GuestOs,
    #[serde(default)]
    cores: Option<u32>,
    #[serde(default)]
    memory_mib: Option<u64>,
    #[serde(default)]
    disk_gib: Option<u32>,
    #[serde(default)]
    bridge: Option<String>,
}

#[derive(Debug, Serialize)]
struct BuildList {
    builds: Vec<BuildView>,
}

#[derive(Debug, Serialize)]
struct Built {
    /// `CLUSTER-VMID`.
    id: VmKey,
    vmid: u32,
}

impl From<VmKey> for Built {
    fn from(id: VmKey) -> Self {
        Self { id, vmid: id.vmid }
    }
}

/// The bridge a build's NIC is on unless another is asked for.
const DEFAULT_BRIDGE: &str = "vmbr0";

impl NewBuildJson {
    fn into_request(self) -> BuildRequest {
        let (cores, memory_mib, disk_gib) = BuildRequest::defaults(self.os);
        BuildRequest {
            name: self.name.trim().to_owned(),
            node: self.node,
            iso: self.iso,
            storage: self.storage,
            cores: self.cores.unwrap_or(cores),
            memory_mib: self.memory_mib.unwrap_or(memory_mib),
            disk_gib: self.disk_gib.unwrap_or(disk_gib),
            bridge: self
                .bridge
                .filter(|bridge| !bridge.trim().is_empty())
                .unwrap_or_else(|| DEFAULT_BRIDGE.to_owned()),
            os: self.os,
        }
    }
}

async fn list(
    State(state): State<Arc<HubState>>,
    RequireStaff(user): RequireStaff,
) -> Result<Json<BuildList>, ApiError> {
    Ok(Json(BuildList {
        builds: builds::builds(&state, &user.viewer).await?,
    }))
}

async fn create(
    State(state): State<Arc<HubState>>,
    RequireStaff(user): RequireStaff,
    ApiJson(body): ApiJson<NewBuildJson>,
) -> Result<Response, ApiError> {
    let key = builds::start_build(&state, &user.viewer, &body.into_request()).await?;
    Ok((StatusCode::CREATED, Json(Built::from(key))).into_response())
}

async fn convert(
    State(state): State<Arc<HubState>>,
    RequireStaff(user): RequireStaff,
    Path(vmid): Path<String>,
) -> Result<Json<Built>, ApiError> {
    let key = crate::web::vm_key(&state, &user.viewer, &vmid).await?;
    builds::convert(&state, &user.viewer, key).await?;
    Ok(Json(Built::from(key)))
}

pub(in crate::web) fn api_router() -> Router<Arc<HubState>> {
    Router::new()
        .route("/templates/builds", get(list).post(create))
        .route("/templates/builds/{vmid}/convert", post(convert))
}

/// A node's offer as the form shows it.
#[derive(Debug, Serialize)]
struct SourceView {
    node: String,
    online: bool,
    /// ISO images: volume id and size in words.
    isos: Vec<(String, String)>,
    storages: Vec<String>,
}

impl From<NodeSources> for SourceView {
    fn from(source: NodeSources) -> Self {
        Self {
            node: source.node,
            online: source.online,
            isos: source
                .isos
                .into_iter()
                .map(|(volid, size)| (volid, crate::text::human_bytes(size)))
                .collect(),
            storages: source.storages,
        }
    }
}

#[derive(Debug, Serialize)]
struct NewBuildPage {
    sources: Vec<SourceView>,
    /// Default cores, memory and disk per OS, for the form's hints.
    defaults: Vec<(&'static str, u32, u64, u32)>,
}

async fn new_page(
    State(state): State<Arc<HubState>>,
    RequireStaff(user): RequireStaff,
    headers: HeaderMap,
) -> Result<Page, PageError> {
    let view = NewBuildPage {
        sources: builds::sources(&state, &user.viewer)
            .await?
            .into_iter()
            .map(SourceView::from)
            .collect(),
        defaults: [GuestOs::Linux, GuestOs::Windows11, GuestOs::Other]
            .into_iter()
            .map(|os| {
                let (cores, memory, disk) = BuildRequest::defaults(os);
                (builds::os_name(os), cores, memory, disk)
            })
            .collect(),
    };
    Ok(Page::render(
        "pages/portal/template_new.html",
        &Layout::new(
            Some(&user),
            &headers,
            "templates",
            "New template from an ISO",
        ),
        &view,
    )?)
}

/// The form: the ISO comes as `node|volid`, empty machine fields take the OS's defaults.
#[derive(Debug, Deserialize)]
struct NewBuildForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    source: String,
    #[serde(default)]
    storage: String,
    #[serde(default)]
    os: String,
    #[serde(default)]
    cores: String,
    #[serde(default)]
    memory_mib: String,
    #[serde(default)]
    disk_gib: String,
    #[serde(default)]
    bridge: String,
}

impl NewBuildForm {
    fn request(self) -> Result<BuildRequest, AppError> {
        let os = builds::parse_os(self.os.trim())
            .ok_or_else(|| AppError::BadRequest("choose the operating system".into()))?;
        let (node, iso) = self
            .source
            .split_once('|')
            .ok_or_else(|| AppError::BadRequest("choose an ISO image".into()))?;
        Ok(NewBuildJson {
            cores: optional_number(&self.cores, "the number of cores")?,
            memory_mib: optional_number(&self.memory_mib, "memory in MiB")?,
            disk_gib: optional_number(&self.disk_gib, "the disk's size in GiB")?,
            name: self.name,
            node: node.to_owned(),
            iso: iso.to_owned(),
            storage: self.storage.trim().to_owned(),
            os,
            bridge: Some(self.bridge),
        }
        .into_request())
    }
}

async fn create_from_page(
    State(state): State<Arc<HubState>>,
    RequireStaff(user): RequireStaff,
    Form(form): Form<NewBuildForm>,
) -> Result<Response, PageError> {
    let outcome = async {
        let request = form.request()?;
        let vmid = builds::start_build(&state, &user.viewer, &request).await?;
        Ok::<_, AppError>(vmid)
    }
    .await;
    Ok(match outcome {
        Ok(vmid) => redirect_with_flash(
            &format!("/vms/{vmid}"),
            "ok",
            "The VM is made. Start it and install the system in its console; shut it down when \
             it is done, then convert it to a template on the Templates page.",
        ),
        Err(err) => redirect_with_flash("/templates/new", "error", &err.to_string()),
    })
}

async fn convert_from_page(
    State(state): State<Arc<HubState>>,
    RequireStaff(user): RequireStaff,
    Path(vmid): Path<String>,
) -> Result<Response, PageError> {
    let key = crate::web::vm_key(&state, &user.viewer, &vmid).await?;
    Ok(match builds::convert(&state, &user.viewer, key).await {
        Ok(()) => redirect_with_flash(
            "/templates",
            "ok",
            &format!("VM {vmid} is a template now; classes can be made from it."),
        ),
        Err(err) => redirect_with_flash("/templates", "error", &AppError::from(err).to_string()),
    })
}

pub(in crate::web) fn page_router() -> Router<Arc<HubState>> {
    Router::new()
        .route("/templates/new", get(new_page).post(create_from_page))
        .route("/templates/builds/{vmid}/convert", post(convert_from_page))
}
