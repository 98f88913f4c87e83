//! Talking to a running VM's QEMU directly over its unix sockets, as Proxmox's own
//! `PVE::QMPClient` does, instead of starting a Perl `qm` per question: QMP
//! (`<run>/<vmid>.qmp`) for the VM's run state, and the guest agent's channel
//! (`<run>/<vmid>.qga`) for what the guest says about itself.
//!
//! Both speak one JSON object per request and one per answer. QEMU serves one client per
//! socket at a time, so every session is short and every step has a deadline.

use std::path::Path;
use std::time::Duration;

use proxlab_protocol::inventory::PowerState;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use super::command::PveError;

/// The longest line either protocol may answer with (an interface list is a few KiB).
const MAX_ANSWER: usize = 1 << 20;

/// One open connection to a QEMU JSON socket.
struct Session {
    reader: BufReader<tokio::net::unix::OwnedReadHalf>,
    writer: tokio::net::unix::OwnedWriteHalf,
    what: &'static str,
}

impl Session {
    async fn connect(socket: &Path, what: &'static str) -> Result<Self, PveError> {
        let stream = UnixStream::connect(socket)
            .await
            .map_err(|err| PveError::Io(format!("{what} {}: {err}", socket.display())))?;
        let (reader, writer) = stream.into_split();
        Ok(Self {
            reader: BufReader::new(reader),
            writer,
            what,
        })
    }

    async fn send(&mut self, request: &Value) -> Result<(), PveError> {
        let mut line = request.to_string().into_bytes();
        line.push(b'\n');
        self.writer.write_all(&line).await?;
        Ok(())
    }

    /// The next JSON object QEMU sends, without the `0xFF` a delimited sync puts before it.
    async fn receive(&mut self) -> Result<Value, PveError> {
        let mut line = Vec::new();
        loop {
            line.clear();
            let read = (&mut self.reader)
                .take(MAX_ANSWER as u64)
                .read_until(b'\n', &mut line)
                .await?;
            if read == 0 {
                return Err(PveError::Io(format!("{} closed the connection", self.what)));
            }
            let text = line
                .iter()
                .position(|byte| *byte == b'{')
                .map_or(&[][..], |start| &line[start..]);
            if text.is_empty() {
                continue;
            }
            return serde_json::from_slice(text).map_err(|err| {
                PveError::Invalid(format!("{} answered no JSON: {err}", self.what))
            });
        }
    }

    /// Sends `request` and returns its `return` value, skipping asynchronous events.
    async fn execute(&mut self, request: Value) -> Result<Value, PveError> {
        self.send(&request).await?;
        loop {
            let mut answer = self.receive().await?;
            if answer.get("event").is_some() {
                continue;
            }
            if let Some(error) = answer.get("error") {
                let desc = error["desc"].as_str().unwrap_or("failed");
                return Err(PveError::Invalid(format!("{} error: {desc}", self.what)));
            }
            return Ok(answer["return"].take());
        }
    }
}

/// What a QMP status (or `qm status`'s word, which is it for a running VM) says about the
/// VM's power: only `running` runs guest code; every other state of a live QEMU (`paused`,
/// `prelaunch`, `suspended`, `inmigrate`, `io-error`, …) has its vCPUs stopped.
pub fn power_state(status: &str) -> PowerState {
    match status {
        "running" => PowerState::Running,
        "stopped" => PowerState::Stopped,
        "" | "unknown" => PowerState::Unknown,
        _ => PowerState::Paused,
    }
}

/// The VM's QMP status (`running`, `paused`, `prelaunch`, `suspended`, `inmigrate`, …), from
/// `query-status` after the capabilities negotiation.
pub async fn qmp_status(socket: &Path, within: Duration) -> Result<String, PveError> {
    let ask = async {
        let mut qmp = Session::connect(socket, "QMP").await?;
        let greeting = qmp.receive().await?;
        if greeting.get("QMP").is_none() {
            return Err(PveError::Invalid("QMP did not greet".into()));
        }
        qmp.execute(json!({"execute": "qmp_capabilities"})).await?;
        let status = qmp.execute(json!({"execute": "query-status"})).await?;
        status["status"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| PveError::Invalid("QMP query-status gave no status".into()))
    };
    deadline(ask, within, "QMP").await
}

/// Runs one guest-agent command (`guest-network-get-interfaces`, `guest-ping`, …) and
/// returns its `return` value. First a `guest-sync-delimited` with a fresh id, whose answer
/// comes after a `0xFF` byte, so an answer left over from an earlier client is never taken
/// for ours; a guest without a running agent never answers, which ends at `within`.
pub async fn guest_agent(
    socket: &Path,
    command: &str,
    within: Duration,
) -> Result<Value, PveError> {
    let ask = async {
        let mut channel = Session::connect(socket, "guest agent").await?;
        // A lone 0xFF resets the agent's parser after a client that left mid-request.
        channel.writer.write_all(&[0xFF]).await?;
        let id: u32 = rand::random::<u32>() >> 1;
        channel
            .send(&json!({"execute": "guest-sync-delimited", "arguments": {"id": id}}))
            .await?;
        loop {
            let answer = channel.receive().await?;
            if answer["return"].as_u64() == Some(u64::from(id)) {
                break;
            }
        }
        channel.execute(json!({"execute": command})).await
    };
    deadline(ask, within, "the guest agent").await
}

async fn deadline<T>(
    work: impl Future<Output = Result<T, PveError>>,
    within: Duration,
    what: &str,
) -> Result<T, PveError> {
    tokio::time::timeout(within, work)
        .await
        .unwrap_or_else(|_| {
            Err(PveError::Timeout {
                program: what.to_owned(),
                after: within,
            })
        })
}
