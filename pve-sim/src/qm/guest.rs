//! `qm guest cmd` and `qm guest exec`, answered from the VM's script.

use proxlab_pve::config::VmConfig;
use serde_json::{Value, json};

use crate::args::{Args, param_error};
use crate::json::pretty;
use crate::runtime;
use crate::script::{ExecAnswer, VmScript};
use crate::sim::{Outcome, Sim, fail};
use crate::store;

/// The commands `qm guest cmd` accepts.
const COMMANDS: &[&str] = &[
    "fsfreeze-freeze",
    "fsfreeze-status",
    "fsfreeze-thaw",
    "fstrim",
    "get-fsinfo",
    "get-host-name",
    "get-memory-block-info",
    "get-memory-blocks",
    "get-osinfo",
    "get-time",
    "get-timezone",
    "get-users",
    "get-vcpus",
    "info",
    "network-get-interfaces",
    "ping",
    "shutdown",
    "suspend-disk",
    "suspend-hybrid",
    "suspend-ram",
];

/// The guest agent checks Proxmox makes, in its order.
fn reachable_agent(sim: &Sim, vmid: u32) -> Outcome<(VmConfig, VmScript)> {
    let config = store::read(sim, vmid)?.config;
    if !config.guest_agent_enabled() {
        return fail("No QEMU guest agent configured");
    }
    if runtime::running_pid(sim, vmid).is_none() {
        return fail(format!("VM {vmid} is not running"));
    }
    let script = VmScript::load(sim, vmid)?;
    if !script.guest_agent {
        return fail("QEMU guest agent is not running");
    }
    Ok((config, script))
}

/// The interfaces the guest reports: its script's, or by default [`default_interfaces`].
pub fn interfaces(vmid: u32, config: &VmConfig, script: &VmScript) -> Value {
    script
        .interfaces
        .clone()
        .unwrap_or_else(|| default_interfaces(vmid, config))
}

/// The interfaces a guest reports by default: loopback, and one NIC per `netN` with an
/// address derived from the VMID.
fn default_interfaces(vmid: u32, config: &VmConfig) -> Value {
    let mut list = vec![json!({
        "name": "lo",
        "hardware-address": "00:00:00:00:00:00",
        "ip-addresses": [
            {"ip-address": "127.0.0.1", "ip-address-type": "ipv4", "prefix": 8},
            {"ip-address": "::1", "ip-address-type": "ipv6", "prefix": 128}
        ]
    })];
    for nic in config.nics() {
        let Some(mac) = nic.mac else { continue };
        let octets: Vec<u8> = mac
            .split(':')
            .filter_map(|h| u8::from_str_radix(h, 16).ok())
            .collect();
        let link_local = format!(
            "fe80::{:02x}{:02x}:{:02x}ff:fe{:02x}:{:02x}{:02x}",
            octets[0] ^ 2,
            octets[1],
            octets[2],
            octets[3],
            octets[4],
            octets[5]
        );
        list.push(json!({
            "name": format!("eth{}", nic.index),
            "hardware-address": mac.to_ascii_lowercase(),
            "ip-addresses": [
                {"ip-address": format!("10.{}.{}.{}", (vmid >> 8) & 0xff, vmid & 0xff, 10 + nic.index), "ip-address-type": "ipv4", "prefix": 24},
                {"ip-address": link_local, "ip-address-type": "ipv6", "prefix": 64}
            ]
        }));
    }
    Value::Array(list)
}

pub(super) fn run(sim: &Sim, mut args: Args) -> Outcome {
    let sub = args.positional(0, "command")?;
    args.positional.remove(0);
    match sub.as_str() {
        "cmd" => cmd(sim, &args),
        "exec" => exec(sim, args),
        other => fail(format!("unknown command 'qm guest {other}'")),
    }
}

fn cmd(sim: &Sim, args: &Args) -> Outcome {
    let vmid = args.vmid(0)?;
    let command = args.positional(1, "command")?;
    args.finish()?;
    if !COMMANDS.contains(&command.as_str()) {
        return Err(param_error(
            "command",
            &format!(
                "value '{command}' does not have a value in the enumeration '{}'",
                COMMANDS.join(", ")
            ),
        ));
    }
    let (config, script) = reachable_agent(sim, vmid)?;
    let answer = match command.as_str() {
        "network-get-interfaces" => interfaces(vmid, &config, &script),
        "get-host-name" => json!({"host-name": config.main().get("name").unwrap_or("localhost")}),
        "get-osinfo" => json!({"id": "debian", "name": "Debian GNU/Linux", "version-id": "12"}),
        "info" => json!({"version": crate::qm::edit::QEMU_VERSION, "supported_commands": []}),
        "get-time" => json!(Sim::now() * 1_000_000_000),
        "shutdown" => {
            runtime::kill(sim, vmid, std::time::Duration::from_secs(10))?;
            json!({})
        }
        _ => json!({}),
    };
    match &answer {
        Value::Object(map) if map.is_empty() => {}
        Value::String(text) => println!("{text}"),
        Value::Number(number) => println!("{number}"),
        other => print!("{}", pretty(other)),
    }
    Ok(())
}

fn exec(sim: &Sim, mut args: Args) -> Outcome {
    let vmid = args.vmid(0)?;
    let _timeout = args.number("timeout")?;
    let _sync = args.take("synchronous");
    let pass_stdin = args.take("pass-stdin").is_some_and(|value| value == "1");
    args.finish()?;
    let command: Vec<String> = args
        .positional
        .iter()
        .skip(1)
        .cloned()
        .chain(args.rest.iter().cloned())
        .collect();
    if command.is_empty() {
        return Err(param_error("extra-args", "no command specified"));
    }
    let (_, script) = reachable_agent(sim, vmid)?;
    let answer: ExecAnswer = script
        .exec
        .get(&command[0])
        .or_else(|| script.exec.get("*"))
        .cloned()
        .unwrap_or_default();
    let mut input = String::new();
    if pass_stdin {
        use std::io::Read;
        std::io::stdin()
            .take(1 << 20)
            .read_to_string(&mut input)
            .map_err(|err| param_error("pass-stdin", &err.to_string()))?;
    }
    VmScript::update(sim, vmid, |script| {
        script.exec_log.push(command);
        script.exec_input.push(input);
        Ok(())
    })?;
    let mut result = json!({"exitcode": answer.exitcode, "exited": 1});
    let map = result.as_object_mut().expect("object");
    if !answer.out.is_empty() {
        map.insert("out-data".into(), json!(answer.out));
    }
    if !answer.err.is_empty() {
        map.insert("err-data".into(), json!(answer.err));
    }
    print!("{}", pretty(&result));
    Ok(())
}

/// The most `file-write` takes, as Proxmox's API says (`content`, maxLength 61440).
const MAX_FILE_CONTENT: usize = 61_440;

/// `pvesh create /nodes/N/qemu/V/agent/file-write --file PATH --content TEXT [--encode 0]`:
/// with `encode` 0 the content is base64 already (what QEMU's agent takes), otherwise the
/// API encodes it. The file's text goes into the VM's script for tests to read.
pub fn file_write(sim: &Sim, vmid: u32, args: &mut Args) -> Outcome<Value> {
    let file = args
        .take("file")
        .ok_or_else(|| param_error("file", "property is missing and it is not optional"))?;
    let content = args
        .take("content")
        .ok_or_else(|| param_error("content", "property is missing and it is not optional"))?;
    if content.len() > MAX_FILE_CONTENT {
        return Err(param_error(
            "content",
            &format!("value may only be {MAX_FILE_CONTENT} characters long"),
        ));
    }
    let encoded = args.take("encode").is_none_or(|value| value != "0");
    let bytes = if encoded {
        content.into_bytes()
    } else {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD
            .decode(content.as_bytes())
            .map_err(|_| param_error("content", "not valid base64"))?
    };
    reachable_agent(sim, vmid)?;
    VmScript::update(sim, vmid, |script| {
        script
            .files_written
            .insert(file, String::from_utf8_lossy(&bytes).into_owned());
        Ok(())
    })?;
    Ok(Value::Null)
}
