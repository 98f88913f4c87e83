//! Answers to hub requests: one stream each, served concurrently.

use std::future::Future;
use std::time::Duration;

use proxlab_link::{FrameIoError, read_frame, write_frame};
use proxlab_protocol::limits::{FRAME_READ_TIMEOUT, MAX_FRAME_LEN};
use proxlab_protocol::requests::{MAX_PING_DELAY_MS, NodeInfo, Ping, Pong};
use proxlab_protocol::{ErrorKind, RemoteError, Request, RequestFrame, ResponseFrame};
use tracing::Instrument;

use crate::node_info;

/// The request kinds this agent serves, advertised in its hello.
pub const CAPABILITIES: &[&str] = &[Ping::KIND, NodeInfo::KIND];

/// Stream error code for a request stream the agent could not read.
const STREAM_BAD_FRAME: u32 = 1;

/// Serves one request stream.
pub async fn serve_stream(mut send: quinn::SendStream, mut recv: quinn::RecvStream) {
    let frame: RequestFrame = match read_frame(&mut recv, MAX_FRAME_LEN, FRAME_READ_TIMEOUT).await {
        Ok(frame) => frame,
        Err(err) => return refuse(send, recv, &err).await,
    };
    let span = tracing::info_span!("request", kind = %frame.kind, op_id = %frame.op_id);
    async {
        let answer = dispatch(frame).await;
        if let ResponseFrame::Err { error } = &answer {
            tracing::info!(kind = ?error.kind, message = %error.message, "request failed");
        }
        if let Err(err) = write_frame(&mut send, &answer, MAX_FRAME_LEN).await {
            tracing::info!(%err, "cannot send the answer");
            return;
        }
        let _ = send.finish();
    }
    .instrument(span)
    .await;
}

/// Answers an unreadable request with an error and closes that stream only.
async fn refuse(mut send: quinn::SendStream, mut recv: quinn::RecvStream, err: &FrameIoError) {
    tracing::warn!(%err, "refusing an unreadable request");
    if err.is_bad_frame() {
        let error = RemoteError::new(ErrorKind::BadFrame, err.to_string());
        let _ = write_frame(&mut send, &ResponseFrame::Err { error }, MAX_FRAME_LEN).await;
        let _ = send.finish();
    } else {
        let _ = send.reset(STREAM_BAD_FRAME.into());
    }
    let _ = recv.stop(STREAM_BAD_FRAME.into());
}

/// Decodes a request body, runs `handler`, and wraps its outcome.
async fn handle<R, F, Fut>(body: serde_json::Value, handler: F) -> ResponseFrame
where
    R: Request,
    F: FnOnce(R) -> Fut,
    Fut: Future<Output = Result<R::Response, RemoteError>>,
{
    match serde_json::from_value::<R>(body) {
        Ok(request) => ResponseFrame::from_result(handler(request).await),
        Err(err) => ResponseFrame::Err {
            error: RemoteError::new(
                ErrorKind::BadRequest,
                format!("invalid {} request: {err}", R::KIND),
            ),
        },
    }
}

/// Routes a request to its handler by kind.
pub async fn dispatch(frame: RequestFrame) -> ResponseFrame {
    match frame.kind.as_str() {
        Ping::KIND => handle(frame.body, ping).await,
        NodeInfo::KIND => {
            handle(frame.body, |_: NodeInfo| async { Ok(node_info::collect()) }).await
        }
        other => ResponseFrame::Err {
            error: RemoteError::new(
                ErrorKind::Unsupported,
                format!("this agent does not serve {other:?} requests"),
            ),
        },
    }
}

async fn ping(request: Ping) -> Result<Pong, RemoteError> {
    if request.delay_ms > MAX_PING_DELAY_MS {
        return Err(RemoteError::new(
            ErrorKind::BadRequest,
            format!("delay_ms must be at most {MAX_PING_DELAY_MS}"),
        ));
    }
    tokio::time::sleep(Duration::from_millis(request.delay_ms)).await;
    Ok(Pong {
        payload: request.payload,
    })
}

#[cfg(test)]
mod tests {
    use proxlab_protocol::requests::NodeInfoReply;

    use super::*;

    fn frame(kind: &str, body: serde_json::Value) -> RequestFrame {
        RequestFrame {
            op_id: "op".into(),
            kind: kind.into(),
            body,
        }
    }

    #[tokio::test]
    async fn ping_echoes() {
        let answer = dispatch(frame("ping", serde_json::json!({"payload": "x"}))).await;
        assert_eq!(
            answer,
            ResponseFrame::Ok {
                body: serde_json::json!({"payload": "x"})
            }
        );
    }

    #[tokio::test]
    async fn unknown_kind_is_unsupported() {
        let answer = dispatch(frame("frobnicate", serde_json::json!({}))).await;
        assert!(
            matches!(answer, ResponseFrame::Err { error } if error.kind == ErrorKind::Unsupported)
        );
    }

    #[tokio::test]
    async fn malformed_body_is_a_bad_request() {
        let answer = dispatch(frame("ping", serde_json::json!({"delay_ms": "soon"}))).await;
        assert!(
            matches!(answer, ResponseFrame::Err { error } if error.kind == ErrorKind::BadRequest)
        );
    }

    #[tokio::test]
    async fn overlong_ping_delay_is_refused() {
        let answer = dispatch(frame(
            "ping",
            serde_json::json!({"delay_ms": MAX_PING_DELAY_MS + 1}),
        ))
        .await;
        assert!(
            matches!(answer, ResponseFrame::Err { error } if error.kind == ErrorKind::BadRequest)
        );
    }

    #[tokio::test]
    async fn node_info_describes_this_machine() {
        let ResponseFrame::Ok { body } = dispatch(frame("node-info", serde_json::json!({}))).await
        else {
            panic!("node-info failed");
        };
        let info: NodeInfoReply = serde_json::from_value(body).unwrap();
        assert!(info.cpu_count >= 1);
        assert!(info.memory_total_bytes > 0);
        assert!(!info.hostname.is_empty());
    }
}
