//! Idle shutdown: a class's settings (API and the class page's form), and "I'm still here"
//! for a VM's user (API, and the button on a warning).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use serde::{Deserialize, Serialize};

use crate::HubState;
use crate::domain::idle::{self, ClassIdle, IdleSettings};
use crate::vm_key::VmKey;
use crate::web::error::{ApiError, ApiJson, AppError, PageError};
use crate::web::identity::CurrentUser;
use crate::web::render::redirect_with_flash;
use crate::web::vm_key;

async fn show(
    State(state): State<Arc<HubState>>,
    user: CurrentUser,
    Path(id): Path<i64>,
) -> Result<Json<ClassIdle>, ApiError> {
    Ok(Json(idle::class_idle(&state, &user.viewer, id).await?))
}

async fn set(
    State(state): State<Arc<HubState>>,
    user: CurrentUser,
    Path(id): Path<i64>,
    ApiJson(body): ApiJson<IdleSettings>,
) -> Result<Json<ClassIdle>, ApiError> {
    Ok(Json(
        idle::set_class_idle(&state, &user.viewer, id, &body).await?,
    ))
}

#[derive(Debug, Serialize)]
struct StillHere {
    /// `CLUSTER-VMID`.
    id: VmKey,
    vmid: u32,
    /// Whether a warning was in force (and is withdrawn now).
    was_warned: bool,
}

async fn still_here(
    State(state): State<Arc<HubState>>,
    user: CurrentUser,
    Path(vmid): Path<String>,
) -> Result<Json<StillHere>, ApiError> {
    let vmid = vm_key(&state, &user.viewer, &vmid).await?;
    let was_warned = idle::still_here(&state, &user.viewer, vmid).await?;
    Ok(Json(StillHere {
        id: vmid,
        vmid: vmid.vmid,
        was_warned,
    }))
}

pub(in crate::web) fn api_router() -> Router<Arc<HubState>> {
    Router::new()
        .route("/classes/{id}/idle", get(show).put(set))
        .route("/vms/{vmid}/still-here", post(still_here))
}

/// The class page's form: a checkbox and a number per policy; blanks keep their defaults.
#[derive(Debug, Deserialize)]
struct IdleForm {
    no_connection: Option<String>,
    #[serde(default)]
    no_connection_minutes: String,
    disconnected: Option<String>,
    #[serde(default)]
    disconnected_minutes: String,
    idle_guest: Option<String>,
    #[serde(default)]
    idle_guest_minutes: String,
    #[serde(default)]
    idle_cpu_percent: String,
    #[serde(default)]
    warn_minutes: String,
    #[serde(default)]
    shutdown_minutes: String,
    hard_stop: Option<String>,
    guest_message: Option<String>,
}

impl IdleForm {
    fn into_settings(self) -> Result<IdleSettings, String> {
        let defaults = IdleSettings::default();
        let number = |name: &str, text: &str, default: u32| -> Result<u32, String> {
            let text = text.trim();
            if text.is_empty() {
                return Ok(default);
            }
            text.parse()
                .map_err(|_| format!("{name} must be a whole number, not {text:?}"))
        };
        let policy = |on: &Option<String>, name: &str, text: &str| -> Result<Option<u32>, String> {
            match on {
                Some(_) => number(name, text, 15).map(Some),
                None => Ok(None),
            }
        };
        Ok(IdleSettings {
            no_connection_minutes: policy(
                &self.no_connection,
                "the no-connection time",
                &self.no_connection_minutes,
            )?,
            disconnected_minutes: policy(
                &self.disconnected,
                "the disconnected time",
                &self.disconnected_minutes,
            )?,
            idle_guest_minutes: policy(
                &self.idle_guest,
                "the idle-guest time",
                &self.idle_guest_minutes,
            )?,
            idle_cpu_percent: number(
                "the CPU threshold",
                &self.idle_cpu_percent,
                defaults.idle_cpu_percent,
            )?,
            warn_minutes: number(
                "the warning time",
                &self.warn_minutes,
                defaults.warn_minutes,
            )?,
            shutdown_minutes: number(
                "the shutdown time",
                &self.shutdown_minutes,
                defaults.shutdown_minutes,
            )?,
            hard_stop: self.hard_stop.is_some(),
            guest_message: self.guest_message.is_some(),
        })
    }
}

async fn set_from_page(
    State(state): State<Arc<HubState>>,
    user: CurrentUser,
    Path(id): Path<i64>,
    Form(form): Form<IdleForm>,
) -> Result<Response, PageError> {
    // A class the viewer does not own is no page at all; bad values are said on the page.
    crate::domain::classes::owned_class(&state, &user.viewer, id).await?;
    let back = format!("/classes/{id}#idle");
    let settings = match form.into_settings() {
        Ok(settings) => settings,
        Err(reason) => {
            return Ok(redirect_with_flash(
                &back,
                "error",
                &crate::text::sentence(&reason),
            ));
        }
    };
    Ok(
        match idle::set_class_idle(&state, &user.viewer, id, &settings).await {
            Ok(saved) => {
                redirect_with_flash(&back, "ok", &format!("Idle shutdown: {}.", saved.summary))
            }
            Err(err) => redirect_with_flash(&back, "error", &AppError::from(err).to_string()),
        },
    )
}

pub(in crate::web) fn page_router() -> Router<Arc<HubState>> {
    Router::new().route("/classes/{id}/idle", post(set_from_page))
}
