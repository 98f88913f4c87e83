//! Copying an image between two agents as raw bytes (`base-send` → `base-receive`): the hub
//! opens both requests and moves the bytes from one node to the other without decoding
//! them, on lanes (see [`super::lanes`]) or on the requests' own QUIC streams. The receiving node says where to start (what an interrupted copy
//! of the same image left), checks the sender's digest at the end, and has the last word.

use std::sync::Arc;
use std::time::Duration;

use proxlab_link::read_frame_or_end;
use proxlab_protocol::base_copy::{
    BaseReceive, BaseSend, BaseWritten, LANE_CAPABILITY, STREAM_DIGEST_BYTES,
};
use proxlab_protocol::limits::MAX_FRAME_LEN;
use proxlab_protocol::{Request, ResponseFrame};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::CallError;
use super::lanes::{ExpectedLane, Lane, LaneError, Lanes};
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
    /// Whether they travelled on lanes rather than on the request streams.
    pub on_lanes: bool,
}

/// Bytes moved from one lane to the other at a time.
const LANE_BUFFER: usize = 256 << 10;

/// How long the hub waits for the sending node's reason when its lane ends early.
const REASON_TIMEOUT: Duration = Duration::from_secs(2);

/// How a copy over lanes failed.
enum LaneCopyError {
    /// A node's lane did not arrive: the copy is tried again on the request streams.
    NotArrived(LaneError),
    Failed(CallError),
}

impl From<CallError> for LaneCopyError {
    fn from(err: CallError) -> Self {
        Self::Failed(err)
    }
}

fn link_error(node: &str, detail: String) -> CallError {
    CallError::Link {
        node: node.to_owned(),
        detail,
    }
}

impl AgentRegistry {
    /// Whether `node`'s agent copies images as raw streams.
    pub fn streams_images(&self, node: &str) -> bool {
        self.session(node).is_some_and(|session| {
            session.capabilities.contains(BaseSend::KIND)
                && session.capabilities.contains(BaseReceive::KIND)
        })
    }

    /// Whether a copy between `source` and `target` would try lanes now: both agents open
    /// them, the hub listens for them, and neither node's lane failed to arrive lately.
    pub fn copies_on_lanes(&self, source: &str, target: &str) -> bool {
        self.lanes_between(source, target).is_some()
    }

    /// The lanes a copy between `source` and `target` may use, with the certificates
    /// their agents are connected with.
    fn lanes_between(&self, source: &str, target: &str) -> Option<(Arc<Lanes>, String, String)> {
        let lanes = self.lanes()?;
        let fingerprint = |node: &str| {
            let session = self.session(node)?;
            let usable = session.capabilities.contains(LANE_CAPABILITY) && lanes.usable_for(node);
            usable.then_some(session.fingerprint)
        };
        Some((lanes.clone(), fingerprint(source)?, fingerprint(target)?))
    }

    /// Copies one image from `copy.source_node` to `copy.target_node`, resuming what an
    /// interrupted copy of it left there: on lanes when both agents open them (and the hub
    /// listens for them), else on the request streams.
    pub async fn copy_image(&self, copy: ImageCopy) -> Result<Copied, CallError> {
        if let Some((lanes, source_print, target_print)) =
            self.lanes_between(&copy.source_node, &copy.target_node)
        {
            let lane_copy = LaneCopy {
                lanes: &lanes,
                source_print: &source_print,
                target_print: &target_print,
            };
            match self.copy_over_lanes(&lane_copy, copy.clone()).await {
                Ok(copied) => return Ok(copied),
                Err(LaneCopyError::Failed(err)) => return Err(err),
                Err(LaneCopyError::NotArrived(err)) => {
                    let LaneError::NotArrived { node } = &err;
                    tracing::warn!(
                        %node,
                        "{err}: base copies from and to it use QUIC for 10 minutes (is TCP to \
                         the hub's link port blocked?)"
                    );
                    lanes.fall_back(node);
                }
            }
        }
        self.copy_over_streams(copy).await
    }

    /// Opens the receiving node's stream: where to start.
    async fn open_target(
        &self,
        copy: &ImageCopy,
        lane: Option<&ExpectedLane>,
    ) -> Result<(u64, quinn::SendStream, quinn::RecvStream), CallError> {
        let receive = BaseReceive {
            lane: lane.map(|lane| lane.name().to_owned()),
            ..copy.receive.clone()
        };
        let (start, to_target, from_target) = self
            .open_stream(&copy.target_node, &receive, OPEN_TIMEOUT)
            .await?;
        Ok((start.have, to_target, from_target))
    }

    /// Opens the sending node's stream from `offset`, and checks the image's size.
    async fn open_source(
        &self,
        copy: &ImageCopy,
        offset: u64,
        lane: Option<&ExpectedLane>,
    ) -> Result<(quinn::SendStream, quinn::RecvStream), CallError> {
        let send = BaseSend {
            offset,
            lane: lane.map(|lane| lane.name().to_owned()),
            ..copy.send.clone()
        };
        let source = copy.source_node.as_str();
        let (image, to_source, from_source) = self.open_stream(source, &send, OPEN_TIMEOUT).await?;
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
        Ok((to_source, from_source))
    }

    /// The copy on the request streams, lanes or not (the fallback, and a comparison for
    /// benchmarks): the hub moves the bytes from one stream to the other as QUIC hands them
    /// over.
    pub async fn copy_over_streams(&self, copy: ImageCopy) -> Result<Copied, CallError> {
        let (source, target) = (copy.source_node.as_str(), copy.target_node.as_str());
        let (have, mut to_target, from_target) = self.open_target(&copy, None).await?;
        let (_to_source, mut from_source) = self.open_source(&copy, have, None).await?;
        let mut moved = 0u64;
        while let Some(chunk) = from_source
            .read_chunk(usize::MAX, true)
            .await
            .map_err(|err| link_error(source, err.to_string()))?
        {
            moved += chunk.bytes.len() as u64;
            to_target
                .write_chunk(chunk.bytes)
                .await
                .map_err(|err| link_error(target, err.to_string()))?;
        }
        let _ = to_target.finish();
        finish(target, from_target, have, moved).await
    }

    /// The copy on lanes: each node opens one after answering its request, and the hub
    /// moves the bytes from one lane to the other without decoding them.
    async fn copy_over_lanes(
        &self,
        lanes: &LaneCopy<'_>,
        copy: ImageCopy,
    ) -> Result<Copied, LaneCopyError> {
        let (source, target) = (copy.source_node.as_str(), copy.target_node.as_str());
        let target_lane = lanes.lanes.expect(target, lanes.target_print);
        let (have, _to_target, from_target) = self.open_target(&copy, Some(&target_lane)).await?;
        let source_lane = lanes.lanes.expect(source, lanes.source_print);
        let (_to_source, mut from_source) =
            self.open_source(&copy, have, Some(&source_lane)).await?;
        let (into_target, out_of_source) =
            tokio::join!(target_lane.arrival(), source_lane.arrival());
        let mut into_target = into_target.map_err(LaneCopyError::NotArrived)?;
        let mut out_of_source = out_of_source.map_err(LaneCopyError::NotArrived)?;
        let expected = copy.receive.bytes - have + STREAM_DIGEST_BYTES as u64;
        let moved = pump(&mut out_of_source, &mut into_target, source, target).await;
        let moved = match moved {
            Ok(moved) if moved == expected => moved,
            Ok(_) | Err(_) => {
                // The sender stopped early: its reason is on its request stream.
                let reason = sender_reason(source, &mut from_source).await;
                let error = reason.or(moved.err()).unwrap_or_else(|| {
                    link_error(source, "the sending node's lane ended early".into())
                });
                return Err(LaneCopyError::Failed(error));
            }
        };
        into_target
            .shutdown()
            .await
            .map_err(|err| link_error(target, err.to_string()))?;
        // Reading the sender's stream to its end tells it that everything arrived (it then
        // drops a difference it staged for this copy).
        if let Some(error) = sender_reason(source, &mut from_source).await {
            return Err(LaneCopyError::Failed(error));
        }
        let copied = finish(target, from_target, have, moved).await?;
        Ok(Copied {
            on_lanes: true,
            ..copied
        })
    }
}

/// The lanes of one copy, and the certificates its nodes are connected with.
struct LaneCopy<'a> {
    lanes: &'a Arc<Lanes>,
    source_print: &'a str,
    target_print: &'a str,
}

/// Moves everything from one lane to the other; the bytes moved.
async fn pump(
    from: &mut Lane,
    to: &mut Lane,
    source: &str,
    target: &str,
) -> Result<u64, CallError> {
    let mut buffer = vec![0u8; LANE_BUFFER];
    let mut moved = 0u64;
    loop {
        let read = from
            .read(&mut buffer)
            .await
            .map_err(|err| link_error(source, format!("its lane: {err}")))?;
        if read == 0 {
            return Ok(moved);
        }
        to.write_all(&buffer[..read])
            .await
            .map_err(|err| link_error(target, format!("its lane: {err}")))?;
        moved += read as u64;
    }
}

/// The error the sending node ended its request stream with, if it did.
async fn sender_reason(source: &str, from_source: &mut quinn::RecvStream) -> Option<CallError> {
    match read_frame_or_end(from_source, MAX_FRAME_LEN, REASON_TIMEOUT).await {
        Ok(Some(ResponseFrame::Err { error })) => Some(CallError::Remote(error)),
        Ok(_) => None,
        Err(err) => Some(link_error(source, err.to_string())),
    }
}

/// Reads the receiving node's last word on a copy that moved `moved` bytes (the digest
/// included) from `have` on.
async fn finish(
    target: &str,
    mut from_target: quinn::RecvStream,
    have: u64,
    moved: u64,
) -> Result<Copied, CallError> {
    let last: Option<ResponseFrame> =
        read_frame_or_end(&mut from_target, MAX_FRAME_LEN, OPEN_TIMEOUT)
            .await
            .map_err(|err| link_error(target, err.to_string()))?;
    match last {
        Some(ResponseFrame::Ok { body }) => {
            serde_json::from_value::<BaseWritten>(body).map_err(|err| CallError::Protocol {
                node: target.to_owned(),
                detail: format!("decoding the end of the copy: {err}"),
            })?;
            let sent = moved.saturating_sub(STREAM_DIGEST_BYTES as u64);
            crate::metrics::metrics().base_copied(sent);
            Ok(Copied {
                resumed_at: have,
                sent,
                on_lanes: false,
            })
        }
        Some(ResponseFrame::Err { error }) => Err(CallError::Remote(error)),
        Some(ResponseFrame::Progress { .. }) | None => Err(link_error(
            target,
            "the receiving node ended the copy without saying how it went".into(),
        )),
    }
}
