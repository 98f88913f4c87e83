//! `qm start`, `stop`, `shutdown`, `reboot`, `reset`.

use std::time::Duration;

use proxlab_pve::config::{SectionKind, VmConfig};

use crate::args::Args;
use crate::runtime::{self, RunState};
use crate::script::VmScript;
use crate::sim::{Outcome, Sim, fail};
use crate::store;

/// Moves `[PENDING]` into the main section, as a start does.
fn apply_pending(config: &mut VmConfig) -> Outcome<bool> {
    let Some(pending) = config.section(&SectionKind::Pending).cloned() else {
        return Ok(false);
    };
    let main = config.main_mut();
    for (key, value) in pending.entries() {
        if key == "delete" {
            for deleted in value.split(',') {
                main.remove(deleted.trim_start_matches('!'));
            }
        } else {
            main.set(key, value)?;
        }
    }
    config.remove_sections(|kind| *kind == SectionKind::Pending);
    Ok(true)
}

pub(super) fn start(sim: &Sim, mut args: Args) -> Outcome {
    let vmid = args.vmid(0)?;
    let skiplock = args.flag("skiplock")?;
    let _timeout = args.take("timeout");
    args.finish()?;
    let (_lock, mut config) = store::lock_and_read(sim, vmid, skiplock)?;
    if config.main().get("template") == Some("1") {
        return fail("you can't start a vm if it's a template");
    }
    if runtime::running_pid(sim, vmid).is_some() {
        return fail(format!("VM {vmid} already running"));
    }
    if apply_pending(&mut config)? {
        store::write(sim, vmid, &config)?;
    }
    runtime::start(sim, vmid)?;
    Ok(())
}

/// How long a stop waits after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);

pub(super) fn stop(sim: &Sim, mut args: Args) -> Outcome {
    let vmid = args.vmid(0)?;
    let skiplock = args.flag("skiplock")?;
    let _timeout = args.take("timeout");
    let _overrule = args.take("overrule-shutdown");
    let _keep = args.take("keepActive");
    args.finish()?;
    let (_lock, _config) = store::lock_and_read(sim, vmid, skiplock)?;
    runtime::kill(sim, vmid, STOP_GRACE)
}

pub(super) fn shutdown(sim: &Sim, mut args: Args) -> Outcome {
    let vmid = args.vmid(0)?;
    let timeout = args.number("timeout")?.unwrap_or(60);
    let force = args.flag("forceStop")?;
    let skiplock = args.flag("skiplock")?;
    let _keep = args.take("keepActive");
    args.finish()?;
    let (_lock, _config) = store::lock_and_read(sim, vmid, skiplock)?;
    if runtime::running_pid(sim, vmid).is_none() {
        return Ok(());
    }
    if RunState::load(sim, vmid).is_some_and(|state| state.qmpstatus == "paused") {
        return fail("VM is paused - cannot shutdown");
    }
    if VmScript::load(sim, vmid)?.hung_shutdown {
        // The guest ignores the power button: wait out the timeout as Proxmox does.
        std::thread::sleep(Duration::from_secs(timeout));
        if !force {
            return fail("VM quit/powerdown failed - got timeout");
        }
        eprintln!("WARN: VM still running - terminating now with SIGTERM");
    }
    runtime::kill(sim, vmid, STOP_GRACE)
}

pub(super) fn reboot(sim: &Sim, mut args: Args) -> Outcome {
    let vmid = args.vmid(0)?;
    let _timeout = args.take("timeout");
    args.finish()?;
    let (_lock, mut config) = store::lock_and_read(sim, vmid, false)?;
    if runtime::running_pid(sim, vmid).is_none() {
        return fail(format!("VM {vmid} not running"));
    }
    runtime::kill(sim, vmid, STOP_GRACE)?;
    // A reboot is a fresh start, so pending changes apply.
    if apply_pending(&mut config)? {
        store::write(sim, vmid, &config)?;
    }
    runtime::start(sim, vmid).map(drop)
}

pub(super) fn reset(sim: &Sim, mut args: Args) -> Outcome {
    let vmid = args.vmid(0)?;
    let skiplock = args.flag("skiplock")?;
    args.finish()?;
    let (_lock, _config) = store::lock_and_read(sim, vmid, skiplock)?;
    if runtime::running_pid(sim, vmid).is_none() {
        return fail(format!("VM {vmid} not running"));
    }
    // A hardware reset keeps the QEMU process; only the guest restarts.
    if let Some(mut state) = RunState::load(sim, vmid) {
        state.started_at = Sim::now();
        state.save(sim, vmid)?;
    }
    Ok(())
}

/// `qm suspend` (to memory) and `qm resume`: QMP `stop` / `cont`, as Proxmox sends them.
pub(super) fn pause(sim: &Sim, mut args: Args, paused: bool) -> Outcome {
    let vmid = args.vmid(0)?;
    let skiplock = args.flag("skiplock")?;
    let _nocheck = args.take("nocheck");
    if paused && args.flag("todisk")? {
        return fail("suspend to disk is not simulated");
    }
    args.finish()?;
    let (_lock, _config) = store::lock_and_read(sim, vmid, skiplock)?;
    if runtime::running_pid(sim, vmid).is_none() {
        return fail(format!("VM {vmid} not running"));
    }
    let command = if paused { "stop" } else { "cont" };
    crate::qemu::qmp(sim, vmid, &[serde_json::json!({"execute": command})])?;
    // A real QEMU keeps its own state; the simulator's record follows it.
    if let Some(mut state) = RunState::load(sim, vmid) {
        state.qmpstatus = if paused { "paused" } else { "running" }.into();
        state.save(sim, vmid)?;
    }
    Ok(())
}
