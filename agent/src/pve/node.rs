//! The node's files and tools: VM configs under `/etc/pve`, the per-VMID lock, storage paths,
//! and typed calls to `qm`, `pvesh` and `pvesm`.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use proxlab_pve::cluster::VmList;
use proxlab_pve::config::VmConfig;
use proxlab_pve::ident::DEFAULT_MAC_PREFIX;
use proxlab_pve::policy::NodeLimits;
use proxlab_pve::storage_cfg::StorageConfig;

use super::command::{self, PveError};
use super::config::PveConfig;

/// How long the agent waits for a VM's lock, like Proxmox's own tools.
const LOCK_TIMEOUT: Duration = Duration::from_secs(10);

/// A held per-VMID lock; released on drop.
#[derive(Debug)]
pub struct VmLock {
    _file: std::fs::File,
}

/// The node the agent drives.
#[derive(Debug)]
pub struct Node {
    pub config: PveConfig,
    pub name: String,
    /// The node's CPUs and memory, which bound what a config from outside may ask for.
    pub limits: NodeLimits,
    storage_roots: Mutex<HashMap<String, PathBuf>>,
}

impl Node {
    pub fn new(config: PveConfig) -> Self {
        let name = config.node_name();
        let node = Self {
            config,
            name,
            limits: crate::node_info::limits(),
            storage_roots: Mutex::default(),
        };
        node.remove_stale_config_writes();
        node
    }

    /// Removes half-written configs (`<vmid>.conf.tmp.<pid>`) that an agent killed in the
    /// middle of [`Node::write_config`] left behind. Only other processes' files go: a live
    /// agent's own writes are never touched.
    fn remove_stale_config_writes(&self) {
        let own = format!(".conf.tmp.{}", std::process::id());
        let Ok(entries) = std::fs::read_dir(self.qemu_dir(&self.name)) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let stale = name.contains(".conf.tmp.") && !name.ends_with(&own);
            let writer_alive = name
                .rsplit('.')
                .next()
                .and_then(|pid| pid.parse::<u32>().ok())
                .is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists());
            if stale && !writer_alive {
                match std::fs::remove_file(entry.path()) {
                    Ok(()) => tracing::info!(file = %name, "removed a half-written VM config"),
                    Err(err) => {
                        tracing::warn!(file = %name, %err, "cannot remove a half-written VM config")
                    }
                }
            }
        }
    }

    pub fn qemu_dir(&self, node: &str) -> PathBuf {
        self.config
            .etc_pve
            .join("nodes")
            .join(node)
            .join("qemu-server")
    }

    pub fn config_path(&self, vmid: u32) -> PathBuf {
        self.qemu_dir(&self.name).join(format!("{vmid}.conf"))
    }

    pub fn pid_file(&self, vmid: u32) -> PathBuf {
        self.config.run_dir.join(format!("{vmid}.pid"))
    }

    /// The VM's QMP socket, while it runs.
    pub fn qmp_socket(&self, vmid: u32) -> PathBuf {
        self.config.run_dir.join(format!("{vmid}.qmp"))
    }

    /// The VM's guest-agent channel, while it runs with the agent enabled.
    pub fn qga_socket(&self, vmid: u32) -> PathBuf {
        self.config.run_dir.join(format!("{vmid}.qga"))
    }

    /// Reads a VM's config on this node. `Ok(None)` if there is none.
    pub fn read_config(&self, vmid: u32) -> Result<Option<(VmConfig, String)>, PveError> {
        match std::fs::read_to_string(self.config_path(vmid)) {
            Ok(raw) => Ok(Some((VmConfig::parse(&raw), raw))),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(err.into()),
        }
    }

    /// Reads a VM's config, failing with Proxmox's message when it is missing.
    pub fn require_config(&self, vmid: u32) -> Result<VmConfig, PveError> {
        self.read_config(vmid)?
            .map(|(config, _)| config)
            .ok_or_else(|| {
                PveError::NotFound(format!(
                    "Configuration file 'nodes/{}/qemu-server/{vmid}.conf' does not exist",
                    self.name
                ))
            })
    }

    /// The node owning `vmid` anywhere in the cluster: `.vmlist`, then the node folders.
    pub fn vmid_owner(&self, vmid: u32) -> Option<String> {
        let listed = std::fs::read_to_string(self.config.etc_pve.join(".vmlist"))
            .ok()
            .and_then(|text| VmList::parse(&text).ok())
            .and_then(|list| list.ids.get(&vmid).map(|entry| entry.node.clone()));
        listed.or_else(|| {
            std::fs::read_dir(self.config.etc_pve.join("nodes"))
                .ok()?
                .flatten()
                .map(|entry| entry.file_name().to_string_lossy().into_owned())
                .find(|node| self.qemu_dir(node).join(format!("{vmid}.conf")).exists())
        })
    }

    /// Takes a VM's lock (`lock-<vmid>.conf`), waiting as Proxmox does.
    pub async fn lock_vm(&self, vmid: u32) -> Result<VmLock, PveError> {
        let path = self.config.lock_dir.join(format!("lock-{vmid}.conf"));
        tokio::task::spawn_blocking(move || {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let file = OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)?;
            let deadline = Instant::now() + LOCK_TIMEOUT;
            loop {
                match file.try_lock() {
                    Ok(()) => return Ok(VmLock { _file: file }),
                    Err(std::fs::TryLockError::WouldBlock) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    Err(std::fs::TryLockError::WouldBlock) => {
                        return Err(PveError::Invalid(format!(
                            "can't lock file '{}' - got timeout",
                            path.display()
                        )));
                    }
                    Err(std::fs::TryLockError::Error(err)) => return Err(err.into()),
                }
            }
        })
        .await
        .map_err(|err| PveError::Io(err.to_string()))?
    }

    /// Writes a new VM's config. The caller holds the VM's lock and has checked the VMID is
    /// free; the file appears whole or not at all.
    pub fn write_new_config(&self, vmid: u32, text: &str) -> Result<(), PveError> {
        let path = self.config_path(vmid);
        if path.exists() {
            return Err(PveError::Conflict(format!(
                "unable to create VM {vmid}: config file already exists"
            )));
        }
        self.write_config(vmid, text)
    }

    /// Replaces a VM's config atomically (the caller holds the lock).
    pub fn write_config(&self, vmid: u32, text: &str) -> Result<(), PveError> {
        let path = self.config_path(vmid);
        let tmp = path.with_extension(format!("conf.tmp.{}", std::process::id()));
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        Ok(())
    }

    /// The Proxmox cluster this node belongs to.
    pub fn cluster(&self) -> proxlab_protocol::ClusterIdentity {
        super::cluster::identity(&self.config.etc_pve, &self.name)
    }

    /// The datacenter's MAC prefix.
    pub fn mac_prefix(&self) -> String {
        std::fs::read_to_string(self.config.etc_pve.join("datacenter.cfg"))
            .ok()
            .and_then(|text| {
                text.lines()
                    .find_map(|l| l.strip_prefix("mac_prefix:").map(|v| v.trim().to_owned()))
            })
            .unwrap_or_else(|| DEFAULT_MAC_PREFIX.to_owned())
    }

    pub fn storage_cfg(&self) -> Result<StorageConfig, PveError> {
        let text =
            std::fs::read_to_string(self.config.etc_pve.join("storage.cfg")).unwrap_or_default();
        StorageConfig::parse(&text).map_err(|err| PveError::Invalid(err.to_string()))
    }

    /// How the node's tools are run: its timeout and extra environment, in `cwd`.
    pub fn invocation<'a>(&'a self, cwd: Option<&'a Path>) -> command::Invocation<'a> {
        command::Invocation {
            cwd,
            timeout: self.config.command_timeout(),
            env: &self.config.env,
            input: None,
        }
    }

    pub async fn qm<I, S>(&self, args: I) -> Result<String, PveError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        command::run(&self.config.qm, args, self.invocation(None)).await
    }

    /// `qm` with a timeout of its own, for calls that wait longer than tools usually may (a
    /// shutdown given minutes to finish).
    pub async fn qm_within<I, S>(&self, args: I, timeout: Duration) -> Result<String, PveError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let invocation = command::Invocation {
            timeout: timeout.max(self.config.command_timeout()),
            ..self.invocation(None)
        };
        command::run(&self.config.qm, args, invocation).await
    }

    /// `pvesh get <path> --output-format json`, parsed.
    pub async fn pvesh_get(
        &self,
        path: &str,
        extra: &[&str],
    ) -> Result<serde_json::Value, PveError> {
        let mut args = vec!["get", path, "--output-format", "json"];
        args.extend_from_slice(extra);
        let out = command::run(&self.config.pvesh, args, self.invocation(None)).await?;
        serde_json::from_str(&out).map_err(|err| PveError::Invalid(format!("pvesh {path}: {err}")))
    }

    /// The file behind a volume id, from `pvesm path`.
    pub async fn volume_path(&self, volid: &str) -> Result<PathBuf, PveError> {
        let out = command::run(&self.config.pvesm, ["path", volid], self.invocation(None)).await?;
        Ok(PathBuf::from(out.trim()))
    }

    /// The directory of a file storage (what `images/` hangs off), asked once from `pvesm`.
    pub async fn storage_root(&self, storage: &str) -> Result<PathBuf, PveError> {
        if let Some(root) = self
            .storage_roots
            .lock()
            .expect("not poisoned")
            .get(storage)
        {
            return Ok(root.clone());
        }
        let probe = format!("{storage}:100/vm-100-disk-0.qcow2");
        let path = self.volume_path(&probe).await?;
        let root = path
            .ancestors()
            .nth(3)
            .map(Path::to_path_buf)
            .ok_or_else(|| {
                PveError::Invalid(format!("unexpected path for {probe}: {}", path.display()))
            })?;
        self.storage_roots
            .lock()
            .expect("not poisoned")
            .insert(storage.to_owned(), root.clone());
        Ok(root)
    }

    pub async fn qemu_img<I, S>(&self, args: I, cwd: Option<&Path>) -> Result<String, PveError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        command::run(&self.config.qemu_img, args, self.invocation(cwd)).await
    }
}
