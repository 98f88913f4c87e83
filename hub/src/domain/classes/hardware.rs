//! A class's hardware change: cores, memory, disk sizes (grow only), the first NIC's bridge
//! and VLAN, and a serial port, applied as a job to every base of the class (so new VMs and
//! re-images get it), then its teacher and student VMs. Each VM keeps the rest of its config
//! (see the agent's `vm-hardware`); a running VM takes what Proxmox cannot hot-plug at its
//! next start, and its tile says so. The change is idempotent, so a job a restart cut short
//! simply runs again.

use proxlab_protocol::inventory::DiskInfo;
use proxlab_protocol::vm_ops::{DiskSize, HardwareChange, NicPlacement, VmHardware};
use serde::Serialize;

use super::steps::StepResult;
use super::{ClassError, owned_class};
use crate::HubState;
use crate::db::classes::{ClassRow, ClassVmRow, JobRow};
use crate::db::hardware::EmptyVmHardware;
use crate::db::inventory::VmRow;
use crate::db::now_unix;
use crate::db::states::{ClassState, ClassVmKind, ClassVmState};
use crate::db::tasks::TaskResultRow;
use crate::domain::audit::{self, Outcome};
use crate::domain::viewer::Viewer;

/// The most cores a class's VMs may have (a node refuses more than it has).
pub const MAX_CORES: u32 = 512;
/// Memory bounds in MiB, as Proxmox has them.
pub const MIN_MEMORY_MIB: u64 = 16;
pub const MAX_MEMORY_MIB: u64 = 4 << 20;
/// The largest disk, in GiB.
pub const MAX_DISK_GIB: u64 = 65_536;
/// How many VMs change at once.
const CONCURRENCY: usize = 8;
/// The task log's name for a hardware change.
const TASK_ACTION: &str = "change hardware";

/// A hardware change as an owner asks for it; `None` keeps a value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HardwareRequest {
    pub cores: Option<u32>,
    pub memory_mib: Option<u64>,
    /// Disks to grow: slot and new size in GiB.
    pub disks: Vec<(String, u64)>,
    /// The first NIC's bridge, and its VLAN (`None`: untagged). Both change together.
    pub network: Option<(String, Option<u16>)>,
    pub add_serial: bool,
}

/// The class's hardware as its page shows it: what its VMs are made with now.
#[derive(Debug, Clone, Default, Serialize)]
pub struct HardwareView {
    pub cores: u32,
    pub memory_mib: u64,
    pub disks: Vec<DiskView>,
    pub bridge: Option<String>,
    pub vlan: Option<u16>,
    /// VMs of the class with a change waiting for their next start.
    pub waiting_vms: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct DiskView {
    pub slot: String,
    pub size_gib: u64,
}

/// Where a class's hardware is read from: its current base (new VMs are cloned from it), or
/// for a class of empty VMs, one of them.
fn reference<'a>(
    class: &ClassRow,
    rows: &[ClassVmRow],
    inventory: &'a [VmRow],
) -> Option<&'a VmRow> {
    let in_inventory = |row: &ClassVmRow| inventory.iter().find(|vm| vm.key == row.key);
    let ready = rows.iter().filter(|row| row.state == ClassVmState::Ready);
    match class.template {
        Some(_) => ready
            .filter(|row| row.kind == ClassVmKind::Base && row.version == class.current_version)
            .find_map(in_inventory),
        None => ready
            .filter(|row| row.kind != ClassVmKind::Base)
            .find_map(in_inventory),
    }
}

/// Disks that can grow: not EFI vars or TPM state.
fn growable(disk: &DiskInfo) -> bool {
    !matches!(disk.key.as_str(), "efidisk0" | "tpmstate0")
}

/// The class's hardware, as [`HardwareView`] says.
pub async fn hardware(
    state: &HubState,
    viewer: &Viewer,
    class_id: i64,
) -> Result<HardwareView, ClassError> {
    let class = owned_class(state, viewer, class_id).await?;
    let rows = state.db.class_vms(class_id).await?;
    let inventory = class_inventory(state, &rows).await?;
    Ok(view(&class, &rows, &inventory))
}

async fn class_inventory(state: &HubState, rows: &[ClassVmRow]) -> Result<Vec<VmRow>, ClassError> {
    Ok(state
        .db
        .find_vms(&crate::db::inventory::VmFilter {
            keys: Some(rows.iter().map(|vm| vm.key).collect()),
            ..Default::default()
        })
        .await?)
}

fn view(class: &ClassRow, rows: &[ClassVmRow], inventory: &[VmRow]) -> HardwareView {
    let waiting_vms = inventory.iter().filter(|vm| !vm.pending.is_empty()).count();
    match reference(class, rows, inventory) {
        Some(vm) => HardwareView {
            cores: vm.cores,
            memory_mib: vm.memory_mib,
            disks: vm
                .disks
                .iter()
                .filter(|disk| growable(disk))
                .map(|disk| DiskView {
                    slot: disk.key.clone(),
                    size_gib: disk.size_bytes.div_ceil(1 << 30),
                })
                .collect(),
            bridge: vm.nics.first().and_then(|nic| nic.bridge.clone()),
            vlan: vm.nics.first().and_then(|nic| nic.vlan),
            waiting_vms,
        },
        None => HardwareView {
            cores: class.cores.unwrap_or(0),
            memory_mib: class.memory_mib.unwrap_or(0),
            disks: class
                .disk_gib
                .map(|gib| DiskView {
                    slot: "scsi0".into(),
                    size_gib: u64::from(gib),
                })
                .into_iter()
                .collect(),
            bridge: class.bridge.clone(),
            vlan: None,
            waiting_vms,
        },
    }
}

/// Checks a request against the class's hardware and turns it into the change its VMs get:
/// only what differs. Disks only grow.
fn change_for(request: &HardwareRequest, now: &HardwareView) -> Result<HardwareChange, ClassError> {
    let invalid = |message: String| Err(ClassError::Invalid(message));
    let mut change = HardwareChange::default();
    if let Some(cores) = request.cores {
        if !(1..=MAX_CORES).contains(&cores) {
            return invalid(format!("a VM has 1 to {MAX_CORES} cores"));
        }
        change.cores = (cores != now.cores).then_some(cores);
    }
    if let Some(memory) = request.memory_mib {
        if !(MIN_MEMORY_MIB..=MAX_MEMORY_MIB).contains(&memory) {
            return invalid(format!(
                "a VM has {MIN_MEMORY_MIB} to {MAX_MEMORY_MIB} MiB of memory"
            ));
        }
        change.memory_mib = (memory != now.memory_mib).then_some(memory);
    }
    for (slot, gib) in &request.disks {
        let Some(disk) = now.disks.iter().find(|disk| &disk.slot == slot) else {
            return invalid(format!("the class's VMs have no disk {slot}"));
        };
        if !(1..=MAX_DISK_GIB).contains(gib) {
            return invalid(format!("a disk has 1 to {MAX_DISK_GIB} GiB"));
        }
        if *gib < disk.size_gib {
            return invalid(format!("{slot} has {} GiB; disks only grow", disk.size_gib));
        }
        if *gib > disk.size_gib {
            change.disks.push(DiskSize {
                slot: slot.clone(),
                size_bytes: gib << 30,
            });
        }
    }
    if let Some((bridge, vlan)) = &request.network {
        let valid = !bridge.is_empty()
            && bridge.len() <= 15
            && bridge
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !valid {
            return invalid(
                "a bridge name has 1 to 15 letters, digits, '-', '_' or '.', such as vmbr0".into(),
            );
        }
        if vlan.is_some_and(|tag| !(1..=4094).contains(&tag)) {
            return invalid("a VLAN tag is 1 to 4094".into());
        }
        if now.bridge.as_deref() != Some(bridge.as_str()) || now.vlan != *vlan {
            change.nic = Some(NicPlacement {
                index: 0,
                bridge: bridge.clone(),
                vlan: *vlan,
            });
        }
    }
    change.add_serial = request.add_serial;
    if change.is_empty() {
        return invalid("that is the hardware the class has; nothing to change".into());
    }
    Ok(change)
}

/// What a change does, in words, for the audit log and messages.
pub fn describe(change: &HardwareChange) -> String {
    let mut parts = Vec::new();
    if let Some(cores) = change.cores {
        parts.push(format!("{cores} cores"));
    }
    if let Some(memory) = change.memory_mib {
        parts.push(format!("{memory} MiB of memory"));
    }
    for disk in &change.disks {
        parts.push(format!(
            "{} grown to {} GiB",
            disk.slot,
            disk.size_bytes >> 30
        ));
    }
    if let Some(nic) = &change.nic {
        parts.push(match nic.vlan {
            Some(tag) => format!("net{} on {} VLAN {tag}", nic.index, nic.bridge),
            None => format!("net{} on {}", nic.index, nic.bridge),
        });
    }
    if change.add_serial {
        parts.push("a serial port".into());
    }
    parts.join(", ")
}

/// Starts changing the class's hardware. Returns the job.
pub async fn change_hardware(
    state: &HubState,
    viewer: &Viewer,
    class_id: i64,
    request: &HardwareRequest,
) -> Result<i64, ClassError> {
    let class = owned_class(state, viewer, class_id).await?;
    if class.state != ClassState::Active {
        return Err(ClassError::Conflict("the class is being deleted".into()));
    }
    let rows = state.db.class_vms(class_id).await?;
    let inventory = class_inventory(state, &rows).await?;
    let change = change_for(request, &view(&class, &rows, &inventory))?;
    let spec =
        serde_json::to_string(&change).map_err(|err| ClassError::Invalid(err.to_string()))?;
    let job = state
        .db
        .start_hardware_change(class_id, &spec, viewer.id, now_unix())
        .await
        .map_err(|err| match err {
            crate::db::DbError::Conflict(message) => ClassError::Conflict(message),
            other => other.into(),
        })?;
    audit::record(
        &state.db,
        viewer,
        "class.hardware",
        &format!("class:{class_id}"),
        Outcome::Ok,
        &describe(&change),
    )
    .await;
    state.jobs.wake(job);
    Ok(job)
}

/// Runs a hardware-change job: the bases first, then the teacher and student VMs (listed
/// after the bases changed, so a VM cloned meanwhile is not missed). Each VM's outcome goes
/// to the class's task log.
pub(super) async fn run(state: &HubState, job: &JobRow, class: &ClassRow) -> StepResult<String> {
    let spec = job.spec.as_deref().ok_or("the job says no hardware")?;
    let change: HardwareChange = serde_json::from_str(spec)
        .map_err(|err| format!("the job's hardware is unreadable: {err}"))?;
    state
        .db
        .end_cut_short_tasks(class.id, TASK_ACTION, now_unix())
        .await
        .map_err(|err| err.to_string())?;
    let ready = |kind_is_base: bool| async move {
        state
            .db
            .class_vms(class.id)
            .await
            .map(|rows| {
                rows.into_iter()
                    .filter(|row| row.state == ClassVmState::Ready)
                    .filter(|row| (row.kind == ClassVmKind::Base) == kind_is_base)
                    .collect::<Vec<_>>()
            })
            .map_err(|err| err.to_string())
    };
    let bases = ready(true).await?;
    let total = bases.len() + ready(false).await?.len();
    let task = state
        .db
        .insert_task(
            class.id,
            TASK_ACTION,
            "a hardware change",
            total,
            now_unix(),
        )
        .await
        .map_err(|err| err.to_string())?;
    state.jobs.announce(class.id);
    let mut outcomes = apply_all(state, &bases, &change, task).await;
    let vms = ready(false).await?;
    outcomes.extend(apply_all(state, &vms, &change, task).await);
    if class.template.is_none() {
        let hardware = EmptyVmHardware {
            cores: change.cores,
            memory_mib: change.memory_mib,
            disk_gib: change
                .disks
                .iter()
                .find(|disk| disk.slot == "scsi0")
                .map(|disk| (disk.size_bytes >> 30) as u32),
            bridge: change.nic.as_ref().map(|nic| nic.bridge.as_str()),
        };
        state
            .db
            .set_empty_vm_hardware(class.id, &hardware)
            .await
            .map_err(|err| err.to_string())?;
    }
    state
        .db
        .finish_task(task, now_unix())
        .await
        .map_err(|err| err.to_string())?;
    state.jobs.announce(class.id);
    report(&change, &outcomes)
}

/// What happened to one VM: the keys left for its next start, or why it failed.
type VmOutcome = (u32, Result<Vec<String>, String>);

async fn apply_all(
    state: &HubState,
    targets: &[ClassVmRow],
    change: &HardwareChange,
    task: i64,
) -> Vec<VmOutcome> {
    let permits = tokio::sync::Semaphore::new(CONCURRENCY);
    let permits = &permits;
    let runs = targets.iter().map(|vm| async move {
        let _permit = permits.acquire().await;
        let request = VmHardware {
            vmid: vm.vmid,
            identity: vm.identity.clone(),
            change: change.clone(),
        };
        let outcome = super::jobs::call_when_online(state, &vm.node, &request)
            .await
            .map(|reply| reply.pending)
            .map_err(|err| err.to_string());
        let result = TaskResultRow {
            key: vm.key,
            vmid: vm.vmid,
            ok: outcome.is_ok(),
            message: match &outcome {
                Ok(pending) if pending.is_empty() => "Hardware changed.".to_owned(),
                Ok(pending) => format!(
                    "Hardware changed; {} at its next start.",
                    pending.join(", ")
                ),
                Err(err) => crate::text::sentence(&format!("not changed: {err}")),
            },
            detail: String::new(),
        };
        if let Err(err) = state.db.insert_task_result(task, &result).await {
            tracing::error!(%err, vmid = vm.vmid, "cannot record a hardware change");
        }
        (vm.vmid, outcome)
    });
    futures_util::future::join_all(runs).await
}

/// The job's message: how many VMs changed, which wait for their next start, which failed.
fn report(change: &HardwareChange, outcomes: &[VmOutcome]) -> StepResult<String> {
    let failed: Vec<String> = outcomes
        .iter()
        .filter_map(|(vmid, outcome)| {
            outcome
                .as_ref()
                .err()
                .map(|err| format!("VM {vmid}: {err}"))
        })
        .collect();
    let waiting: Vec<String> = outcomes
        .iter()
        .filter(|(_, outcome)| outcome.as_ref().is_ok_and(|pending| !pending.is_empty()))
        .map(|(vmid, _)| vmid.to_string())
        .collect();
    let changed = outcomes.len() - failed.len();
    let mut message = format!(
        "Hardware changed ({}) on {}.",
        describe(change),
        super::jobs::count_vms(changed)
    );
    if !waiting.is_empty() {
        message.push_str(&format!(
            " Running VMs take part of it at their next start: {}.",
            waiting.join(", ")
        ));
    }
    if failed.is_empty() {
        Ok(message)
    } else {
        Err(format!(
            "{message} {} not changed: {}",
            super::jobs::count_vms(failed.len()),
            failed.join("; ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> HardwareView {
        HardwareView {
            cores: 2,
            memory_mib: 2048,
            disks: vec![DiskView {
                slot: "scsi0".into(),
                size_gib: 32,
            }],
            bridge: Some("vmbr0".into()),
            vlan: None,
            waiting_vms: 0,
        }
    }

    #[test]
    fn only_what_differs_is_changed() {
        let request = HardwareRequest {
            cores: Some(2),
            memory_mib: Some(4096),
            disks: vec![("scsi0".into(), 32)],
            network: Some(("vmbr0".into(), Some(30))),
            add_serial: false,
        };
        let change = change_for(&request, &now()).unwrap();
        assert_eq!(change.cores, None);
        assert_eq!(change.memory_mib, Some(4096));
        assert!(change.disks.is_empty());
        assert_eq!(change.nic.unwrap().vlan, Some(30));
    }

    #[test]
    fn bad_and_empty_requests_are_refused() {
        let refused = |request: HardwareRequest| {
            matches!(change_for(&request, &now()), Err(ClassError::Invalid(_)))
        };
        assert!(refused(HardwareRequest::default()), "nothing to change");
        assert!(refused(HardwareRequest {
            cores: Some(2),
            ..HardwareRequest::default()
        }));
        assert!(refused(HardwareRequest {
            cores: Some(0),
            ..HardwareRequest::default()
        }));
        assert!(refused(HardwareRequest {
            memory_mib: Some(8),
            ..HardwareRequest::default()
        }));
        assert!(refused(HardwareRequest {
            disks: vec![("scsi0".into(), 16)],
            ..HardwareRequest::default()
        }));
        assert!(refused(HardwareRequest {
            disks: vec![("scsi1".into(), 64)],
            ..HardwareRequest::default()
        }));
        assert!(refused(HardwareRequest {
            network: Some(("vmbr0;rm".into(), None)),
            ..HardwareRequest::default()
        }));
        assert!(refused(HardwareRequest {
            network: Some(("vmbr1".into(), Some(0))),
            ..HardwareRequest::default()
        }));
    }

    #[test]
    fn a_change_reads_as_a_sentence() {
        let change = HardwareChange {
            cores: Some(4),
            disks: vec![DiskSize {
                slot: "scsi0".into(),
                size_bytes: 64 << 30,
            }],
            nic: Some(NicPlacement {
                index: 0,
                bridge: "vmbr1".into(),
                vlan: Some(30),
            }),
            add_serial: true,
            ..HardwareChange::default()
        };
        assert_eq!(
            describe(&change),
            "4 cores, scsi0 grown to 64 GiB, net0 on vmbr1 VLAN 30, a serial port"
        );
    }
}
