//! The control stream: the hello that opens a session, and the numbered events that follow.
//! Public for the tools that speak the agent's side of the protocol (the load harness, the
//! hub's tests).

use std::time::{SystemTime, UNIX_EPOCH};

use proxlab_link::{read_frame, write_frame};
use proxlab_protocol::limits::{FRAME_READ_TIMEOUT, MAX_FRAME_LEN};
use proxlab_protocol::{Event, EventFrame, Hello, Welcome};

/// Opens the control stream, says `hello` and reads the hub's welcome.
pub async fn say_hello(
    connection: &quinn::Connection,
    hello: &Hello,
) -> Result<(quinn::SendStream, quinn::RecvStream, Welcome), String> {
    let (mut send, mut recv) = connection.open_bi().await.map_err(|e| e.to_string())?;
    write_frame(&mut send, hello, MAX_FRAME_LEN)
        .await
        .map_err(|e| e.to_string())?;
    let welcome: Welcome = read_frame(&mut recv, MAX_FRAME_LEN, FRAME_READ_TIMEOUT)
        .await
        .map_err(|e| e.to_string())?;
    Ok((send, recv, welcome))
}

/// A heartbeat with this machine's clock (the hub compares it with its own).
pub fn heartbeat() -> Event {
    let unix_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as u64)
        .unwrap_or_default();
    Event::Heartbeat { unix_ms }
}

/// Writes events on the control stream, numbering them from 1.
pub struct EventWriter {
    send: quinn::SendStream,
    seq: u64,
}

impl EventWriter {
    pub fn new(send: quinn::SendStream) -> Self {
        Self { send, seq: 0 }
    }

    pub async fn send(&mut self, event: Event) -> Result<(), String> {
        self.seq += 1;
        let frame = EventFrame {
            seq: self.seq,
            event,
        };
        write_frame(&mut self.send, &frame, MAX_FRAME_LEN)
            .await
            .map_err(|err| err.to_string())
    }
}
