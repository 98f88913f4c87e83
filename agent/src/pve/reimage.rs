//! Re-imaging a linked clone onto another base. A class's new version reaches a VM only this
//! way: by fresh overlays on the new base's images. An existing overlay is never rebased
//! (`qemu-img rebase -u` onto a changed base silently corrupts the disk).
//!
//! Every step may be repeated after a crash. A fresh overlay is made under a hidden name and
//! renamed over the old one (the rename is what discards the VM's writes); the config is
//! written once every file is in place; overlays of slots the new base lacks are moved to a
//! hidden name before the config stops naming them, and deleted after. Hidden leftovers of an
//! interrupted re-image are swept at the start of the next.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use proxlab_protocol::inventory::PowerState;
use proxlab_pve::config::{SectionKind, VmConfig, WriteMode};
use proxlab_pve::drive::{Drive, DriveKey};
use proxlab_pve::volid::disk_name;

use super::clones::{Base, create_overlay, file_image, image_drives, is_state_disk};
use super::command::PveError;
use super::node::Node;
use super::ops;

/// What names the files a re-image is making or removing.
const HIDDEN_PREFIX: &str = ".reimage-";

/// Moves the stopped linked clone `vmid` onto the base `base_vmid` (see the module docs).
/// Its config stays but for the disks: name, MACs, identity, hardware, EFI and TPM state.
/// Snapshots go, since they lived in the overlays.
pub async fn reimage(
    node: &Node,
    vmid: u32,
    base_vmid: u32,
    identity: Option<&str>,
) -> Result<PowerState, PveError> {
    proxlab_pve::volid::validate_vmid(vmid).map_err(PveError::Invalid)?;
    let base = Base::load(node, base_vmid)?;
    if !base.makes_overlays() {
        return Err(PveError::Invalid(format!(
            "the images of base {base_vmid} are not qcow2 bases on a file storage, so no VM \
             can be re-imaged onto it"
        )));
    }
    ops::check_identity(&node.require_config(vmid)?, vmid, identity)?;
    if ops::status(node, vmid).await? != PowerState::Stopped {
        return Err(PveError::Conflict(format!(
            "VM {vmid} is not stopped; shut it down before re-imaging it"
        )));
    }
    let _lock = node.lock_vm(vmid).await?;
    let mut config = node.require_config(vmid)?;
    let plan = Plan::new(node, vmid, &base.config, &config).await?;
    for dir in plan.dirs() {
        sweep_hidden(dir)?;
    }
    for step in &plan.disks {
        if !step.done {
            step.make(node, vmid).await?;
        }
    }
    for (dir, file) in &plan.dropped {
        // Gone already when an earlier try got this far.
        match std::fs::rename(dir.join(file), dir.join(hidden(file))) {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => return Err(err.into()),
            _ => {}
        }
    }
    if plan.changes_config() || !config.snapshot_names().is_empty() {
        let main = config.main_mut();
        for step in plan.disks.iter().filter(|step| !step.done) {
            main.set(&step.key.to_string(), &step.drive.value())
                .map_err(PveError::Invalid)?;
        }
        for key in &plan.dropped_keys {
            main.remove(&key.to_string());
        }
        main.remove("parent");
        config.remove_sections(|kind| matches!(kind, SectionKind::Snapshot(_)));
        node.write_config(vmid, &config.write_canonical(WriteMode::Proxmox))?;
    }
    for (dir, file) in &plan.dropped {
        remove_if_present(&dir.join(hidden(file)))?;
    }
    ops::status(node, vmid).await
}

/// One disk slot of the base, and what the VM's slot becomes.
struct DiskStep {
    key: DriveKey,
    /// The VM's drive line as it will be.
    drive: Drive,
    dir: PathBuf,
    file: String,
    /// A fresh overlay on this (relative) backing file, or a copy of this state image.
    source: Source,
    /// Already as wanted (a repeated re-image).
    done: bool,
}

enum Source {
    Overlay { backing: String },
    StateCopy { image: PathBuf, format: String },
}

impl DiskStep {
    /// Makes the file under a hidden name and renames it into place.
    async fn make(&self, node: &Node, vmid: u32) -> Result<(), PveError> {
        std::fs::create_dir_all(&self.dir)?;
        let temp = hidden(&self.file);
        match &self.source {
            Source::Overlay { backing } => create_overlay(node, &self.dir, &temp, backing).await?,
            Source::StateCopy { image, format } => {
                let target = self.dir.join(&temp);
                let args = ["convert", "-f", format, "-O", format];
                node.qemu_img(
                    args.into_iter()
                        .map(String::from)
                        .chain([image.display().to_string(), target.display().to_string()]),
                    None,
                )
                .await?;
            }
        }
        std::fs::rename(self.dir.join(&temp), self.dir.join(&self.file))?;
        tracing::debug!(vmid, slot = %self.key, file = %self.file, "re-imaged a disk");
        Ok(())
    }
}

/// What a re-image does to one VM.
struct Plan {
    disks: Vec<DiskStep>,
    /// Overlays of the old base that no slot of the new one takes over: (directory, file).
    dropped: Vec<(PathBuf, String)>,
    dropped_keys: Vec<DriveKey>,
}

impl Plan {
    async fn new(
        node: &Node,
        vmid: u32,
        base: &VmConfig,
        config: &VmConfig,
    ) -> Result<Self, PveError> {
        let own = image_drives(config);
        let mut taken: HashSet<(String, String)> = config
            .drives()
            .iter()
            .filter_map(|drive| file_image(drive.volume()).ok())
            .filter(|(_, image)| image.vmid == vmid)
            .map(|(storage, image)| (storage, image.name))
            .collect();
        let mut kept_files: HashSet<(String, String)> = HashSet::new();
        let mut disks = Vec::new();
        for base_drive in image_drives(base) {
            let (storage, base_image) = file_image(base_drive.volume())?;
            let root = node.storage_root(&storage).await?;
            let dir = root.join("images").join(vmid.to_string());
            let mine = own.iter().find(|drive| drive.key == base_drive.key);
            if is_state_disk(&base_drive) {
                if mine.is_some() {
                    continue;
                }
                let format = base_image.format().unwrap_or("raw").to_owned();
                let file = free_name(vmid, &storage, &format, &mut taken);
                let mut drive = base_drive.clone();
                drive
                    .set_volume(&format!("{storage}:{vmid}/{file}"))
                    .map_err(|err| PveError::Invalid(err.to_string()))?;
                disks.push(DiskStep {
                    key: base_drive.key,
                    drive,
                    dir,
                    file,
                    source: Source::StateCopy {
                        image: base_image.path(&root),
                        format,
                    },
                    done: false,
                });
                continue;
            }
            let reused = match mine {
                None => None,
                Some(drive) => match file_image(drive.volume()) {
                    Ok((own_storage, image)) if image.base.is_some() && image.vmid == vmid => {
                        (own_storage == storage).then_some(image.name)
                    }
                    _ => {
                        return Err(PveError::Invalid(format!(
                            "{} of VM {vmid} is not a linked clone of a class base, so \
                             re-imaging would lose it",
                            drive.key
                        )));
                    }
                },
            };
            let file = match reused {
                Some(name) => name,
                None => free_name(vmid, &storage, "qcow2", &mut taken),
            };
            kept_files.insert((storage.clone(), file.clone()));
            let volid = format!(
                "{storage}:{}/{}/{vmid}/{file}",
                base_image.vmid, base_image.name
            );
            let done =
                mine.is_some_and(|drive| drive.volume() == volid) && dir.join(&file).exists();
            let mut drive = mine.cloned().unwrap_or_else(|| base_drive.clone());
            drive
                .set_volume(&volid)
                .map_err(|err| PveError::Invalid(err.to_string()))?;
            if let Some(size) = base_drive.option("size") {
                drive
                    .set_option("size", size)
                    .map_err(|err| PveError::Invalid(err.to_string()))?;
            }
            disks.push(DiskStep {
                key: base_drive.key,
                drive,
                dir,
                file,
                source: Source::Overlay {
                    backing: format!("../{}/{}", base_image.vmid, base_image.name),
                },
                done,
            });
        }
        let mut dropped = Vec::new();
        let mut dropped_keys = Vec::new();
        for drive in own.iter().filter(|drive| !is_state_disk(drive)) {
            let Ok((storage, image)) = file_image(drive.volume()) else {
                continue;
            };
            let replaced = disks.iter().any(|step| step.key == drive.key);
            if image.base.is_none() || image.vmid != vmid {
                continue;
            }
            if !replaced {
                dropped_keys.push(drive.key);
            }
            if !kept_files.contains(&(storage.clone(), image.name.clone())) {
                let root = node.storage_root(&storage).await?;
                dropped.push((root.join("images").join(vmid.to_string()), image.name));
            }
        }
        Ok(Self {
            disks,
            dropped,
            dropped_keys,
        })
    }

    /// Every directory the re-image writes in.
    fn dirs(&self) -> Vec<&Path> {
        let mut dirs: Vec<&Path> = self
            .disks
            .iter()
            .map(|step| step.dir.as_path())
            .chain(self.dropped.iter().map(|(dir, _)| dir.as_path()))
            .collect();
        dirs.sort();
        dirs.dedup();
        dirs
    }

    fn changes_config(&self) -> bool {
        self.disks.iter().any(|step| !step.done) || !self.dropped_keys.is_empty()
    }
}

/// The first `vm-<vmid>-disk-<n>` name on `storage` that the VM's config does not name,
/// taken for this re-image. A file of that name that the config does not name is replaced.
fn free_name(
    vmid: u32,
    storage: &str,
    format: &str,
    taken: &mut HashSet<(String, String)>,
) -> String {
    let name = (0..)
        .map(|n| disk_name(vmid, n, Some(format)))
        .find(|name| !taken.contains(&(storage.to_owned(), name.clone())))
        .expect("some disk number is free");
    taken.insert((storage.to_owned(), name.clone()));
    name
}

fn hidden(file: &str) -> String {
    format!("{HIDDEN_PREFIX}{file}")
}

/// Removes what an interrupted re-image left in `dir`.
fn sweep_hidden(dir: &Path) -> Result<(), PveError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(err) => return Err(err.into()),
    };
    for entry in entries.flatten() {
        if entry
            .file_name()
            .to_string_lossy()
            .starts_with(HIDDEN_PREFIX)
        {
            remove_if_present(&entry.path())?;
        }
    }
    Ok(())
}

fn remove_if_present(path: &Path) -> Result<(), PveError> {
    match std::fs::remove_file(path) {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => Err(err.into()),
        _ => Ok(()),
    }
}
