//! Running VMs: each is a real `pve-sim vm-process <vmid>` process whose pid is in
//! `var/run/qemu-server/<vmid>.pid`, so `/proc` checks work as on a real node.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process};
use serde::{Deserialize, Serialize};

use crate::sim::{Outcome, Sim, fail};

/// The simulator's run-time record of a VM.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct RunState {
    pub pid: u32,
    pub started_at: i64,
    /// `running` or `paused`.
    pub qmpstatus: String,
    /// The VNC password `qm vncproxy` set, and until when it can be used to log in.
    pub vnc_password: Option<String>,
    pub vnc_password_expires: i64,
}

impl RunState {
    pub fn load(sim: &Sim, vmid: u32) -> Option<Self> {
        let text = std::fs::read_to_string(sim.run_state(vmid)).ok()?;
        serde_json::from_str(&text).ok()
    }

    pub fn save(&self, sim: &Sim, vmid: u32) -> Outcome {
        crate::store::replace_file(
            &sim.run_state(vmid),
            serde_json::to_string(self)?.as_bytes(),
        )
    }
}

/// Whether `pid` is a live simulated VM process for `vmid`.
fn is_vm_process(pid: u32, vmid: u32) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    let qemu_name = crate::qemu::process_name(vmid);
    let ours = args.windows(2).any(|pair| {
        (pair[0] == b"vm-process" && pair[1] == vmid.to_string().as_bytes())
            || (pair[0] == b"-name" && pair[1] == qemu_name.as_bytes())
    });
    let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let zombie = state
        .rsplit_once(") ")
        .is_some_and(|(_, rest)| rest.starts_with('Z'));
    ours && !zombie
}

/// The pid of the VM's process, if it runs.
pub fn running_pid(sim: &Sim, vmid: u32) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(sim.pid_file(vmid))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    is_vm_process(pid, vmid).then_some(pid)
}

/// Starts the VM's process and waits until it serves its VNC socket.
pub fn start(sim: &Sim, vmid: u32) -> Outcome<u32> {
    std::fs::create_dir_all(sim.run_dir())?;
    let pid = match crate::qemu::binary(sim) {
        Some(qemu) => {
            let config = crate::store::read(sim, vmid)?.config;
            crate::qemu::start(sim, vmid, &qemu, &config)?
        }
        None => start_vm_process(sim, vmid)?,
    };
    RunState {
        pid,
        started_at: Sim::now(),
        qmpstatus: "running".into(),
        ..RunState::default()
    }
    .save(sim, vmid)?;
    refresh_arp_table(sim)?;
    Ok(pid)
}

/// Starts `pve-sim vm-process` for the VM and waits until it serves its VNC socket.
fn start_vm_process(sim: &Sim, vmid: u32) -> Outcome<u32> {
    let exe = std::env::current_exe()?;
    let mut child = Command::new(exe)
        .args(["vm-process", &vmid.to_string()])
        .env("PVE_SIM_ROOT", &sim.root)
        .env("PVE_SIM_NODE", &sim.node)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()?;
    let pid = child.id();
    // The process prints one line once its VNC socket listens.
    let mut ready = String::new();
    if let Some(stdout) = child.stdout.take() {
        BufReader::new(stdout).read_line(&mut ready)?;
    }
    if ready.trim() != "ready" {
        let _ = child.kill();
        let _ = child.wait();
        return fail(format!("start failed: QEMU exited with code 1 (VM {vmid})"));
    }
    std::fs::write(sim.pid_file(vmid), format!("{pid}\n"))?;
    Ok(pid)
}

/// Stops the VM's process: SIGTERM, then SIGKILL after `grace`.
pub fn kill(sim: &Sim, vmid: u32, grace: Duration) -> Outcome {
    if let Some(pid) = running_pid(sim, vmid) {
        let target = Pid::from_raw(pid as i32).ok_or("invalid pid")?;
        let _ = kill_process(target, Signal::TERM);
        let deadline = Instant::now() + grace;
        while is_vm_process(pid, vmid) {
            if Instant::now() >= deadline {
                let _ = kill_process(target, Signal::KILL);
            }
            // The process is not our child, so there is nothing to wait on but /proc.
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    cleanup(sim, vmid);
    refresh_arp_table(sim)
}

/// Rewrites `<root>/proc/net/arp` from the running VMs' scripted neighbour addresses, in
/// the kernel's format.
pub fn refresh_arp_table(sim: &Sim) -> Outcome {
    let mut table = String::from(
        "IP address       HW type     Flags       HW address            Mask     Device\n",
    );
    for (vmid, node) in crate::store::all_vms(sim) {
        let script = crate::script::VmScript::load(sim, vmid)?;
        let Some(ip) = script.neighbor_ip else {
            continue;
        };
        if running_pid(sim, vmid).is_none() {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(sim.config_path(&node, vmid)) else {
            continue;
        };
        let config = proxlab_pve::config::VmConfig::parse(&text);
        if let Some(mac) = config.nics().first().and_then(|nic| nic.mac.clone()) {
            table.push_str(&format!(
                "{ip:<16} 0x1         0x2         {:<21} *        vmbr0\n",
                mac.to_ascii_lowercase()
            ));
        }
    }
    let dir = sim.root.join("proc/net");
    std::fs::create_dir_all(&dir)?;
    crate::store::replace_file(&dir.join("arp"), table.as_bytes())
}

/// Removes a stopped VM's run-time files.
pub fn cleanup(sim: &Sim, vmid: u32) {
    for path in [
        sim.pid_file(vmid),
        sim.vnc_socket(vmid),
        sim.serial_socket(vmid),
        sim.qmp_socket(vmid),
        sim.qga_socket(vmid),
        sim.run_state(vmid),
    ] {
        let _ = std::fs::remove_file(path);
    }
}

/// Seconds the process has used since it started, as a fraction of its lifetime.
pub fn cpu_fraction(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    let Some((_, rest)) = stat.rsplit_once(") ") else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split(' ').collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // After the state field: utime is field 14, stime 15, starttime 22 (1-based, overall).
    let used = ticks(11) + ticks(12);
    let started = ticks(19);
    let uptime: f64 = std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|text| text.split(' ').next()?.parse().ok())
        .unwrap_or(0.0);
    let clock = 100.0;
    let alive = uptime - started / clock;
    if alive <= 0.0 {
        0.0
    } else {
        (used / clock / alive).min(1.0)
    }
}

/// Resident memory of a process, in bytes.
pub fn rss_bytes(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("VmRSS:"))
                .and_then(|value| {
                    value
                        .trim()
                        .trim_end_matches(" kB")
                        .trim()
                        .parse::<u64>()
                        .ok()
                })
        })
        .map_or(0, |kib| kib * 1024)
}
