//! The raw-byte form of a base copy (`proxlab_protocol::base_copy::{BaseSend, BaseReceive}`):
//! an image travels as plain bytes on a lane to the hub (see [`crate::lane`]) or on the
//! request's QUIC stream, which the hub relays to the receiving node without decoding,
//! followed by the checksum of the whole image (BLAKE3 on a lane, SHA-256 on a stream).
//!
//! The receiving side stages the image as a `.part` file, as the chunked copy does, with the
//! copy's id in a `.part.copy` file beside it: a copy of the same image that was cut off (a
//! node or the hub restarted, the link failed) resumes from the bytes already there. The
//! digest covers the whole file, the resumed part included, so bytes left by anything else
//! are caught, and the staged file is then discarded.

use std::path::{Path, PathBuf};

use proxlab_link::write_frame;
use proxlab_protocol::base_copy::{
    BaseReceive, BaseReceiveReply, BaseSend, BaseSendReply, BaseWritten, STREAM_DIGEST_BYTES,
};
use proxlab_protocol::limits::MAX_FRAME_LEN;
use proxlab_protocol::{ErrorKind, RemoteError, ResponseFrame};
use sha2::{Digest, Sha256};

use std::io::{Read, Seek, SeekFrom, Write};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::context::Context;
use crate::lane::Lane;
use crate::pve::base_copy::{MAX_DISKS, file_to_send, part_name, receiving_dir};
use crate::pve::{PveError, remote_error};

/// How many bytes are read from or written to the image at a time.
const BLOCK: usize = 1 << 20;

/// Stream error code for a copy the agent gave up.
const STREAM_COPY_FAILED: u32 = 3;

fn bad_request(message: String) -> RemoteError {
    RemoteError::new(ErrorKind::BadRequest, message)
}

/// Answers a stream request with an error and ends it.
async fn refuse(send: &mut quinn::SendStream, recv: &mut quinn::RecvStream, error: RemoteError) {
    tracing::info!(kind = ?error.kind, message = %error.message, "base stream refused");
    let _ = write_frame(send, &ResponseFrame::Err { error }, MAX_FRAME_LEN).await;
    let _ = send.finish();
    let _ = recv.stop(STREAM_COPY_FAILED.into());
}

async fn answer<T: serde::Serialize>(
    send: &mut quinn::SendStream,
    body: &T,
) -> Result<(), RemoteError> {
    let frame = ResponseFrame::from_result(Ok::<_, RemoteError>(body));
    write_frame(send, &frame, MAX_FRAME_LEN)
        .await
        .map_err(|err| RemoteError::new(ErrorKind::Internal, err.to_string()))
}

/// The checksum of a copied image: BLAKE3 on a lane (every agent that opens lanes has it),
/// SHA-256 on the request's stream (what agents older than lanes check).
enum ImageHasher {
    Sha256(Box<Sha256>),
    Blake3(Box<blake3::Hasher>),
}

impl ImageHasher {
    fn new(on_lane: bool) -> Self {
        if on_lane {
            Self::Blake3(Box::default())
        } else {
            Self::Sha256(Box::default())
        }
    }

    fn update(&mut self, bytes: &[u8]) {
        match self {
            Self::Sha256(hasher) => hasher.update(bytes),
            Self::Blake3(hasher) => {
                hasher.update(bytes);
            }
        }
    }

    fn finalize(self) -> Vec<u8> {
        match self {
            Self::Sha256(hasher) => hasher.finalize().to_vec(),
            Self::Blake3(hasher) => hasher.finalize().as_bytes().to_vec(),
        }
    }
}

/// Feeds the first `len` bytes of `file` to `hasher` (what an interrupted copy sent
/// already) and leaves the file there.
fn hash_prefix(
    file: &mut std::fs::File,
    len: u64,
    hasher: &mut ImageHasher,
) -> std::io::Result<()> {
    file.seek(SeekFrom::Start(0))?;
    let mut buffer = vec![0; BLOCK];
    let mut left = len;
    while left > 0 {
        let want = buffer
            .len()
            .min(usize::try_from(left).unwrap_or(usize::MAX));
        file.read_exact(&mut buffer[..want])?;
        hasher.update(&buffer[..want]);
        left -= want as u64;
    }
    Ok(())
}

/// Blocks of an image between the thread that reads or writes the file (and hashes it) and
/// the stream, so the file and the hash never hold up the runtime that drives QUIC.
const BLOCKS_IN_FLIGHT: usize = 8;

/// `base-send`: the image's bytes from the asked offset, then the whole image's digest.
pub async fn serve_send(
    context: &Context,
    body: serde_json::Value,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) {
    let request: BaseSend = match serde_json::from_value(body) {
        Ok(request) => request,
        Err(err) => {
            let error = bad_request(format!("invalid base-send request: {err}"));
            return refuse(&mut send, &mut recv, error).await;
        }
    };
    let found = file_to_send(
        &context.node,
        request.base_vmid,
        request.disk,
        request.diff_against,
        request.from_vm,
    )
    .await;
    let (path, is_diff) = match found {
        Ok(found) => found,
        Err(err) => return refuse(&mut send, &mut recv, remote_error(&err)).await,
    };
    let lane = request.lane.as_deref();
    match send_file(context, &path, request.offset, lane, &mut send).await {
        Ok(sent) => {
            crate::metrics::metrics().base_copied(true, sent);
            // The hub read it all: a staged difference is not needed again.
            if is_diff && matches!(send.stopped().await, Ok(None)) {
                let _ = std::fs::remove_file(&path);
            }
        }
        Err(error) => refuse(&mut send, &mut recv, error).await,
    }
}

/// Opens the lane a request names.
async fn open_lane(context: &Context, name: &str) -> Result<Lane, RemoteError> {
    let dialer = context.lanes.get().ok_or_else(|| {
        RemoteError::new(ErrorKind::Failed, "not connected to the hub".to_owned())
    })?;
    dialer
        .open(name)
        .await
        .map_err(|message| RemoteError::new(ErrorKind::Failed, message))
}

/// Where an image's bytes go: the request's stream, or a lane.
enum Outlet<'a> {
    Stream(&'a mut quinn::SendStream),
    Lane(Box<Lane>),
}

impl Outlet<'_> {
    async fn put(&mut self, block: Vec<u8>) -> Result<(), String> {
        match self {
            Self::Stream(stream) => stream
                .write_chunk(block.into())
                .await
                .map_err(|err| err.to_string()),
            Self::Lane(lane) => lane.write_all(&block).await.map_err(|err| err.to_string()),
        }
    }

    /// Says that everything was sent.
    async fn close(self) -> Result<(), String> {
        match self {
            Self::Stream(stream) => stream.finish().map_err(|err| err.to_string()),
            Self::Lane(mut lane) => lane.shutdown().await.map_err(|err| err.to_string()),
        }
    }
}

/// Answers with the file's size, then sends `offset..` and the digest (on the lane named
/// `lane`, if any, else on the stream); returns the bytes sent.
async fn send_file(
    context: &Context,
    path: &Path,
    offset: u64,
    lane: Option<&str>,
    send: &mut quinn::SendStream,
) -> Result<u64, RemoteError> {
    let io = |err: std::io::Error| remote_error(&PveError::from(err));
    let mut file = std::fs::File::open(path).map_err(io)?;
    let bytes = file.metadata().map_err(io)?.len();
    if offset > bytes {
        return Err(bad_request(format!(
            "the image has {bytes} bytes; it cannot be sent from {offset}"
        )));
    }
    answer(send, &BaseSendReply { bytes }).await?;
    let mut outlet = match lane {
        Some(name) => Outlet::Lane(Box::new(open_lane(context, name).await?)),
        None => Outlet::Stream(send),
    };
    let on_lane = matches!(outlet, Outlet::Lane(_));
    let (blocks, mut to_send) = tokio::sync::mpsc::channel::<Vec<u8>>(BLOCKS_IN_FLIGHT);
    let reader = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        let mut hasher = ImageHasher::new(on_lane);
        hash_prefix(&mut file, offset, &mut hasher)?;
        let mut left = bytes - offset;
        while left > 0 {
            let want = BLOCK.min(usize::try_from(left).unwrap_or(usize::MAX));
            let mut block = Vec::with_capacity(want);
            (&mut file).take(want as u64).read_to_end(&mut block)?;
            if block.len() < want {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            hasher.update(&block);
            left -= block.len() as u64;
            if blocks.blocking_send(block).is_err() {
                return Ok(()); // the stream ended; its error is reported there
            }
        }
        let _ = blocks.blocking_send(hasher.finalize().to_vec());
        Ok(())
    });
    let lost = |err: String| {
        RemoteError::new(
            ErrorKind::Internal,
            format!("the hub stopped reading: {err}"),
        )
    };
    while let Some(block) = to_send.recv().await {
        outlet.put(block).await.map_err(lost)?;
    }
    reader
        .await
        .map_err(|err| RemoteError::new(ErrorKind::Internal, err.to_string()))?
        .map_err(io)?;
    outlet.close().await.map_err(lost)?;
    if lane.is_some() {
        let _ = send.finish();
    }
    Ok(bytes - offset)
}

/// `base-receive`: says how much is here already, takes the rest and the digest, checks
/// the whole staged file, and ends with the outcome.
pub async fn serve_receive(
    context: &Context,
    body: serde_json::Value,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) {
    let request: BaseReceive = match serde_json::from_value(body) {
        Ok(request) => request,
        Err(err) => {
            let error = bad_request(format!("invalid base-receive request: {err}"));
            return refuse(&mut send, &mut recv, error).await;
        }
    };
    if request.disk >= MAX_DISKS {
        let error = bad_request(format!("a base has at most {MAX_DISKS} disks"));
        return refuse(&mut send, &mut recv, error).await;
    }
    let node = &context.node;
    let dir = match receiving_dir(node, request.base_vmid, &request.storage).await {
        Ok(dir) => dir,
        Err(err) => return refuse(&mut send, &mut recv, remote_error(&err)).await,
    };
    let _lock = match node.lock_vm(request.base_vmid).await {
        Ok(lock) => lock,
        Err(err) => return refuse(&mut send, &mut recv, remote_error(&err)).await,
    };
    let part = dir.join(part_name(request.base_vmid, request.disk));
    let outcome = receive_file(context, &part, &request, &mut send, &mut recv).await;
    let last = match outcome {
        Ok(received) => {
            crate::metrics::metrics().base_copied(false, received);
            ResponseFrame::from_result(Ok::<_, RemoteError>(BaseWritten {
                bytes: request.bytes,
            }))
        }
        Err(error) => {
            tracing::info!(kind = ?error.kind, message = %error.message, "base stream failed");
            ResponseFrame::Err { error }
        }
    };
    let _ = write_frame(&mut send, &last, MAX_FRAME_LEN).await;
    let _ = send.finish();
}

/// The file naming the copy a `.part` file belongs to.
fn copy_marker(part: &Path) -> PathBuf {
    part.with_extension("part.copy")
}

/// How much of this copy's image `part` holds already: all of it that is there when the
/// marker names this copy, else nothing (the file is started afresh and marked).
fn resume_point(part: &Path, request: &BaseReceive) -> std::io::Result<u64> {
    let marker = copy_marker(part);
    let same_copy = std::fs::read_to_string(&marker).is_ok_and(|id| id == request.copy_id);
    if same_copy && let Ok(meta) = std::fs::metadata(part) {
        return Ok(meta.len().min(request.bytes));
    }
    if let Some(dir) = part.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(part, b"")?;
    std::fs::write(&marker, &request.copy_id)?;
    Ok(0)
}

/// Where an image's bytes come from: the request's stream, or a lane.
enum Inlet<'a> {
    Stream(&'a mut quinn::RecvStream),
    Lane(Box<Lane>),
}

impl Inlet<'_> {
    /// Appends up to `want` bytes to `block`; false at the end.
    async fn fill(&mut self, block: &mut Vec<u8>, want: usize) -> Result<bool, String> {
        match self {
            Self::Stream(stream) => {
                let chunk = stream
                    .read_chunk(want, true)
                    .await
                    .map_err(|err| err.to_string())?;
                Ok(chunk.is_some_and(|chunk| {
                    block.extend_from_slice(&chunk.bytes);
                    true
                }))
            }
            Self::Lane(lane) => {
                block.reserve(want);
                let read = (&mut **lane)
                    .take(want as u64)
                    .read_buf(block)
                    .await
                    .map_err(|err| err.to_string())?;
                Ok(read > 0)
            }
        }
    }

    async fn read_exact(&mut self, buffer: &mut [u8]) -> Result<(), String> {
        match self {
            Self::Stream(stream) => quinn::RecvStream::read_exact(stream, buffer)
                .await
                .map_err(|err| err.to_string()),
            Self::Lane(lane) => lane
                .read_exact(buffer)
                .await
                .map(|_| ())
                .map_err(|err| err.to_string()),
        }
    }
}

async fn receive_file(
    context: &Context,
    part: &Path,
    request: &BaseReceive,
    send: &mut quinn::SendStream,
    recv: &mut quinn::RecvStream,
) -> Result<u64, RemoteError> {
    let io = |err: std::io::Error| remote_error(&PveError::from(err));
    let have = resume_point(part, request).map_err(io)?;
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(part)
        .map_err(io)?;
    // Whatever follows the resume point is rewritten.
    file.set_len(have).map_err(io)?;
    answer(send, &BaseReceiveReply { have }).await?;
    if have > 0 {
        tracing::info!(
            vmid = request.base_vmid,
            disk = request.disk,
            have,
            "resuming a base copy"
        );
    }
    let mut inlet = match request.lane.as_deref() {
        Some(name) => Inlet::Lane(Box::new(open_lane(context, name).await?)),
        None => Inlet::Stream(recv),
    };
    let total = request.bytes;
    let on_lane = matches!(inlet, Inlet::Lane(_));
    let (blocks, mut to_write) = tokio::sync::mpsc::channel::<Vec<u8>>(BLOCKS_IN_FLIGHT);
    let writer = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<u8>> {
        let mut hasher = ImageHasher::new(on_lane);
        hash_prefix(&mut file, have, &mut hasher)?;
        while let Some(block) = to_write.blocking_recv() {
            hasher.update(&block);
            store_block(&mut file, &block)?;
        }
        // Up to what arrived, holes included: all of it, or what a cut-off copy got.
        let end = file.stream_position()?;
        file.set_len(end)?;
        file.sync_all()?;
        Ok(hasher.finalize().to_vec())
    });
    let cut =
        |what: &str| RemoteError::new(ErrorKind::Internal, format!("the copy was cut off {what}"));
    let taken = async {
        let mut left = total - have;
        let mut block: Vec<u8> = Vec::with_capacity(BLOCK);
        while left > 0 {
            let want = usize::try_from(left)
                .unwrap_or(usize::MAX)
                .min(BLOCK - block.len());
            let before = block.len();
            let more = inlet
                .fill(&mut block, want)
                .await
                .map_err(|err| cut(&err))?;
            if !more {
                return Err(cut(&format!("with {left} bytes still to come")));
            }
            left -= (block.len() - before) as u64;
            if block.len() == BLOCK || left == 0 {
                let full = std::mem::replace(&mut block, Vec::with_capacity(BLOCK));
                if blocks.send(full).await.is_err() {
                    break; // the writer failed; its error is below
                }
            }
        }
        Ok::<_, RemoteError>(())
    }
    .await;
    // The writer finishes what it was given before anything else touches the file (a
    // resumed copy reads its length).
    drop(blocks);
    let received = writer
        .await
        .map_err(|err| RemoteError::new(ErrorKind::Internal, err.to_string()))?
        .map_err(io)?;
    taken?;
    let mut digest = [0u8; STREAM_DIGEST_BYTES];
    inlet
        .read_exact(&mut digest)
        .await
        .map_err(|err| cut(&format!("before its digest: {err}")))?;
    if received != digest {
        let _ = std::fs::remove_file(part);
        let _ = std::fs::remove_file(copy_marker(part));
        return Err(RemoteError::new(
            ErrorKind::Failed,
            "the image arrived damaged (its checksum differs from the sender's); it was \
             discarded and is copied again from the start",
        ));
    }
    let _ = std::fs::remove_file(copy_marker(part));
    Ok(total - have)
}

/// Writes a block at the file's position; an all-zero block only moves the position, so
/// holes stay unallocated (the file's length is set at the end).
fn store_block(file: &mut std::fs::File, block: &[u8]) -> std::io::Result<()> {
    if block.iter().all(|&byte| byte == 0) {
        file.seek(SeekFrom::Current(block.len() as i64))?;
        Ok(())
    } else {
        file.write_all(block)
    }
}
