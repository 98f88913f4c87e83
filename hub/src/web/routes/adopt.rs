//! Adopting existing VMs into a class (admins): the Admin → Adopt page and the API.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use serde::{Deserialize, Serialize};

use crate::HubState;
use crate::domain::classes::adopt::{self, AdoptRequest, Candidate};
use crate::domain::viewer::Viewer;
use crate::vm_key::VmRef;
use crate::web::error::{ApiError, ApiJson, AppError, PageError};
use crate::web::identity::RequireAdmin;
use crate::web::render::{Layout, Page, redirect_with_flash};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AdoptJson {
    name: String,
    owner: String,
    /// `"CLUSTER-VMID"`, or a VMID while only one cluster has it.
    template_vmid: VmRef,
    #[serde(default)]
    vmids: Vec<VmRef>,
    /// `[first, last]`, both included.
    #[serde(default)]
    range: Option<(u32, u32)>,
    /// VM (`CLUSTER-VMID` or VMID, as a string: JSON keys are strings) → username.
    #[serde(default)]
    students: BTreeMap<String, String>,
}

#[derive(Debug, Serialize)]
struct Adopted {
    class_id: i64,
}

fn vm_ref(text: &str) -> Result<VmRef, AppError> {
    text.trim()
        .parse()
        .map_err(|err: crate::vm_key::BadVmRef| AppError::BadRequest(err.to_string()))
}

fn vmid(text: &str) -> Result<u32, AppError> {
    text.trim()
        .parse()
        .map_err(|_| AppError::BadRequest(format!("{text:?} is not a VM id")))
}

/// An adoption as asked for, its VMs named as the request named them.
struct AdoptRefs {
    name: String,
    owner: String,
    template: VmRef,
    vms: Vec<VmRef>,
    range: Option<(u32, u32)>,
    students: Vec<(VmRef, String)>,
}

impl AdoptRefs {
    /// The request, with each VM it names found on the hub.
    async fn resolve(self, state: &HubState, viewer: &Viewer) -> Result<AdoptRequest, AppError> {
        let mut vms = Vec::with_capacity(self.vms.len());
        for vm in self.vms {
            vms.push(crate::web::vm_ref_key(state, viewer, vm).await?);
        }
        let mut students = BTreeMap::new();
        for (vm, username) in self.students {
            students.insert(crate::web::vm_ref_key(state, viewer, vm).await?, username);
        }
        Ok(AdoptRequest {
            name: self.name,
            owner: self.owner,
            template: crate::web::vm_ref_key(state, viewer, self.template).await?,
            vms,
            range: self.range,
            students,
        })
    }
}

async fn adopt_api(
    State(state): State<Arc<HubState>>,
    RequireAdmin(user): RequireAdmin,
    ApiJson(body): ApiJson<AdoptJson>,
) -> Result<Response, ApiError> {
    let students = body
        .students
        .iter()
        .map(|(vm, username)| Ok((vm_ref(vm)?, username.clone())))
        .collect::<Result<_, AppError>>()?;
    let request = AdoptRefs {
        name: body.name,
        owner: body.owner,
        template: body.template_vmid,
        vms: body.vmids,
        range: body.range,
        students,
    }
    .resolve(&state, &user.viewer)
    .await?;
    let class_id = adopt::adopt(&state, &user.viewer, &request).await?;
    Ok((StatusCode::CREATED, Json(Adopted { class_id })).into_response())
}

pub(in crate::web) fn api_router() -> Router<Arc<HubState>> {
    Router::new().route("/classes/adopt", post(adopt_api))
}

#[derive(Debug, Serialize)]
struct AdoptPage {
    templates: Vec<Candidate>,
    vms: Vec<Candidate>,
}

async fn page(
    State(state): State<Arc<HubState>>,
    RequireAdmin(user): RequireAdmin,
    headers: HeaderMap,
) -> Result<Page, PageError> {
    let (templates, vms) = adopt::candidates(&state, &user.viewer)
        .await
        .map_err(AppError::from)?
        .into_iter()
        .partition(|candidate| candidate.template);
    Ok(Page::render(
        "pages/admin/adopt.html",
        &Layout::new(Some(&user), &headers, "adopt", "Adopt VMs"),
        &AdoptPage { templates, vms },
    )?)
}

/// The form, as its fields came (checked VMs repeat the `vmid` field; each VM's student is
/// `student_<vm>`; an optional range is `range_first` and `range_last`).
fn form_request(pairs: &[(String, String)]) -> Result<AdoptRefs, AppError> {
    let field = |name: &str| {
        pairs
            .iter()
            .find(|(key, _)| key == name)
            .map_or("", |(_, value)| value.as_str())
    };
    let mut request = AdoptRefs {
        name: field("name").to_owned(),
        owner: field("owner").to_owned(),
        template: vm_ref(field("template_vmid"))?,
        vms: Vec::new(),
        range: None,
        students: Vec::new(),
    };
    for (key, value) in pairs {
        if key == "vmid" {
            request.vms.push(vm_ref(value)?);
        } else if let Some(id) = key.strip_prefix("student_")
            && !value.trim().is_empty()
        {
            request.students.push((vm_ref(id)?, value.clone()));
        }
    }
    let (first, last) = (field("range_first").trim(), field("range_last").trim());
    if !first.is_empty() || !last.is_empty() {
        request.range = Some((vmid(first)?, vmid(last)?));
    }
    Ok(request)
}

async fn adopt_from_page(
    State(state): State<Arc<HubState>>,
    RequireAdmin(user): RequireAdmin,
    Form(pairs): Form<Vec<(String, String)>>,
) -> Result<Response, PageError> {
    let outcome = async {
        let request = form_request(&pairs)?.resolve(&state, &user.viewer).await?;
        Ok::<_, AppError>(adopt::adopt(&state, &user.viewer, &request).await?)
    }
    .await;
    Ok(match outcome {
        Ok(class_id) => redirect_with_flash(
            &format!("/classes/{class_id}"),
            "ok",
            "The VMs are adopted: proxlab manages them from now on. Nothing on the nodes \
             changed.",
        ),
        Err(err) => redirect_with_flash("/admin/adopt", "error", &err.to_string()),
    })
}

pub(in crate::web) fn page_router() -> Router<Arc<HubState>> {
    Router::new().route("/admin/adopt", get(page).post(adopt_from_page))
}
