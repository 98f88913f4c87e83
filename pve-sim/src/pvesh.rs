//! The simulated `pvesh get` for the API paths proxlab reads.

use serde_json::{Value, json};

use crate::args::Args;
use crate::json::{compact, pretty};
use crate::qm::info::{effective_entries, vm_status};
use crate::sim::{Failure, Outcome, Sim, fail};
use crate::storage::Storages;
use crate::store;

fn on_node(sim: &Sim, node: &str) -> Outcome<Sim> {
    if !sim.node_dir(node).is_dir() {
        return fail(format!(
            "hostname lookup '{node}' failed - failed to get address info for: {node}: Name or service not known"
        ));
    }
    Ok(Sim {
        root: sim.root.clone(),
        node: node.to_owned(),
    })
}

fn next_id(sim: &Sim) -> u32 {
    let taken: Vec<u32> = store::all_vms(sim)
        .into_iter()
        .map(|(vmid, _)| vmid)
        .collect();
    (100..).find(|id| !taken.contains(id)).unwrap_or(100)
}

fn storage_status(sim: &Sim, storages: &Storages, node: &str) -> Value {
    let list: Vec<Value> = storages
        .on_node(node)
        .map(|storage| {
            let (total, used, avail) = storages.usage(sim, storage, node);
            json!({
                "storage": storage.id,
                "type": storage.kind,
                "content": storage.content().join(","),
                "active": i32::from(!storage.is_disabled()),
                "enabled": i32::from(!storage.is_disabled()),
                "shared": i32::from(storage.is_shared()),
                "total": total,
                "used": used,
                "avail": avail,
                "used_fraction": if total == 0 { 0.0 } else { used as f64 / total as f64 },
            })
        })
        .collect();
    Value::Array(list)
}

fn resources(sim: &Sim, kind: Option<&str>) -> Outcome<Value> {
    let mut list = Vec::new();
    if kind.is_none_or(|k| k == "vm") {
        for (vmid, node) in store::all_vms(sim) {
            let node_sim = on_node(sim, &node)?;
            let Ok(loaded) = store::read(&node_sim, vmid) else {
                continue;
            };
            let status = vm_status(&node_sim, vmid, &loaded.config);
            let mut entry = json!({
                "id": format!("qemu/{vmid}"),
                "type": "qemu",
                "vmid": vmid,
                "node": node,
                "name": status["name"],
                "status": status["status"],
                "template": status.get("template").cloned().unwrap_or(json!(0)),
                "uptime": status["uptime"],
                "maxcpu": status["cpus"],
                "cpu": status["cpu"],
                "maxmem": status["maxmem"],
                "mem": status["mem"],
                "maxdisk": status["maxdisk"],
                "disk": 0,
                "netin": 0,
                "netout": 0,
                "diskread": 0,
                "diskwrite": 0,
                "memhost": status["memhost"],
            });
            for key in ["tags", "lock"] {
                if let Some(value) = status.get(key) {
                    entry[key] = value.clone();
                }
            }
            list.push(entry);
        }
    }
    let storages = Storages::load(sim)?;
    if kind.is_none_or(|k| k == "storage") {
        for node in sim.nodes() {
            for storage in storages.on_node(&node) {
                let (total, used, _) = storages.usage(sim, storage, &node);
                list.push(json!({
                    "id": format!("storage/{node}/{}", storage.id),
                    "type": "storage",
                    "storage": storage.id,
                    "node": node,
                    "plugintype": storage.kind,
                    "status": if storage.is_disabled() { "unknown" } else { "available" },
                    "shared": i32::from(storage.is_shared()),
                    "content": storage.content().join(","),
                    "disk": used,
                    "maxdisk": total,
                }));
            }
        }
    }
    if kind.is_none_or(|k| k == "node") {
        for node in sim.nodes() {
            list.push(json!({
                "id": format!("node/{node}"),
                "type": "node",
                "node": node,
                "status": "online",
                "cpu": 0.01,
                "maxcpu": std::thread::available_parallelism().map_or(1, |n| n.get()),
                "mem": 1u64 << 30,
                "maxmem": 16u64 << 30,
                "disk": 0,
                "maxdisk": 1u64 << 40,
                "uptime": 86_400,
                "level": "",
                "cgroup-mode": 2,
            }));
        }
    }
    Ok(Value::Array(list))
}

fn get(sim: &Sim, path: &str, args: &mut Args) -> Outcome<Value> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    match parts.as_slice() {
        ["cluster", "nextid"] => Ok(json!(next_id(sim).to_string())),
        ["cluster", "resources"] => resources(sim, args.take("type").as_deref()),
        ["nodes"] => Ok(Value::Array(
            sim.nodes()
                .into_iter()
                .map(|node| json!({"node": node, "status": "online"}))
                .collect(),
        )),
        ["nodes", node, "qemu"] => {
            let node_sim = on_node(sim, node)?;
            let list = store::all_vms(sim)
                .into_iter()
                .filter(|(_, n)| n == node)
                .filter_map(|(vmid, _)| {
                    Some(vm_status(
                        &node_sim,
                        vmid,
                        &store::read(&node_sim, vmid).ok()?.config,
                    ))
                })
                .collect();
            Ok(Value::Array(list))
        }
        ["nodes", node, "qemu", vmid, rest @ ..] => {
            let node_sim = on_node(sim, node)?;
            let vmid: u32 = vmid.parse().map_err(|_| Failure { message: format!("400 Parameter verification failed.\nvmid: invalid format - value '{vmid}' does not look like a valid VM ID"), code: 255 })?;
            let loaded = store::read(&node_sim, vmid)?;
            match rest {
                ["status", "current"] => Ok(vm_status(&node_sim, vmid, &loaded.config)),
                ["config"] => {
                    let current = args.flag("current")?;
                    let mut object = serde_json::Map::new();
                    for (key, value) in effective_entries(&loaded.config, current) {
                        object.insert(key, json!(value));
                    }
                    if let Some(text) = loaded.config.main().description() {
                        object.insert("description".into(), json!(text));
                    }
                    object.insert(
                        "digest".into(),
                        json!(proxlab_pve::config::VmConfig::digest(loaded.raw.as_bytes())),
                    );
                    Ok(Value::Object(object))
                }
                _ => fail(format!("no 'get' handler for '{path}'")),
            }
        }
        ["nodes", node, "storage"] => {
            on_node(sim, node)?;
            Ok(storage_status(sim, &Storages::load(sim)?, node))
        }
        ["nodes", node, "storage", id, "content"] => {
            let node_sim = on_node(sim, node)?;
            let storages = Storages::load(sim)?;
            let storage = storages.get(id)?;
            let content = args.take("content");
            let vmid = args.number("vmid")?;
            let list = storages
                .list(&node_sim, storage, node)
                .into_iter()
                .filter(|v| content.as_deref().is_none_or(|c| c == v.content))
                .filter(|v| vmid.is_none_or(|id| v.vmid == Some(id as u32)))
                .map(|v| serde_json::to_value(v).unwrap_or_default())
                .collect();
            Ok(Value::Array(list))
        }
        _ => fail(format!("no 'get' handler for '{path}'")),
    }
}

fn create(sim: &Sim, path: &str, args: &mut Args) -> Outcome<Value> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    match parts.as_slice() {
        ["nodes", node, "qemu", vmid, "agent", "file-write"] => {
            let node_sim = on_node(sim, node)?;
            let vmid: u32 = vmid.parse().map_err(|_| Failure {
                message: format!(
                    "400 Parameter verification failed.\nvmid: invalid format - value '{vmid}' \
                     does not look like a valid VM ID"
                ),
                code: 255,
            })?;
            crate::qm::guest::file_write(&node_sim, vmid, args)
        }
        _ => fail(format!("no 'create' handler for '{path}'")),
    }
}

pub fn run(argv: &[String]) -> Outcome {
    let Some(verb) = argv.first() else {
        return Err(Failure {
            message: "USAGE: pvesh <COMMAND> [ARGS] [OPTIONS]".into(),
            code: 255,
        });
    };
    let sim = Sim::from_env()?;
    crate::script::Faults::load(&sim)?.apply_latency("pvesh");
    let mut args = Args::parse(&argv[1..])?;
    let path = args.positional(0, "api_path")?;
    let format = args.take("output-format").unwrap_or_else(|| "text".into());
    let _noborder = args.take("noborder");
    let _noheader = args.take("noheader");
    let value = match verb.as_str() {
        "get" | "ls" => get(&sim, &path, &mut args)?,
        "create" => create(&sim, &path, &mut args)?,
        other => return fail(format!("no '{other}' handler for '{path}'")),
    };
    args.finish()?;
    match format.as_str() {
        "json" => println!("{}", compact(&value)),
        "json-pretty" => print!("{}", pretty(&value)),
        "text" | "yaml" => match &value {
            Value::String(text) => println!("{text}"),
            Value::Number(number) => println!("{number}"),
            other => print!("{}", pretty(other)),
        },
        other => {
            return fail(format!(
                "400 Parameter verification failed.\noutput-format: value '{other}' does not have a value in the enumeration 'text, json, json-pretty, yaml'"
            ));
        }
    }
    Ok(())
}
