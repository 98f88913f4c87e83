//! What pages and the API show of VMs, nodes and templates: one view model per object, used
//! for JSON and for templates alike, so both always agree.

use proxlab_protocol::inventory::PowerState;
use serde::Serialize;

use crate::db::inventory::VmRow;
use crate::db::nodes::NodeOverview;
use crate::domain::access::{self, VmAction};
use crate::domain::tokens::format_time;
use crate::vm_key::VmKey;

/// An address of a VM and where it was learned.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct IpView {
    pub address: String,
    pub source: String,
}

/// A VM as a user sees it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct VmView {
    /// What the hub calls it, in URLs too: `CLUSTER-VMID`.
    pub id: VmKey,
    /// Its VMID on its cluster.
    pub vmid: u32,
    pub name: String,
    pub node: String,
    /// The Proxmox cluster of its node, once the node's agent reported it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// Proxmox's power state: `running`, `stopped`, `paused`, `unknown`.
    pub status: PowerState,
    /// What to show: the power state, or `starting` for a running VM whose IP is not known
    /// yet.
    pub display_status: &'static str,
    pub status_label: &'static str,
    /// The address to connect to: the first IPv4, else the first address. Only a running VM
    /// has one: what a stopped VM had may belong to another VM by now.
    pub ip: Option<String>,
    pub ips: Vec<IpView>,
    /// The class it belongs to, if any.
    pub class_name: Option<String>,
    #[serde(skip)]
    pub class_id: Option<i64>,
    /// When its class's schedule stops it next (a running VM, within a day), such as
    /// "10:00 (Europe/Berlin)"; pages fill it in.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scheduled_stop: Option<String>,
    /// What the viewer has left of their class's quota hours, on their own VMs; pages fill
    /// it in.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hours_left: Option<HoursLeftView>,
    /// Why proxlab itself stopped a stopped VM ("Stopped after 30 min idle").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_reason: Option<String>,
    /// The class version a reset moves this VM to (its class published a newer one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub newer_version: Option<i64>,
    /// Config keys whose change waits for the VM's next start (a class's hardware change).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pending: Vec<String>,
    /// Why a running VM shows no address, once it has had time to get one.
    pub ip_note: Option<&'static str>,
    /// For a VM shown as `starting`: when (Unix seconds) to stop waiting for an address.
    pub ip_wait_until: Option<i64>,
    pub template: bool,
    pub cores: u32,
    pub sockets: u32,
    pub memory_mib: u64,
    pub assignee: Option<String>,
    pub lock: Option<String>,
    pub uptime_secs: u64,
    pub status_changed_at: String,
    /// The power actions this viewer may ask for now.
    pub actions: Vec<VmAction>,
}

/// How long a running VM is shown as starting while no address is known; after that it is
/// running, with a note on why no address is known.
pub(crate) const IP_WAIT_SECS: i64 = 180;

/// What the portal says when a running VM has no known address.
pub(crate) const IP_UNKNOWN: &str =
    "IP unknown: install the QEMU guest agent in the VM (or give it a DHCP lease the node sees)";

/// Whether a running VM waits for an address, and until when.
fn waiting_for_ip(vm: &VmRow) -> Option<i64> {
    (vm.status == PowerState::Running && vm.ips.is_empty() && !vm.nics.is_empty())
        .then_some(vm.status_changed_at + IP_WAIT_SECS)
}

fn display_status(vm: &VmRow) -> (&'static str, &'static str) {
    match vm.status {
        PowerState::Running
            if waiting_for_ip(vm).is_some_and(|until| crate::db::now_unix() < until) =>
        {
            ("starting", "Starting…")
        }
        PowerState::Running => ("running", "Running"),
        PowerState::Stopped => ("stopped", "Stopped"),
        PowerState::Paused => ("paused", "Paused"),
        PowerState::Unknown => ("unknown", "Unknown"),
    }
}

fn source_text(source: proxlab_protocol::inventory::IpSource) -> String {
    serde_json::to_value(source)
        .ok()
        .and_then(|value| value.as_str().map(str::to_owned))
        .unwrap_or_else(|| "unknown".into())
}

/// A user's quota hours left, for their VM's tile.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct HoursLeftView {
    /// "3 h 20 min"; "none" when used up.
    pub text: String,
    pub left_secs: i64,
    pub total_secs: i64,
}

impl From<crate::domain::quota::HoursLeft> for HoursLeftView {
    fn from(left: crate::domain::quota::HoursLeft) -> Self {
        Self {
            text: left.left_text(),
            left_secs: left.left_secs.max(0),
            total_secs: left.total_secs,
        }
    }
}

impl VmView {
    pub(crate) fn new(vm: &VmRow) -> Self {
        let (display_status, status_label) = display_status(vm);
        let running = vm.status == PowerState::Running;
        let ips: &[_] = if running { &vm.ips } else { &[] };
        let ip = ips
            .iter()
            .find(|ip| !ip.address.contains(':'))
            .or(ips.first())
            .map(|ip| ip.address.clone());
        let ip_wait_until = waiting_for_ip(vm).filter(|_| display_status == "starting");
        let ip_note =
            (waiting_for_ip(vm).is_some() && ip_wait_until.is_none()).then_some(IP_UNKNOWN);
        Self {
            id: vm.key,
            vmid: vm.vmid,
            name: vm.name.clone(),
            node: vm.node.clone(),
            cluster: Some(vm.cluster.clone()).filter(|name| !name.is_empty()),
            status: vm.status,
            display_status,
            status_label,
            ip,
            class_name: vm.class_name.clone(),
            class_id: vm.class_id,
            scheduled_stop: None,
            hours_left: None,
            stop_reason: vm
                .stop_reason
                .clone()
                .filter(|_| vm.status == PowerState::Stopped),
            newer_version: vm.newer_version,
            pending: vm.pending.clone(),
            ip_note,
            ip_wait_until,
            ips: ips
                .iter()
                .map(|ip| IpView {
                    address: ip.address.clone(),
                    source: source_text(ip.source),
                })
                .collect(),
            template: vm.template,
            cores: vm.cores,
            sockets: vm.sockets,
            memory_mib: vm.memory_mib,
            assignee: vm.assignee.clone(),
            lock: vm.lock.clone(),
            uptime_secs: vm.uptime_secs,
            status_changed_at: format_time(vm.status_changed_at),
            actions: access::allowed_actions(vm),
        }
    }
}

impl VmView {
    /// A VM assigned to someone that does not exist yet: a class VM being made.
    pub(crate) fn being_prepared(id: VmKey, class: Option<&str>) -> Self {
        let vmid = id.vmid;
        Self {
            id,
            vmid,
            name: class.map_or_else(
                || format!("VM {vmid}"),
                |class| format!("{class}: VM {vmid}"),
            ),
            node: "—".into(),
            cluster: None,
            status: PowerState::Unknown,
            display_status: "preparing",
            status_label: "Being prepared…",
            ip: None,
            class_name: class.map(str::to_owned),
            class_id: None,
            scheduled_stop: None,
            hours_left: None,
            stop_reason: None,
            newer_version: None,
            pending: Vec::new(),
            ip_note: None,
            ip_wait_until: None,
            ips: Vec::new(),
            template: false,
            cores: 0,
            sockets: 0,
            memory_mib: 0,
            assignee: None,
            lock: None,
            uptime_secs: 0,
            status_changed_at: String::new(),
            actions: Vec::new(),
        }
    }
}

/// A disk of a template.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct DiskView {
    pub key: String,
    pub volid: String,
    pub size: String,
}

/// A template and its specs.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct TemplateView {
    /// What the hub calls it: `CLUSTER-VMID`.
    pub id: VmKey,
    pub vmid: u32,
    pub name: String,
    pub node: String,
    pub cores: u32,
    pub sockets: u32,
    pub memory_mib: u64,
    pub disks: Vec<DiskView>,
    pub nics: usize,
    pub tags: Vec<String>,
}

impl From<&VmRow> for TemplateView {
    fn from(vm: &VmRow) -> Self {
        Self {
            id: vm.key,
            vmid: vm.vmid,
            name: vm.name.clone(),
            node: vm.node.clone(),
            cores: vm.cores,
            sockets: vm.sockets,
            memory_mib: vm.memory_mib,
            disks: vm
                .disks
                .iter()
                .map(|disk| DiskView {
                    key: disk.key.clone(),
                    volid: disk.volid.clone(),
                    size: if disk.size_bytes == 0 {
                        String::new()
                    } else {
                        human_bytes(disk.size_bytes)
                    },
                })
                .collect(),
            nics: vm.nics.len(),
            tags: vm.tags.clone(),
        }
    }
}

/// A node for the admin's overview.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct NodeView {
    pub name: String,
    /// The Proxmox cluster it belongs to (`standalone <node>` for a node in none); unknown
    /// until its agent reports it.
    pub cluster: Option<String>,
    pub online: bool,
    pub agent_version: Option<String>,
    pub remote_addr: Option<String>,
    pub enrolled_at: String,
    pub last_seen_at: Option<String>,
    pub state_changed_at: Option<String>,
    pub vm_count: u64,
    pub cpu_count: Option<u32>,
    pub cpu_percent: Option<u32>,
    pub load1: Option<f64>,
    pub memory_used_bytes: Option<u64>,
    pub memory_total_bytes: Option<u64>,
    pub memory_percent: Option<u32>,
    pub memory_label: String,
    pub storage_used_bytes: u64,
    pub storage_total_bytes: u64,
    pub storage_percent: u32,
    pub storage_label: String,
}

fn percent(used: u64, total: u64) -> u32 {
    if total == 0 {
        0
    } else {
        ((used as f64 / total as f64) * 100.0)
            .round()
            .clamp(0.0, 100.0) as u32
    }
}

impl From<&NodeOverview> for NodeView {
    fn from(overview: &NodeOverview) -> Self {
        let node = &overview.node;
        let metrics = overview.metrics.as_ref();
        Self {
            name: node.name.clone(),
            cluster: node.cluster.as_ref().map(|cluster| cluster.name.clone()),
            online: node.online,
            agent_version: node.agent_version.clone(),
            remote_addr: node.remote_addr.clone(),
            enrolled_at: format_time(node.enrolled_at),
            last_seen_at: node.last_seen_at.map(format_time),
            state_changed_at: node.state_changed_at.map(format_time),
            vm_count: overview.vm_count,
            cpu_count: metrics.map(|m| m.cpu_count),
            cpu_percent: metrics.map(|m| (m.cpu * 100.0).round().clamp(0.0, 100.0) as u32),
            load1: metrics.map(|m| m.load1),
            memory_used_bytes: metrics.map(|m| m.memory_used_bytes),
            memory_total_bytes: metrics.map(|m| m.memory_total_bytes),
            memory_percent: metrics.map(|m| percent(m.memory_used_bytes, m.memory_total_bytes)),
            memory_label: metrics
                .map(|m| {
                    format!(
                        "{} of {}",
                        human_bytes(m.memory_used_bytes),
                        human_bytes(m.memory_total_bytes)
                    )
                })
                .unwrap_or_default(),
            storage_used_bytes: overview.storage_used_bytes,
            storage_total_bytes: overview.storage_total_bytes,
            storage_percent: percent(overview.storage_used_bytes, overview.storage_total_bytes),
            storage_label: format!(
                "{} of {}",
                human_bytes(overview.storage_used_bytes),
                human_bytes(overview.storage_total_bytes)
            ),
        }
    }
}

pub(crate) use crate::text::human_bytes;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(512 * 1024 * 1024), "512 MiB");
        assert_eq!(human_bytes(3 * 1024 * 1024 * 1024 / 2), "1.5 GiB");
        assert_eq!(human_bytes(32 * 1024 * 1024 * 1024), "32 GiB");
    }

    #[test]
    fn percentages_are_clamped_and_safe() {
        assert_eq!(percent(1, 0), 0);
        assert_eq!(percent(50, 200), 25);
        assert_eq!(percent(300, 200), 100);
    }
}
