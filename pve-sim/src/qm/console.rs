//! `qm vncproxy`, which sets the VM's VNC password to `LC_PVE_TICKET` and pipes stdin/stdout
//! to its VNC socket, and `qm terminal`, which pipes them to a serial port's socket, as
//! Proxmox's do.

use std::io::{Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;

use crate::args::Args;
use crate::runtime::{self, RunState};
use crate::sim::{Outcome, Sim, fail};
use crate::store;

/// How long the password stays valid for a login.
const PASSWORD_LIFETIME_SECS: i64 = 30;

pub(super) fn vncproxy(sim: &Sim, args: &Args) -> Outcome {
    let vmid = args.vmid(0)?;
    args.finish()?;
    let Ok(ticket) = std::env::var("LC_PVE_TICKET") else {
        return fail("LC_PVE_TICKET not set, VNC proxy without password is forbidden");
    };
    if !sim.config_path(&sim.node, vmid).exists() {
        return fail(format!(
            "unable to find configuration file for VM {vmid} on node '{}'",
            sim.node
        ));
    }
    if runtime::running_pid(sim, vmid).is_none() {
        return fail(format!("VM {vmid} not running"));
    }
    if crate::qemu::binary(sim).is_some() {
        crate::qemu::set_vnc_password(sim, vmid, &ticket, PASSWORD_LIFETIME_SECS)?;
    } else {
        // The run state is also written by `qm start` and `qm reset`, under the VM's lock.
        let _lock = store::lock_vm(sim, vmid)?;
        let mut state = RunState::load(sim, vmid).unwrap_or_default();
        state.vnc_password = Some(ticket);
        state.vnc_password_expires = Sim::now() + PASSWORD_LIFETIME_SECS;
        state.save(sim, vmid)?;
    }
    pipe_stdio(UnixStream::connect(sim.vnc_socket(vmid))?)
}

/// `qm terminal <vmid> [--iface serial0] [--escape CHAR]`.
pub(super) fn terminal(sim: &Sim, mut args: Args) -> Outcome {
    let vmid = args.vmid(0)?;
    let iface = args.take("iface").unwrap_or_else(|| "serial0".into());
    let _escape = args.take("escape");
    args.finish()?;
    let config = store::read(sim, vmid)?.config;
    // The simulated VM process serves `serial0` only.
    if iface != "serial0" || config.main().get(&iface) != Some("socket") {
        return fail("unable to find a serial interface");
    }
    if runtime::running_pid(sim, vmid).is_none() {
        return fail(format!("VM {vmid} not running"));
    }
    println!("starting serial terminal on interface {iface} (press Ctrl+O to exit)");
    pipe_stdio(UnixStream::connect(sim.serial_socket(vmid))?)
}

/// Copies stdin to the socket and the socket to stdout, until the socket closes.
fn pipe_stdio(socket: UnixStream) -> Outcome {
    let mut to_vm = socket.try_clone()?;
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let _ = std::io::copy(&mut stdin, &mut to_vm);
        let _ = to_vm.shutdown(Shutdown::Write);
    });
    let mut from_vm = socket;
    let mut stdout = std::io::stdout().lock();
    let mut buf = [0u8; 64 * 1024];
    loop {
        let n = from_vm.read(&mut buf)?;
        if n == 0 {
            break;
        }
        stdout.write_all(&buf[..n])?;
        stdout.flush()?;
    }
    Ok(())
}
