//! Which ways into its VMs a class allows its students, and on which ports. Teachers set them
//! per class; staff may always use every way into a VM they can see.

use crate::HubState;
use crate::db::inventory::VmRow;
use crate::db::remote_access::ClassAccess;
use crate::domain::audit::{self, Outcome};
use crate::domain::classes::{self, ClassError};
use crate::domain::viewer::Viewer;
use crate::domain::vms::VmOpError;

/// A way into a VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// The screen and the serial console.
    Console,
    Ssh,
    Rdp,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Console => "console",
            Method::Ssh => "SSH",
            Method::Rdp => "RDP",
        }
    }

    fn allowed_by(self, access: &ClassAccess) -> bool {
        match self {
            Method::Console => access.console,
            Method::Ssh => access.ssh,
            Method::Rdp => access.rdp,
        }
    }
}

/// The access settings that apply to `vm`: its class's, or the defaults for a VM in no class.
pub async fn of_vm(state: &HubState, vm: &VmRow) -> Result<ClassAccess, VmOpError> {
    match vm.class_id {
        Some(class_id) => Ok(state.db.class_access(class_id).await?),
        None => Ok(ClassAccess::default()),
    }
}

/// Checks that `viewer`, who can see `vm`, may reach it by `method`; returns the settings
/// (for the port). Students get what their class allows; staff get every way.
pub async fn check(
    state: &HubState,
    viewer: &Viewer,
    vm: &VmRow,
    method: Method,
) -> Result<ClassAccess, VmOpError> {
    let access = allowed_for(state, viewer, vm).await?;
    if method.allowed_by(&access) {
        Ok(access)
    } else {
        Err(VmOpError::Forbidden(format!(
            "this class's teachers have not turned on {} for its VMs",
            method.as_str()
        )))
    }
}

/// The ways into `vm` that `viewer`, who can see it, may use.
pub async fn allowed_for(
    state: &HubState,
    viewer: &Viewer,
    vm: &VmRow,
) -> Result<ClassAccess, VmOpError> {
    let mut access = of_vm(state, vm).await?;
    if viewer.is_staff() {
        access.console = true;
        access.ssh = true;
        access.rdp = true;
    }
    Ok(access)
}

/// The class's settings, for one of its teachers or an admin.
pub async fn for_class(
    state: &HubState,
    viewer: &Viewer,
    class_id: i64,
) -> Result<ClassAccess, ClassError> {
    classes::owned_class(state, viewer, class_id).await?;
    Ok(state.db.class_access(class_id).await?)
}

/// Changes a class's settings, for one of its teachers or an admin. Audited.
pub async fn set_for_class(
    state: &HubState,
    viewer: &Viewer,
    class_id: i64,
    access: &ClassAccess,
) -> Result<(), ClassError> {
    classes::owned_class(state, viewer, class_id).await?;
    if access.ssh_port == 0 || access.rdp_port == 0 {
        return Err(ClassError::Invalid("ports are 1 to 65535".into()));
    }
    state.db.set_class_access(class_id, access).await?;
    let detail = format!(
        "console {}, SSH {} (port {}), RDP {} (port {})",
        on_off(access.console),
        on_off(access.ssh),
        access.ssh_port,
        on_off(access.rdp),
        access.rdp_port
    );
    let target = format!("class:{class_id}");
    audit::record(
        &state.db,
        viewer,
        "class.access",
        &target,
        Outcome::Ok,
        &detail,
    )
    .await;
    Ok(())
}

fn on_off(on: bool) -> &'static str {
    if on { "on" } else { "off" }
}
