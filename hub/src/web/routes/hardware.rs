//! A class's hardware: what its VMs have, and a change of it, for scripts (the API) and the
//! class page's form.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use serde::{Deserialize, Serialize};

use crate::HubState;
use crate::domain::classes::hardware::{self, HardwareRequest, HardwareView};
use crate::web::error::{ApiError, ApiJson, AppError, PageError};
use crate::web::form_fields::optional_number;
use crate::web::identity::CurrentUser;
use crate::web::render::redirect_with_flash;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ChangeRequest {
    #[serde(default)]
    cores: Option<u32>,
    #[serde(default)]
    memory_mib: Option<u64>,
    /// Disks to grow, by slot.
    #[serde(default)]
    disks: Vec<DiskRequest>,
    /// The first NIC's bridge; `vlan` goes with it.
    #[serde(default)]
    bridge: Option<String>,
    #[serde(default)]
    vlan: Option<u16>,
    #[serde(default)]
    add_serial: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DiskRequest {
    slot: String,
    size_gib: u64,
}

#[derive(Debug, Serialize)]
struct JobStarted {
    job: i64,
}

impl ChangeRequest {
    fn into_request(self) -> Result<HardwareRequest, AppError> {
        if self.vlan.is_some() && self.bridge.is_none() {
            return Err(AppError::BadRequest(
                "a VLAN goes with a bridge: give both".into(),
            ));
        }
        Ok(HardwareRequest {
            cores: self.cores,
            memory_mib: self.memory_mib,
            disks: self
                .disks
                .into_iter()
                .map(|disk| (disk.slot, disk.size_gib))
                .collect(),
            network: self.bridge.map(|bridge| (bridge, self.vlan)),
            add_serial: self.add_serial,
        })
    }
}

async fn show(
    State(state): State<Arc<HubState>>,
    user: CurrentUser,
    Path(id): Path<i64>,
) -> Result<Json<HardwareView>, ApiError> {
    Ok(Json(hardware::hardware(&state, &user.viewer, id).await?))
}

async fn change(
    State(state): State<Arc<HubState>>,
    user: CurrentUser,
    Path(id): Path<i64>,
    ApiJson(body): ApiJson<ChangeRequest>,
) -> Result<Response, ApiError> {
    crate::domain::classes::owned_class(&state, &user.viewer, id).await?;
    let request = body.into_request()?;
    let job = hardware::change_hardware(&state, &user.viewer, id, &request).await?;
    Ok((StatusCode::ACCEPTED, Json(JobStarted { job })).into_response())
}

pub(in crate::web) fn api_router() -> Router<Arc<HubState>> {
    Router::new().route("/classes/{id}/hardware", get(show).post(change))
}

/// The class page's hardware form: every field is there, prefilled with what the class has;
/// the change is what differs. Disk sizes come as `disk_<slot>` fields.
#[derive(Debug, Deserialize)]
struct HardwareForm {
    #[serde(default)]
    cores: String,
    #[serde(default)]
    memory_mib: String,
    #[serde(default)]
    bridge: String,
    #[serde(default)]
    vlan: String,
    #[serde(default)]
    add_serial: Option<String>,
    #[serde(flatten)]
    rest: std::collections::BTreeMap<String, String>,
}

impl HardwareForm {
    fn request(&self) -> Result<HardwareRequest, AppError> {
        let mut disks = Vec::new();
        for (field, value) in &self.rest {
            if let Some(slot) = field.strip_prefix("disk_")
                && let Some(gib) = optional_number(value, "a disk's size in GiB")?
            {
                disks.push((slot.to_owned(), gib));
            }
        }
        let bridge = self.bridge.trim();
        Ok(HardwareRequest {
            cores: optional_number(&self.cores, "the number of cores")?,
            memory_mib: optional_number(&self.memory_mib, "memory in MiB")?,
            disks,
            network: (!bridge.is_empty())
                .then(|| {
                    Ok::<_, AppError>((
                        bridge.to_owned(),
                        optional_number(&self.vlan, "a VLAN tag")?,
                    ))
                })
                .transpose()?,
            add_serial: self.add_serial.is_some(),
        })
    }
}

async fn change_from_page(
    State(state): State<Arc<HubState>>,
    user: CurrentUser,
    Path(id): Path<i64>,
    Form(form): Form<HardwareForm>,
) -> Result<Response, PageError> {
    crate::domain::classes::owned_class(&state, &user.viewer, id).await?;
    let outcome = async {
        let request = form.request()?;
        hardware::change_hardware(&state, &user.viewer, id, &request).await?;
        Ok::<_, AppError>(
            "Changing the hardware of the class's VMs; running ones take part of it at their \
             next start."
                .to_owned(),
        )
    }
    .await;
    let to = format!("/classes/{id}#hardware");
    Ok(match outcome {
        Ok(message) => redirect_with_flash(&to, "ok", &message),
        Err(err) => redirect_with_flash(&to, "error", &err.to_string()),
    })
}

pub(in crate::web) fn page_router() -> Router<Arc<HubState>> {
    Router::new().route("/classes/{id}/hardware", post(change_from_page))
}
