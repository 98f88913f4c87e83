//! The simulator's own commands: `canon`, `script`, `fault`, `hold-lock`.

use proxlab_pve::config::{VmConfig, WriteMode};

use crate::args::{Args, param_error};
use crate::script::{ExecAnswer, Faults, VmScript};
use crate::sim::{Failure, Outcome, Sim, fail};

/// `pve-sim canon [--strict 1] FILE`: the canonical rewrite of a VM config, or the strict
/// error (exit 2).
pub fn canon(argv: &[String]) -> Outcome {
    let strict = argv.iter().any(|a| a == "--strict");
    let Some(file) = argv.iter().find(|a| !a.starts_with("--")) else {
        return Err(param_error(
            "file",
            "property is missing and it is not optional",
        ));
    };
    let text = std::fs::read_to_string(file).map_err(|err| format!("{file}: {err}"))?;
    let vmid = std::path::Path::new(file)
        .file_stem()
        .and_then(|stem| stem.to_str()?.parse().ok())
        .unwrap_or(0);
    if strict {
        VmConfig::parse_strict(&text, vmid).map_err(|err| Failure {
            message: err.to_string(),
            code: 2,
        })?;
    }
    let config = VmConfig::parse(&text);
    for warning in config.warnings() {
        eprintln!("vm {vmid} - {}", warning.message);
    }
    print!("{}", config.write_canonical(WriteMode::Proxmox));
    Ok(())
}

fn on_off(args: &mut Args, name: &str) -> Outcome<Option<bool>> {
    args.take(name)
        .map(|value| match value.as_str() {
            "on" | "1" | "yes" => Ok(true),
            "off" | "0" | "no" => Ok(false),
            _ => Err(param_error(name, "expected on or off")),
        })
        .transpose()
}

/// `pve-sim script <vmid> [--guest-agent on|off] [--interfaces JSON] [--exec CMD=EXIT:OUT]
/// [--hung-shutdown on|off] [--cpu-load F] [--neighbor-ip IP|off]`: scripts a VM's guest.
pub fn script(argv: &[String]) -> Outcome {
    let sim = Sim::from_env()?;
    let mut args = Args::parse(argv)?;
    let vmid = args.vmid(0)?;
    let script = VmScript::update(&sim, vmid, |script| change_script(script, &mut args))?;
    crate::runtime::refresh_arp_table(&sim)?;
    println!("{}", serde_json::to_string_pretty(&script)?);
    Ok(())
}

/// Applies `pve-sim script`'s options to a VM's script.
fn change_script(script: &mut VmScript, args: &mut Args) -> Outcome {
    if let Some(on) = on_off(args, "guest-agent")? {
        script.guest_agent = on;
    }
    if let Some(on) = on_off(args, "hung-shutdown")? {
        script.hung_shutdown = on;
    }
    if let Some(text) = args.take("interfaces") {
        script.interfaces = Some(
            serde_json::from_str(&text)
                .map_err(|err| param_error("interfaces", &err.to_string()))?,
        );
    }
    if let Some(ip) = args.take("neighbor-ip") {
        script.neighbor_ip = (ip != "off").then_some(ip);
    }
    if let Some(load) = args.take("cpu-load") {
        script.cpu_load = load
            .parse()
            .map_err(|_| param_error("cpu-load", "expected a number from 0 to 1"))?;
    }
    if let Some(rule) = args.take("exec") {
        let (command, answer) = rule
            .split_once('=')
            .ok_or_else(|| param_error("exec", "expected CMD=EXITCODE:OUTPUT"))?;
        let (code, out) = answer.split_once(':').unwrap_or((answer, ""));
        let exitcode = code
            .parse()
            .map_err(|_| param_error("exec", "exit code must be a number"))?;
        script.exec.insert(
            command.to_owned(),
            ExecAnswer {
                exitcode,
                out: out.to_owned(),
                err: String::new(),
            },
        );
    }
    args.finish()
}

/// `pve-sim fault [--qemu-img-fail PATTERN|off] [--storage-full ID|off] [--latency CMD=MS]`.
pub fn fault(argv: &[String]) -> Outcome {
    let sim = Sim::from_env()?;
    let mut args = Args::parse(argv)?;
    let mut faults = Faults::load(&sim)?;
    if let Some(pattern) = args.take("qemu-img-fail") {
        if pattern == "off" {
            faults.qemu_img_fail.clear();
        } else {
            faults.qemu_img_fail.push(pattern);
        }
    }
    if let Some(storage) = args.take("storage-full") {
        if storage == "off" {
            faults.storage_full.clear();
        } else {
            faults.storage_full.push(storage);
        }
    }
    if let Some(rule) = args.take("latency") {
        let (command, ms) = rule
            .split_once('=')
            .ok_or_else(|| param_error("latency", "expected 'qm start=500'"))?;
        let ms = ms
            .parse()
            .map_err(|_| param_error("latency", "milliseconds must be a number"))?;
        faults.latency_ms.insert(command.to_owned(), ms);
    }
    args.finish()?;
    faults.save(&sim)?;
    println!("{}", serde_json::to_string_pretty(&faults)?);
    Ok(())
}

/// `pve-sim hold-lock <vmid>`: holds a VM's lock until stdin closes, printing `locked` once
/// it has it (for tests of lock contention).
pub fn hold_lock(argv: &[String]) -> Outcome {
    let sim = Sim::from_env()?;
    let args = Args::parse(argv)?;
    let vmid = args.vmid(0)?;
    let _lock = crate::store::lock_vm(&sim, vmid)?;
    println!("locked");
    use std::io::Write;
    std::io::stdout().flush()?;
    let mut sink = Vec::new();
    use std::io::Read;
    std::io::stdin().read_to_end(&mut sink)?;
    Ok(())
}

pub fn unknown(tool: &str) -> Outcome {
    fail(format!(
        "unknown command '{tool}': use pve-sim init|canon|script|fault|hold-lock|qm|pvesh|pvesm, or call it as qm, pvesh or pvesm"
    ))
}
