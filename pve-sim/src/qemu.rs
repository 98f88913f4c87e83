//! Real QEMU behind simulated VMs, for clusters made with `init --qemu`: Debian's
//! `qemu-system-x86_64` with TCG and no disk, started the way Proxmox starts it — its VNC
//! server on `<run>/<vmid>.vnc` with `password=on`, QMP on `<run>/<vmid>.qmp`, and `serial0`
//! on `<run>/<vmid>.serial0` — so consoles meet a real VNC server (its screen shows SeaBIOS
//! finding nothing to boot) and `qm vncproxy` sets the password over QMP, as Proxmox does.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use proxlab_pve::config::VmConfig;
use serde_json::{Value, json};

use crate::sim::{Outcome, Sim, fail};

/// How long QMP gets to answer.
const QMP_TIMEOUT: Duration = Duration::from_secs(10);

/// Memory of a simulated QEMU VM: enough for SeaBIOS, whatever the config says.
const MEMORY_MIB: &str = "32";

/// Where a cluster made with `--qemu` records which QEMU it runs.
fn marker(root: &Path) -> PathBuf {
    root.join("sim/qemu")
}

/// Records `init --qemu VALUE`: `on` finds `qemu-system-x86_64` on the `PATH`, `off` keeps the
/// built-in VM process, anything else is the binary's path.
pub fn enable(root: &Path, value: &str) -> Outcome {
    if matches!(value, "off" | "0" | "no" | "false") {
        return Ok(());
    }
    let binary = if matches!(value, "on" | "1" | "yes" | "true") {
        std::env::var_os("PATH")
            .into_iter()
            .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
            .map(|dir| dir.join("qemu-system-x86_64"))
            .find(|candidate| candidate.is_file())
            .ok_or("qemu-system-x86_64 is not on the PATH (Debian: qemu-system-x86)")?
    } else {
        PathBuf::from(value)
    };
    if !binary.is_file() {
        return fail(format!("there is no QEMU at {}", binary.display()));
    }
    std::fs::write(marker(root), binary.display().to_string())?;
    Ok(())
}

/// The QEMU this cluster runs VMs with, if it runs them with QEMU.
pub fn binary(sim: &Sim) -> Option<PathBuf> {
    let text = std::fs::read_to_string(marker(&sim.root)).ok()?;
    Some(PathBuf::from(text.trim()))
}

/// The `-name` of a simulated VM's QEMU, by which its process is recognised.
pub fn process_name(vmid: u32) -> String {
    format!("pve-sim-vm-{vmid}")
}

/// Starts the VM's QEMU and returns its pid once its sockets listen (`-daemonize` returns
/// then): `serial0: socket` gets its socket, and an enabled guest agent its channel, as
/// Proxmox adds them (no guest runs inside to answer on it).
pub fn start(sim: &Sim, vmid: u32, qemu: &Path, config: &VmConfig) -> Outcome<u32> {
    let pidfile = sim.pid_file(vmid);
    let _ = std::fs::remove_file(&pidfile);
    let mut command = Command::new(qemu);
    command
        .args(["-name", &process_name(vmid), "-machine", "pc,accel=tcg"])
        .args([
            "-m",
            MEMORY_MIB,
            "-smp",
            "1",
            "-nodefaults",
            "-no-user-config",
        ])
        .args(["-vga", "std", "-display", "none"])
        .arg("-vnc")
        .arg(format!(
            "unix:{},password=on",
            sim.vnc_socket(vmid).display()
        ))
        .arg("-qmp")
        .arg(format!(
            "unix:{},server=on,wait=off",
            sim.qmp_socket(vmid).display()
        ))
        .arg("-pidfile")
        .arg(&pidfile)
        .arg("-daemonize")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if config.guest_agent_enabled() {
        command
            .arg("-chardev")
            .arg(format!(
                "socket,path={},server=on,wait=off,id=qga0",
                sim.qga_socket(vmid).display()
            ))
            .args(["-device", "virtio-serial,id=qga0-bus"])
            .args([
                "-device",
                "virtserialport,chardev=qga0,name=org.qemu.guest_agent.0",
            ]);
    }
    if config.main().get("serial0") == Some("socket") {
        command.arg("-serial").arg(format!(
            "unix:{},server=on,wait=off",
            sim.serial_socket(vmid).display()
        ));
    }
    let output = command.output()?;
    if !output.status.success() {
        return fail(format!(
            "start failed: QEMU exited with code {} (VM {vmid}): {}",
            output.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    let pid = std::fs::read_to_string(&pidfile)?
        .trim()
        .parse()
        .map_err(|_| format!("QEMU wrote no pid for VM {vmid}"))?;
    Ok(pid)
}

/// Sets the VM's VNC password over QMP and lets it expire `lifetime_secs` later, as `qm
/// vncproxy` does (`set_password`, `expire_password`).
pub fn set_vnc_password(sim: &Sim, vmid: u32, password: &str, lifetime_secs: i64) -> Outcome {
    qmp(
        sim,
        vmid,
        &[
            json!({"execute": "set_password", "arguments": {"protocol": "vnc", "password": password}}),
            json!({"execute": "expire_password",
                   "arguments": {"protocol": "vnc", "time": format!("+{lifetime_secs}")}}),
        ],
    )
    .map(drop)
}

/// Runs `commands` over the VM's QMP socket (after the capabilities negotiation) and returns
/// their answers; the first error ends the session.
pub fn qmp(sim: &Sim, vmid: u32, commands: &[Value]) -> Outcome<Vec<Value>> {
    let stream = UnixStream::connect(sim.qmp_socket(vmid))?;
    stream.set_read_timeout(Some(QMP_TIMEOUT))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    let mut greeting = String::new();
    reader.read_line(&mut greeting)?;
    if !greeting.contains("\"QMP\"") {
        return fail(format!("VM {vmid}: QMP did not greet"));
    }
    execute(
        &mut writer,
        &mut reader,
        &json!({"execute": "qmp_capabilities"}),
    )?;
    commands
        .iter()
        .map(|command| execute(&mut writer, &mut reader, command))
        .collect()
}

/// Sends one QMP command and waits for its answer (events in between are skipped).
fn execute(writer: &mut impl Write, reader: &mut impl BufRead, command: &Value) -> Outcome<Value> {
    writeln!(writer, "{command}")?;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return fail("QMP closed the connection");
        }
        let answer: Value = serde_json::from_str(&line)?;
        if answer.get("event").is_some() {
            continue;
        }
        if let Some(error) = answer.get("error") {
            return fail(format!(
                "QMP {}: {}",
                command["execute"],
                error["desc"].as_str().unwrap_or("failed")
            ));
        }
        return Ok(answer["return"].clone());
    }
}
