//! `qm clone` and `qm template`.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use proxlab_pve::clone::{CloneSpec, clone_config};
use proxlab_pve::drive::Drive;
use proxlab_pve::ident::DEFAULT_MAC_PREFIX;
use proxlab_pve::volid::base_name_of;

use crate::args::{Args, param_error};
use crate::qemu_img;
use crate::sim::{Failure, Outcome, Sim, fail};
use crate::storage::Storages;
use crate::store;

/// The datacenter's MAC prefix (`mac_prefix:` in `datacenter.cfg`), or Proxmox's default.
fn mac_prefix(sim: &Sim) -> String {
    std::fs::read_to_string(sim.etc_pve().join("datacenter.cfg"))
        .ok()
        .and_then(|text| {
            text.lines().find_map(|line| {
                line.strip_prefix("mac_prefix:")
                    .map(|v| v.trim().to_owned())
            })
        })
        .unwrap_or_else(|| DEFAULT_MAC_PREFIX.to_owned())
}

/// What one clone operation made so far, to undo on failure.
struct Made {
    files: Vec<PathBuf>,
}

impl Made {
    fn undo(&self) {
        for file in &self.files {
            let _ = std::fs::remove_file(file);
        }
    }
}

struct CloneTarget<'a> {
    sim: &'a Sim,
    storages: &'a Storages,
    newid: u32,
    full: bool,
    storage: Option<String>,
    format: Option<String>,
}

impl CloneTarget<'_> {
    /// Makes the new volume for one drive and returns its volume id.
    fn clone_drive(&self, drive: &Drive, made: &mut Made) -> Outcome<String> {
        let (sim, storages, newid) = (self.sim, self.storages, self.newid);
        let source = drive.volume();
        let (source_storage, image) = storages.image(source)?;
        let state_disk = matches!(drive.key.to_string().as_str(), "efidisk0" | "tpmstate0");
        let linked = !self.full && !state_disk && !drive.is_cloudinit();
        if linked {
            if !image.is_base() {
                return fail(format!(
                    "Linked clone feature is not supported for '{source}' ({})",
                    drive.key
                ));
            }
            println!("create linked clone of drive {} ({source})", drive.key);
            storages.check_space(sim, source_storage)?;
            let format = if source_storage.is_file_based() {
                Some("qcow2")
            } else {
                None
            };
            let name = storages.next_disk_name(sim, source_storage, newid, format, &sim.node);
            let dir = storages.image_dir(sim, source_storage, newid, &sim.node);
            std::fs::create_dir_all(&dir)?;
            let backing = if source_storage.is_file_based() {
                format!("../{}/{}", image.vmid, image.name)
            } else {
                image.name.clone()
            };
            made.files.push(dir.join(&name));
            let source_format = image.format().unwrap_or("raw");
            eprintln!(
                "clone {}/{}: images, {name}, {newid} to {name} (base={backing})",
                image.vmid, image.name
            );
            qemu_img::create_overlay(sim, &dir, &name, &backing, source_format)?;
            return Ok(if source_storage.is_file_based() {
                format!(
                    "{}:{}/{}/{newid}/{name}",
                    source_storage.id, image.vmid, image.name
                )
            } else {
                format!("{}:{}/{name}", source_storage.id, image.name)
            });
        }
        println!("create full clone of drive {} ({source})", drive.key);
        let target_id = self
            .storage
            .clone()
            .unwrap_or_else(|| source_storage.id.clone());
        let target = storages.get(&target_id)?;
        storages.check_space(sim, target)?;
        let source_format = image.format().unwrap_or("raw");
        let format = if target.is_file_based() {
            Some(self.format.as_deref().unwrap_or(source_format))
        } else {
            None
        };
        let name = storages.next_disk_name(sim, target, newid, format, &sim.node);
        let dir = storages.image_dir(sim, target, newid, &sim.node);
        std::fs::create_dir_all(&dir)?;
        let source_path = storages.path(sim, source, &sim.node)?;
        made.files.push(dir.join(&name));
        qemu_img::convert(
            sim,
            &source_path,
            source_format,
            &dir.join(&name),
            format.unwrap_or("raw"),
        )?;
        Ok(if target.is_file_based() {
            format!("{target_id}:{newid}/{name}")
        } else {
            format!("{target_id}:{name}")
        })
    }
}

pub(super) fn clone(sim: &Sim, mut args: Args) -> Outcome {
    let vmid = args.vmid(0)?;
    let newid = args.vmid(1)?;
    let name = args.take("name");
    let full = args.take("full");
    let storage = args.take("storage");
    let format = args.take("format");
    let snapname = args.take("snapname");
    let description = args.take("description");
    let _pool = args.take("pool");
    let _bwlimit = args.take("bwlimit");
    if let Some(node) = args.take("target")
        && node != sim.node
    {
        return fail("target node is not supported by the simulator for local storage clones");
    }
    args.finish()?;
    if snapname.is_some() {
        return fail("cloning from a snapshot is not supported by the simulator");
    }
    let _source_lock = store::lock_vm(sim, vmid)?;
    let source = store::read(sim, vmid)?.config;
    store::check_lock(&source)?;
    let is_template = source.main().get("template") == Some("1");
    let full = match full.as_deref() {
        None => !is_template,
        Some("1" | "yes" | "true" | "on") => true,
        Some("0" | "no" | "false" | "off") => false,
        Some(other) => {
            return Err(param_error(
                "full",
                &format!("type check ('boolean') failed - got '{other}'"),
            ));
        }
    };
    if !full && storage.is_some() {
        return Err(param_error(
            "storage",
            "parameter 'storage' not allowed for linked clones",
        ));
    }
    if !full && format.is_some() {
        return Err(param_error(
            "format",
            "parameter 'format' not allowed for linked clones",
        ));
    }
    let _target_lock = store::lock_vm(sim, newid)?;
    store::create_exclusive(
        sim,
        newid,
        "# qmclone temporary file\nlock: clone\n",
        |_| format!("unable to create VM {newid}: config file already exists"),
    )?;
    println!("creating a clone of VM {vmid} with ID {newid}");
    let storages = Storages::load(sim)?;
    let target = CloneTarget {
        sim,
        storages: &storages,
        newid,
        full,
        storage,
        format,
    };
    let mut made = Made { files: Vec::new() };
    let old_name = source
        .main()
        .get("name")
        .map_or_else(|| vmid.to_string(), str::to_owned);
    let name = name.unwrap_or_else(|| format!("Copy-of-VM-{old_name}"));
    let prefix = mac_prefix(sim);
    let spec = CloneSpec {
        name: &name,
        mac_prefix: &prefix,
    };
    let result = clone_config(&source, &spec, &mut rand::rng(), |drive| {
        target
            .clone_drive(drive, &mut made)
            .map_err(|failure| failure.message)
    });
    let mut config = match result {
        Ok(config) => config,
        Err(err) => {
            made.undo();
            let _ = store::remove(sim, newid);
            return Err(Failure {
                message: format!("clone failed: {err}"),
                code: 255,
            });
        }
    };
    if let Some(text) = description {
        config.main_mut().set_description(&text);
    }
    store::write(sim, newid, &config)
}

pub(super) fn template(sim: &Sim, mut args: Args) -> Outcome {
    let vmid = args.vmid(0)?;
    let only = args.take("disk");
    args.finish()?;
    let _lock = store::lock_vm(sim, vmid)?;
    let mut config = store::read(sim, vmid)?.config;
    store::check_lock(&config)?;
    if !config.snapshot_names().is_empty() {
        return fail("unable to create template, because VM contains snapshots");
    }
    if config.main().get("template") == Some("1") && only.is_none() {
        return fail("you can't convert a template to a template");
    }
    if crate::runtime::running_pid(sim, vmid).is_some() {
        return fail("you can't convert a VM to template if VM is running");
    }
    let storages = Storages::load(sim)?;
    for mut drive in config.drives() {
        if !drive.is_disk_image()
            || drive.is_cloudinit()
            || drive.key.bus == proxlab_pve::drive::Bus::Unused
        {
            continue;
        }
        if only
            .as_deref()
            .is_some_and(|key| key != drive.key.to_string())
        {
            continue;
        }
        let (storage, image) = storages.image(drive.volume())?;
        if image.is_base() {
            continue;
        }
        let from = storages.path(sim, drive.volume(), &sim.node)?;
        let base = base_name_of(&image.name);
        let to = from.with_file_name(&base);
        std::fs::rename(&from, &to)?;
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o444))?;
        let volid = if storage.is_file_based() {
            format!("{}:{}/{base}", storage.id, image.vmid)
        } else {
            format!("{}:{base}", storage.id)
        };
        drive.set_volume(&volid)?;
        config
            .main_mut()
            .set(&drive.key.to_string(), &drive.value())?;
        // Proxmox writes the config after each converted disk.
        store::write(sim, vmid, &config)?;
    }
    config.main_mut().set("template", "1")?;
    store::write(sim, vmid, &config)
}
