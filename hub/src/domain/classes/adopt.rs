//! Adopting VMs that exist on the nodes into a class: an admin picks a template and the
//! students' VMs (by selection or a VMID range) and maps them to students; proxlab manages
//! them from then on. The template becomes the class's base (version 1), so more VMs can be
//! cloned from it. A VM whose disks are linked clones of the template can be reset to it; any
//! other VM is started and stopped only. Nothing on the nodes changes at import, and proxlab
//! never destroys an adopted VM (see `jobs::destroy`).

use std::collections::{BTreeMap, BTreeSet};

use proxlab_pve::volid::{Volume, VolumeId};
use serde::Serialize;

use super::{ClassError, check_class_name};
use crate::HubState;
use crate::db::DbError;
use crate::db::adoption::{AdoptedVm, NewAdoption};
use crate::db::classes::NewClass;
use crate::db::inventory::{VmFilter, VmRow};
use crate::db::now_unix;
use crate::db::states::Adoption;
use crate::db::users::Role;
use crate::domain::audit::{self, Outcome};
use crate::domain::viewer::Viewer;
use crate::vm_key::VmKey;

/// The most VMs one adoption takes.
pub const MAX_ADOPTED: usize = 500;

/// What an admin asks to adopt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdoptRequest {
    pub name: String,
    /// The teacher who owns the class.
    pub owner: String,
    pub template: VmKey,
    /// VMs picked one by one.
    pub vms: Vec<VmKey>,
    /// Every VM (not a template, in no class) of the template's cluster with a VMID in this
    /// range, both ends included.
    pub range: Option<(u32, u32)>,
    /// Who gets which VM.
    pub students: BTreeMap<VmKey, String>,
}

/// A VM that could be adopted, as the page lists it.
#[derive(Debug, Clone, Serialize)]
pub struct Candidate {
    /// `CLUSTER-VMID`, as the form sends it back.
    pub id: VmKey,
    pub vmid: u32,
    pub name: String,
    pub node: String,
    pub template: bool,
    /// The template its disks are linked clones of.
    pub linked_to: Option<u32>,
    /// Who it is assigned to outside any class.
    pub assignee: Option<String>,
}

/// The template a VM's disks are all linked clones of (EFI, TPM and cloud-init disks aside,
/// which clones get as copies).
pub fn linked_to(vm: &VmRow) -> Option<u32> {
    let mut bases = BTreeSet::new();
    for disk in &vm.disks {
        if matches!(disk.key.as_str(), "efidisk0" | "tpmstate0") || disk.volid.contains("cloudinit")
        {
            continue;
        }
        let parsed: VolumeId = disk.volid.parse().ok()?;
        let image = match parsed.file_volume() {
            Ok(Volume::Image(image)) => image,
            Ok(Volume::Iso(_)) => return None,
            Err(_) => parsed.block_volume().ok()?,
        };
        bases.insert(image.base?.vmid);
    }
    match (bases.len(), bases.first()) {
        (1, Some(base)) => Some(*base),
        _ => None,
    }
}

fn candidate(vm: &VmRow) -> Candidate {
    Candidate {
        id: vm.key,
        vmid: vm.vmid,
        name: vm.name.clone(),
        node: vm.node.clone(),
        template: vm.template,
        linked_to: linked_to(vm),
        assignee: vm.assignee.clone(),
    }
}

/// VMs and templates in no class, for the adopt form.
pub async fn candidates(state: &HubState, viewer: &Viewer) -> Result<Vec<Candidate>, ClassError> {
    if !viewer.is_admin() {
        return Err(ClassError::NotFound);
    }
    let vms = state
        .db
        .find_vms(&VmFilter {
            in_class: Some(false),
            ..VmFilter::default()
        })
        .await?;
    Ok(vms.iter().map(candidate).collect())
}

/// Adopts the VMs of `request` into a new class. Returns its id.
pub async fn adopt(
    state: &HubState,
    viewer: &Viewer,
    request: &AdoptRequest,
) -> Result<i64, ClassError> {
    if !viewer.is_admin() {
        return Err(ClassError::NotFound);
    }
    check_class_name(&request.name)?;
    let invalid = |message: String| ClassError::Invalid(message);
    let owner = state
        .db
        .user_by_name(request.owner.trim())
        .await?
        .filter(|user| matches!(user.role, Role::Teacher | Role::Admin) && !user.disabled)
        .ok_or_else(|| invalid(format!("{:?} is no teacher or admin", request.owner)))?;
    let free = state
        .db
        .find_vms(&VmFilter {
            in_class: Some(false),
            ..VmFilter::default()
        })
        .await?;
    for key in std::iter::once(&request.template).chain(&request.vms) {
        if let Some(vm) = state.db.vm(*key).await?
            && let Some(class) = vm.class_id
        {
            return Err(ClassError::Conflict(format!(
                "VM {} belongs to class {class} already",
                key.vmid
            )));
        }
    }
    let template = free
        .iter()
        .find(|vm| vm.key == request.template && vm.template)
        .ok_or_else(|| invalid(format!("VM {} is no template", request.template.vmid)))?;
    let mut wanted: BTreeSet<VmKey> = request.vms.iter().copied().collect();
    if let Some((first, last)) = request.range {
        if first > last {
            return Err(invalid(format!("the range {first}–{last} is empty")));
        }
        wanted.extend(
            free.iter()
                .filter(|vm| !vm.template && vm.key.cluster == template.key.cluster)
                .filter(|vm| (first..=last).contains(&vm.vmid))
                .map(|vm| vm.key),
        );
    }
    if let Some(stranger) = wanted
        .iter()
        .find(|key| key.cluster != template.key.cluster)
    {
        return Err(invalid(format!(
            "VM {} is in another cluster than the template; a class stays in one",
            stranger.vmid
        )));
    }
    if wanted.is_empty() {
        return Err(invalid("pick the VMs to adopt".into()));
    }
    if wanted.len() > MAX_ADOPTED {
        return Err(invalid(format!("adopt at most {MAX_ADOPTED} VMs at once")));
    }
    let mut students = BTreeMap::new();
    let mut holders = BTreeSet::new();
    for (key, username) in &request.students {
        let username = username.trim();
        if username.is_empty() {
            continue;
        }
        if !wanted.contains(key) {
            return Err(invalid(format!(
                "VM {} is given to {username} but not adopted",
                key.vmid
            )));
        }
        let user = state
            .db
            .user_by_name(username)
            .await?
            .filter(|user| !user.disabled)
            .ok_or_else(|| invalid(format!("there is no account {username:?}")))?;
        if !holders.insert(user.id) {
            return Err(invalid(format!(
                "{username} is given two VMs; a student has one"
            )));
        }
        students.insert(*key, user.id);
    }
    let mut vms = Vec::new();
    for key in &wanted {
        let vm = free
            .iter()
            .find(|vm| vm.key == *key && !vm.template)
            .ok_or_else(|| invalid(format!("VM {} is not a VM outside every class", key.vmid)))?;
        vms.push(AdoptedVm {
            key: vm.key,
            node: vm.node.clone(),
            identity: vm.identity.clone(),
            adoption: if linked_to(vm) == Some(template.vmid) {
                Adoption::Linked
            } else {
                Adoption::Plain
            },
            student: students.get(key).copied(),
        });
    }
    let linked = vms
        .iter()
        .filter(|vm| vm.adoption == Adoption::Linked)
        .count();
    let adoption = NewAdoption {
        class: NewClass {
            name: request.name.trim().to_owned(),
            description: format!(
                "Adopted from VMs on the nodes, with template {}.",
                template.vmid
            ),
            template: Some(template.key),
            seats: vms.len() as u32,
            ..NewClass::default()
        },
        owner: owner.id,
        template: AdoptedVm {
            key: template.key,
            node: template.node.clone(),
            identity: template.identity.clone(),
            adoption: Adoption::Template,
            student: None,
        },
        vms,
        adopted_by: viewer.id,
        now: now_unix(),
    };
    let class_id = state
        .db
        .adopt_class(&adoption)
        .await
        .map_err(|err| match err {
            DbError::Conflict(message) => ClassError::Conflict(message),
            other => other.into(),
        })?;
    audit::record(
        &state.db,
        viewer,
        "class.adopt",
        &format!("class:{class_id}"),
        Outcome::Ok,
        &format!(
            "template {}, {} VMs ({linked} linked clones of it), {} given to students",
            template.vmid,
            wanted.len(),
            students.len()
        ),
    )
    .await;
    state.jobs.announce(class_id);
    Ok(class_id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proxlab_protocol::inventory::DiskInfo;

    fn vm_with(disks: &[(&str, &str)]) -> VmRow {
        let mut vm = VmRow::sample(101);
        vm.disks = disks
            .iter()
            .map(|(key, volid)| DiskInfo {
                key: (*key).into(),
                volid: (*volid).into(),
                size_bytes: 0,
            })
            .collect();
        vm
    }

    #[test]
    fn a_linked_clone_names_its_template() {
        let linked = vm_with(&[
            (
                "scsi0",
                "local:9000/base-9000-disk-0.qcow2/101/vm-101-disk-0.qcow2",
            ),
            ("efidisk0", "local:101/vm-101-disk-1.raw"),
            ("scsi1", "local-lvm:base-9000-disk-1/vm-101-disk-2"),
        ]);
        assert_eq!(linked_to(&linked), Some(9000));
        let full = vm_with(&[("scsi0", "local:101/vm-101-disk-0.qcow2")]);
        assert_eq!(linked_to(&full), None);
        let mixed = vm_with(&[
            (
                "scsi0",
                "local:9000/base-9000-disk-0.qcow2/101/vm-101-disk-0.qcow2",
            ),
            (
                "scsi1",
                "local:9001/base-9001-disk-0.qcow2/101/vm-101-disk-1.qcow2",
            ),
        ]);
        assert_eq!(linked_to(&mixed), None, "two templates");
        assert_eq!(linked_to(&vm_with(&[])), None, "no disk");
    }
}
