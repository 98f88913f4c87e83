//! `qm create`, `qm set`, `qm destroy`, `qm unlock`.

use std::collections::BTreeMap;

use proxlab_pve::config::schema::{split_index, value_type};
use proxlab_pve::config::{Section, SectionKind, VmConfig};
use proxlab_pve::drive::{Drive, DriveKey};
use proxlab_pve::ident::{random_mac, random_uuid};
use proxlab_pve::net::Nic;

use crate::args::{Args, param_error};
use crate::qemu_img::format_size;
use crate::runtime;
use crate::script::VmScript;
use crate::sim::{Failure, Outcome, Sim, fail};
use crate::storage::Storages;
use crate::store;

/// The QEMU version a simulated node reports in `meta: creation-qemu=`.
pub const QEMU_VERSION: &str = "9.2.0";

/// Keys `qm set` applies at once even on a running VM (Proxmox's fast-plug options, and the
/// devices its default hotplug setting covers).
fn applies_while_running(key: &str) -> bool {
    matches!(
        key,
        "name"
            | "description"
            | "tags"
            | "onboot"
            | "protection"
            | "startup"
            | "hookscript"
            | "vmstatestorage"
            | "lock"
            | "hotplug"
            | "shares"
    ) || DriveKey::parse(key).is_some()
        || matches!(split_index(key), ("net", Some(_)))
}

/// `STORAGE:SIZE_GiB`, the allocation syntax of create and set.
fn allocation(volume: &str) -> Option<(&str, f64)> {
    let (storage, size) = volume.split_once(':')?;
    let size: f64 = size.parse().ok()?;
    (!storage.is_empty() && !storage.contains('/') && size > 0.0).then_some((storage, size))
}

/// Applies `--key value` options to a section: validates them, allocates new disks, and
/// gives NICs without a MAC a fresh one.
fn apply_options(
    sim: &Sim,
    vmid: u32,
    section: &mut Section,
    options: &BTreeMap<String, String>,
) -> Outcome {
    let storages = Storages::load(sim)?;
    for (key, value) in options {
        if value_type(key).is_none() && key != "description" {
            return Err(param_error(
                key,
                "property is not defined in schema and the schema does not allow additional properties",
            ));
        }
        let value = if let Some(drive_key) = DriveKey::parse(key) {
            let mut drive =
                Drive::parse(drive_key, value).map_err(|err| param_error(key, &err.to_string()))?;
            let volume = drive.volume().to_owned();
            if let Some((storage, gib)) = allocation(&volume) {
                // EFI vars and TPM state have the size their firmware wants, whatever size
                // is asked for; TPM state is raw.
                let bytes = match key.as_str() {
                    "efidisk0" if drive.option("efitype") == Some("4m") => 540_672,
                    "efidisk0" => 131_072,
                    "tpmstate0" => 4 << 20,
                    _ => (gib * f64::from(1u32 << 30)) as u64,
                };
                let mut format = drive.remove_option("format");
                if key == "tpmstate0" {
                    format = Some("raw".into());
                }
                let volid = storages.allocate(sim, storage, vmid, bytes, format.as_deref())?;
                drive.set_volume(&volid)?;
                drive.set_option("size", &format_size(bytes))?;
                println!("{key}: successfully created disk '{}'", drive.value());
            }
            drive.value()
        } else if let ("net", Some(index)) = split_index(key) {
            let mut nic =
                Nic::parse(index, value).map_err(|err| param_error(key, &err.to_string()))?;
            if nic.mac.is_none() {
                nic.mac = Some(random_mac(
                    proxlab_pve::ident::DEFAULT_MAC_PREFIX,
                    &mut rand::rng(),
                ));
            }
            nic.canonical_value()
        } else {
            value.clone()
        };
        section
            .set(key, &value)
            .map_err(|err| param_error(key, &err))?;
    }
    Ok(())
}

/// The boot order Proxmox picks when none is given: first disk, CD-ROM, first NIC.
fn default_boot(config: &VmConfig) -> Option<String> {
    let drives = config.drives();
    let disk = drives
        .iter()
        .find(|d| d.is_disk_image() && d.key.bus != proxlab_pve::drive::Bus::Unused);
    let cdrom = drives.iter().find(|d| d.is_cdrom());
    let net = config.nics().first().map(|nic| format!("net{}", nic.index));
    let order: Vec<String> = disk
        .map(|d| d.key.to_string())
        .into_iter()
        .chain(cdrom.map(|d| d.key.to_string()))
        .chain(net)
        .collect();
    (!order.is_empty()).then(|| format!("order={}", order.join(";")))
}

pub(super) fn create(sim: &Sim, mut args: Args) -> Outcome {
    let vmid = args.vmid(0)?;
    let taken = |node: &str| {
        format!("unable to create VM {vmid} - VM {vmid} already exists on node '{node}'")
    };
    let _lock = store::lock_vm(sim, vmid)?;
    if let Some(node) = store::find_node(sim, vmid) {
        return fail(taken(&node));
    }
    let options = std::mem::take(&mut args.options);
    let mut config = VmConfig::default();
    let mut rng = rand::rng();
    if let Err(err) = apply_options(sim, vmid, config.main_mut(), &options) {
        free_disks(sim, &config, vmid);
        return Err(Failure {
            message: format!("unable to create VM {vmid} - {}", err.message),
            code: err.code,
        });
    }
    let main = config.main_mut();
    if main.get("smbios1").is_none() {
        main.set("smbios1", &format!("uuid={}", random_uuid(&mut rng)))?;
    }
    if main.get("vmgenid").is_none_or(|v| v == "1") {
        main.set("vmgenid", &random_uuid(&mut rng))?;
    }
    main.set(
        "meta",
        &format!("creation-qemu={QEMU_VERSION},ctime={}", Sim::now()),
    )?;
    if main.get("boot").is_none()
        && let Some(boot) = default_boot(&config)
    {
        config.main_mut().set("boot", &boot)?;
    }
    let text = config.write_canonical(proxlab_pve::config::WriteMode::Proxmox);
    if let Err(err) = store::create_exclusive(sim, vmid, &text, taken) {
        free_disks(sim, &config, vmid);
        return Err(err);
    }
    Ok(())
}

/// Frees the disks a half-made VM allocated.
fn free_disks(sim: &Sim, config: &VmConfig, vmid: u32) {
    let Ok(storages) = Storages::load(sim) else {
        return;
    };
    for drive in config.drives() {
        if let Ok((_, image)) = storages.image(drive.volume())
            && image.vmid == vmid
        {
            let _ = storages.free(sim, drive.volume());
        }
    }
}

/// The next free `unusedN` key.
fn next_unused(section: &Section) -> String {
    (0..256)
        .map(|n| format!("unused{n}"))
        .find(|key| section.get(key).is_none())
        .unwrap_or_else(|| "unused255".into())
}

pub(super) fn set(sim: &Sim, mut args: Args) -> Outcome {
    let vmid = args.vmid(0)?;
    let delete = args.take("delete");
    let digest = args.take("digest");
    let skiplock = args.flag("skiplock")?;
    let options = std::mem::take(&mut args.options);
    let _lock = store::lock_vm(sim, vmid)?;
    let loaded = store::read(sim, vmid)?;
    if let Some(digest) = digest
        && digest != VmConfig::digest(loaded.raw.as_bytes())
    {
        return fail("detected modified configuration - file changed by other user? Try again.");
    }
    let mut config = loaded.config;
    if !skiplock {
        store::check_lock(&config)?;
    }
    let mut shown: Vec<String> = options.iter().map(|(k, v)| format!("-{k} {v}")).collect();
    if let Some(keys) = &delete {
        shown.push(format!("-delete {keys}"));
    }
    shown.sort();
    println!("update VM {vmid}: {}", shown.join(" "));

    let running = runtime::running_pid(sim, vmid).is_some();
    let (now, later): (BTreeMap<_, _>, BTreeMap<_, _>) = options
        .into_iter()
        .partition(|(key, _)| !running || applies_while_running(key));
    apply_options(sim, vmid, config.main_mut(), &now)?;
    if !later.is_empty() {
        let mut pending = config
            .section(&SectionKind::Pending)
            .cloned()
            .map(|s| {
                s.entries()
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        pending.retain(|(k, _)| !later.contains_key(k));
        pending.extend(later);
        config.put_section(&SectionKind::Pending, &pending)?;
    }
    for key in delete
        .iter()
        .flat_map(|keys| keys.split([',', ';', ' ']))
        .filter(|k| !k.is_empty())
    {
        let key = key.trim_start_matches('!');
        if value_type(key).is_none() {
            return Err(param_error(
                "delete",
                &format!("invalid configuration key '{key}'"),
            ));
        }
        let main = config.main_mut();
        let Some(value) = main.get(key).map(str::to_owned) else {
            continue;
        };
        main.remove(key);
        if let Some(drive_key) = DriveKey::parse(key)
            && drive_key.bus != proxlab_pve::drive::Bus::Unused
            && let Ok(drive) = Drive::parse(drive_key, &value)
            && drive.is_disk_image()
        {
            let unused = next_unused(main);
            main.set(&unused, drive.volume())?;
        }
    }
    store::write(sim, vmid, &config)
}

/// Whether another VM in the cluster is a linked clone of this template's base volumes.
fn base_in_use(sim: &Sim, vmid: u32, config: &VmConfig) -> Option<String> {
    let bases: Vec<String> = config
        .drives()
        .iter()
        .filter(|d| d.is_disk_image())
        .map(|d| d.volume().to_owned())
        .filter(|volid| volid.contains("base-"))
        .collect();
    for (other, node) in store::all_vms(sim) {
        if other == vmid {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(sim.config_path(&node, other)) else {
            continue;
        };
        for base in &bases {
            let volname = base.split_once(':').map(|(_, v)| v).unwrap_or_default();
            if text.contains(&format!("{volname}/")) {
                return Some(base.clone());
            }
        }
    }
    None
}

pub(super) fn destroy(sim: &Sim, mut args: Args) -> Outcome {
    let vmid = args.vmid(0)?;
    let purge = args.flag("purge")?;
    let skiplock = args.flag("skiplock")?;
    let _unreferenced = args.take("destroy-unreferenced-disks");
    args.finish()?;
    let _lock = store::lock_vm(sim, vmid)?;
    let loaded = store::read(sim, vmid)?;
    let config = loaded.config;
    if config.main().get("protection") == Some("1") {
        return fail(format!("can't remove VM {vmid} - protection mode enabled"));
    }
    if runtime::running_pid(sim, vmid).is_some() {
        return fail(format!("VM {vmid} is running - destroy failed"));
    }
    if !skiplock {
        store::check_lock(&config)?;
    }
    if let Some(base) = base_in_use(sim, vmid, &config) {
        return fail(format!(
            "base volume '{base}' is still in use by linked cloned"
        ));
    }
    let storages = Storages::load(sim)?;
    // Every image the VM owns, referenced or not.
    for storage in storages.on_node(&sim.node) {
        if !storage.holds("images") {
            continue;
        }
        let dir = storages.image_dir(sim, storage, vmid, &sim.node);
        if storage.is_file_based() {
            make_writable(&dir);
            let _ = std::fs::remove_dir_all(&dir);
        } else if let Ok(entries) = std::fs::read_dir(&dir) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with(&format!("vm-{vmid}-"))
                    || name.starts_with(&format!("base-{vmid}-"))
                {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
    }
    store::remove(sim, vmid)?;
    runtime::cleanup(sim, vmid);
    VmScript::remove(sim, vmid);
    if purge {
        println!("purging VM {vmid} from related configurations..");
    }
    Ok(())
}

/// Template base images are read-only; make them deletable again.
fn make_writable(dir: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let _ = std::fs::set_permissions(entry.path(), std::fs::Permissions::from_mode(0o644));
        }
    }
}

pub(super) fn unlock(sim: &Sim, args: &Args) -> Outcome {
    let vmid = args.vmid(0)?;
    args.finish()?;
    let _lock = store::lock_vm(sim, vmid)?;
    let mut config = store::read(sim, vmid)?.config;
    if config.main_mut().remove("lock") {
        store::write(sim, vmid, &config)?;
    }
    Ok(())
}
