//! The two JSON sockets a running VM's QEMU serves besides VNC, as the simulated VM process
//! serves them: QMP on `<run>/<vmid>.qmp` (a greeting, capabilities negotiation, then
//! commands, one JSON answer per line), and, when the config enables the guest agent, the
//! guest agent's channel on `<run>/<vmid>.qga` (no greeting; `guest-sync-delimited` answers
//! after a `0xFF` byte). A guest whose agent is scripted off never answers on its channel,
//! as a guest without `qemu-guest-agent` running leaves the bytes unread.

use std::io::{BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};

use serde_json::{Value, json};

use crate::runtime::RunState;
use crate::script::VmScript;
use crate::sim::Sim;
use crate::store;

/// The QEMU version the simulator claims (Proxmox VE 9's).
const QEMU_VERSION: (u64, u64, u64) = (10, 0, 2);

/// How one connection to a socket is served.
pub type Session = fn(UnixStream, &Sim, u32) -> std::io::Result<()>;

/// Serves `session` ([`qmp`] or [`guest_agent`]) on `listener`, one thread per connection,
/// until the process ends.
pub fn serve(listener: &UnixListener, sim: &Sim, vmid: u32, session: Session) {
    for stream in listener.incoming().flatten() {
        let sim = sim.clone();
        std::thread::spawn(move || {
            let _ = session(stream, &sim, vmid);
        });
    }
}

fn error(class: &str, desc: impl Into<String>) -> Value {
    json!({"error": {"class": class, "desc": desc.into()}})
}

fn command_not_found(name: &str) -> Value {
    error(
        "CommandNotFound",
        format!("The command {name} has not been found"),
    )
}

/// Writes one answer, echoing the request's `id` as QEMU does.
fn answer(
    stream: &mut UnixStream,
    request: &Value,
    mut reply: Value,
    line_end: &str,
) -> std::io::Result<()> {
    if let Some(id) = request.get("id") {
        reply["id"] = id.clone();
    }
    write!(stream, "{reply}{line_end}")?;
    stream.flush()
}

/// Reads the JSON objects a client sends, however they are spaced, skipping the `0xFF`
/// bytes a guest-agent client may send to reset the parser.
fn requests(stream: UnixStream) -> impl Iterator<Item = Result<Value, serde_json::Error>> {
    let without_resets = BufReader::new(stream)
        .bytes()
        .map_while(Result::ok)
        .filter(|byte| *byte != 0xFF);
    let reader = IterRead(without_resets);
    serde_json::Deserializer::from_reader(reader).into_iter::<Value>()
}

/// A byte iterator as a reader.
struct IterRead<I>(I);

impl<I: Iterator<Item = u8>> Read for IterRead<I> {
    /// One byte at a time, so the parser never waits for bytes the client has not sent.
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match (buf.first_mut(), self.0.next()) {
            (Some(slot), Some(byte)) => {
                *slot = byte;
                Ok(1)
            }
            _ => Ok(0),
        }
    }
}

/// One QMP client.
pub fn qmp(mut stream: UnixStream, sim: &Sim, vmid: u32) -> std::io::Result<()> {
    let (major, minor, micro) = QEMU_VERSION;
    let greeting = json!({"QMP": {
        "version": {"qemu": {"major": major, "minor": minor, "micro": micro}, "package": "pve-qemu-kvm"},
        "capabilities": ["oob"],
    }});
    write!(stream, "{greeting}\r\n")?;
    let mut negotiated = false;
    for request in requests(stream.try_clone()?) {
        let Ok(request) = request else {
            let reply = error("GenericError", "JSON parse error, invalid literal");
            write!(stream, "{reply}\r\n")?;
            return Ok(());
        };
        let name = request["execute"].as_str().unwrap_or_default().to_owned();
        let reply = if !negotiated {
            if name == "qmp_capabilities" {
                negotiated = true;
                json!({"return": {}})
            } else {
                error(
                    "CommandNotFound",
                    "Expecting capabilities negotiation with 'qmp_capabilities'",
                )
            }
        } else {
            qmp_command(sim, vmid, &name)
        };
        answer(&mut stream, &request, reply, "\r\n")?;
    }
    Ok(())
}

/// The QMP commands the simulated VM knows.
fn qmp_command(sim: &Sim, vmid: u32, name: &str) -> Value {
    match name {
        "qmp_capabilities" => error(
            "CommandNotFound",
            "Capabilities negotiation is already complete, command ignored",
        ),
        "query-status" => {
            let status = RunState::load(sim, vmid)
                .map_or_else(|| "running".to_owned(), |state| state.qmpstatus);
            json!({"return": {"status": status, "running": status == "running"}})
        }
        "query-version" => {
            let (major, minor, micro) = QEMU_VERSION;
            json!({"return": {"qemu": {"major": major, "minor": minor, "micro": micro}, "package": "pve-qemu-kvm"}})
        }
        "stop" | "cont" => {
            let status = if name == "stop" { "paused" } else { "running" };
            match RunState::load(sim, vmid) {
                Some(mut state) => {
                    state.qmpstatus = status.into();
                    match state.save(sim, vmid) {
                        Ok(()) => json!({"return": {}}),
                        Err(failure) => error("GenericError", failure.message),
                    }
                }
                None => error("GenericError", "the VM has no run state"),
            }
        }
        other => command_not_found(other),
    }
}

/// One client of the guest agent's channel.
pub fn guest_agent(mut stream: UnixStream, sim: &Sim, vmid: u32) -> std::io::Result<()> {
    for request in requests(stream.try_clone()?) {
        let Ok(request) = request else {
            let reply = error("GenericError", "JSON parse error");
            writeln!(stream, "{reply}")?;
            continue;
        };
        let script = VmScript::load(sim, vmid).unwrap_or_default();
        if !script.guest_agent {
            // Nothing inside the guest reads the channel.
            continue;
        }
        let name = request["execute"].as_str().unwrap_or_default();
        if name == "guest-sync-delimited" {
            stream.write_all(&[0xFF])?;
        }
        let reply = guest_agent_command(sim, vmid, &script, name, &request["arguments"]);
        answer(&mut stream, &request, reply, "\n")?;
    }
    Ok(())
}

/// The guest-agent commands the simulated guest answers.
fn guest_agent_command(
    sim: &Sim,
    vmid: u32,
    script: &VmScript,
    name: &str,
    arguments: &Value,
) -> Value {
    let config = store::read(sim, vmid)
        .map(|loaded| loaded.config)
        .unwrap_or_default();
    match name {
        "guest-sync" | "guest-sync-delimited" => match arguments.get("id") {
            Some(id) if id.is_u64() || id.is_i64() => json!({"return": id}),
            _ => error("GenericError", "Parameter 'id' is missing"),
        },
        "guest-ping" => json!({"return": {}}),
        "guest-network-get-interfaces" => {
            json!({"return": crate::qm::guest::interfaces(vmid, &config, script)})
        }
        "guest-get-host-name" => {
            json!({"return": {"host-name": config.main().get("name").unwrap_or("localhost")}})
        }
        "guest-get-osinfo" => {
            json!({"return": {"id": "debian", "name": "Debian GNU/Linux", "version-id": "12"}})
        }
        "guest-info" => json!({"return": {"version": "10.0.2", "supported_commands": []}}),
        other => command_not_found(other),
    }
}
