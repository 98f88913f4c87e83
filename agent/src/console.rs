//! Console streams: a `console-open` request turns its stream into a pipe between the hub
//! and one of a VM's consoles, until either side ends it.
//!
//! Nothing is buffered beyond one copy buffer each way: when the hub stops reading, QUIC's
//! flow control stops this side's writes, which stops reads from the VM's console, so a slow
//! browser slows the VM's output down instead of growing memory anywhere.

use proxlab_link::write_frame;
use proxlab_protocol::console::ConsoleOpen;
use proxlab_protocol::limits::MAX_FRAME_LEN;
use proxlab_protocol::{ErrorKind, RemoteError, ResponseFrame};
use tokio::io::AsyncWriteExt;

use crate::handlers::Context;
use crate::pve::{console, remote_error};

/// Stream error code for a console the agent ended because its other side failed.
const STREAM_CONSOLE_ENDED: u32 = 2;

/// Serves one console stream whose request frame has been read.
pub async fn serve(
    context: &Context,
    body: serde_json::Value,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) {
    let request: ConsoleOpen = match serde_json::from_value(body) {
        Ok(request) => request,
        Err(err) => {
            let error = RemoteError::new(
                ErrorKind::BadRequest,
                format!("invalid console-open request: {err}"),
            );
            return answer_error(send, error).await;
        }
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
            return answer_error(send, remote_error(&err)).await;
        }
    };
    let ready = ResponseFrame::Ok {
        body: serde_json::json!({}),
    };
    if write_frame(&mut send, &ready, MAX_FRAME_LEN).await.is_err() {
        return console.close().await;
    }
    tracing::info!(vmid, kind = kind.as_str(), "console opened");
    let greeting = std::mem::take(&mut console.greeting);
    let (from_vm, into_vm) = (&mut console.from_vm, &mut console.to_vm);
    let to_hub = async {
        send.write_all(&greeting).await?;
        let copied = tokio::io::copy(from_vm, &mut send).await?;
        Ok::<_, std::io::Error>(copied + greeting.len() as u64)
    };
    let to_vm = async {
        let copied = tokio::io::copy(&mut recv, into_vm).await?;
        let _ = into_vm.shutdown().await;
        Ok::<_, std::io::Error>(copied)
    };
    // Whichever side ends first ends the session: the VM's console closing (it stopped) or
    // the hub finishing its half (the browser left).
    let ended_by = tokio::select! {
        result = to_hub => match result {
            Ok(_) => "the VM's side closed",
            Err(_) => "the hub stopped reading",
        },
        result = to_vm => match result {
            Ok(_) => "the hub closed",
            Err(_) => "the VM's side stopped reading",
        },
    };
    let _ = send.finish();
    let _ = recv.stop(STREAM_CONSOLE_ENDED.into());
    console.close().await;
    tracing::info!(vmid, kind = kind.as_str(), ended_by, "console closed");
}

async fn answer_error(mut send: quinn::SendStream, error: RemoteError) {
    let _ = write_frame(&mut send, &ResponseFrame::Err { error }, MAX_FRAME_LEN).await;
    let _ = send.finish();
}
