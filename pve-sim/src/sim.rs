//! The simulated node's context: its root directory, its name, its clock, and where every
//! file lives.
//!
//! Cluster-wide state sits directly under the root as on a real cluster's pmxcfs mount and
//! run directories: `etc/pve/...`, `var/run/qemu-server/`, `var/lock/qemu-server/`. Storage
//! paths from `storage.cfg` are mapped: a shared storage's `/mnt/pve/x` is `<root>/mnt/pve/x`
//! for every node, a node-local storage's `/var/lib/vz` is `<root>/nodes/<node>/var/lib/vz`,
//! so each node has its own local disks.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// A failure with Proxmox's message and exit status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub message: String,
    pub code: i32,
}

/// What a command returns.
pub type Outcome<T = ()> = Result<T, Failure>;

/// Fails like a Proxmox task or `die`: the message on stderr, exit status 255.
pub fn fail<T>(message: impl Into<String>) -> Outcome<T> {
    Err(Failure {
        message: message.into(),
        code: 255,
    })
}

impl<E: std::fmt::Display> From<E> for Failure {
    fn from(err: E) -> Self {
        Failure {
            message: err.to_string(),
            code: 255,
        }
    }
}

/// The simulated node a command runs on.
#[derive(Debug, Clone)]
pub struct Sim {
    pub root: PathBuf,
    pub node: String,
}

impl Sim {
    /// From `PVE_SIM_ROOT` and `PVE_SIM_NODE` (default `pve`).
    pub fn from_env() -> Outcome<Self> {
        let Some(root) = std::env::var_os("PVE_SIM_ROOT") else {
            return fail("PVE_SIM_ROOT is not set: point it at a tree made by `pve-sim init`");
        };
        let node = std::env::var("PVE_SIM_NODE").unwrap_or_else(|_| "pve".into());
        let sim = Self {
            root: root.into(),
            node,
        };
        if !sim.node_dir(&sim.node).is_dir() {
            return fail(format!(
                "node '{}' does not exist under {}",
                sim.node,
                sim.root.display()
            ));
        }
        Ok(sim)
    }

    /// Seconds since the epoch, or `PVE_SIM_FAKE_TIME` when set.
    pub fn now() -> i64 {
        if let Some(fake) = std::env::var("PVE_SIM_FAKE_TIME")
            .ok()
            .and_then(|value| value.parse().ok())
        {
            return fake;
        }
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|elapsed| elapsed.as_secs() as i64)
            .unwrap_or_default()
    }

    pub fn etc_pve(&self) -> PathBuf {
        self.root.join("etc/pve")
    }

    pub fn node_dir(&self, node: &str) -> PathBuf {
        self.etc_pve().join("nodes").join(node)
    }

    pub fn qemu_dir(&self, node: &str) -> PathBuf {
        self.node_dir(node).join("qemu-server")
    }

    pub fn config_path(&self, node: &str, vmid: u32) -> PathBuf {
        self.qemu_dir(node).join(format!("{vmid}.conf"))
    }

    pub fn storage_cfg(&self) -> PathBuf {
        self.etc_pve().join("storage.cfg")
    }

    pub fn vmlist(&self) -> PathBuf {
        self.etc_pve().join(".vmlist")
    }

    pub fn members(&self) -> PathBuf {
        self.etc_pve().join(".members")
    }

    pub fn run_dir(&self) -> PathBuf {
        self.root.join("var/run/qemu-server")
    }

    pub fn lock_dir(&self) -> PathBuf {
        self.root.join("var/lock/qemu-server")
    }

    pub fn pid_file(&self, vmid: u32) -> PathBuf {
        self.run_dir().join(format!("{vmid}.pid"))
    }

    pub fn vnc_socket(&self, vmid: u32) -> PathBuf {
        self.run_dir().join(format!("{vmid}.vnc"))
    }

    /// The VM's QMP socket.
    pub fn qmp_socket(&self, vmid: u32) -> PathBuf {
        self.run_dir().join(format!("{vmid}.qmp"))
    }

    /// The VM's guest-agent channel (served when its config enables the agent).
    pub fn qga_socket(&self, vmid: u32) -> PathBuf {
        self.run_dir().join(format!("{vmid}.qga"))
    }

    /// The socket of a VM's `serial0: socket` port.
    pub fn serial_socket(&self, vmid: u32) -> PathBuf {
        self.run_dir().join(format!("{vmid}.serial0"))
    }

    /// The simulator's own run-time state of a VM (not a Proxmox file).
    pub fn run_state(&self, vmid: u32) -> PathBuf {
        self.run_dir().join(format!("{vmid}.sim.json"))
    }

    /// Scripted behaviour and faults (not Proxmox files).
    pub fn sim_dir(&self) -> PathBuf {
        self.root.join("sim")
    }

    /// Every node of the cluster.
    pub fn nodes(&self) -> Vec<String> {
        let mut nodes: Vec<String> = std::fs::read_dir(self.etc_pve().join("nodes"))
            .map(|entries| {
                entries
                    .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
                    .collect()
            })
            .unwrap_or_default();
        nodes.sort();
        nodes
    }

    /// Where a storage path lives for `node`.
    pub fn storage_dir(&self, path: &str, shared: bool, node: &str) -> PathBuf {
        let relative = Path::new(path.trim_start_matches('/'));
        if shared {
            self.root.join(relative)
        } else {
            self.root.join("nodes").join(node).join(relative)
        }
    }
}
