//! Requests that act on one VM, and on the agent's reporting.

use serde::{Deserialize, Serialize};

use crate::inventory::PowerState;
use crate::request::{NoProgress, Request};

/// An empty answer: the operation succeeded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Done {}

/// What to do with a VM's power.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum PowerAction {
    Start,
    /// Hard stop (like pulling the plug).
    Stop,
    /// ACPI shutdown; after `timeout_secs`, a hard stop if `force_stop`, else an error.
    Shutdown {
        timeout_secs: u32,
        force_stop: bool,
    },
    Reboot,
    Reset,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmPower {
    pub vmid: u32,
    #[serde(flatten)]
    pub action: PowerAction,
}

/// The VM's state after the action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PowerReply {
    pub status: PowerState,
}

impl Request for VmPower {
    const KIND: &'static str = "vm-power";
    type Response = PowerReply;
    type Progress = NoProgress;
}

/// Destroys a VM with its disks. Templates only with `allow_template`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmDestroy {
    pub vmid: u32,
    #[serde(default)]
    pub allow_template: bool,
    /// Destroy only if the VM still has this identity (see `VmInfo::identity`); otherwise
    /// the VM is answered as not found. An older agent ignores it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
}

impl Request for VmDestroy {
    const KIND: &'static str = "vm-destroy";
    type Response = Done;
    type Progress = NoProgress;
}

/// Snapshot operations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum SnapshotOp {
    Create {
        #[serde(default)]
        description: Option<String>,
    },
    Rollback,
    Delete,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmSnapshot {
    pub vmid: u32,
    pub name: String,
    #[serde(flatten)]
    pub op: SnapshotOp,
}

impl Request for VmSnapshot {
    const KIND: &'static str = "vm-snapshot";
    type Response = Done;
    type Progress = NoProgress;
}

/// Returns a linked clone to its base: a fresh overlay, same VMID, config and MACs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmReset {
    pub vmid: u32,
    /// Leave the VM stopped instead of restoring its power state.
    #[serde(default)]
    pub stopped: bool,
    /// Act only if the VM still has this identity (see `VmInfo::identity`); otherwise the
    /// VM is answered as not found. An older agent ignores it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
}

impl Request for VmReset {
    const KIND: &'static str = "vm-reset";
    type Response = PowerReply;
    type Progress = NoProgress;
}

/// Moves a linked clone onto another base (a new version of its class): each of its overlays
/// is made anew on the base's image of the same slot, under the same file name where it
/// can be, so the student's writes are gone and the VM's config, MACs and identity stay.
/// Slots the base has and the VM lacks get fresh overlays; overlays of slots the base lacks
/// go. The VM must be stopped. Repeating a finished re-image changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmReimage {
    pub vmid: u32,
    pub base_vmid: u32,
    /// Act only if the VM still has this identity (see `VmInfo::identity`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
}

impl Request for VmReimage {
    const KIND: &'static str = "vm-reimage";
    type Response = PowerReply;
    type Progress = NoProgress;
}

/// Changes a VM's hardware, keeping everything else of its config (EFI and TPM disks, OS
/// and machine type, cloud-init, `args`). Every field that is set is applied: a stopped VM
/// (or a template) takes it at once; a running one takes what Proxmox hot-plugs at once and
/// the rest at its next start (its config's `[PENDING]` section). Disks only grow, and grow
/// at once. Repeating a change that was applied changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmHardware {
    pub vmid: u32,
    /// Act only if the VM still has this identity (see `VmInfo::identity`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    #[serde(flatten)]
    pub change: HardwareChange,
}

/// A change of hardware: what is `None` (or empty) stays as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HardwareChange {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cores: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mib: Option<u64>,
    /// Disks to grow, by slot (`scsi0`), to an absolute size.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disks: Vec<DiskSize>,
    /// A NIC to move to another bridge or VLAN; its model, MAC and other options stay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nic: Option<NicPlacement>,
    /// Gives the VM a serial port on a socket (`serial0: socket`) if it has none, for the
    /// text console.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub add_serial: bool,
}

impl HardwareChange {
    /// Whether the change changes nothing.
    pub fn is_empty(&self) -> bool {
        self == &Self::default()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskSize {
    pub slot: String,
    pub size_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NicPlacement {
    /// `N` of `netN`.
    pub index: u32,
    pub bridge: String,
    /// The VLAN tag; `None` for an untagged port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan: Option<u16>,
}

impl Request for VmHardware {
    const KIND: &'static str = "vm-hardware";
    type Response = HardwareReply;
    type Progress = NoProgress;
}

/// What a hardware change did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HardwareReply {
    /// Config keys that changed at once.
    #[serde(default)]
    pub applied: Vec<String>,
    /// Config keys that wait for the VM's next start.
    #[serde(default)]
    pub pending: Vec<String>,
}

/// Asks the agent to send its full inventory again.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resync {}

impl Request for Resync {
    const KIND: &'static str = "resync";
    type Response = Done;
    type Progress = NoProgress;
}

/// Creates an empty VM: a blank disk and one NIC, for classes without a template. Creating
/// a VM that already exists with this name succeeds (a retried operation).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmCreate {
    pub vmid: u32,
    pub name: String,
    pub cores: u32,
    pub memory_mib: u64,
    /// The disk's size and the storage it goes on.
    pub disk_gib: u32,
    pub storage: String,
    /// The bridge of the VM's NIC, such as `vmbr0`.
    pub bridge: String,
}

impl Request for VmCreate {
    const KIND: &'static str = "vm-create";
    type Response = Done;
    type Progress = NoProgress;
}

/// Creates a VM to install an operating system on from an ISO image the node holds: an empty
/// disk, one NIC, the ISO in a CD drive it boots from, and the hardware the OS wants (see
/// [`GuestOs`]). Like [`VmCreate`], a VM that already exists with this name is a retry and
/// succeeds. No password is part of it: the installer asks in the VM's console.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmInstall {
    #[serde(flatten)]
    pub vm: VmCreate,
    /// The ISO's volume id, such as `local:iso/debian-12.iso`.
    pub iso: String,
    pub os: GuestOs,
}

impl Request for VmInstall {
    const KIND: &'static str = "vm-install";
    type Response = Done;
    type Progress = NoProgress;
}

/// The operating system a new VM is made for, which decides its machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GuestOs {
    /// Linux 2.6 and later: virtio disk and NIC, a serial port for the text console, the
    /// guest agent on.
    Linux,
    /// Windows 11: q35, UEFI (OVMF) with an EFI disk and pre-enrolled Secure Boot keys,
    /// TPM 2.0, and a SATA disk and e1000e NIC the installer has drivers for.
    Windows11,
    /// Anything else: Proxmox's defaults.
    Other,
}

/// Makes a stopped VM a template: its CD drives are emptied (an ISO is not part of a
/// template, and may not exist on other nodes), then `qm template`. A VM that is a template
/// already succeeds (a retry).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmMakeTemplate {
    pub vmid: u32,
    /// Act only if the VM still has this identity (see `VmInfo::identity`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
}

impl Request for VmMakeTemplate {
    const KIND: &'static str = "vm-make-template";
    type Response = Done;
    type Progress = NoProgress;
}
