//! Scripted guest behaviour and injected faults: what tests tell the simulator to do.
//!
//! Per VM, in `<root>/sim/vms/<vmid>.json`: the guest agent, its interfaces and `guest exec`
//! answers, a hung shutdown, CPU load. Node-wide, in `<root>/sim/faults.json`: `qemu-img`
//! failures, full storages, command latency. `pve-sim script` and `pve-sim fault` edit them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::sim::{Outcome, Sim};

/// A scripted answer to `qm guest exec`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExecAnswer {
    pub exitcode: i32,
    pub out: String,
    pub err: String,
}

/// How one VM behaves.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VmScript {
    /// Whether the guest agent answers once the VM runs.
    pub guest_agent: bool,
    /// The answer to `network-get-interfaces`; by default one NIC per `netN`, with IPs
    /// derived from the MAC.
    pub interfaces: Option<serde_json::Value>,
    /// Answers to `guest exec`, by the command's first word; `*` matches any.
    pub exec: BTreeMap<String, ExecAnswer>,
    /// Every command run through `guest exec`, for tests to inspect.
    pub exec_log: Vec<Vec<String>>,
    /// What those commands were given on stdin (`--pass-stdin 1`), in the same order; empty
    /// for commands given none.
    pub exec_input: Vec<String>,
    /// Files written in the guest through the agent's `file-write`, by path: what they hold.
    pub files_written: BTreeMap<String, String>,
    /// The address the VM's first NIC shows in the node's ARP table while it runs.
    pub neighbor_ip: Option<String>,
    /// The guest ignores ACPI shutdown.
    pub hung_shutdown: bool,
    /// CPU load of the VM process, 0.0 to 1.0.
    pub cpu_load: f64,
}

/// Faults affecting the whole simulated cluster.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// `qemu-img` fails for targets whose path contains one of these strings (`*`: all).
    pub qemu_img_fail: Vec<String>,
    /// These storages report no free space; allocations on them fail.
    pub storage_full: Vec<String>,
    /// Extra milliseconds before a command runs, by command (`qm start`, `qm`, `pvesh` ...).
    pub latency_ms: BTreeMap<String, u64>,
}

fn vm_path(sim: &Sim, vmid: u32) -> PathBuf {
    sim.sim_dir().join("vms").join(format!("{vmid}.json"))
}

fn faults_path(sim: &Sim) -> PathBuf {
    sim.sim_dir().join("faults.json")
}

fn load<T: Default + for<'de> Deserialize<'de>>(path: &PathBuf) -> Outcome<T> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            Ok(serde_json::from_str(&text).map_err(|err| format!("{}: {err}", path.display()))?)
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(T::default()),
        Err(err) => Err(err.into()),
    }
}

fn save<T: Serialize>(path: &Path, value: &T) -> Outcome {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    crate::store::replace_file(path, serde_json::to_string_pretty(value)?.as_bytes())
}

/// Holds the lock every read-modify-write of a script file takes (the test's `pve-sim script`
/// and the guest's `qm guest exec` run at the same time); released on drop.
fn lock_scripts(sim: &Sim) -> Outcome<std::fs::File> {
    let dir = sim.sim_dir().join("vms");
    std::fs::create_dir_all(&dir)?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(".lock"))?;
    file.lock()?;
    Ok(file)
}

impl VmScript {
    pub fn load(sim: &Sim, vmid: u32) -> Outcome<Self> {
        load(&vm_path(sim, vmid))
    }

    /// Changes a VM's script under the scripts' lock, so no concurrent change is lost, and
    /// returns what was saved.
    pub fn update(
        sim: &Sim,
        vmid: u32,
        change: impl FnOnce(&mut Self) -> Outcome,
    ) -> Outcome<Self> {
        let _lock = lock_scripts(sim)?;
        let mut script = Self::load(sim, vmid)?;
        change(&mut script)?;
        save(&vm_path(sim, vmid), &script)?;
        Ok(script)
    }

    pub fn remove(sim: &Sim, vmid: u32) {
        let _ = std::fs::remove_file(vm_path(sim, vmid));
    }
}

impl Faults {
    pub fn load(sim: &Sim) -> Outcome<Self> {
        load(&faults_path(sim))
    }

    pub fn save(&self, sim: &Sim) -> Outcome {
        save(&faults_path(sim), self)
    }

    /// Whether `qemu-img` should fail for this target path.
    pub fn qemu_img_fails_for(&self, target: &str) -> bool {
        self.qemu_img_fail
            .iter()
            .any(|pattern| pattern == "*" || target.contains(pattern.as_str()))
    }

    /// Sleeps for the latency configured for `command` (e.g. `qm start`) or its program.
    pub fn apply_latency(&self, command: &str) {
        let program = command.split(' ').next().unwrap_or_default();
        if let Some(ms) = self
            .latency_ms
            .get(command)
            .or_else(|| self.latency_ms.get(program))
        {
            std::thread::sleep(std::time::Duration::from_millis(*ms));
        }
    }
}
