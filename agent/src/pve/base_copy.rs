//! The node's side of copying a class base between nodes (see
//! `proxlab_protocol::base_copy`): describing and reading a base here, and receiving one.
//!
//! Only class bases (templates whose images are files) are read, whole images of them or the
//! difference to an older base of this node (made here, as a hidden `.diff-*` file beside the
//! image, by a safe `qemu-img rebase` of a fresh overlay: it compares the two bases and keeps
//! the clusters that differ). What is received is staged as `*.part` files beside where the
//! base's images go, checked with `qemu-img` (a plain qcow2 image naming no other file, of the
//! announced size), and renamed into place when the base is registered with a config that
//! passes [`proxlab_pve::policy`]. A received difference is put on this node's own copy of the
//! reference (the backing file the sender's header names is replaced unread), checked, and
//! flattened into a plain image.

use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use proxlab_protocol::base_copy::{
    BaseExportReply, BaseImport, BaseWrite, CHUNK_BYTES, Chunk, ExportedDisk,
};
use proxlab_pve::clone::is_dropped;
use proxlab_pve::config::{VmConfig, WriteMode};
use proxlab_pve::policy::{self, NodeLimits};

use super::clones::{base_config, file_image, image_drives};
use super::command::PveError;
use super::node::Node;

/// The most images a base may have (far more than Proxmox's disk slots would hold).
pub const MAX_DISKS: u32 = 64;

fn invalid(message: impl Into<String>) -> PveError {
    PveError::Invalid(message.into())
}

/// A base of this node: its config must mark it a template.
fn local_base(node: &Node, vmid: u32) -> Result<(VmConfig, String), PveError> {
    let (config, raw) = node.read_config(vmid)?.ok_or_else(|| {
        PveError::NotFound(format!(
            "Configuration file 'nodes/{}/qemu-server/{vmid}.conf' does not exist",
            node.name
        ))
    })?;
    if config.main().get("template") != Some("1") {
        return Err(invalid(format!("VM {vmid} is not a template")));
    }
    Ok((config, raw))
}

/// The files of a base's images, in the order the copy numbers them.
async fn image_files(node: &Node, config: &VmConfig) -> Result<Vec<(String, PathBuf)>, PveError> {
    let mut files = Vec::new();
    for drive in image_drives(config) {
        file_image(drive.volume())?;
        files.push((
            drive.key.to_string(),
            node.volume_path(drive.volume()).await?,
        ));
    }
    Ok(files)
}

/// A stopped VM of this node to export as a base (see `BaseExport::from_vm`): its config,
/// and the text sent for it, marked a template.
async fn local_vm(node: &Node, vmid: u32) -> Result<(VmConfig, String), PveError> {
    let mut config = node.require_config(vmid)?;
    if config.main().get("template") == Some("1") {
        return Err(invalid(format!("VM {vmid} is a template, not a VM")));
    }
    if super::ops::status(node, vmid).await? != proxlab_protocol::inventory::PowerState::Stopped {
        return Err(PveError::Conflict(format!(
            "VM {vmid} is running; only a stopped VM is exported"
        )));
    }
    config
        .main_mut()
        .set("template", "1")
        .map_err(PveError::Invalid)?;
    let raw = config.write_canonical(WriteMode::Proxmox);
    Ok((config, raw))
}

/// Describes a base of this node for copying: whole images, or with `diff_against` (an
/// older base of this node) the difference to its image of the same drive key where it has
/// one. With `from_vm`, `vmid` is a stopped VM whose disks are overlays on the reference's
/// images: the overlays are the difference, staged as they are (see `BaseExport::from_vm`).
pub async fn export(
    node: &Node,
    vmid: u32,
    diff_against: Option<u32>,
    from_vm: bool,
) -> Result<BaseExportReply, PveError> {
    if from_vm {
        return export_vm(
            node,
            vmid,
            diff_against.ok_or_else(|| {
                invalid("a VM is exported as its difference to a base: name the base")
            })?,
        )
        .await;
    }
    let (config, raw) = local_base(node, vmid)?;
    let reference = match diff_against {
        Some(reference) => image_files(node, &local_base(node, reference)?.0).await?,
        None => Vec::new(),
    };
    let mut disks = Vec::new();
    for (disk, (key, path)) in image_files(node, &config).await?.into_iter().enumerate() {
        let against = reference.iter().find(|(other, _)| *other == key);
        let (bytes, diff_of) = match (diff_against, against) {
            (Some(reference), Some((_, reference_path))) => {
                let diff = diff_path(&path, reference, disk as u32);
                make_diff(node, &path, reference_path, &diff).await?;
                (std::fs::metadata(&diff)?.len(), Some(key.clone()))
            }
            _ => (std::fs::metadata(&path)?.len(), None),
        };
        disks.push(ExportedDisk {
            key,
            bytes,
            diff_of,
        });
    }
    Ok(BaseExportReply { config: raw, disks })
}

/// Exports the stopped VM `vmid` as a base: each disk that is an overlay right on the
/// reference's image of its slot is staged as it is (it holds exactly what differs); a disk
/// that is no overlay (EFI vars, TPM state) goes whole. An overlay on anything else cannot be
/// sent this way.
async fn export_vm(node: &Node, vmid: u32, reference: u32) -> Result<BaseExportReply, PveError> {
    let (config, raw) = local_vm(node, vmid).await?;
    let reference_images = image_files(node, &local_base(node, reference)?.0).await?;
    let mut disks = Vec::new();
    for (disk, (key, path)) in image_files(node, &config).await?.into_iter().enumerate() {
        let drive = image_drives(&config)
            .into_iter()
            .find(|drive| drive.key.to_string() == key)
            .ok_or_else(|| invalid(format!("VM {vmid} has no {key}")))?;
        let (_, image) = file_image(drive.volume())?;
        let Some(base) = image.base else {
            disks.push(ExportedDisk {
                key,
                bytes: std::fs::metadata(&path)?.len(),
                diff_of: None,
            });
            continue;
        };
        let on_reference = reference_images.iter().any(|(other, reference_path)| {
            *other == key
                && base.vmid == reference
                && reference_path.file_name().and_then(|name| name.to_str()) == Some(&base.name)
        });
        if !on_reference {
            return Err(invalid(format!(
                "{key} of VM {vmid} is not an overlay on base {reference}'s image of that slot"
            )));
        }
        let diff = diff_path(&path, reference, disk as u32);
        let temp = diff.with_extension("qcow2.new");
        std::fs::copy(&path, &temp)?;
        std::fs::rename(&temp, &diff)?;
        disks.push(ExportedDisk {
            key: key.clone(),
            bytes: std::fs::metadata(&diff)?.len(),
            diff_of: Some(key),
        });
    }
    Ok(BaseExportReply { config: raw, disks })
}

/// Where the difference of image `disk` of a base to the base `reference` is staged: beside
/// the image, hidden.
fn diff_path(image: &Path, reference: u32, disk: u32) -> PathBuf {
    image.with_file_name(format!(".diff-{reference}-{disk}.qcow2"))
}

/// Makes `diff`: a qcow2 image on `base` holding the clusters where `base` differs from
/// `reference`, then naming `reference` as its backing file. A safe rebase of a fresh, empty
/// overlay does exactly that; the file is renamed into place whole.
async fn make_diff(
    node: &Node,
    base: &Path,
    reference: &Path,
    diff: &Path,
) -> Result<(), PveError> {
    let temp = diff.with_extension("qcow2.new");
    let _ = std::fs::remove_file(&temp);
    let shown = |path: &Path| path.display().to_string();
    node.qemu_img(
        [
            "create",
            "-q",
            "-f",
            "qcow2",
            "-F",
            "qcow2",
            "-b",
            &shown(base),
            &shown(&temp),
        ],
        None,
    )
    .await?;
    let rebase = node
        .qemu_img(
            [
                "rebase",
                "-f",
                "qcow2",
                "-F",
                "qcow2",
                "-b",
                &shown(reference),
                &shown(&temp),
            ],
            None,
        )
        .await;
    if let Err(err) = rebase {
        let _ = std::fs::remove_file(&temp);
        return Err(err);
    }
    std::fs::rename(&temp, diff)?;
    Ok(())
}

/// The file an export staged for image `disk` of `vmid`: the difference to the base
/// `diff_against` when the export made one, else the image itself; and whether it is a
/// difference (removed once sent).
pub async fn file_to_send(
    node: &Node,
    vmid: u32,
    disk: u32,
    diff_against: Option<u32>,
    from_vm: bool,
) -> Result<(PathBuf, bool), PveError> {
    let config = if from_vm {
        local_vm(node, vmid).await?.0
    } else {
        local_base(node, vmid)?.0
    };
    let files = image_files(node, &config).await?;
    let (_, image) = files
        .into_iter()
        .nth(disk as usize)
        .ok_or_else(|| invalid(format!("VM {vmid} has no disk {disk}")))?;
    let diff = diff_against
        .map(|reference| diff_path(&image, reference, disk))
        .filter(|diff| diff.exists());
    Ok(match diff {
        Some(diff) => (diff, true),
        None => (image, false),
    })
}

/// Reads one chunk of an image of a base of this node, or of its difference to the base
/// `diff_against` made by the export. The difference is removed once its last chunk is read.
pub async fn read(
    node: &Node,
    vmid: u32,
    disk: u32,
    offset: u64,
    diff_against: Option<u32>,
    from_vm: bool,
) -> Result<Chunk, PveError> {
    let (path, is_diff) = file_to_send(node, vmid, disk, diff_against, from_vm).await?;
    tokio::task::spawn_blocking(move || {
        let mut file = std::fs::File::open(&path)?;
        let size = file.metadata()?.len();
        file.seek(SeekFrom::Start(offset))?;
        let mut buffer = Vec::with_capacity(CHUNK_BYTES as usize);
        file.take(u64::from(CHUNK_BYTES)).read_to_end(&mut buffer)?;
        let len = buffer.len() as u32;
        if is_diff && offset + u64::from(len) >= size {
            let _ = std::fs::remove_file(&path);
        }
        let data = if buffer.iter().all(|&byte| byte == 0) {
            String::new()
        } else {
            BASE64.encode(&buffer)
        };
        Ok(Chunk { len, data })
    })
    .await
    .map_err(|err| PveError::Io(err.to_string()))?
}

/// Where a received base's images go: the storage must be a file storage of this node, and
/// the VMID free in the cluster.
pub async fn receiving_dir(node: &Node, vmid: u32, storage: &str) -> Result<PathBuf, PveError> {
    if let Some(owner) = node.vmid_owner(vmid) {
        return Err(PveError::Conflict(format!(
            "unable to create VM {vmid} - VM {vmid} already exists on node '{owner}'"
        )));
    }
    let storages = node.storage_cfg()?;
    let found = storages
        .get(storage)
        .ok_or_else(|| invalid(format!("storage '{storage}' does not exist")))?;
    if !found.is_file_based() {
        return Err(invalid(format!(
            "storage '{storage}' cannot hold qcow2 class bases"
        )));
    }
    Ok(node
        .storage_root(storage)
        .await?
        .join("images")
        .join(vmid.to_string()))
}

fn image_name(vmid: u32, disk: u32) -> String {
    format!("base-{vmid}-disk-{disk}.qcow2")
}

pub fn part_name(vmid: u32, disk: u32) -> String {
    format!("{}.part", image_name(vmid, disk))
}

/// Appends a received chunk to a staged image.
pub async fn write(node: &Node, request: BaseWrite) -> Result<u64, PveError> {
    if request.disk >= MAX_DISKS {
        return Err(invalid(format!("a base has at most {MAX_DISKS} disks")));
    }
    if request.chunk.len > CHUNK_BYTES {
        return Err(invalid(format!(
            "a chunk holds at most {CHUNK_BYTES} bytes"
        )));
    }
    let data = if request.chunk.data.is_empty() {
        None
    } else {
        let bytes = BASE64
            .decode(&request.chunk.data)
            .map_err(|err| invalid(format!("the chunk is not base64: {err}")))?;
        if bytes.len() != request.chunk.len as usize {
            return Err(invalid(format!(
                "the chunk says {} bytes but carries {}",
                request.chunk.len,
                bytes.len()
            )));
        }
        Some(bytes)
    };
    let dir = receiving_dir(node, request.base_vmid, &request.storage).await?;
    let _lock = node.lock_vm(request.base_vmid).await?;
    let path = dir.join(part_name(request.base_vmid, request.disk));
    let (offset, len) = (request.offset, u64::from(request.chunk.len));
    tokio::task::spawn_blocking(move || {
        std::fs::create_dir_all(&dir)?;
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(offset == 0)
            .write(true)
            .open(&path)?;
        let size = file.metadata()?.len();
        if size != offset {
            return Err(invalid(format!(
                "the image has {size} bytes so far; a chunk at {offset} does not follow"
            )));
        }
        match data {
            Some(bytes) => {
                file.seek(SeekFrom::Start(offset))?;
                file.write_all(&bytes)?;
            }
            // A hole: extending the file leaves it unallocated.
            None => file.set_len(offset + len)?,
        }
        Ok(offset + len)
    })
    .await
    .map_err(|err| PveError::Io(err.to_string()))?
}

/// Checks a staged image: of the announced size, a plain qcow2 image whose header names no
/// other file (but a backing file, for a difference: it is replaced unread), and consistent.
async fn check_image(
    node: &Node,
    path: &Path,
    bytes: u64,
    difference: bool,
) -> Result<(), PveError> {
    let size = std::fs::metadata(path)
        .map_err(|_| invalid(format!("{} was not received", path.display())))?
        .len();
    if size != bytes {
        return Err(invalid(format!(
            "{} has {size} of {bytes} bytes",
            path.display()
        )));
    }
    let shown = path.display().to_string();
    let info: serde_json::Value = serde_json::from_str(
        &node
            .qemu_img(["info", "-f", "qcow2", "--output=json", &shown], None)
            .await?,
    )
    .map_err(|err| invalid(err.to_string()))?;
    header_problem(&info, difference)
        .map_or(Ok(()), |problem| Err(invalid(format!("{shown} {problem}"))))?;
    if difference {
        // Checked once it stands on this node's reference.
        return Ok(());
    }
    node.qemu_img(["check", "-q", "-f", "qcow2", &shown], None)
        .await
        .map(drop)
}

/// What makes a received image unsafe to give a VM, from its `qemu-img info`: anything but
/// plain qcow2, a backing file or an external data file (either names a file of the node,
/// which the VM would then read and write as root), or encryption.
fn header_problem(info: &serde_json::Value, difference: bool) -> Option<&'static str> {
    let data = &info["format-specific"]["data"];
    let backed =
        info.get("backing-filename").is_some() || info.get("full-backing-filename").is_some();
    if info["format"] != "qcow2" {
        Some("is not a qcow2 image")
    } else if backed && !difference {
        Some("has a backing file")
    } else if data.get("data-file").is_some() || data["data-file-raw"] == true {
        Some("has an external data file")
    } else if info["encrypted"] == true || data.get("encrypt").is_some() {
        Some("is encrypted")
    } else {
        None
    }
}

/// A received config may hold only what a config from outside the node may (see
/// [`proxlab_pve::policy`]): nothing that reaches the host. What the clone rewrite drops
/// anyway (the template flag, snapshot state, unused volumes) is not looked at.
fn check_received_config(source: &VmConfig, limits: &NodeLimits) -> Result<(), PveError> {
    let mut kept = source.clone();
    kept.main_mut().retain_keys(|key| !is_dropped(key));
    policy::check_config(&kept, limits)
        .map_err(|refusal| invalid(format!("the base's config is refused: {refusal}")))
}

/// Registers a received base: its staged images become its disks, and its config is the
/// source's with them, renamed, with fresh identities.
pub async fn import(node: &Node, request: &BaseImport) -> Result<Vec<String>, PveError> {
    let vmid = request.base_vmid;
    let source = VmConfig::parse(&request.config);
    if source.main().get("template") != Some("1") {
        return Err(invalid("the source of a base must be a template"));
    }
    check_received_config(&source, &node.limits)?;
    let drives = image_drives(&source);
    if drives.len() != request.disks.len() {
        return Err(invalid(format!(
            "the source has {} images but {} were announced",
            drives.len(),
            request.disks.len()
        )));
    }
    let diff_of: Vec<Option<&str>> = (0..drives.len())
        .map(|disk| request.diff_of.get(disk).and_then(Option::as_deref))
        .collect();
    let reference = match (request.reference, diff_of.iter().any(Option::is_some)) {
        (Some(reference), true) => image_files(node, &local_base(node, reference)?.0).await?,
        (None, true) => return Err(invalid("differences were sent without a reference base")),
        (_, false) => Vec::new(),
    };
    let dir = receiving_dir(node, vmid, &request.storage).await?;
    let _lock = node.lock_vm(vmid).await?;
    let parts: Vec<PathBuf> = (0..drives.len() as u32)
        .map(|disk| dir.join(part_name(vmid, disk)))
        .collect();
    let result: Result<Vec<String>, PveError> = async {
        for ((path, bytes), diff_of) in parts.iter().zip(&request.disks).zip(&diff_of) {
            check_image(node, path, *bytes, diff_of.is_some()).await?;
        }
        let mut copies = Vec::new();
        let mut volids = Vec::new();
        for (disk, (drive, part)) in drives.iter().zip(&parts).enumerate() {
            let name = image_name(vmid, disk as u32);
            let target = dir.join(&name);
            match diff_of[disk] {
                None => std::fs::rename(part, &target)?,
                Some(key) => {
                    let (_, base) = reference
                        .iter()
                        .find(|(other, _)| other == key)
                        .ok_or_else(|| invalid(format!("the reference base has no {key}")))?;
                    apply_diff(node, part, base, &target).await?;
                }
            }
            std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o444))?;
            let volid = format!("{}:{vmid}/{name}", request.storage);
            copies.push((drive.key, volid.clone()));
            volids.push(volid);
        }
        let config = base_config(node, &source, &request.name, &copies)?;
        node.write_new_config(vmid, &config.write_canonical(WriteMode::Proxmox))?;
        Ok(volids)
    }
    .await;
    if result.is_err() {
        for disk in 0..drives.len() as u32 {
            let image = dir.join(image_name(vmid, disk));
            let _ = std::fs::remove_file(dir.join(part_name(vmid, disk)));
            let _ = std::fs::remove_file(image.with_extension("qcow2.flat"));
            let _ = std::fs::remove_file(image);
        }
    }
    result
}

/// Makes `target` from a received difference: `part` is put on this node's `reference`
/// image (the sender's name for it is replaced unread), checked, and flattened into a plain
/// image, which then names no other file.
async fn apply_diff(
    node: &Node,
    part: &Path,
    reference: &Path,
    target: &Path,
) -> Result<(), PveError> {
    let shown = |path: &Path| path.display().to_string();
    let (part_shown, reference_shown) = (shown(part), shown(reference));
    node.qemu_img(
        [
            "rebase",
            "-u",
            "-f",
            "qcow2",
            "-F",
            "qcow2",
            "-b",
            &reference_shown,
            &part_shown,
        ],
        None,
    )
    .await?;
    node.qemu_img(["check", "-q", "-f", "qcow2", &part_shown], None)
        .await?;
    let flat = target.with_extension("qcow2.flat");
    node.qemu_img(
        [
            "convert",
            "-f",
            "qcow2",
            "-O",
            "qcow2",
            &part_shown,
            &shown(&flat),
        ],
        None,
    )
    .await?;
    std::fs::rename(&flat, target)?;
    std::fs::remove_file(part)?;
    Ok(())
}

/// Removes what an interrupted copy left of base `vmid` on this node's file storages.
pub async fn discard_received(node: &Node, vmid: u32) -> Result<(), PveError> {
    let storages = node.storage_cfg()?;
    for storage in &storages.storages {
        if !storage.is_file_based() || !storage.available_on(&node.name) {
            continue;
        }
        let Ok(root) = node.storage_root(&storage.id).await else {
            continue;
        };
        let dir = root.join("images").join(vmid.to_string());
        for disk in 0..MAX_DISKS {
            let _ = std::fs::remove_file(dir.join(part_name(vmid, disk)));
        }
        // Only if nothing else is in it.
        let _ = std::fs::remove_dir(&dir);
    }
    Ok(())
}
