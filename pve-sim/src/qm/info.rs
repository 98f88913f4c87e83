//! `qm list`, `qm status`, `qm config`, `qm pending`, and the VM status Proxmox's API gives.

use proxlab_pve::config::text::encode_text;
use proxlab_pve::config::{SectionKind, VmConfig};
use proxlab_pve::drive::{Drive, DriveKey};
use serde_json::{Value, json};

use crate::args::Args;
use crate::qemu_img::parse_size;
use crate::runtime::{self, RunState};
use crate::sim::{Outcome, Sim, fail};
use crate::store;

/// Memory in MiB (`memory: [current=]N`, default 512).
pub fn memory_mib(config: &VmConfig) -> u64 {
    config
        .main()
        .get("memory")
        .and_then(proxlab_pve::size::parse_memory_mib)
        .unwrap_or(512)
}

fn number(config: &VmConfig, key: &str, default: u64) -> u64 {
    config
        .main()
        .get(key)
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The boot disk's `size=`, in bytes: first disk in `boot: order=`, else `bootdisk`.
pub fn boot_disk_bytes(config: &VmConfig) -> u64 {
    let main = config.main();
    let order = main
        .get("boot")
        .and_then(|boot| boot.strip_prefix("order="))
        .map(|order| order.split(';').map(str::to_owned).collect::<Vec<_>>());
    let candidates = order.unwrap_or_else(|| {
        main.get("bootdisk")
            .map(|d| vec![d.to_owned()])
            .unwrap_or_default()
    });
    candidates
        .iter()
        .find_map(|key| {
            let drive = Drive::parse(DriveKey::parse(key)?, main.get(key)?).ok()?;
            (!drive.is_cdrom()).then(|| drive.option("size").and_then(parse_size))?
        })
        .unwrap_or(0)
}

/// The status object of `GET .../status/current` (and, trimmed, of `qm list`).
pub fn vm_status(sim: &Sim, vmid: u32, config: &VmConfig) -> Value {
    let main = config.main();
    let pid = runtime::running_pid(sim, vmid);
    let sockets = number(config, "sockets", 1);
    let cores = number(config, "cores", 1);
    let cpus = main
        .get("vcpus")
        .and_then(|v| v.parse().ok())
        .unwrap_or(sockets * cores);
    let mut status = json!({
        "vmid": vmid,
        "name": main.get("name").map_or_else(|| format!("VM {vmid}"), str::to_owned),
        "status": if pid.is_some() { "running" } else { "stopped" },
        "cpus": cpus,
        "maxmem": memory_mib(config) << 20,
        "maxdisk": boot_disk_bytes(config),
        "disk": 0,
        "cpu": 0,
        "mem": 0,
        "memhost": 0,
        "netin": 0,
        "netout": 0,
        "uptime": 0,
        "ha": {"managed": 0},
    });
    let map = status.as_object_mut().expect("object");
    if main.get("template") == Some("1") {
        map.insert("template".into(), json!(1));
    }
    for key in ["lock", "tags"] {
        if let Some(value) = main.get(key) {
            map.insert(key.into(), json!(value));
        }
    }
    if config.guest_agent_enabled() {
        map.insert("agent".into(), json!(1));
    }
    match pid {
        Some(pid) => {
            let state = RunState::load(sim, vmid).unwrap_or_default();
            map.insert("pid".into(), json!(pid));
            map.insert(
                "qmpstatus".into(),
                json!(if state.qmpstatus.is_empty() {
                    "running".into()
                } else {
                    state.qmpstatus
                }),
            );
            map.insert(
                "uptime".into(),
                json!((Sim::now() - state.started_at).max(0)),
            );
            map.insert("cpu".into(), json!(runtime::cpu_fraction(pid)));
            let rss = runtime::rss_bytes(pid);
            map.insert("mem".into(), json!(rss));
            map.insert("memhost".into(), json!(rss));
        }
        None => {
            map.insert("qmpstatus".into(), json!("stopped"));
        }
    }
    status
}

pub(super) fn list(sim: &Sim, mut args: Args) -> Outcome {
    let _full = args.flag("full")?;
    args.finish()?;
    let vms: Vec<u32> = store::all_vms(sim)
        .into_iter()
        .filter(|(_, node)| *node == sim.node)
        .map(|(vmid, _)| vmid)
        .collect();
    if vms.is_empty() {
        return Ok(());
    }
    println!(
        "{:>10} {:<20} {:<10} {:<10} {:>12} {:<10}",
        "VMID", "NAME", "STATUS", "MEM(MB)", "BOOTDISK(GB)", "PID"
    );
    for vmid in vms {
        let Ok(loaded) = store::read(sim, vmid) else {
            continue;
        };
        let status = vm_status(sim, vmid, &loaded.config);
        println!(
            "{:>10} {:<20} {:<10} {:<10} {:>12.2} {:<10}",
            vmid,
            status["name"].as_str().unwrap_or_default(),
            status["qmpstatus"].as_str().unwrap_or_default(),
            memory_mib(&loaded.config),
            status["maxdisk"].as_u64().unwrap_or(0) as f64 / f64::from(1u32 << 30),
            status["pid"].as_u64().unwrap_or(0)
        );
    }
    Ok(())
}

fn print_recursive(value: &Value, indent: usize) {
    if let Value::Object(map) = value {
        for (key, item) in map {
            if matches!(key.as_str(), "cpu" | "relcpu") && indent == 0 {
                continue;
            }
            let tabs = "\t".repeat(indent);
            match item {
                Value::Object(_) => {
                    println!("{tabs}{key}:");
                    print_recursive(item, indent + 1);
                }
                Value::String(text) => println!("{tabs}{key}: {text}"),
                other => println!("{tabs}{key}: {other}"),
            }
        }
    }
}

pub(super) fn status(sim: &Sim, mut args: Args) -> Outcome {
    let vmid = args.vmid(0)?;
    let verbose = args.flag("verbose")?;
    args.finish()?;
    let loaded = store::read(sim, vmid)?;
    let status = vm_status(sim, vmid, &loaded.config);
    if verbose {
        print_recursive(&status, 0);
    } else {
        // Proxmox prints the QMP status when there is one (`paused`, `prelaunch`…).
        let shown = status["qmpstatus"]
            .as_str()
            .or_else(|| status["status"].as_str())
            .unwrap_or("unknown");
        println!("status: {shown}");
    }
    Ok(())
}

/// The config as `qm config` shows it: pending values applied unless `current`.
pub fn effective_entries(config: &VmConfig, current: bool) -> Vec<(String, String)> {
    let mut entries: Vec<(String, String)> = config
        .main()
        .entries()
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    if !current && let Some(pending) = config.section(&SectionKind::Pending) {
        for (key, value) in pending.entries() {
            if key == "delete" {
                for deleted in value.split(',') {
                    let deleted = deleted.trim_start_matches('!');
                    entries.retain(|(k, _)| k != deleted);
                }
                continue;
            }
            entries.retain(|(k, _)| k != key);
            entries.push((key.to_owned(), value.to_owned()));
        }
    }
    entries
}

pub(super) fn config(sim: &Sim, mut args: Args) -> Outcome {
    let vmid = args.vmid(0)?;
    let current = args.flag("current")?;
    let snapshot = args.take("snapshot");
    args.finish()?;
    let loaded = store::read(sim, vmid)?;
    let (mut entries, description) = match snapshot {
        Some(name) => {
            let Some(section) = loaded.config.section(&SectionKind::Snapshot(name.clone())) else {
                return fail(format!("snapshot '{name}' does not exist"));
            };
            let entries = section
                .entries()
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect();
            (entries, section.description())
        }
        None => (
            effective_entries(&loaded.config, current),
            loaded.config.main().description(),
        ),
    };
    if let Some(text) = description {
        entries.push(("description".into(), encode_text(&text)));
    }
    entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    for (key, value) in entries {
        println!("{key}: {value}");
    }
    Ok(())
}

pub(super) fn pending(sim: &Sim, args: &Args) -> Outcome {
    let vmid = args.vmid(0)?;
    args.finish()?;
    let loaded = store::read(sim, vmid)?;
    let main = loaded.config.main();
    let pending = loaded.config.section(&SectionKind::Pending);
    let pending_entries: Vec<(&str, &str)> = pending.map(|p| p.entries()).unwrap_or_default();
    let deleted: Vec<&str> = pending_entries
        .iter()
        .filter(|(k, _)| *k == "delete")
        .flat_map(|(_, v)| v.split(','))
        .map(|k| k.trim_start_matches('!'))
        .collect();
    let mut keys: Vec<&str> = main
        .entries()
        .iter()
        .map(|(k, _)| *k)
        .chain(pending_entries.iter().map(|(k, _)| *k))
        .filter(|k| *k != "delete")
        .collect();
    keys.sort_unstable();
    keys.dedup();
    for key in keys {
        let new = pending_entries
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| *v);
        match (main.get(key), new) {
            (Some(current), _) if deleted.contains(&key) => println!("del {key}: {current}"),
            (Some(current), Some(new)) if current != new => {
                println!("cur {key}: {current}");
                println!("new {key}: {new}");
            }
            (Some(current), _) => println!("cur {key}: {current}"),
            (None, Some(new)) => println!("new {key}: {new}"),
            (None, None) => {}
        }
    }
    Ok(())
}
