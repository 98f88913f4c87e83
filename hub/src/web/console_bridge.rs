//! The bytes of an open console, between the browser's WebSocket and the agent's QUIC
//! stream, until one side ends or the session is ended.
//!
//! Each direction awaits its writes, so nothing queues in the hub: a browser that stops
//! reading stops the reads from the agent, and QUIC's flow control carries that back to
//! the VM's console. What the browser sends is bounded by the WebSocket's frame limit.

use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures_util::{SinkExt, StreamExt};

use crate::HubState;
use crate::domain::consoles::sessions::{ConsoleSession, EndReason};
use crate::domain::consoles::{self, OpenConsole};
use std::sync::Arc;

/// The largest WebSocket message a browser may send a console (noVNC's largest are
/// clipboard texts; a terminal's are pastes).
pub(super) const MAX_MESSAGE_BYTES: usize = 256 * 1024;

/// The most the hub reads from the agent before passing it on.
const CHUNK_BYTES: usize = 64 * 1024;

/// How long the browser gets to take the closing frame.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// Carries the console's bytes until it ends, then closes both sides and says why.
pub(super) async fn run(
    state: &HubState,
    socket: WebSocket,
    console: &mut OpenConsole,
) -> EndReason {
    let session: Arc<ConsoleSession> = console.record.session().clone();
    let (mut to_browser, mut from_browser) = socket.split();
    let (to_agent, from_agent) = (&mut console.to_agent, &mut console.from_agent);
    let reason = {
        let upstream = async {
            while let Some(message) = from_browser.next().await {
                let bytes = match message {
                    Ok(Message::Binary(bytes)) => bytes,
                    Ok(Message::Text(text)) => text.as_bytes().to_vec().into(),
                    Ok(Message::Close(_)) => break,
                    Ok(Message::Ping(_) | Message::Pong(_)) => continue,
                    Err(err) => return EndReason::BadInput(browser_error(&err)),
                };
                if to_agent.write_all(&bytes).await.is_err() {
                    return node_lost(&session);
                }
                session.sent_to_vm(bytes.len());
            }
            EndReason::BrowserClosed
        };
        let downstream = async {
            let mut buffer = vec![0u8; CHUNK_BYTES];
            loop {
                match from_agent.read(&mut buffer).await {
                    Ok(Some(n)) => {
                        let message = Message::Binary(buffer[..n].to_vec().into());
                        if to_browser.send(message).await.is_err() {
                            return EndReason::BrowserClosed;
                        }
                        session.received_from_vm(n);
                    }
                    Ok(None) => return EndReason::VmSideClosed,
                    Err(_) => return node_lost(&session),
                }
            }
        };
        // Whichever ends first ends the session; the other halves are dropped with it.
        tokio::select! {
            reason = upstream => reason,
            reason = downstream => reason,
            reason = session.ended() => reason,
            reason = consoles::watch(state, &session) => reason,
        }
    };
    // The agent sees the end of the stream and closes the VM's console.
    let _ = console.to_agent.finish();
    send_close(&mut to_browser, &reason).await;
    reason
}

/// Sends the closing frame that says why a session ended.
pub(super) async fn send_close<S>(to_browser: &mut S, reason: &EndReason)
where
    S: futures_util::Sink<Message> + Unpin,
{
    let close = Message::Close(Some(CloseFrame {
        code: reason.close_code(),
        reason: reason.message().into(),
    }));
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, to_browser.send(close)).await;
}

fn node_lost(session: &ConsoleSession) -> EndReason {
    EndReason::NodeLost(format!(
        "the stream of VM {}'s console broke",
        session.vm.vmid
    ))
}

pub(super) fn browser_error(err: &axum::Error) -> String {
    let text = err.to_string();
    if text.contains("too long") || text.contains("too big") || text.contains("Space limit") {
        format!(
            "a message larger than {} KiB was refused",
            MAX_MESSAGE_BYTES / 1024
        )
    } else {
        "the browser broke the WebSocket protocol".into()
    }
}
