//! Copying an image between two agents as raw bytes (`base-send` → `base-receive`): the hub
//! opens both streams and moves the bytes from one to the other as QUIC hands them over,
//! without decoding them. The receiving node says where to start (what an interrupted copy
//! of the same image left), checks the sender's digest at the end, and has the last word.

use std::time::Duration;

use proxlab_link::read_frame_or_end;
use proxlab_protocol::base_copy::{BaseReceive, BaseSend, BaseWritten};
use proxlab_protocol::limits::MAX_FRAME_LEN;
use proxlab_protocol::{Request, ResponseFrame};

use super::CallError;
use super::registry::AgentRegistry;

/// How long a node may take to answer the opening of a copy stream, or its end.
const OPEN_TIMEOUT: Duration = Duration::from_secs(60);

/// One image to copy: what the sender reads, and what the receiver stages.
#[derive(Debug, Clone)]
pub struct ImageCopy {
    pub source_node: String,
    pub send: BaseSend,
    pub target_node: String,
    pub receive: BaseReceive,
}

/// What a copy of one image did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Copied {
    /// Where the receiver started (bytes it held from an interrupted copy).
    pub resumed_at: u64,
    /// Bytes that travelled.
    pub sent: u64,
}

impl AgentRegistry {
    /// Whether `node`'s agent copies images as raw streams.
    pub fn streams_images(&self, node: &str) -> bool {
        self.session(node).is_some_and(|session| {
            session.capabilities.contains(BaseSend::KIND)
                && session.capabilities.contains(BaseReceive::KIND)
        })
    }

    /// Copies one image from `copy.source_node` to `copy.target_node`, resuming what an
    /// interrupted copy of it left there.
    pub async fn copy_image(&self, copy: ImageCopy) -> Result<Copied, CallError> {
        let target = copy.target_node.as_str();
        let (start, mut to_target, mut from_target) = self
            .open_stream(target, &copy.receive, OPEN_TIMEOUT)
            .await?;
        let send = BaseSend {
            offset: start.have,
            ..copy.send
        };
        let source = copy.source_node.as_str();
        let (image, _to_source, mut from_source) =
            self.open_stream(source, &send, OPEN_TIMEOUT).await?;
        if image.bytes != copy.receive.bytes {
            return Err(CallError::Protocol {
                node: source.to_owned(),
                detail: format!(
                    "the image has {} bytes, not the {} its export announced (the export's \
                     staged files are gone; the copy starts over)",
                    image.bytes, copy.receive.bytes
                ),
            });
        }
        let link = |node: &str, detail: String| CallError::Link {
            node: node.to_owned(),
            detail,
        };
        let mut moved = 0u64;
        while let Some(chunk) = from_source
            .read_chunk(usize::MAX, true)
            .await
            .map_err(|err| link(source, err.to_string()))?
        {
            moved += chunk.bytes.len() as u64;
            to_target
                .write_chunk(chunk.bytes)
                .await
                .map_err(|err| link(target, err.to_string()))?;
        }
        let _ = to_target.finish();
        let last: Option<ResponseFrame> =
            read_frame_or_end(&mut from_target, MAX_FRAME_LEN, OPEN_TIMEOUT)
                .await
                .map_err(|err| link(target, err.to_string()))?;
        match last {
            Some(ResponseFrame::Ok { body }) => {
                serde_json::from_value::<BaseWritten>(body).map_err(|err| CallError::Protocol {
                    node: target.to_owned(),
                    detail: format!("decoding the end of the copy: {err}"),
                })?;
                let sent =
                    moved.saturating_sub(proxlab_protocol::base_copy::STREAM_DIGEST_BYTES as u64);
                crate::metrics::metrics().base_copied(sent);
                Ok(Copied {
                    resumed_at: start.have,
                    sent,
                })
            }
            Some(ResponseFrame::Err { error }) => Err(CallError::Remote(error)),
            Some(ResponseFrame::Progress { .. }) | None => Err(link(
                target,
                "the receiving node ended the copy without saying how it went".into(),
            )),
        }
    }
}
