//! The SSH terminal's WebSocket: the page's login, host-key questions and keystrokes in, the
//! shell's output out, with the hub running the SSH client over the tunnel in between.
//!
//! Messages from the page: first a JSON text [`ssh::Login`]; while connecting, a JSON text
//! `{"type":"accept-host-key","fingerprint":…}` when the user accepts a changed host key;
//! once connected, binary keystrokes and JSON text `{"type":"resize","cols":…,"rows":…}`.
//! Messages to the page: JSON text `{"type":"host-key",…}` and `{"type":"connected"}`, then
//! the shell's output as binary. Credentials are never stored or logged.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket};
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use russh::ChannelMsg;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::mpsc;

use super::console_bridge::{browser_error, send_close};
use crate::HubState;
use crate::domain::consoles;
use crate::domain::consoles::sessions::{ConsoleSession, EndReason};
use crate::domain::remote::host_keys::{KeyOwner, Verdict};
use crate::domain::remote::ssh::{self, Login, Notice, Prompt, Shell, SshError};
use crate::domain::remote::tunnel::Tunnel;
use crate::domain::tokens::format_time;
use crate::domain::viewer::Viewer;

/// How long the page has to send the login once the socket is open.
const LOGIN_WAIT: Duration = Duration::from_secs(30);

type ToBrowser = SplitSink<WebSocket, Message>;

/// What the page sends as text once connected, or while a host key is in question.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
enum Control {
    Resize { cols: u32, rows: u32 },
    AcceptHostKey { fingerprint: String },
}

/// Runs the SSH terminal until it ends; says why.
pub(super) async fn run(
    state: Arc<HubState>,
    viewer: &Viewer,
    socket: WebSocket,
    session: &Arc<ConsoleSession>,
    tunnel: Tunnel,
) -> EndReason {
    let (mut to_browser, mut from_browser) = socket.split();
    let reason = match login(
        &state,
        viewer,
        session,
        tunnel,
        &mut to_browser,
        &mut from_browser,
    )
    .await
    {
        Ok(shell) => relay(&state, session, shell, &mut to_browser, &mut from_browser).await,
        Err(reason) => reason,
    };
    send_close(&mut to_browser, &reason).await;
    reason
}

/// Reads the login, connects and logs in, answering host-key questions on the way.
async fn login(
    state: &Arc<HubState>,
    viewer: &Viewer,
    session: &Arc<ConsoleSession>,
    tunnel: Tunnel,
    to_browser: &mut ToBrowser,
    from_browser: &mut futures_util::stream::SplitStream<WebSocket>,
) -> Result<Shell, EndReason> {
    let first = match tokio::time::timeout(LOGIN_WAIT, from_browser.next()).await {
        Err(_) => return Err(refused(&SshError::BadLogin("no login was sent".into()))),
        Ok(None | Some(Ok(Message::Close(_)))) => return Err(EndReason::BrowserClosed),
        Ok(Some(Err(err))) => return Err(EndReason::BadInput(browser_error(&err))),
        Ok(Some(Ok(message))) => message,
    };
    let Message::Text(text) = first else {
        return Err(refused(&SshError::BadLogin(
            "the first message must be the login".into(),
        )));
    };
    let login: Login = serde_json::from_str(text.as_str()).map_err(|err| {
        refused(&SshError::BadLogin(format!(
            "the login is not valid: {err}"
        )))
    })?;
    let (notices, mut notices_out) = mpsc::channel(4);
    let (accepts, accepted) = mpsc::channel(1);
    let prompt = Prompt { notices, accepted };
    // Host keys are remembered for the VM: its VMID, and its identity when the node reports one.
    let identity = match state.db.vm(session.vm).await {
        Ok(vm) => vm.and_then(|vm| vm.identity),
        Err(err) => {
            tracing::warn!(%err, "cannot read a VM for its SSH terminal");
            return Err(EndReason::Refused {
                code: 1011,
                message: "the hub could not read the VM; try again".into(),
            });
        }
    };
    let owner = KeyOwner {
        vm: session.vm,
        identity,
    };
    let opening = ssh::open(state.clone(), viewer, owner, tunnel, login, prompt);
    tokio::pin!(opening);
    loop {
        tokio::select! {
            result = &mut opening => return result.map_err(|err| refused(&err)),
            Some(notice) = notices_out.recv() => {
                let text = notice_json(&notice).to_string();
                if to_browser.send(Message::Text(text.into())).await.is_err() {
                    return Err(EndReason::BrowserClosed);
                }
            }
            message = from_browser.next() => match message {
                None | Some(Ok(Message::Close(_))) => return Err(EndReason::BrowserClosed),
                Some(Err(err)) => return Err(EndReason::BadInput(browser_error(&err))),
                Some(Ok(Message::Text(text))) => {
                    if let Some(fingerprint) = accepted_fingerprint(text.as_str()) {
                        let _ = accepts.try_send(fingerprint);
                    }
                }
                Some(Ok(_)) => {}
            },
            reason = session.ended() => return Err(reason),
        }
    }
}

/// Carries keystrokes in and output out until the shell ends or the session is ended.
async fn relay(
    state: &HubState,
    session: &Arc<ConsoleSession>,
    shell: Shell,
    to_browser: &mut ToBrowser,
    from_browser: &mut futures_util::stream::SplitStream<WebSocket>,
) -> EndReason {
    let (mut output, input) = shell.split();
    let connected = json!({"type": "connected"}).to_string();
    if to_browser
        .send(Message::Text(connected.into()))
        .await
        .is_err()
    {
        input.close().await;
        return EndReason::BrowserClosed;
    }
    let reason = {
        let upstream = async {
            while let Some(message) = from_browser.next().await {
                match message {
                    Ok(Message::Binary(bytes)) => {
                        if input.send(&bytes).await.is_err() {
                            return EndReason::ShellExited;
                        }
                        session.sent_to_vm(bytes.len());
                    }
                    Ok(Message::Text(text)) => {
                        if let Ok(Control::Resize { cols, rows }) =
                            serde_json::from_str(text.as_str())
                        {
                            input.resize(cols, rows).await;
                        }
                    }
                    Ok(Message::Close(_)) => break,
                    Ok(Message::Ping(_) | Message::Pong(_)) => {}
                    Err(err) => return EndReason::BadInput(browser_error(&err)),
                }
            }
            EndReason::BrowserClosed
        };
        let downstream = async {
            loop {
                match output.wait().await {
                    Some(ChannelMsg::Data { data } | ChannelMsg::ExtendedData { data, .. }) => {
                        let length = data.len();
                        if to_browser
                            .send(Message::Binary(data.to_vec().into()))
                            .await
                            .is_err()
                        {
                            return EndReason::BrowserClosed;
                        }
                        session.received_from_vm(length);
                    }
                    Some(ChannelMsg::Eof | ChannelMsg::Close) | None => {
                        return EndReason::ShellExited;
                    }
                    Some(_) => {}
                }
            }
        };
        tokio::select! {
            reason = upstream => reason,
            reason = downstream => reason,
            reason = session.ended() => reason,
            reason = consoles::watch(state, session) => reason,
        }
    };
    input.close().await;
    reason
}

/// The fingerprint in an `accept-host-key` message, if `text` is one.
fn accepted_fingerprint(text: &str) -> Option<String> {
    match serde_json::from_str(text) {
        Ok(Control::AcceptHostKey { fingerprint }) => Some(fingerprint),
        _ => None,
    }
}

fn refused(err: &SshError) -> EndReason {
    EndReason::Refused {
        code: err.close_code(),
        message: err.to_string(),
    }
}

/// A notice as the page reads it.
fn notice_json(notice: &Notice) -> serde_json::Value {
    let Notice::HostKey { presented, verdict } = notice;
    let mut value = json!({
        "type": "host-key",
        "algorithm": presented.algorithm,
        "fingerprint": presented.fingerprint,
    });
    match verdict {
        Verdict::New => value["status"] = json!("new"),
        Verdict::Known => value["status"] = json!("known"),
        Verdict::Changed { known, reset_since } => {
            value["status"] = json!("changed");
            value["known_fingerprint"] = json!(known.fingerprint);
            value["known_since"] = json!(format_time(known.first_seen));
            value["reset_since"] = json!(reset_since.map(format_time));
        }
    }
    value
}
