//! VM configs on the simulated pmxcfs: finding, reading, writing (atomically, in Proxmox's
//! canonical form), the per-VMID lock, and the cluster's `.vmlist`.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::time::{Duration, Instant};

use proxlab_pve::cluster::{VmList, VmListEntry};
use proxlab_pve::config::{VmConfig, WriteMode};

use crate::sim::{Outcome, Sim, fail};

/// How long a command waits for a VM's lock (Proxmox: 10 s); `PVE_SIM_LOCK_TIMEOUT` overrides.
fn lock_timeout() -> Duration {
    let secs = std::env::var("PVE_SIM_LOCK_TIMEOUT")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(10.0);
    Duration::from_secs_f64(secs)
}

/// A held per-VMID lock (`var/lock/qemu-server/lock-<vmid>.conf`); released on drop.
#[derive(Debug)]
pub struct VmLock {
    _file: File,
}

/// Takes the VM's lock as Proxmox does, waiting up to the timeout.
pub fn lock_vm(sim: &Sim, vmid: u32) -> Outcome<VmLock> {
    std::fs::create_dir_all(sim.lock_dir())?;
    let path = sim.lock_dir().join(format!("lock-{vmid}.conf"));
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)?;
    let deadline = Instant::now() + lock_timeout();
    let mut announced = false;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(VmLock { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) => {
                if !announced {
                    eprintln!("trying to acquire lock...");
                    announced = true;
                }
                if Instant::now() >= deadline {
                    return fail(format!(
                        "can't lock file '{}' - got timeout",
                        path.display()
                    ));
                }
                // Proxmox polls the same way (flock with a timeout).
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(std::fs::TryLockError::Error(err)) => {
                return fail(format!("can't lock file '{}' - {err}", path.display()));
            }
        }
    }
}

/// The node holding a VM's config, anywhere in the cluster.
pub fn find_node(sim: &Sim, vmid: u32) -> Option<String> {
    sim.nodes()
        .into_iter()
        .find(|node| sim.config_path(node, vmid).exists())
}

/// Every VMID in the cluster, with its node.
pub fn all_vms(sim: &Sim) -> Vec<(u32, String)> {
    let mut vms = Vec::new();
    for node in sim.nodes() {
        let Ok(entries) = std::fs::read_dir(sim.qemu_dir(&node)) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(vmid) = name
                .to_str()
                .and_then(|name| name.strip_suffix(".conf"))
                .and_then(|id| id.parse().ok())
            else {
                continue;
            };
            vms.push((vmid, node.clone()));
        }
    }
    vms.sort();
    vms
}

/// A VM's config file as read: the parsed config and the raw text (for `--digest`).
pub struct Loaded {
    pub config: VmConfig,
    pub raw: String,
}

/// Reads a VM's config on this node.
pub fn read(sim: &Sim, vmid: u32) -> Outcome<Loaded> {
    let path = sim.config_path(&sim.node, vmid);
    match std::fs::read_to_string(&path) {
        Ok(raw) => Ok(Loaded {
            config: VmConfig::parse(&raw),
            raw,
        }),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => fail(format!(
            "Configuration file 'nodes/{}/qemu-server/{vmid}.conf' does not exist",
            sim.node
        )),
        Err(err) => fail(format!("unable to read {}: {err}", path.display())),
    }
}

/// Replaces a file atomically: written beside it under a name of this process's own (several
/// `qm` commands run at once, and a shared temporary name would be renamed away under
/// another's feet), then renamed over it.
pub fn replace_file(path: &std::path::Path, bytes: &[u8]) -> Outcome {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp.{}", std::process::id()));
    let tmp = path.with_file_name(name);
    let mut file = File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// Writes a config atomically, as Proxmox's writer formats it.
pub fn write(sim: &Sim, vmid: u32, config: &VmConfig) -> Outcome {
    write_raw(sim, vmid, &config.write_canonical(WriteMode::Proxmox))
}

/// Writes raw text as a VM's config atomically, and refreshes `.vmlist` if it is new.
pub fn write_raw(sim: &Sim, vmid: u32, text: &str) -> Outcome {
    let path = sim.config_path(&sim.node, vmid);
    let existed = path.exists();
    replace_file(&path, text.as_bytes())?;
    if !existed {
        refresh_vmlist(sim)?;
    }
    Ok(())
}

/// Creates a new VM's config only if the VMID is free cluster-wide.
pub fn create_exclusive(
    sim: &Sim,
    vmid: u32,
    text: &str,
    taken_message: impl Fn(&str) -> String,
) -> Outcome {
    if let Some(node) = find_node(sim, vmid) {
        return fail(taken_message(&node));
    }
    let path = sim.config_path(&sim.node, vmid);
    let mut file = match OpenOptions::new().write(true).create_new(true).open(&path) {
        Ok(file) => file,
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {
            return fail(taken_message(&sim.node));
        }
        Err(err) => return fail(err.to_string()),
    };
    file.write_all(text.as_bytes())?;
    refresh_vmlist(sim)
}

/// Deletes a VM's config.
pub fn remove(sim: &Sim, vmid: u32) -> Outcome {
    std::fs::remove_file(sim.config_path(&sim.node, vmid))?;
    refresh_vmlist(sim)
}

/// Regenerates `.vmlist` from the config files, bumping its version.
pub fn refresh_vmlist(sim: &Sim) -> Outcome {
    let _guard = lock_cluster_file(sim)?;
    let previous = std::fs::read_to_string(sim.vmlist())
        .ok()
        .and_then(|text| VmList::parse(&text).ok())
        .map_or(0, |list| list.version);
    let mut list = VmList {
        version: previous + 1,
        ..VmList::default()
    };
    for (vmid, node) in all_vms(sim) {
        list.ids.insert(
            vmid,
            VmListEntry {
                node,
                kind: "qemu".into(),
                version: 1,
            },
        );
    }
    replace_file(&sim.vmlist(), list.write().as_bytes())?;
    Ok(())
}

fn lock_cluster_file(sim: &Sim) -> Outcome<File> {
    std::fs::create_dir_all(sim.lock_dir())?;
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(sim.lock_dir().join("vmlist.lock"))?;
    file.lock()?;
    Ok(file)
}

/// Takes a VM's lock and reads its config, failing on a config `lock:` unless `skiplock`.
pub fn lock_and_read(sim: &Sim, vmid: u32, skiplock: bool) -> Outcome<(VmLock, VmConfig)> {
    let lock = lock_vm(sim, vmid)?;
    let config = read(sim, vmid)?.config;
    if !skiplock {
        check_lock(&config)?;
    }
    Ok((lock, config))
}

/// Fails with `VM is locked (<lock>)` if the config carries a lock.
pub fn check_lock(config: &VmConfig) -> Outcome {
    match config.main().get("lock") {
        Some(lock) => fail(format!("VM is locked ({lock})")),
        None => Ok(()),
    }
}
