//! `qm snapshot`, `listsnapshot`, `rollback`, `delsnapshot`: Proxmox's snapshot state
//! machine over internal qcow2 snapshots.

use proxlab_pve::config::{SectionKind, VmConfig};
use proxlab_pve::drive::Bus;

use crate::args::{Args, param_error};
use crate::qemu_img;
use crate::runtime;
use crate::sim::{Outcome, Sim, fail};
use crate::storage::Storages;
use crate::store;
use crate::time::format_datetime;

/// Keys a snapshot does not copy from the current config.
const NOT_SNAPSHOTTED: &[&str] = &["snapstate", "snaptime", "vmstate", "lock", "description"];

fn validate_name(name: &str) -> Outcome {
    let mut chars = name.chars();
    let valid = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && name.len() >= 2
        && name.len() <= 40
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if !valid {
        return Err(param_error(
            "snapname",
            &format!("invalid format - invalid configuration ID '{name}'"),
        ));
    }
    if name.eq_ignore_ascii_case("current") || name.eq_ignore_ascii_case("pending") {
        return fail(format!(
            "unable to use snapshot name '{name}' (reserved name)"
        ));
    }
    Ok(())
}

/// The disk images of a config's entries (main or snapshot section).
fn images(entries: &[(String, String)]) -> Vec<String> {
    entries
        .iter()
        .filter_map(|(key, value)| {
            let drive =
                proxlab_pve::drive::Drive::parse(proxlab_pve::drive::DriveKey::parse(key)?, value)
                    .ok()?;
            (drive.is_disk_image() && drive.key.bus != Bus::Unused && !drive.is_cloudinit())
                .then(|| drive.volume().to_owned())
        })
        .collect()
}

fn owned(entries: Vec<(&str, &str)>) -> Vec<(String, String)> {
    entries
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// Runs `qemu-img snapshot <op>` on every qcow2 disk.
fn on_disks(sim: &Sim, volumes: &[String], op: &str, name: &str) -> Outcome {
    let storages = Storages::load(sim)?;
    for volid in volumes {
        let path = storages.path(sim, volid, &sim.node)?;
        qemu_img::snapshot(sim, op, name, &path)?;
    }
    Ok(())
}

pub(super) fn snapshot(sim: &Sim, mut args: Args) -> Outcome {
    let vmid = args.vmid(0)?;
    let name = args.positional(1, "snapname")?;
    let description = args.take("description");
    let _vmstate = args.take("vmstate");
    args.finish()?;
    validate_name(&name)?;
    let _lock = store::lock_vm(sim, vmid)?;
    let mut config = store::read(sim, vmid)?.config;
    if config.main().get("template") == Some("1") {
        return fail("you can't take a snapshot if it's a template");
    }
    store::check_lock(&config)?;
    if config.snapshot_names().contains(&name.as_str()) {
        return fail(format!("snapshot name '{name}' already used"));
    }
    let storages = Storages::load(sim)?;
    let entries = owned(config.main().entries());
    let volumes = images(&entries);
    for volid in &volumes {
        let (storage, image) = storages.image(volid)?;
        if !storage.is_file_based() || image.format() != Some("qcow2") {
            return fail("snapshot feature is not available");
        }
    }
    // Prepare: lock the VM and record the snapshot as incomplete.
    config.main_mut().set("lock", "snapshot")?;
    let mut section: Vec<(String, String)> = entries
        .into_iter()
        .filter(|(key, _)| !NOT_SNAPSHOTTED.contains(&key.as_str()) && !key.starts_with("unused"))
        .collect();
    section.push(("snapstate".into(), "prepare".into()));
    section.push(("snaptime".into(), Sim::now().to_string()));
    let kind = SectionKind::Snapshot(name.clone());
    config.put_section(&kind, &section)?;
    store::write(sim, vmid, &config)?;
    if let Err(err) = on_disks(sim, &volumes, "-c", &name) {
        let _ = on_disks(sim, &volumes, "-d", &name);
        config.remove_sections(|k| *k == kind);
        config.main_mut().remove("lock");
        store::write(sim, vmid, &config)?;
        return Err(err);
    }
    // Commit.
    section.retain(|(key, _)| key != "snapstate");
    config.put_section(&kind, &section)?;
    if let Some(text) = description
        && let Some(snap) = config.sections.iter_mut().rfind(|s| s.kind == kind)
    {
        snap.set_description(&text);
    }
    config.main_mut().remove("lock");
    config.main_mut().set("parent", &name)?;
    store::write(sim, vmid, &config)
}

fn snapshot_entries(config: &VmConfig, name: &str) -> Outcome<Vec<(String, String)>> {
    match config.section(&SectionKind::Snapshot(name.to_owned())) {
        Some(section) => Ok(owned(section.entries())),
        None => fail(format!("snapshot '{name}' does not exist")),
    }
}

pub(super) fn rollback(sim: &Sim, mut args: Args) -> Outcome {
    let vmid = args.vmid(0)?;
    let name = args.positional(1, "snapname")?;
    let start = args.flag("start")?;
    args.finish()?;
    let _lock = store::lock_vm(sim, vmid)?;
    let mut config = store::read(sim, vmid)?.config;
    let entries = snapshot_entries(&config, &name)?;
    if let Some((_, state)) = entries.iter().find(|(k, _)| k == "snapstate") {
        return fail(format!(
            "unable to rollback to incomplete snapshot (snapstate = {state})"
        ));
    }
    store::check_lock(&config)?;
    runtime::kill(sim, vmid, std::time::Duration::from_secs(10))?;
    config.main_mut().set("lock", "rollback")?;
    store::write(sim, vmid, &config)?;
    on_disks(sim, &images(&entries), "-a", &name)?;
    // The main config becomes the snapshot's, keeping its description and unused disks.
    let main = config.main_mut();
    main.retain_keys(|key| key.starts_with("unused") || key == "description");
    for (key, value) in entries
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "snaptime" | "vmstate" | "snapstate" | "parent"))
    {
        main.set(key, value)?;
    }
    main.set("parent", &name)?;
    store::write(sim, vmid, &config)?;
    if start {
        runtime::start(sim, vmid)?;
    }
    Ok(())
}

pub(super) fn delsnapshot(sim: &Sim, mut args: Args) -> Outcome {
    let vmid = args.vmid(0)?;
    let name = args.positional(1, "snapname")?;
    let force = args.flag("force")?;
    args.finish()?;
    let _lock = store::lock_vm(sim, vmid)?;
    let mut config = store::read(sim, vmid)?.config;
    let entries = snapshot_entries(&config, &name)?;
    store::check_lock(&config)?;
    let kind = SectionKind::Snapshot(name.clone());
    let parent = entries
        .iter()
        .find(|(k, _)| k == "parent")
        .map(|(_, v)| v.clone());
    config.main_mut().set("lock", "snapshot-delete")?;
    store::write(sim, vmid, &config)?;
    if let Err(err) = on_disks(sim, &images(&entries), "-d", &name)
        && !force
    {
        config.main_mut().remove("lock");
        store::write(sim, vmid, &config)?;
        return Err(err);
    }
    // Whoever had this snapshot as parent now has its parent.
    for section in &mut config.sections {
        if section.get("parent") == Some(name.as_str()) {
            match &parent {
                Some(parent) => section.set("parent", parent)?,
                None => {
                    section.remove("parent");
                }
            }
        }
    }
    config.remove_sections(|k| *k == kind);
    config.main_mut().remove("lock");
    store::write(sim, vmid, &config)
}

pub(super) fn listsnapshot(sim: &Sim, args: &Args) -> Outcome {
    let vmid = args.vmid(0)?;
    args.finish()?;
    let config = store::read(sim, vmid)?.config;
    struct Node {
        name: String,
        parent: Option<String>,
        time: Option<i64>,
        description: String,
    }
    let mut nodes: Vec<Node> = config
        .snapshot_names()
        .into_iter()
        .filter_map(|name| {
            let section = config.section(&SectionKind::Snapshot(name.to_owned()))?;
            Some(Node {
                name: name.to_owned(),
                parent: section.get("parent").map(str::to_owned),
                time: section.get("snaptime").and_then(|t| t.parse().ok()),
                description: section
                    .description()
                    .and_then(|d| d.lines().next().map(str::to_owned))
                    .filter(|d| !d.is_empty())
                    .unwrap_or_else(|| "no-description".into()),
            })
        })
        .collect();
    nodes.push(Node {
        name: "current".into(),
        parent: config.main().get("parent").map(str::to_owned),
        time: None,
        description: "You are here!".into(),
    });
    let names: Vec<String> = nodes.iter().map(|n| n.name.clone()).collect();
    fn print(nodes: &[Node], names: &[String], parent: Option<&str>, depth: usize) {
        let mut children: Vec<&Node> = nodes
            .iter()
            .filter(|n| {
                let effective = n
                    .parent
                    .as_deref()
                    .filter(|p| names.iter().any(|name| name == p) && *p != "current");
                effective == parent
            })
            .collect();
        children.sort_by_key(|n| n.time.unwrap_or(i64::MAX));
        for child in children {
            let prefix = format!("{}`->", " ".repeat(depth));
            let width = 30usize.saturating_sub(prefix.len());
            let time = child.time.map(format_datetime).unwrap_or_default();
            println!(
                "{prefix} {:<width$} {time:<23} {}",
                child.name, child.description
            );
            if child.name != "current" {
                print(nodes, names, Some(&child.name), depth + 1);
            }
        }
    }
    print(&nodes, &names, None, 0);
    Ok(())
}
