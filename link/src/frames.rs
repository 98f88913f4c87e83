//! Frames on quinn streams: the I/O half of [`proxlab_protocol::frame`].

use std::time::Duration;

use proxlab_protocol::frame::{self, FrameError, HEADER_LEN};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FrameIoError {
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("timed out waiting for a frame")]
    Timeout,
    #[error("stream ended in the middle of a frame")]
    Truncated,
    #[error("stream ended before a frame arrived")]
    Ended,
    #[error("reading: {0}")]
    Read(#[from] quinn::ReadError),
    #[error("writing: {0}")]
    Write(#[from] quinn::WriteError),
    #[error("stream closed: {0}")]
    Closed(#[from] quinn::ClosedStream),
}

impl FrameIoError {
    /// Whether the peer sent something we refused (as opposed to the link failing).
    pub fn is_bad_frame(&self) -> bool {
        matches!(self, FrameIoError::Frame(_))
    }
}

/// Writes one frame.
pub async fn write_frame<T: Serialize>(
    send: &mut quinn::SendStream,
    message: &T,
    max_len: usize,
) -> Result<(), FrameIoError> {
    let bytes = frame::encode(message, max_len)?;
    send.write_all(&bytes).await?;
    Ok(())
}

/// Reads one frame, failing if the stream ends first.
pub async fn read_frame<T: DeserializeOwned>(
    recv: &mut quinn::RecvStream,
    max_len: usize,
    timeout: Duration,
) -> Result<T, FrameIoError> {
    read_frame_or_end(recv, max_len, timeout)
        .await?
        .ok_or(FrameIoError::Ended)
}

/// Reads one frame, or `None` if the peer finished the stream cleanly between frames.
/// `timeout` bounds the whole frame; pass a long one for streams that idle between frames.
pub async fn read_frame_or_end<T: DeserializeOwned>(
    recv: &mut quinn::RecvStream,
    max_len: usize,
    timeout: Duration,
) -> Result<Option<T>, FrameIoError> {
    tokio::time::timeout(timeout, read_inner(recv, max_len))
        .await
        .map_err(|_| FrameIoError::Timeout)?
}

async fn read_inner<T: DeserializeOwned>(
    recv: &mut quinn::RecvStream,
    max_len: usize,
) -> Result<Option<T>, FrameIoError> {
    let mut header = [0u8; HEADER_LEN];
    match recv.read_exact(&mut header).await {
        Ok(()) => {}
        Err(quinn::ReadExactError::FinishedEarly(0)) => return Ok(None),
        Err(quinn::ReadExactError::FinishedEarly(_)) => return Err(FrameIoError::Truncated),
        Err(quinn::ReadExactError::ReadError(err)) => return Err(err.into()),
    }
    // The limit is checked before the body buffer exists.
    let len = frame::body_len(header, max_len)?;
    let mut body = vec![0u8; len];
    match recv.read_exact(&mut body).await {
        Ok(()) => Ok(Some(frame::decode(&body)?)),
        Err(quinn::ReadExactError::FinishedEarly(_)) => Err(FrameIoError::Truncated),
        Err(quinn::ReadExactError::ReadError(err)) => Err(err.into()),
    }
}
