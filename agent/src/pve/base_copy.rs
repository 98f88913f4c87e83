//! The node's side of copying a class base between nodes (see
//! `proxlab_protocol::base_copy`): describing and reading a base here, and receiving one.
//!
//! Only class bases (templates whose images are files) are read, and only whole images of
//! them; what is received is staged as `*.part` files beside where the base's images go,
//! checked with `qemu-img` (a plain qcow2 image naming no other file, of the announced size),
//! and renamed into place when the base is registered with a config that passes
//! [`proxlab_pve::policy`].

use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

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
const MAX_DISKS: u32 = 64;

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

/// Describes a base of this node for copying.
pub async fn export(node: &Node, vmid: u32) -> Result<BaseExportReply, PveError> {
    let (config, raw) = local_base(node, vmid)?;
    let mut disks = Vec::new();
    for (key, path) in image_files(node, &config).await? {
        let bytes = std::fs::metadata(&path)?.len();
        disks.push(ExportedDisk { key, bytes });
    }
    Ok(BaseExportReply { config: raw, disks })
}

/// Reads one chunk of an image of a base of this node.
pub async fn read(node: &Node, vmid: u32, disk: u32, offset: u64) -> Result<Chunk, PveError> {
    let (config, _) = local_base(node, vmid)?;
    let files = image_files(node, &config).await?;
    let (_, path) = files
        .into_iter()
        .nth(disk as usize)
        .ok_or_else(|| invalid(format!("VM {vmid} has no disk {disk}")))?;
    tokio::task::spawn_blocking(move || {
        let mut file = std::fs::File::open(&path)?;
        file.seek(SeekFrom::Start(offset))?;
        let mut buffer = Vec::with_capacity(CHUNK_BYTES as usize);
        file.take(u64::from(CHUNK_BYTES)).read_to_end(&mut buffer)?;
        let len = buffer.len() as u32;
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
async fn receiving_dir(node: &Node, vmid: u32, storage: &str) -> Result<PathBuf, PveError> {
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

fn part_name(vmid: u32, disk: u32) -> String {
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
/// other file, and consistent.
async fn check_image(node: &Node, path: &std::path::Path, bytes: u64) -> Result<(), PveError> {
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
    header_problem(&info).map_or(Ok(()), |problem| Err(invalid(format!("{shown} {problem}"))))?;
    node.qemu_img(["check", "-q", "-f", "qcow2", &shown], None)
        .await
        .map(drop)
}

/// What makes a received image unsafe to give a VM, from its `qemu-img info`: anything but
/// plain qcow2, a backing file or an external data file (either names a file of the node,
/// which the VM would then read and write as root), or encryption.
fn header_problem(info: &serde_json::Value) -> Option<&'static str> {
    let data = &info["format-specific"]["data"];
    if info["format"] != "qcow2" {
        Some("is not a qcow2 image")
    } else if info.get("backing-filename").is_some() || info.get("full-backing-filename").is_some()
    {
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
    let dir = receiving_dir(node, vmid, &request.storage).await?;
    let _lock = node.lock_vm(vmid).await?;
    let parts: Vec<PathBuf> = (0..drives.len() as u32)
        .map(|disk| dir.join(part_name(vmid, disk)))
        .collect();
    let result: Result<Vec<String>, PveError> = async {
        for (path, bytes) in parts.iter().zip(&request.disks) {
            check_image(node, path, *bytes).await?;
        }
        let mut copies = Vec::new();
        let mut volids = Vec::new();
        for (disk, (drive, part)) in drives.iter().zip(&parts).enumerate() {
            let name = image_name(vmid, disk as u32);
            let target = dir.join(&name);
            std::fs::rename(part, &target)?;
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
            let _ = std::fs::remove_file(dir.join(part_name(vmid, disk)));
            let _ = std::fs::remove_file(dir.join(image_name(vmid, disk)));
        }
    }
    result
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
