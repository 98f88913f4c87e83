//! The node's storages and ISO images, read the way Proxmox's own status code reads them for
//! file storages: `storage.cfg` for what exists, `statvfs` on the storage's directory for
//! its size (Proxmox's `df`), `/proc/self/mounts` for whether a network storage is mounted,
//! and a directory listing of `template/iso` for its ISO images. No process is started for
//! them. Storages whose state only Proxmox knows (LVM, ZFS, Ceph RBD, iSCSI) are asked from
//! `pvesh`, at most once a minute.

use std::path::Path;
use std::time::{Duration, Instant};

use proxlab_protocol::inventory::{IsoInfo, StorageInfo};
use proxlab_pve::storage_cfg::{Storage, StorageConfig};

use crate::pve::node::Node;

/// How long `pvesh`'s answer about block storages is reused.
const BLOCK_STORAGE_REFRESH: Duration = Duration::from_secs(60);

/// File storages that are only usable once something is mounted on their path.
const MOUNTED_TYPES: &[&str] = &["nfs", "cifs", "glusterfs", "cephfs"];

/// Reads storages; keeps `pvesh`'s last answer about the ones it must ask for.
#[derive(Debug, Default)]
pub(super) struct StorageReader {
    block_storages: Option<(Instant, Vec<StorageInfo>)>,
}

impl StorageReader {
    /// Every storage this node may use, in `storage.cfg`'s order, and the ISO images on them.
    pub(super) async fn read(&mut self, node: &Node) -> (Vec<StorageInfo>, Vec<IsoInfo>) {
        let config = node
            .storage_cfg()
            .unwrap_or_else(|_| StorageConfig::default());
        let mine: Vec<&Storage> = config
            .storages
            .iter()
            .filter(|storage| storage.available_on(&node.name))
            .collect();
        let block = if mine.iter().any(|storage| !storage.is_file_based()) {
            self.block_storages(node).await
        } else {
            Vec::new()
        };
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        let mut storages = Vec::new();
        let mut isos = Vec::new();
        for storage in mine {
            if !storage.is_file_based() {
                if let Some(known) = block.iter().find(|info| info.id == storage.id) {
                    storages.push(known.clone());
                }
                continue;
            }
            let Ok(root) = node.storage_root(&storage.id).await else {
                continue;
            };
            let info = file_storage(storage, &root, &mounts);
            if info.active && storage.holds("iso") {
                isos.extend(iso_images(&storage.id, &root));
            }
            storages.push(info);
        }
        (storages, isos)
    }

    /// `pvesh get /nodes/<node>/storage`'s block storages, reused for a minute.
    async fn block_storages(&mut self, node: &Node) -> Vec<StorageInfo> {
        if let Some((asked, known)) = &self.block_storages
            && asked.elapsed() < BLOCK_STORAGE_REFRESH
        {
            return known.clone();
        }
        let path = format!("/nodes/{}/storage", node.name);
        let known = match node.pvesh_get(&path, &[]).await {
            Ok(list) => list
                .as_array()
                .into_iter()
                .flatten()
                .map(from_pvesh)
                .collect(),
            Err(err) => {
                tracing::debug!(%err, "pvesh cannot list the storages");
                Vec::new()
            }
        };
        self.block_storages = Some((Instant::now(), known.clone()));
        known
    }
}

/// A storage as `pvesh` reports it.
fn from_pvesh(entry: &serde_json::Value) -> StorageInfo {
    StorageInfo {
        id: entry["storage"].as_str().unwrap_or_default().to_owned(),
        kind: entry["type"].as_str().unwrap_or_default().to_owned(),
        shared: entry["shared"].as_i64() == Some(1),
        active: entry["active"].as_i64() == Some(1),
        content: entry["content"]
            .as_str()
            .unwrap_or_default()
            .split(',')
            .filter(|c| !c.is_empty())
            .map(str::to_owned)
            .collect(),
        total_bytes: entry["total"].as_u64().unwrap_or(0),
        used_bytes: entry["used"].as_u64().unwrap_or(0),
        avail_bytes: entry["avail"].as_u64().unwrap_or(0),
    }
}

/// A file storage's state: active when its directory can be read (and, for a network
/// storage, something is mounted there), with `statvfs`'s figures.
fn file_storage(storage: &Storage, root: &Path, mounts: &str) -> StorageInfo {
    let mounted = !MOUNTED_TYPES.contains(&storage.kind.as_str()) || is_mounted(root, mounts);
    let usage = mounted.then(|| rustix::fs::statvfs(root).ok()).flatten();
    let (total, used, avail) = usage.as_ref().map_or((0, 0, 0), |fs| {
        let block = fs.f_frsize;
        let total = fs.f_blocks * block;
        (total, total - fs.f_bfree * block, fs.f_bavail * block)
    });
    StorageInfo {
        id: storage.id.clone(),
        kind: storage.kind.clone(),
        shared: storage.is_shared(),
        active: usage.is_some(),
        content: storage.content().into_iter().map(str::to_owned).collect(),
        total_bytes: total,
        used_bytes: used,
        avail_bytes: avail,
    }
}

/// Whether `/proc/self/mounts` has a file system mounted exactly on `path` (its mount points
/// are written with octal escapes for spaces and tabs).
fn is_mounted(path: &Path, mounts: &str) -> bool {
    let wanted = path.to_string_lossy();
    mounts.lines().any(|line| {
        line.split(' ')
            .nth(1)
            .is_some_and(|point| unescape_mount_point(point) == wanted)
    })
}

fn unescape_mount_point(point: &str) -> String {
    point
        .replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

/// The ISO images of a storage: the `.iso` and `.img` files in its `template/iso`, as
/// Proxmox lists `iso` content.
fn iso_images(storage: &str, root: &Path) -> Vec<IsoInfo> {
    let dir = root.join("template/iso");
    let mut images: Vec<IsoInfo> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let lower = name.to_ascii_lowercase();
            if !(lower.ends_with(".iso") || lower.ends_with(".img")) {
                return None;
            }
            let meta = entry.metadata().ok().filter(std::fs::Metadata::is_file)?;
            Some(IsoInfo {
                storage: storage.to_owned(),
                volid: format!("{storage}:iso/{name}"),
                size_bytes: meta.len(),
            })
        })
        .collect();
    images.sort_by(|a, b| a.volid.cmp(&b.volid));
    images
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_points_are_matched_exactly_and_unescaped() {
        let mounts = "server:/export /mnt/pve/nfs\\040store nfs4 rw 0 0\n\
                      /dev/sda1 / ext4 rw 0 0\n";
        assert!(is_mounted(Path::new("/mnt/pve/nfs store"), mounts));
        assert!(!is_mounted(Path::new("/mnt/pve/nfs"), mounts));
        assert!(!is_mounted(Path::new("/mnt/pve/other"), mounts));
    }

    #[test]
    fn a_directory_storage_reports_its_file_system_and_iso_images() {
        let dir = tempfile::tempdir().unwrap();
        let iso_dir = dir.path().join("template/iso");
        std::fs::create_dir_all(&iso_dir).unwrap();
        std::fs::write(iso_dir.join("debian.iso"), vec![0u8; 4096]).unwrap();
        std::fs::write(iso_dir.join("drivers.IMG"), b"x").unwrap();
        std::fs::write(iso_dir.join("notes.txt"), b"not an image").unwrap();
        std::fs::create_dir(iso_dir.join("folder.iso")).unwrap();
        let config = StorageConfig::parse(
            "dir: local\n\tpath /var/lib/vz\n\tcontent iso,images\n\n\
             nfs: nas\n\tpath /mnt/pve/nas\n\tserver 192.0.2.1\n\texport /x\n\tcontent images\n",
        )
        .unwrap();
        let local = file_storage(config.get("local").unwrap(), dir.path(), "");
        assert!(local.active);
        assert!(local.total_bytes > 0 && local.avail_bytes <= local.total_bytes);
        assert!(local.used_bytes <= local.total_bytes);
        assert_eq!(local.content, ["iso", "images"]);
        assert!(!local.shared);
        let isos: Vec<(String, u64)> = iso_images("local", dir.path())
            .into_iter()
            .map(|iso| (iso.volid, iso.size_bytes))
            .collect();
        assert_eq!(
            isos,
            [
                ("local:iso/debian.iso".to_owned(), 4096),
                ("local:iso/drivers.IMG".to_owned(), 1)
            ]
        );
        // A network storage with nothing mounted on its path is not active, even though
        // its directory exists on the root file system.
        let nas = file_storage(config.get("nas").unwrap(), dir.path(), "");
        assert!(!nas.active && nas.shared);
        assert_eq!(nas.total_bytes, 0);
    }
}
