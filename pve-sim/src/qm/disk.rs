//! `qm disk import` (`qm importdisk`) and `qm disk rescan` (`qm rescan`).

use proxlab_pve::config::VmConfig;
use proxlab_pve::drive::{Bus, DriveKey};

use crate::args::{Args, param_error};
use crate::qemu_img::{self, format_size, parse_size};
use crate::sim::{Outcome, Sim, fail};
use crate::storage::Storages;
use crate::store;

/// Sizes as Proxmox's import progress prints them.
fn human(bytes: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < units.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", units[unit])
}

fn next_unused(config: &VmConfig) -> String {
    (0..256)
        .map(|n| format!("unused{n}"))
        .find(|key| config.main().get(key).is_none())
        .unwrap_or_else(|| "unused255".into())
}

pub(super) fn import(sim: &Sim, mut args: Args) -> Outcome {
    let vmid = args.vmid(0)?;
    let source = args.positional(1, "source")?;
    let storage_id = args.positional(2, "storage")?;
    let format = args.take("format");
    let target_disk = args.take("target-disk");
    args.finish()?;
    if !std::fs::metadata(&source).is_ok_and(|m| m.is_file()) {
        return fail(format!("{source}: non-existent or non-regular file"));
    }
    if let Some(key) = &target_disk
        && DriveKey::parse(key).is_none_or(|k| k.bus == Bus::Unused)
    {
        return Err(param_error(
            "target-disk",
            &format!("invalid disk key '{key}'"),
        ));
    }
    let _lock = store::lock_vm(sim, vmid)?;
    let mut config = store::read(sim, vmid)?.config;
    store::check_lock(&config)?;
    let storages = Storages::load(sim)?;
    let storage = storages.get(&storage_id)?;
    if !storage.holds("images") {
        return fail(format!("storage {storage_id} does not support vm images"));
    }
    storages.check_space(sim, storage)?;
    let info = qemu_img::info(std::path::Path::new(&source))?;
    let format = if storage.is_file_based() {
        Some(format.unwrap_or_else(|| "raw".into()))
    } else {
        None
    };
    let name = storages.next_disk_name(sim, storage, vmid, format.as_deref(), &sim.node);
    let dir = storages.image_dir(sim, storage, vmid, &sim.node);
    std::fs::create_dir_all(&dir)?;
    println!("importing disk '{source}' to VM {vmid} ...");
    println!(
        "transferred {} of {} (0.00%)",
        human(0),
        human(info.virtual_size)
    );
    if let Err(err) = qemu_img::convert(
        sim,
        std::path::Path::new(&source),
        &info.format,
        &dir.join(&name),
        format.as_deref().unwrap_or("raw"),
    ) {
        let _ = std::fs::remove_file(dir.join(&name));
        return Err(err);
    }
    println!(
        "transferred {} of {} (100.00%)",
        human(info.virtual_size),
        human(info.virtual_size)
    );
    let volid = if storage.is_file_based() {
        format!("{storage_id}:{vmid}/{name}")
    } else {
        format!("{storage_id}:{name}")
    };
    let key = target_disk.unwrap_or_else(|| next_unused(&config));
    let value = if key.starts_with("unused") {
        volid
    } else {
        format!("{volid},size={}", format_size(info.virtual_size))
    };
    config.main_mut().set(&key, &value)?;
    store::write(sim, vmid, &config)?;
    println!("{key}: successfully imported disk '{value}'");
    Ok(())
}

pub(super) fn rescan(sim: &Sim, mut args: Args) -> Outcome {
    let only = args.number("vmid")?;
    let dryrun = args.flag("dryrun")?;
    args.finish()?;
    println!("rescan volumes...");
    if dryrun {
        println!("NOTE: running in dry-run mode, won't write changes out!");
    }
    let storages = Storages::load(sim)?;
    let vms: Vec<u32> = store::all_vms(sim)
        .into_iter()
        .filter(|(vmid, node)| *node == sim.node && only.is_none_or(|id| u64::from(*vmid) == id))
        .map(|(vmid, _)| vmid)
        .collect();
    for vmid in vms {
        let _lock = store::lock_vm(sim, vmid)?;
        let mut config = store::read(sim, vmid)?.config;
        let mut changed = false;
        let mut referenced: Vec<String> = Vec::new();
        for mut drive in config.drives() {
            if !drive.is_disk_image() {
                continue;
            }
            referenced.push(drive.volume().to_owned());
            if drive.key.bus == Bus::Unused {
                continue;
            }
            let Ok(path) = storages.path(sim, drive.volume(), &sim.node) else {
                continue;
            };
            let Ok(info) = qemu_img::info(&path) else {
                continue;
            };
            let recorded = drive.option("size").and_then(parse_size);
            if recorded != Some(info.virtual_size) {
                let old = drive.option("size").unwrap_or("0").to_owned();
                let new = format_size(info.virtual_size);
                println!(
                    "VM {vmid} ({}): size of disk '{}' updated from {old} to {new}",
                    drive.key,
                    drive.volume()
                );
                drive.set_option("size", &new)?;
                config
                    .main_mut()
                    .set(&drive.key.to_string(), &drive.value())?;
                changed = true;
            }
        }
        changed |= add_unreferenced(sim, &storages, vmid, &referenced, &mut config)?;
        if changed && !dryrun {
            store::write(sim, vmid, &config)?;
        }
    }
    Ok(())
}

/// Adds the VM's images that no entry references as `unusedN`.
fn add_unreferenced(
    sim: &Sim,
    storages: &Storages,
    vmid: u32,
    referenced: &[String],
    config: &mut VmConfig,
) -> Outcome<bool> {
    let mut changed = false;
    for storage in storages.on_node(&sim.node) {
        if !storage.holds("images") {
            continue;
        }
        for volume in storages.list(sim, storage, &sim.node) {
            if volume.vmid != Some(vmid) || referenced.contains(&volume.volid) {
                continue;
            }
            let key = next_unused(config);
            println!(
                "VM {vmid} add unreferenced volume '{}' as '{key}' to config",
                volume.volid
            );
            config.main_mut().set(&key, &volume.volid)?;
            changed = true;
        }
    }
    Ok(changed)
}
