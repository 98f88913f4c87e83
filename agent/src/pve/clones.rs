//! Fast clones, as ARCHITECTURE.md describes them: a class base is a template whose disks
//! are full qcow2 copies; each student VM is a qcow2 overlay on it, created with `qemu-img`
//! under the linked-clone volume id Proxmox understands, with a config from the clone
//! rewrite written under the VMID's lock. Storages that cannot hold overlays fall back to
//! `qm clone`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use proxlab_protocol::clones::{CloneOutcome, CloneTarget, CopyProgress, Hardware};
use proxlab_pve::clone::{CloneSpec, clone_config};
use proxlab_pve::config::{VmConfig, WriteMode};
use proxlab_pve::drive::{Bus, Drive, DriveKey};
use proxlab_pve::policy::{self, NodeLimits};
use proxlab_pve::volid::{Volume, VolumeId, disk_name};

use super::command::{self, PveError};
use super::node::Node;

/// Disks that are state, not images: every clone gets its own full copy.
pub(crate) fn is_state_disk(drive: &Drive) -> bool {
    matches!(drive.key.bus, Bus::EfiDisk | Bus::TpmState)
}

/// The disks a clone must make: images of the VM's own, in slot order.
pub(crate) fn image_drives(config: &VmConfig) -> Vec<Drive> {
    config
        .drives()
        .into_iter()
        .filter(|d| d.is_disk_image() && d.key.bus != Bus::Unused && !d.is_cloudinit())
        .collect()
}

/// Parses a file-storage image volume id.
pub(crate) fn file_image(volid: &str) -> Result<(String, proxlab_pve::volid::Image), PveError> {
    let parsed: VolumeId = volid
        .parse()
        .map_err(|e: proxlab_pve::volid::VolumeError| PveError::Invalid(e.to_string()))?;
    match parsed
        .file_volume()
        .map_err(|e| PveError::Invalid(e.to_string()))?
    {
        Volume::Image(image) => Ok((parsed.storage, image)),
        Volume::Iso(_) => Err(PveError::Invalid(format!("{volid} is not a disk image"))),
    }
}

/// An image's format as its volume id says: the file extension on file storages, raw on
/// block storages.
fn volume_format(volid: &str) -> &'static str {
    match file_image(volid) {
        Ok((_, image)) => match image.format() {
            Some("qcow2") => "qcow2",
            Some("vmdk") => "vmdk",
            _ => "raw",
        },
        Err(_) => "raw",
    }
}

/// Parses `qemu-img convert -p` progress (`    (45.00/100%)`) into percent.
fn parse_percent(chunk: &str) -> Option<f64> {
    chunk
        .rsplit('(')
        .next()?
        .split('/')
        .next()?
        .trim()
        .parse()
        .ok()
}

/// Creates the qcow2 overlay `file` in `dir` on `backing` (relative to `dir`), with the
/// options Proxmox's directory plugin uses for linked clones.
pub(crate) async fn create_overlay(
    node: &Node,
    dir: &Path,
    file: &str,
    backing: &str,
) -> Result<(), PveError> {
    node.qemu_img(
        [
            "create",
            "-f",
            "qcow2",
            "-F",
            "qcow2",
            "-b",
            backing,
            file,
            "-o",
            "extended_l2=on,cluster_size=128k",
        ],
        Some(dir),
    )
    .await
    .map(drop)
}

/// Makes a class base from a source template: full qcow2 copies of its disks.
pub async fn make_base(
    node: &Node,
    source_vmid: u32,
    base_vmid: u32,
    name: &str,
    storage: Option<&str>,
    mut on_progress: impl FnMut(CopyProgress) + Send,
) -> Result<Vec<String>, PveError> {
    let source = node.require_config(source_vmid)?;
    let storages = node.storage_cfg()?;
    let _lock = node.lock_vm(base_vmid).await?;
    if let Some(owner) = node.vmid_owner(base_vmid) {
        return Err(PveError::Conflict(format!(
            "unable to create VM {base_vmid} - VM {base_vmid} already exists on node '{owner}'"
        )));
    }
    let drives = image_drives(&source);
    let mut sources = Vec::new();
    for drive in &drives {
        let path = node.volume_path(drive.volume()).await?;
        // The format comes from the volume id, as Proxmox has it: probing would trust what
        // the guest may have written at the start of a raw disk.
        let format = volume_format(drive.volume()).to_owned();
        let info: serde_json::Value = serde_json::from_str(
            &node
                .qemu_img(
                    ["info", "-U", "-f", &format, "--output=json"]
                        .into_iter()
                        .map(String::from)
                        .chain([path.display().to_string()]),
                    None,
                )
                .await?,
        )
        .map_err(|err| PveError::Invalid(err.to_string()))?;
        let size = info["virtual-size"].as_u64().unwrap_or(0);
        sources.push((path, format, size));
    }
    let total: u64 = sources.iter().map(|(_, _, size)| size).sum();
    let mut made: Vec<PathBuf> = Vec::new();
    let mut new_volids = Vec::new();
    let mut done_before = 0u64;
    let result: Result<VmConfig, PveError> = async {
        let mut remapped = Vec::new();
        for (n, (drive, (path, format, size))) in drives.iter().zip(&sources).enumerate() {
            let source_storage = drive.volume().split(':').next().unwrap_or_default();
            let target = storage.unwrap_or(source_storage);
            let target_cfg = storages
                .get(target)
                .ok_or_else(|| PveError::Invalid(format!("storage '{target}' does not exist")))?;
            if !target_cfg.is_file_based() {
                return Err(PveError::Invalid(format!(
                    "storage '{target}' cannot hold qcow2 class bases"
                )));
            }
            let root = node.storage_root(target).await?;
            let dir = root.join("images").join(base_vmid.to_string());
            std::fs::create_dir_all(&dir)?;
            let file = format!("base-{base_vmid}-disk-{n}.qcow2");
            let target_path = dir.join(&file);
            made.push(target_path.clone());
            let args = vec![
                "convert".into(),
                "-p".into(),
                "-f".into(),
                format.clone(),
                "-O".into(),
                "qcow2".into(),
                path.display().to_string(),
                target_path.display().to_string(),
            ];
            let size = *size;
            let how = command::Invocation {
                timeout: node.config.command_timeout() * 10,
                ..node.invocation(None)
            };
            command::run_streaming(&node.config.qemu_img, args, how, |chunk| {
                if let Some(percent) = parse_percent(chunk) {
                    let done = done_before + (size as f64 * percent / 100.0) as u64;
                    on_progress(CopyProgress {
                        done_bytes: done,
                        total_bytes: total,
                    });
                }
            })
            .await?;
            done_before += size;
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&target_path, std::fs::Permissions::from_mode(0o444))?;
            let volid = format!("{target}:{base_vmid}/{file}");
            new_volids.push(volid.clone());
            remapped.push((drive.key, volid));
        }
        base_config(node, &source, name, &remapped)
    }
    .await;
    match result {
        Ok(config) => {
            node.write_new_config(base_vmid, &config.write_canonical(WriteMode::Proxmox))?;
            on_progress(CopyProgress {
                done_bytes: total,
                total_bytes: total,
            });
            Ok(new_volids)
        }
        Err(err) => {
            for path in made {
                let _ = std::fs::remove_file(path);
            }
            Err(err)
        }
    }
}

/// The config of a new class base: `source`'s, renamed, with fresh identities, its images
/// replaced by the `copies`, and marked a template.
pub(crate) fn base_config(
    node: &Node,
    source: &VmConfig,
    name: &str,
    copies: &[(DriveKey, String)],
) -> Result<VmConfig, PveError> {
    let prefix = node.mac_prefix();
    let spec = CloneSpec {
        name,
        mac_prefix: &prefix,
    };
    let mut config = clone_config(source, &spec, &mut rand::rng(), |drive| {
        copies
            .iter()
            .find(|(key, _)| *key == drive.key)
            .map(|(_, volid)| volid.clone())
            .ok_or_else(|| format!("no copy of {}", drive.key))
    })
    .map_err(|err| PveError::Invalid(err.to_string()))?;
    config
        .main_mut()
        .set("template", "1")
        .map_err(PveError::Invalid)?;
    Ok(config)
}

/// What all clones of one base share.
pub struct Base {
    pub vmid: u32,
    pub config: VmConfig,
    /// Whether every image of the base is a qcow2 base on a file storage.
    overlays: bool,
    /// CPU and memory the clones get instead of the base's.
    hardware: Hardware,
    /// What edits each new clone's config before it is written (the plugin steps).
    edit: Option<Arc<dyn CloneEdit>>,
}

/// A step that edits a new clone's config before the VM exists, such as the plugin steps of
/// a class. The driver knows nothing of plugins: both ways of cloning (qcow2 overlays and
/// `qm clone`) call it the same way.
pub trait CloneEdit: Send + Sync {
    /// Edits the config of the new VM `vmid` (it runs on a blocking thread); an error refuses
    /// the clone.
    fn edit(&self, vmid: u32, config: &mut VmConfig) -> Result<(), String>;
    /// Called once the edited config is the VM's.
    fn committed(&self, vmid: u32, config: &VmConfig) -> Result<(), String>;
    /// How long [`CloneEdit::edit`] may take.
    fn deadline(&self) -> Duration;
}

/// Runs `edit` on a new clone's config, on a blocking thread and within its deadline.
async fn edit_config(
    edit: &Arc<dyn CloneEdit>,
    vmid: u32,
    config: VmConfig,
) -> Result<VmConfig, PveError> {
    let deadline = edit.deadline();
    let editor = edit.clone();
    let run = tokio::task::spawn_blocking(move || {
        let mut config = config;
        editor.edit(vmid, &mut config).map(|()| config)
    });
    tokio::time::timeout(deadline, run)
        .await
        .map_err(|_| {
            PveError::Invalid(format!(
                "the plugin steps did not finish within {} ms",
                deadline.as_millis()
            ))
        })?
        .map_err(|err| PveError::Io(err.to_string()))?
        .map_err(PveError::Invalid)
}

impl Base {
    /// Loads a class base. It may live on another node of the cluster when all its images are
    /// on shared storage, which this node reaches too.
    pub fn load(node: &Node, vmid: u32) -> Result<Self, PveError> {
        let (config, owner) = match node.read_config(vmid)? {
            Some((config, _)) => (config, None),
            None => match node.vmid_owner(vmid) {
                Some(owner) => {
                    let path = node.qemu_dir(&owner).join(format!("{vmid}.conf"));
                    let raw = std::fs::read_to_string(&path)?;
                    (VmConfig::parse(&raw), Some(owner))
                }
                None => {
                    return Err(node.require_config(vmid).err().unwrap_or_else(|| {
                        PveError::NotFound(format!("VM {vmid} does not exist"))
                    }));
                }
            },
        };
        if config.main().get("template") != Some("1") {
            return Err(PveError::Invalid(format!("VM {vmid} is not a template")));
        }
        let storages = node.storage_cfg()?;
        let images: Vec<_> = image_drives(&config)
            .into_iter()
            .filter(|d| !is_state_disk(d))
            .collect();
        let overlays = images.iter().all(|drive| {
            file_image(drive.volume()).is_ok_and(|(storage, image)| {
                image.is_base()
                    && image.format() == Some("qcow2")
                    && storages.get(&storage).is_some_and(|s| s.is_file_based())
            })
        });
        if let Some(owner) = owner {
            let all_shared = overlays
                && images.iter().all(|drive| {
                    file_image(drive.volume()).is_ok_and(|(storage, _)| {
                        storages.get(&storage).is_some_and(|s| s.is_shared())
                    })
                });
            if !all_shared {
                return Err(PveError::Invalid(format!(
                    "base VM {vmid} is on node '{owner}' and not all its disks are qcow2 \
                     images on shared storage; clone it on '{owner}'"
                )));
            }
        }
        Ok(Self {
            vmid,
            config,
            overlays,
            hardware: Hardware::default(),
            edit: None,
        })
    }

    /// Whether clones of this base are qcow2 overlays (not `qm clone` copies).
    pub(crate) fn makes_overlays(&self) -> bool {
        self.overlays
    }

    /// Gives every clone made from here on this hardware instead of the base's.
    /// The values are checked against the node's resources first.
    pub fn with_hardware(
        mut self,
        hardware: Hardware,
        limits: &NodeLimits,
    ) -> Result<Self, PveError> {
        let main = self.config.main_mut();
        let wanted = [
            ("cores", hardware.cores.map(|cores| cores.to_string())),
            ("memory", hardware.memory_mib.map(|mib| mib.to_string())),
        ];
        for (key, value) in wanted {
            if let Some(value) = value {
                policy::check_entry(key, &value, limits)?;
                main.set(key, &value).map_err(PveError::Invalid)?;
            }
        }
        self.hardware = hardware;
        Ok(self)
    }
}

/// The base VMID a linked-clone volume is built on, for file or block storage layouts.
fn base_of(volid: &str) -> Option<u32> {
    let parsed: VolumeId = volid.parse().ok()?;
    let image = match parsed.file_volume() {
        Ok(Volume::Image(image)) => image,
        _ => parsed.block_volume().ok()?,
    };
    image.base.map(|base| base.vmid)
}

/// Whether an existing VM is already this clone (a retried operation).
fn already_cloned(node: &Node, base: &Base, vmid: u32) -> bool {
    let Ok(Some((config, _))) = node.read_config(vmid) else {
        return false;
    };
    image_drives(&config)
        .iter()
        .filter(|d| !is_state_disk(d))
        .any(|d| base_of(d.volume()) == Some(base.vmid))
}

/// Creates one linked clone. Cleans up after itself on failure.
pub async fn clone_one(node: &Node, base: &Base, target: &CloneTarget) -> Result<(), PveError> {
    let vmid = target.vmid;
    proxlab_pve::volid::validate_vmid(vmid).map_err(PveError::Invalid)?;
    if !base.overlays {
        if already_cloned(node, base, vmid) {
            return Ok(());
        }
        node.qm([
            "clone",
            &base.vmid.to_string(),
            &vmid.to_string(),
            "--name",
            &target.name,
        ])
        .await?;
        // `qm clone` copies the base's hardware; apply the override afterwards.
        let mut set = vec!["set".to_owned(), vmid.to_string()];
        if let Some(cores) = base.hardware.cores {
            set.extend(["--cores".to_owned(), cores.to_string()]);
        }
        if let Some(memory) = base.hardware.memory_mib {
            set.extend(["--memory".to_owned(), memory.to_string()]);
        }
        if set.len() > 2 {
            node.qm(set.iter().map(String::as_str)).await?;
        }
        if let Some(edit) = &base.edit
            && let Err(err) = edit_cloned_config(node, edit, vmid).await
        {
            // Refused by a step: the VM `qm clone` made goes again, as an overlay would.
            let destroy = ["destroy", &vmid.to_string(), "--purge", "1"];
            if let Err(cleanup) = node.qm(destroy).await {
                tracing::warn!(vmid, %cleanup, "cannot remove a clone its steps refused");
            }
            return Err(err);
        }
        return Ok(());
    }
    let _lock = node.lock_vm(vmid).await?;
    if already_cloned(node, base, vmid) {
        return Ok(());
    }
    if let Some(owner) = node.vmid_owner(vmid) {
        return Err(PveError::Conflict(format!(
            "unable to create VM {vmid} - VM {vmid} already exists on node '{owner}'"
        )));
    }
    let mut made: Vec<PathBuf> = Vec::new();
    let result = make_clone_files(node, base, target, &mut made).await;
    if result.is_err() {
        for path in made {
            let _ = std::fs::remove_file(path);
        }
    }
    result
}

async fn make_clone_files(
    node: &Node,
    base: &Base,
    target: &CloneTarget,
    made: &mut Vec<PathBuf>,
) -> Result<(), PveError> {
    let vmid = target.vmid;
    let mut volids: Vec<(DriveKey, String)> = Vec::new();
    for (n, drive) in image_drives(&base.config).iter().enumerate() {
        let (storage, image) = file_image(drive.volume())?;
        let root = node.storage_root(&storage).await?;
        let dir = root.join("images").join(vmid.to_string());
        std::fs::create_dir_all(&dir)?;
        let format = image.format().unwrap_or("raw");
        let volid = if is_state_disk(drive) {
            let file = disk_name(vmid, n as u32, Some(format));
            let source = image.path(&root);
            made.push(dir.join(&file));
            node.qemu_img(
                vec![
                    "convert".into(),
                    "-f".into(),
                    format.to_owned(),
                    "-O".into(),
                    format.to_owned(),
                    source.display().to_string(),
                    dir.join(&file).display().to_string(),
                ],
                None,
            )
            .await?;
            format!("{storage}:{vmid}/{file}")
        } else {
            let file = disk_name(vmid, n as u32, Some("qcow2"));
            let backing = format!("../{}/{}", image.vmid, image.name);
            made.push(dir.join(&file));
            create_overlay(node, &dir, &file, &backing).await?;
            format!("{storage}:{}/{}/{vmid}/{file}", image.vmid, image.name)
        };
        volids.push((drive.key, volid));
    }
    let prefix = node.mac_prefix();
    let spec = CloneSpec {
        name: &target.name,
        mac_prefix: &prefix,
    };
    let config = clone_config(&base.config, &spec, &mut rand::rng(), |drive| {
        volids
            .iter()
            .find(|(key, _)| *key == drive.key)
            .map(|(_, volid)| volid.clone())
            .ok_or_else(|| format!("no new volume for {}", drive.key))
    })
    .map_err(|err| PveError::Invalid(err.to_string()))?;
    let Some(edit) = &base.edit else {
        return node.write_new_config(vmid, &config.write_canonical(WriteMode::Proxmox));
    };
    let config = edit_config(edit, vmid, config).await?;
    node.write_new_config(vmid, &config.write_canonical(WriteMode::Proxmox))?;
    edit.committed(vmid, &config).map_err(PveError::Invalid)
}

/// Edits the config of a VM `qm clone` just made, under its lock.
async fn edit_cloned_config(
    node: &Node,
    edit: &Arc<dyn CloneEdit>,
    vmid: u32,
) -> Result<(), PveError> {
    let _lock = node.lock_vm(vmid).await?;
    let config = edit_config(edit, vmid, node.require_config(vmid)?).await?;
    node.write_config(vmid, &config.write_canonical(WriteMode::Proxmox))?;
    edit.committed(vmid, &config).map_err(PveError::Invalid)
}

/// Creates many clones with bounded concurrency, reporting each as it completes.
pub async fn clone_many(
    node: &Arc<Node>,
    base_vmid: u32,
    targets: Vec<CloneTarget>,
    concurrency: usize,
    hardware: Hardware,
    edit: Option<Arc<dyn CloneEdit>>,
    mut on_outcome: impl FnMut(CloneOutcome) + Send,
) -> Result<Vec<CloneOutcome>, PveError> {
    let mut base = Base::load(node, base_vmid)?.with_hardware(hardware, &node.limits)?;
    base.edit = edit;
    let base = Arc::new(base);
    let semaphore = Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    for target in targets {
        let (node, base, semaphore) = (node.clone(), base.clone(), semaphore.clone());
        tasks.spawn(async move {
            let _permit = semaphore.acquire_owned().await;
            let error = clone_one(&node, &base, &target)
                .await
                .err()
                .map(|err| err.message());
            CloneOutcome {
                vmid: target.vmid,
                error,
            }
        });
    }
    let mut outcomes = Vec::new();
    while let Some(done) = tasks.join_next().await {
        let outcome = done.map_err(|err| PveError::Io(err.to_string()))?;
        crate::metrics::metrics().clone_made(outcome.error.is_none());
        on_outcome(outcome.clone());
        outcomes.push(outcome);
    }
    outcomes.sort_by_key(|o| o.vmid);
    Ok(outcomes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_parsing() {
        assert_eq!(parse_percent("    (45.00/100%)\r"), Some(45.0));
        assert_eq!(
            parse_percent("    (0.00/100%)\r    (12.50/100%)\r"),
            Some(12.5)
        );
        assert_eq!(parse_percent("garbage"), None);
    }
}
