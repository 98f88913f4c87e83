//! The bytes of a stream that went on as raw bytes after its answer (a console, a tunnel),
//! between the hub's QUIC stream and the thing on the node it was opened to.
//!
//! Nothing is buffered beyond one copy buffer each way: when the hub stops reading, QUIC's
//! flow control stops this side's writes, which stops reads from the node's side, so a slow
//! browser slows the VM down instead of growing memory anywhere.

use proxlab_link::write_frame;
use proxlab_protocol::limits::MAX_FRAME_LEN;
use proxlab_protocol::{ErrorKind, RemoteError, Request, ResponseFrame};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::idle::sessions::Session;

/// Stream error code for a relay the agent ended because its other side failed.
const STREAM_RELAY_ENDED: u32 = 2;

/// The node's side of a relay.
pub struct Target<'a, R, W> {
    pub from: &'a mut R,
    pub to: &'a mut W,
    /// Bytes already read from `from` that the hub gets first.
    pub greeting: Vec<u8>,
    /// The session this relay is, for the idle timers: open while the relay runs, and told
    /// of every read from the user's side.
    pub session: Session,
}

/// Carries bytes both ways until either side ends, then ends the hub's stream; says which
/// side ended it.
pub async fn run<R, W>(
    send: &mut quinn::SendStream,
    recv: &mut quinn::RecvStream,
    target: Target<'_, R, W>,
) -> &'static str
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let Target {
        from,
        to,
        greeting,
        session,
    } = target;
    let to_hub = async {
        send.write_all(&greeting).await?;
        let copied = tokio::io::copy(from, send).await?;
        Ok::<_, std::io::Error>(copied + greeting.len() as u64)
    };
    let to_target = async {
        let copied = copy_marking_input(recv, to, &session).await?;
        let _ = to.shutdown().await;
        Ok::<_, std::io::Error>(copied)
    };
    // Whichever side ends first ends the relay: the node's side closing (the VM stopped, the
    // connection closed) or the hub finishing its half (the browser left).
    let ended_by = tokio::select! {
        result = to_hub => match result {
            Ok(_) => "the VM's side closed",
            Err(_) => "the hub stopped reading",
        },
        result = to_target => match result {
            Ok(_) => "the hub closed",
            Err(_) => "the VM's side stopped reading",
        },
    };
    let _ = send.finish();
    let _ = recv.stop(STREAM_RELAY_ENDED.into());
    ended_by
}

/// Copies the user's bytes to the node's side, telling the session of each read.
async fn copy_marking_input<W: AsyncWrite + Unpin>(
    recv: &mut quinn::RecvStream,
    to: &mut W,
    session: &Session,
) -> std::io::Result<u64> {
    let mut buffer = vec![0; 16 * 1024];
    let mut copied = 0;
    loop {
        let read = match recv.read(&mut buffer).await {
            Ok(Some(read)) => read,
            Ok(None) => return Ok(copied),
            Err(err) => return Err(err.into()),
        };
        session.input();
        to.write_all(&buffer[..read]).await?;
        copied += read as u64;
    }
}

/// Decodes the request frame's body of a stream request.
pub fn parse_request<R: Request>(body: serde_json::Value) -> Result<R, RemoteError> {
    serde_json::from_value(body).map_err(|err| {
        RemoteError::new(
            ErrorKind::BadRequest,
            format!("invalid {} request: {err}", R::KIND),
        )
    })
}

/// Answers a stream request with an error and ends the stream.
pub async fn answer_error(mut send: quinn::SendStream, error: RemoteError) {
    let _ = write_frame(&mut send, &ResponseFrame::Err { error }, MAX_FRAME_LEN).await;
    let _ = send.finish();
}

/// Answers a stream request with its one `Ok` frame; raw bytes follow. `false` when the hub
/// has gone.
pub async fn answer_ready(send: &mut quinn::SendStream) -> bool {
    let ready = ResponseFrame::Ok {
        body: serde_json::json!({}),
    };
    write_frame(send, &ready, MAX_FRAME_LEN).await.is_ok()
}
