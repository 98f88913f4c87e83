//! What an agent reports about its node: VMs, storages, ISO images, metrics.

use serde::{Deserialize, Serialize};

/// A VM's power state as Proxmox reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PowerState {
    Running,
    Stopped,
    Paused,
    #[serde(other)]
    Unknown,
}

/// Where an IP address was learned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IpSource {
    /// The QEMU guest agent's `network-get-interfaces`.
    GuestAgent,
    /// The node's neighbour (ARP/NDP) table, matched by MAC.
    Neighbor,
    #[serde(other)]
    Unknown,
}

/// One address of a VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpAddress {
    pub address: String,
    /// The NIC's MAC, upper-case.
    pub mac: String,
    pub source: IpSource,
}

/// A disk of a VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskInfo {
    /// `scsi0`, `efidisk0`, ...
    pub key: String,
    pub volid: String,
    /// The `size=` Proxmox records, in bytes (0 if unknown).
    #[serde(default)]
    pub size_bytes: u64,
}

/// A network device of a VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NicInfo {
    /// `net0`, ...
    pub key: String,
    pub model: String,
    /// Upper-case MAC address.
    pub mac: String,
    #[serde(default)]
    pub bridge: Option<String>,
    #[serde(default)]
    pub vlan: Option<u16>,
}

/// A VM (or template) on the node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VmInfo {
    pub vmid: u32,
    pub name: String,
    pub node: String,
    pub status: PowerState,
    pub template: bool,
    pub cores: u32,
    pub sockets: u32,
    pub memory_mib: u64,
    #[serde(default)]
    pub disks: Vec<DiskInfo>,
    #[serde(default)]
    pub nics: Vec<NicInfo>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub lock: Option<String>,
    #[serde(default)]
    pub uptime_secs: u64,
    /// CPU use of the VM process, as a fraction of one host CPU.
    #[serde(default)]
    pub cpu: f64,
    /// Resident memory of the VM process.
    #[serde(default)]
    pub mem_bytes: u64,
    #[serde(default)]
    pub ips: Vec<IpAddress>,
    /// The VM's SMBIOS UUID (`smbios1: uuid=...`), made fresh for every clone: a VMID that is
    /// reused for another VM comes with another identity. `None` when the config has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    /// Config keys with a change that waits for the VM's next start (its `[PENDING]`
    /// section), sorted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending: Vec<String>,
}

/// A storage as this node sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StorageInfo {
    pub id: String,
    /// `dir`, `nfs`, `lvmthin`, ...
    pub kind: String,
    pub shared: bool,
    pub active: bool,
    #[serde(default)]
    pub content: Vec<String>,
    pub total_bytes: u64,
    pub used_bytes: u64,
    pub avail_bytes: u64,
}

/// An installation image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IsoInfo {
    pub storage: String,
    pub volid: String,
    pub size_bytes: u64,
}

/// Everything the agent knows, sent on connect and when the hub asks.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Inventory {
    pub vms: Vec<VmInfo>,
    #[serde(default)]
    pub storages: Vec<StorageInfo>,
    #[serde(default)]
    pub isos: Vec<IsoInfo>,
}

/// What changed since the last snapshot or delta.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct InventoryDelta {
    /// New or changed VMs, in full.
    #[serde(default)]
    pub upserted: Vec<VmInfo>,
    /// VMIDs that are gone.
    #[serde(default)]
    pub removed: Vec<u32>,
    /// Storages, in full, when any of them changed.
    #[serde(default)]
    pub storages: Option<Vec<StorageInfo>>,
    /// ISO images, in full, when the list changed.
    #[serde(default)]
    pub isos: Option<Vec<IsoInfo>>,
}

/// One running VM's load.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VmLoad {
    pub vmid: u32,
    pub cpu: f64,
    pub mem_bytes: u64,
    pub uptime_secs: u64,
}

/// Node load, sent every few seconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeMetrics {
    /// Host CPU use, 0.0 to 1.0 across all CPUs.
    pub cpu: f64,
    pub cpu_count: u32,
    pub memory_total_bytes: u64,
    pub memory_used_bytes: u64,
    pub load_average: [f64; 3],
    pub uptime_secs: u64,
    #[serde(default)]
    pub storages: Vec<StorageInfo>,
    /// Load of each running VM.
    #[serde(default)]
    pub vms: Vec<VmLoad>,
}
