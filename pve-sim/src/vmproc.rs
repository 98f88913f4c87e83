//! The process that stands in for a running VM's QEMU: it serves the VNC socket (and the
//! serial port's socket when the config has `serial0: socket`) and burns the CPU share its
//! script asks for, until it is signalled.

use std::io::Write;
use std::os::unix::net::UnixListener;
use std::time::{Duration, Instant};

use proxlab_pve::config::VmConfig;

use crate::monitor;
use crate::rfb::{self, Screen};
use crate::runtime::RunState;
use crate::script::VmScript;
use crate::serial;
use crate::sim::{Outcome, Sim};
use crate::store;

/// Runs until killed.
pub fn run(sim: &Sim, vmid: u32) -> Outcome {
    let socket = sim.vnc_socket(vmid);
    let _ = std::fs::remove_file(&socket);
    let listener = UnixListener::bind(&socket)?;
    let config = store::read(sim, vmid).ok().map(|loaded| loaded.config);
    if config
        .as_ref()
        .is_some_and(|config| config.main().get("serial0") == Some("socket"))
    {
        let hostname = config
            .as_ref()
            .and_then(|config| config.main().get("name").map(str::to_owned))
            .unwrap_or_else(|| format!("vm{vmid}"));
        let path = sim.serial_socket(vmid);
        let _ = std::fs::remove_file(&path);
        let serial = UnixListener::bind(&path)?;
        std::thread::spawn(move || serve_serial(&serial, &hostname));
    }
    let qmp_path = sim.qmp_socket(vmid);
    let _ = std::fs::remove_file(&qmp_path);
    let qmp = UnixListener::bind(&qmp_path)?;
    let qmp_sim = sim.clone();
    std::thread::spawn(move || monitor::serve(&qmp, &qmp_sim, vmid, monitor::qmp));
    if config.as_ref().is_some_and(VmConfig::guest_agent_enabled) {
        let path = sim.qga_socket(vmid);
        let _ = std::fs::remove_file(&path);
        let channel = UnixListener::bind(&path)?;
        let agent_sim = sim.clone();
        std::thread::spawn(move || {
            monitor::serve(&channel, &agent_sim, vmid, monitor::guest_agent);
        });
    }
    {
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "ready")?;
        stdout.flush()?;
    }
    let burner_sim = sim.clone();
    std::thread::spawn(move || burn_cpu(&burner_sim, vmid));
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        let sim = sim.clone();
        std::thread::spawn(move || {
            let name = store::read(&sim, vmid)
                .ok()
                .and_then(|loaded| loaded.config.main().get("name").map(str::to_owned))
                .unwrap_or_else(|| format!("VM {vmid}"));
            let password = RunState::load(&sim, vmid)
                .filter(|state| state.vnc_password_expires >= Sim::now())
                .and_then(|state| state.vnc_password);
            let screen = Screen {
                vmid,
                name,
                password,
            };
            let _ = rfb::serve(&mut stream, &screen, rand::random());
        });
    }
    Ok(())
}

/// Answers every connection to the serial port, one thread each.
fn serve_serial(listener: &UnixListener, hostname: &str) {
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        let hostname = hostname.to_owned();
        std::thread::spawn(move || {
            let _ = serial::serve(&mut stream, &hostname);
        });
    }
}

/// Keeps the CPU busy for the scripted fraction of each 100 ms slice.
fn burn_cpu(sim: &Sim, vmid: u32) {
    let slice = Duration::from_millis(100);
    loop {
        let load = VmScript::load(sim, vmid)
            .map(|s| s.cpu_load)
            .unwrap_or(0.0)
            .clamp(0.0, 1.0);
        let start = Instant::now();
        let busy = slice.mul_f64(load);
        while start.elapsed() < busy {
            std::hint::spin_loop();
        }
        std::thread::sleep(slice.saturating_sub(start.elapsed()));
    }
}
