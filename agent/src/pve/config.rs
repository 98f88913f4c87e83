//! Where the Proxmox tools and files are: real paths by default, a pve-sim root in tests and
//! the demo.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// The `[pve]` section of the agent config.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PveConfig {
    /// This node's name in the cluster; default: the name `.members` gives, else the
    /// short hostname.
    pub node: Option<String>,
    pub qm: PathBuf,
    pub pvesh: PathBuf,
    pub pvesm: PathBuf,
    pub qemu_img: PathBuf,
    /// The cluster file system.
    pub etc_pve: PathBuf,
    /// QEMU pid files and sockets.
    pub run_dir: PathBuf,
    /// Per-VMID lock files.
    pub lock_dir: PathBuf,
    /// The kernel's ARP table, for IPs of VMs without a guest agent.
    pub arp_table: PathBuf,
    /// The longest any single tool call may take.
    pub command_timeout_secs: u64,
    /// How many linked clones run at once by default.
    pub clone_concurrency: usize,
    /// Extra environment for every tool call (pve-sim reads `PVE_SIM_ROOT` from it).
    pub env: BTreeMap<String, String>,
}

impl Default for PveConfig {
    fn default() -> Self {
        Self {
            node: None,
            qm: "/usr/sbin/qm".into(),
            pvesh: "/usr/bin/pvesh".into(),
            pvesm: "/usr/sbin/pvesm".into(),
            qemu_img: "/usr/bin/qemu-img".into(),
            etc_pve: "/etc/pve".into(),
            run_dir: "/var/run/qemu-server".into(),
            lock_dir: "/var/lock/qemu-server".into(),
            arp_table: "/proc/net/arp".into(),
            command_timeout_secs: 120,
            clone_concurrency: 8,
            env: BTreeMap::new(),
        }
    }
}

impl PveConfig {
    /// This node's Proxmox name: `node`, else the name in `.members`, else the short
    /// hostname (which is what Proxmox names a node after).
    pub fn node_name(&self) -> String {
        self.node.clone().unwrap_or_else(|| {
            super::cluster::member_name(&self.etc_pve).unwrap_or_else(|| {
                let host = sysinfo::System::host_name().unwrap_or_default();
                host.split('.').next().unwrap_or_default().to_owned()
            })
        })
    }

    /// The Proxmox cluster this node belongs to.
    pub fn cluster(&self) -> proxlab_protocol::ClusterIdentity {
        super::cluster::identity(&self.etc_pve, &self.node_name())
    }

    /// A config for a pve-sim tree: its tool symlinks and directories.
    pub fn for_sim(root: &std::path::Path, node: &str) -> Self {
        Self {
            node: Some(node.to_owned()),
            qm: root.join("bin/qm"),
            pvesh: root.join("bin/pvesh"),
            pvesm: root.join("bin/pvesm"),
            qemu_img: root.join("bin/qemu-img"),
            etc_pve: root.join("etc/pve"),
            run_dir: root.join("var/run/qemu-server"),
            lock_dir: root.join("var/lock/qemu-server"),
            arp_table: root.join("proc/net/arp"),
            env: BTreeMap::from([
                ("PVE_SIM_ROOT".to_owned(), root.display().to_string()),
                ("PVE_SIM_NODE".to_owned(), node.to_owned()),
            ]),
            ..Self::default()
        }
    }

    pub fn command_timeout(&self) -> Duration {
        Duration::from_secs(self.command_timeout_secs.max(1))
    }
}
