//! Building a template from an ISO: a teacher or admin picks an ISO a node holds, the
//! node's storage and the machine, and the node makes a VM that boots the installer. The VM
//! is the builder's (they start it and install in its console); once installed and shut
//! down, *Convert to template* makes it a template the classes can be made from. No password
//! passes through proxlab: the installer asks for them in the console.

use proxlab_protocol::vm_ops::{GuestOs, VmCreate, VmInstall, VmMakeTemplate};
use serde::Serialize;

use crate::HubState;
use crate::agents::CallError;
use crate::db::DbError;
use crate::db::builds::{BuildRow, NewBuild, NodeSources};
use crate::db::now_unix;
use crate::db::states::BuildState;
use crate::domain::audit::{self, Outcome};
use crate::domain::classes::VMID_RANGE;
use crate::domain::viewer::Viewer;
use crate::domain::vms::VmOpError;
use crate::vm_key::VmKey;

/// Why a build did not happen.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// Missing, or not the viewer's: the same answer for both.
    #[error("no such build")]
    NotFound,
    #[error("only teachers and admins build templates")]
    Forbidden,
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Vm(#[from] VmOpError),
    #[error(transparent)]
    Db(#[from] DbError),
}

/// A build as asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildRequest {
    pub name: String,
    pub node: String,
    pub iso: String,
    pub storage: String,
    pub cores: u32,
    pub memory_mib: u64,
    pub disk_gib: u32,
    pub bridge: String,
    pub os: GuestOs,
}

impl BuildRequest {
    /// The machine a new build of `os` starts from: what the OS needs to install well.
    pub fn defaults(os: GuestOs) -> (u32, u64, u32) {
        match os {
            GuestOs::Windows11 => (4, 8192, 64),
            GuestOs::Linux | GuestOs::Other => (2, 2048, 32),
        }
    }
}

/// A build as pages and the API show it.
#[derive(Debug, Clone, Serialize)]
pub struct BuildView {
    /// The VM's key (`CLUSTER-VMID`).
    pub id: VmKey,
    pub vmid: u32,
    pub name: String,
    pub node: String,
    pub iso: String,
    pub os: String,
    pub builder: Option<String>,
    pub created: String,
    pub created_at: i64,
    pub state: BuildState,
    pub error: String,
}

impl From<BuildRow> for BuildView {
    fn from(row: BuildRow) -> Self {
        Self {
            id: row.key,
            vmid: row.vmid,
            name: row.name,
            node: row.node,
            iso: row.iso,
            os: row.os,
            builder: row.builder,
            created: crate::domain::tokens::format_time(row.created_at),
            created_at: row.created_at,
            state: row.state,
            error: row.error,
        }
    }
}

/// The word a [`GuestOs`] is stored and shown as.
pub fn os_name(os: GuestOs) -> &'static str {
    match os {
        GuestOs::Linux => "linux",
        GuestOs::Windows11 => "windows11",
        GuestOs::Other => "other",
    }
}

pub fn parse_os(text: &str) -> Option<GuestOs> {
    [GuestOs::Linux, GuestOs::Windows11, GuestOs::Other]
        .into_iter()
        .find(|os| os_name(*os) == text)
}

/// The builds the viewer may see: their own, or every one for an admin.
pub async fn builds(state: &HubState, viewer: &Viewer) -> Result<Vec<BuildView>, BuildError> {
    if !viewer.is_staff() {
        return Err(BuildError::Forbidden);
    }
    let mine = (!viewer.is_admin()).then_some(viewer.id);
    Ok(state
        .db
        .builds(mine)
        .await?
        .into_iter()
        .map(BuildView::from)
        .collect())
}

/// What the nodes offer to build from (for the form).
pub async fn sources(state: &HubState, viewer: &Viewer) -> Result<Vec<NodeSources>, BuildError> {
    if !viewer.is_staff() {
        return Err(BuildError::Forbidden);
    }
    Ok(state.db.build_sources().await?)
}

fn simple_name(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 64
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Checks a request against what its node reported.
fn check(request: &BuildRequest, sources: &[NodeSources]) -> Result<(), BuildError> {
    let invalid = |message: String| Err(BuildError::Invalid(message));
    proxlab_pve::ident::validate_vm_name(&request.name)
        .map_err(|reason| BuildError::Invalid(format!("the name: {reason}")))?;
    let Some(node) = sources.iter().find(|source| source.node == request.node) else {
        return invalid(format!("there is no node {:?}", request.node));
    };
    if !node.online {
        return Err(BuildError::Conflict(format!(
            "node {} is offline; pick another or try again once it is back",
            node.node
        )));
    }
    if !node.isos.iter().any(|(volid, _)| volid == &request.iso) {
        return invalid(format!(
            "node {} has no ISO image {}",
            node.node, request.iso
        ));
    }
    if !node.storages.contains(&request.storage) {
        return invalid(format!(
            "node {} has no active storage {:?} for VM disks",
            node.node, request.storage
        ));
    }
    if !simple_name(&request.bridge) {
        return invalid("a bridge is named like vmbr0".into());
    }
    if !(1..=crate::domain::classes::hardware::MAX_CORES).contains(&request.cores) {
        return invalid("a VM has 1 to 512 cores".into());
    }
    if !(crate::domain::classes::hardware::MIN_MEMORY_MIB
        ..=crate::domain::classes::hardware::MAX_MEMORY_MIB)
        .contains(&request.memory_mib)
    {
        return invalid("a VM has 16 MiB to 4 TiB of memory".into());
    }
    if !(1..=65_536).contains(&request.disk_gib) {
        return invalid("a disk has 1 to 65536 GiB".into());
    }
    Ok(())
}

/// Makes the VM of a build on its node and gives it to the builder. Returns its key.
pub async fn start_build(
    state: &HubState,
    viewer: &Viewer,
    request: &BuildRequest,
) -> Result<VmKey, BuildError> {
    if !viewer.is_staff() {
        return Err(BuildError::Forbidden);
    }
    check(request, &state.db.build_sources().await?)?;
    let now = now_unix();
    let key = state
        .db
        .reserve_build(
            &NewBuild {
                node: &request.node,
                name: &request.name,
                iso: &request.iso,
                os: os_name(request.os),
                built_by: viewer.id,
                now,
            },
            VMID_RANGE,
        )
        .await
        .map_err(|err| match err {
            DbError::Conflict(message) => BuildError::Conflict(message),
            other => other.into(),
        })?;
    let install = VmInstall {
        vm: VmCreate {
            vmid: key.vmid,
            name: request.name.clone(),
            cores: request.cores,
            memory_mib: request.memory_mib,
            disk_gib: request.disk_gib,
            storage: request.storage.clone(),
            bridge: request.bridge.clone(),
        },
        iso: request.iso.clone(),
        os: request.os,
    };
    let target = key.audit_target();
    let made = state.registry.call(&request.node, &install).await;
    if let Err(err) = made {
        let error = VmOpError::Node {
            action: "create",
            source: err,
        };
        let (message, detail) = error.explain();
        state
            .db
            .set_build_state(key, BuildState::Failed, &detail)
            .await?;
        audit::record(
            &state.db,
            viewer,
            "template.build",
            &target,
            Outcome::Failed,
            &message,
        )
        .await;
        return Err(error.into());
    }
    state
        .db
        .assign_vm(key, viewer.id, Some(viewer.id), now)
        .await?;
    state
        .db
        .set_build_state(key, BuildState::Installing, "")
        .await?;
    audit::record(
        &state.db,
        viewer,
        "template.build",
        &target,
        Outcome::Ok,
        &format!(
            "{} on {} from {} ({})",
            request.name,
            request.node,
            request.iso,
            os_name(request.os)
        ),
    )
    .await;
    Ok(key)
}

/// Makes a build's VM a template, once it is stopped; it stops being the builder's VM and
/// appears among the templates.
pub async fn convert(state: &HubState, viewer: &Viewer, key: VmKey) -> Result<(), BuildError> {
    let vmid = key.vmid;
    let build = state.db.build(key).await?.ok_or(BuildError::NotFound)?;
    if !viewer.is_staff() || (!viewer.is_admin() && build.built_by != Some(viewer.id)) {
        return Err(BuildError::NotFound);
    }
    match build.state {
        BuildState::Installing => {}
        BuildState::Template => return Ok(()),
        BuildState::Creating | BuildState::Failed => {
            return Err(BuildError::Conflict(format!(
                "build {vmid} has no VM to convert"
            )));
        }
    }
    let vm = state.db.vm(key).await?.ok_or_else(|| {
        BuildError::Conflict(format!(
            "VM {vmid} is not in the inventory (its node may be offline)"
        ))
    })?;
    let request = VmMakeTemplate {
        vmid,
        identity: vm.identity.clone(),
    };
    let target = key.audit_target();
    if let Err(source) = state.registry.call(&vm.node, &request).await {
        let remote_conflict = matches!(&source, CallError::Remote(remote)
            if remote.kind == proxlab_protocol::ErrorKind::Conflict);
        audit::record(
            &state.db,
            viewer,
            "template.convert",
            &target,
            Outcome::Failed,
            &source.to_string(),
        )
        .await;
        if remote_conflict {
            return Err(BuildError::Conflict(format!(
                "VM {vmid} is running; shut it down (from its own menu, once the installation \
                 is done) and convert it then"
            )));
        }
        return Err(VmOpError::Node {
            action: "convert",
            source,
        }
        .into());
    }
    state.db.unassign_vm(key).await?;
    state
        .db
        .set_build_state(key, BuildState::Template, "")
        .await?;
    audit::record(
        &state.db,
        viewer,
        "template.convert",
        &target,
        Outcome::Ok,
        &build.name,
    )
    .await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sources() -> Vec<NodeSources> {
        vec![NodeSources {
            node: "pve1".into(),
            online: true,
            isos: vec![("local:iso/debian-12.iso".into(), 1 << 30)],
            storages: vec!["local".into()],
        }]
    }

    fn request() -> BuildRequest {
        BuildRequest {
            name: "debian-lab".into(),
            node: "pve1".into(),
            iso: "local:iso/debian-12.iso".into(),
            storage: "local".into(),
            cores: 2,
            memory_mib: 2048,
            disk_gib: 32,
            bridge: "vmbr0".into(),
            os: GuestOs::Linux,
        }
    }

    #[test]
    fn a_build_is_checked_against_what_its_node_has() {
        assert!(check(&request(), &sources()).is_ok());
        let refused = |change: &dyn Fn(&mut BuildRequest)| {
            let mut bad = request();
            change(&mut bad);
            check(&bad, &sources()).is_err()
        };
        assert!(refused(&|r| r.name = "bad name".into()));
        assert!(refused(&|r| r.node = "pve9".into()));
        assert!(refused(&|r| r.iso = "local:iso/other.iso".into()));
        assert!(refused(&|r| r.storage = "local-lvm".into()));
        assert!(refused(&|r| r.bridge = "vmbr0,tag=5".into()));
        assert!(refused(&|r| r.cores = 0));
        assert!(refused(&|r| r.memory_mib = 1));
        assert!(refused(&|r| r.disk_gib = 0));
        let mut offline = sources();
        offline[0].online = false;
        assert!(matches!(
            check(&request(), &offline),
            Err(BuildError::Conflict(_))
        ));
    }

    #[test]
    fn os_names_round_trip() {
        for os in [GuestOs::Linux, GuestOs::Windows11, GuestOs::Other] {
            assert_eq!(parse_os(os_name(os)), Some(os));
        }
        assert_eq!(parse_os("macos"), None);
    }
}
