//! Console streams: a `console-open` request turns its stream into a pipe between the hub
//! and one of a VM's consoles, until either side ends it (see [`crate::relay`]).

use proxlab_protocol::console::ConsoleOpen;

use crate::context::Context;
use crate::pve::{console, remote_error};
use crate::relay::{self, Target};

/// Serves one console stream whose request frame has been read.
pub async fn serve(
    context: &Context,
    body: serde_json::Value,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) {
    let request: ConsoleOpen = match relay::parse_request(body) {
        Ok(request) => request,
        Err(error) => return relay::answer_error(send, error).await,
    };
    let ConsoleOpen {
        vmid,
        kind,
        password,
    } = request;
    let opened = console::open(&context.node, vmid, kind, password.as_deref()).await;
    let mut console = match opened {
        Ok(console) => console,
        Err(err) => {
            tracing::info!(vmid, kind = kind.as_str(), %err, "console refused");
            return relay::answer_error(send, remote_error(&err)).await;
        }
    };
    if !relay::answer_ready(&mut send).await {
        return console.close().await;
    }
    tracing::info!(vmid, kind = kind.as_str(), "console opened");
    let target = Target {
        greeting: std::mem::take(&mut console.greeting),
        from: &mut console.from_vm,
        to: &mut console.to_vm,
        session: context.idle.sessions().open(vmid),
    };
    let ended_by = relay::run(&mut send, &mut recv, target).await;
    console.close().await;
    tracing::info!(vmid, kind = kind.as_str(), ended_by, "console closed");
}
