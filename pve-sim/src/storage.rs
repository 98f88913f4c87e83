//! Storages as the simulated node sees them: where volumes live, allocation of new disk
//! images, listing and free space.

use std::path::PathBuf;

use proxlab_pve::storage_cfg::{Storage, StorageConfig};
use proxlab_pve::volid::{Image, Volume, VolumeId, disk_name, iso_path};

use crate::qemu_img;
use crate::script::Faults;
use crate::sim::{Outcome, Sim, fail};

/// The cluster's storages.
pub struct Storages {
    pub config: StorageConfig,
}

impl Storages {
    pub fn load(sim: &Sim) -> Outcome<Self> {
        let text = std::fs::read_to_string(sim.storage_cfg()).unwrap_or_default();
        Ok(Self {
            config: StorageConfig::parse(&text)?,
        })
    }

    pub fn get(&self, id: &str) -> Outcome<&Storage> {
        match self.config.get(id) {
            Some(storage) => Ok(storage),
            None => fail(format!("storage '{id}' does not exist")),
        }
    }

    /// The directory a storage's volumes live in, for `node`.
    pub fn root(&self, sim: &Sim, storage: &Storage, node: &str) -> PathBuf {
        match storage.path() {
            Some(path) => sim.storage_dir(path, storage.is_shared(), node),
            None => {
                // Block storages: their volumes are simulated as files under a dev folder.
                let device = format!("/dev/{}", storage.id);
                sim.storage_dir(&device, storage.is_shared(), node)
            }
        }
    }

    /// Parses a volume id into its storage and image.
    pub fn image<'a>(&'a self, volid: &str) -> Outcome<(&'a Storage, Image)> {
        let parsed: VolumeId = volid.parse()?;
        let storage = self.get(&parsed.storage)?;
        let image = if storage.is_file_based() {
            match parsed.file_volume()? {
                Volume::Image(image) => image,
                Volume::Iso(_) => return fail(format!("volume '{volid}' is not a disk image")),
            }
        } else {
            parsed.block_volume()?
        };
        Ok((storage, image))
    }

    /// The file behind a volume id on `node`.
    pub fn path(&self, sim: &Sim, volid: &str, node: &str) -> Outcome<PathBuf> {
        let parsed: VolumeId = volid.parse()?;
        let storage = self.get(&parsed.storage)?;
        let root = self.root(sim, storage, node);
        if storage.is_file_based() {
            return Ok(match parsed.file_volume()? {
                Volume::Image(image) => image.path(&root),
                Volume::Iso(name) => iso_path(&root, &name),
            });
        }
        let image = parsed.block_volume()?;
        Ok(root.join(image.name))
    }

    /// The directory holding a VM's images on a storage.
    pub fn image_dir(&self, sim: &Sim, storage: &Storage, vmid: u32, node: &str) -> PathBuf {
        let root = self.root(sim, storage, node);
        if storage.is_file_based() {
            root.join("images").join(vmid.to_string())
        } else {
            root
        }
    }

    /// The lowest free `vm-<vmid>-disk-N` on a storage.
    pub fn next_disk_name(
        &self,
        sim: &Sim,
        storage: &Storage,
        vmid: u32,
        format: Option<&str>,
        node: &str,
    ) -> String {
        let dir = self.image_dir(sim, storage, vmid, node);
        let taken: Vec<String> = std::fs::read_dir(&dir)
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok()?.file_name().into_string().ok())
                    .collect()
            })
            .unwrap_or_default();
        (0..)
            .map(|n| {
                let name = disk_name(vmid, n, format);
                let base = name.replacen("vm-", "base-", 1);
                let stem = |file: &str| file.split('.').next().unwrap_or_default().to_owned();
                let used = taken
                    .iter()
                    .any(|file| stem(file) == stem(&name) || stem(file) == stem(&base));
                (name, used)
            })
            .find(|(_, used)| !used)
            .map(|(name, _)| name)
            .expect("an unused disk number exists")
    }

    /// Fails if a storage is marked full.
    pub fn check_space(&self, sim: &Sim, storage: &Storage) -> Outcome {
        if Faults::load(sim)?.storage_full.contains(&storage.id) {
            return fail(format!(
                "error with cfs lock 'storage-{}': unable to create image: qemu-img: No space left on device",
                storage.id
            ));
        }
        Ok(())
    }

    /// Allocates a new, empty disk for `vmid`. Returns its volume id.
    pub fn allocate(
        &self,
        sim: &Sim,
        storage_id: &str,
        vmid: u32,
        size_bytes: u64,
        format: Option<&str>,
    ) -> Outcome<String> {
        let storage = self.get(storage_id)?;
        if !storage.holds("images") {
            return fail(format!("storage '{storage_id}' does not support vm images"));
        }
        self.check_space(sim, storage)?;
        let format = if storage.is_file_based() {
            Some(format.unwrap_or("raw"))
        } else {
            None
        };
        let name = self.next_disk_name(sim, storage, vmid, format, &sim.node);
        let dir = self.image_dir(sim, storage, vmid, &sim.node);
        std::fs::create_dir_all(&dir)?;
        qemu_img::create(sim, &dir.join(&name), format.unwrap_or("raw"), size_bytes)?;
        Ok(if storage.is_file_based() {
            format!("{storage_id}:{vmid}/{name}")
        } else {
            format!("{storage_id}:{name}")
        })
    }

    /// Deletes a volume's file.
    pub fn free(&self, sim: &Sim, volid: &str) -> Outcome {
        let path = self.path(sim, volid, &sim.node)?;
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(err) => fail(format!("unable to free '{volid}': {err}")),
        }
    }

    /// Storages `node` can use.
    pub fn on_node<'a>(&'a self, node: &'a str) -> impl Iterator<Item = &'a Storage> + 'a {
        self.config
            .storages
            .iter()
            .filter(move |s| s.nodes().is_none_or(|nodes| nodes.contains(&node)))
    }
}

/// One volume as `pvesm list` and the storage content API show it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct VolumeInfo {
    pub volid: String,
    pub format: String,
    pub content: String,
    pub size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vmid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
}

fn files_in(dir: &std::path::Path) -> Vec<(String, PathBuf)> {
    let mut files: Vec<(String, PathBuf)> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|entry| {
                    let entry = entry.ok()?;
                    let name = entry.file_name().into_string().ok()?;
                    entry
                        .file_type()
                        .ok()?
                        .is_file()
                        .then_some((name, entry.path()))
                })
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

impl Storages {
    /// Every volume on a storage, as seen from `node`.
    pub fn list(&self, sim: &Sim, storage: &Storage, node: &str) -> Vec<VolumeInfo> {
        let root = self.root(sim, storage, node);
        let mut volumes = Vec::new();
        if storage.is_file_based() {
            let mut owners: Vec<(u32, PathBuf)> = std::fs::read_dir(root.join("images"))
                .map(|entries| {
                    entries
                        .filter_map(|e| {
                            let e = e.ok()?;
                            Some((e.file_name().to_str()?.parse().ok()?, e.path()))
                        })
                        .collect()
                })
                .unwrap_or_default();
            owners.sort();
            for (vmid, dir) in owners {
                for (name, path) in files_in(&dir) {
                    let Ok(info) = qemu_img::info(&path) else {
                        continue;
                    };
                    let parent = info.backing.clone();
                    let volname = match parent.as_deref().and_then(|b| b.strip_prefix("../")) {
                        Some(base) => format!("{base}/{vmid}/{name}"),
                        None => format!("{vmid}/{name}"),
                    };
                    volumes.push(VolumeInfo {
                        volid: format!("{}:{volname}", storage.id),
                        format: info.format,
                        content: "images".into(),
                        size: info.virtual_size,
                        vmid: Some(vmid),
                        parent,
                    });
                }
            }
            for (name, path) in files_in(&iso_path(&root, "")) {
                volumes.push(VolumeInfo {
                    volid: format!("{}:iso/{name}", storage.id),
                    format: "iso".into(),
                    content: "iso".into(),
                    size: std::fs::metadata(&path).map_or(0, |m| m.len()),
                    vmid: None,
                    parent: None,
                });
            }
        } else {
            for (name, path) in files_in(&root) {
                let Ok(info) = qemu_img::info(&path) else {
                    continue;
                };
                let vmid = name.split('-').nth(1).and_then(|id| id.parse().ok());
                volumes.push(VolumeInfo {
                    volid: format!("{}:{name}", storage.id),
                    format: "raw".into(),
                    content: "images".into(),
                    size: info.virtual_size,
                    vmid,
                    parent: None,
                });
            }
        }
        volumes
    }

    /// Total, used and available bytes of a storage on `node`.
    pub fn usage(&self, sim: &Sim, storage: &Storage, node: &str) -> (u64, u64, u64) {
        let total: u64 = std::env::var("PVE_SIM_STORAGE_BYTES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1 << 40);
        let used = disk_usage(&self.root(sim, storage, node));
        let full = Faults::load(sim).is_ok_and(|f| f.storage_full.contains(&storage.id));
        if full {
            return (total, total, 0);
        }
        (total, used.min(total), total.saturating_sub(used))
    }
}

/// Bytes allocated below a directory.
fn disk_usage(dir: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.file_type() {
            Ok(kind) if kind.is_dir() => disk_usage(&entry.path()),
            Ok(_) => entry.metadata().map_or(0, |m| m.blocks() * 512),
            Err(_) => 0,
        })
        .sum()
}
