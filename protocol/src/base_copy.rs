//! Copying a class base to a node that cannot reach its disks (node-local storage).
//!
//! The hub relays the copy: it describes the base on the node that has it
//! ([`BaseExport`]), reads its images there chunk by chunk ([`BaseRead`]), writes each chunk
//! on the receiving node ([`BaseWrite`]), and finally registers the new base there
//! ([`BaseImport`]). Chunks are read in order and written only in order, so a copy that is
//! interrupted starts again from the beginning of its image.
//!
//! A new version of a class base is mostly what the previous one was. When both nodes hold
//! a copy of an older base (the *reference*), the copy carries only the difference:
//! [`BaseExport::diff_against`] has the sending node make, for each image the reference has
//! too, a qcow2 image of the clusters that differ from it; the receiving node puts it on its
//! own copy of the reference ([`BaseImport::reference`]) and flattens it into the new base.

use serde::{Deserialize, Serialize};

use crate::clones::MakeBaseReply;
use crate::request::{NoProgress, Request};

/// The most bytes one chunk carries.
pub const CHUNK_BYTES: u32 = 4 * 1024 * 1024;

/// Asks for a class base's config and the sizes of its disk images.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaseExport {
    pub base_vmid: u32,
    /// A base of the same node to send differences to; an older agent ignores it and
    /// exports whole images (no [`ExportedDisk::diff_of`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diff_against: Option<u32>,
    /// `base_vmid` is no base but a stopped VM whose disks are overlays on `diff_against`'s
    /// images (a teacher VM being published): its overlays are the difference, sent as they
    /// are, with no base made here first; its config goes out as a template's.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub from_vm: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaseExportReply {
    /// The base's config file, as stored.
    pub config: String,
    /// Its disk images in the order [`BaseRead::disk`] numbers them.
    pub disks: Vec<ExportedDisk>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportedDisk {
    /// The config key of the drive (`scsi0`, `efidisk0`, ...).
    pub key: String,
    /// The size of the image file.
    pub bytes: u64,
    /// Set when the image is the difference to the reference's image of this drive key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diff_of: Option<String>,
}

impl Request for BaseExport {
    const KIND: &'static str = "base-export";
    type Response = BaseExportReply;
    type Progress = NoProgress;
}

/// Reads up to [`CHUNK_BYTES`] of one of a base's images.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaseRead {
    pub base_vmid: u32,
    pub disk: u32,
    pub offset: u64,
    /// Read the difference the export made against this base, not the whole image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diff_against: Option<u32>,
    /// Read from a VM exported with [`BaseExport::from_vm`].
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub from_vm: bool,
}

/// A piece of an image file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chunk {
    /// How many bytes the chunk stands for.
    pub len: u32,
    /// The bytes, base64-encoded; empty when they are all zero (a hole).
    #[serde(default)]
    pub data: String,
}

impl Request for BaseRead {
    const KIND: &'static str = "base-read";
    type Response = Chunk;
    type Progress = NoProgress;
}

/// Appends a chunk to an image of a base being received. A chunk at offset 0 starts the
/// image afresh.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaseWrite {
    /// The VMID the received base will have.
    pub base_vmid: u32,
    pub storage: String,
    pub disk: u32,
    pub offset: u64,
    pub chunk: Chunk,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaseWritten {
    /// The size of the image received so far.
    pub bytes: u64,
}

impl Request for BaseWrite {
    const KIND: &'static str = "base-write";
    type Response = BaseWritten;
    type Progress = NoProgress;
}

/// Registers a received base: checks its images and writes its config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaseImport {
    pub base_vmid: u32,
    pub name: String,
    pub storage: String,
    /// The config of the base the images came from.
    pub config: String,
    /// The expected size of each image.
    pub disks: Vec<u64>,
    /// For each image, the drive key of the reference's image it is a difference to (see
    /// [`ExportedDisk::diff_of`]); empty when every image is whole.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub diff_of: Vec<Option<String>>,
    /// The receiving node's copy of the reference the differences apply to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<u32>,
}

impl Request for BaseImport {
    const KIND: &'static str = "base-import";
    type Response = MakeBaseReply;
    type Progress = NoProgress;
}

/// Sends one of a base's images (as [`BaseRead`] names it) as raw bytes on the request's
/// own stream, after the answer: from `offset` to the image's end, then the 32-byte SHA-256
/// of the whole image (`0..bytes`, whatever the offset). The hub relays the bytes to a
/// [`BaseReceive`] stream of the receiving node without decoding them. Replaces
/// [`BaseRead`] when both agents serve it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaseSend {
    pub base_vmid: u32,
    pub disk: u32,
    pub offset: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diff_against: Option<u32>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub from_vm: bool,
    /// Where the bytes go instead of the request's stream: a [`lane`] of the hub, opened by
    /// the node after the answer. Only sent to agents that serve [`LANE_CAPABILITY`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lane: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaseSendReply {
    /// The size of the whole image; `bytes - offset` bytes and the digest follow.
    pub bytes: u64,
}

impl Request for BaseSend {
    const KIND: &'static str = "base-send";
    type Response = BaseSendReply;
    type Progress = NoProgress;
}

/// Receives one of a base's images as raw bytes on the request's own stream. The answer
/// says how much of it the node holds already (`have`: what an interrupted copy of the same
/// image left, or 0), and the hub sends the rest, from `have` to `bytes`, followed by the
/// 32-byte SHA-256 of the whole image. The node then checks the digest over the whole
/// staged file and ends the stream with a last [`crate::ResponseFrame`] carrying
/// [`BaseWritten`] or the error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaseReceive {
    /// The VMID the received base will have.
    pub base_vmid: u32,
    pub storage: String,
    pub disk: u32,
    /// The size of the whole image.
    pub bytes: u64,
    /// Names the copy (the hub's id for it), so that what an interrupted copy left is only
    /// resumed by the same copy, never by another base given the same VMID.
    pub copy_id: String,
    /// Where the bytes come from instead of the request's stream (see [`BaseSend::lane`]);
    /// the last frame still ends the request's stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lane: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaseReceiveReply {
    /// Bytes of the image the node holds already; the hub sends from here.
    pub have: u64,
}

impl Request for BaseReceive {
    const KIND: &'static str = "base-receive";
    type Response = BaseReceiveReply;
    type Progress = NoProgress;
}

/// The length of the digest that ends a [`BaseSend`] / [`BaseReceive`] stream.
pub const STREAM_DIGEST_BYTES: usize = 32;

/// Named by an agent that opens [`lane`]s for the image bytes of a base copy.
pub const LANE_CAPABILITY: &str = "base-lane";

/// A lane: a TCP connection from an agent to the hub's link port (the QUIC port's number,
/// over TCP), TLS 1.3 with the node's certificate and [`crate::ALPN_LANE`], that carries
/// the raw bytes of one image of a base copy. TCP with TLS costs a third of QUIC's CPU per
/// byte, and the hub relays a lane to the other node's lane without decoding the bytes.
///
/// The node writes the lane's name (the `lane` of its [`BaseSend`] / [`BaseReceive`]
/// request: [`LANE_NAME_LEN`] hex digits, single use) first; the hub checks it was given to
/// this node's certificate. Then the sending node writes what it would have written to the
/// request's stream (the bytes, then the digest, which on a lane is the 32-byte BLAKE3 hash
/// of the whole image rather than its SHA-256) and closes the lane, and the hub writes the
/// same to the receiving node's lane. Answers and the receiver's last frame stay on the
/// request streams.
pub mod lane {
    /// Hex digits in a lane's name (128 random bits).
    pub const LANE_NAME_LEN: usize = 32;

    /// Whether `name` looks like a lane's name.
    pub fn is_lane_name(name: &str) -> bool {
        name.len() == LANE_NAME_LEN && name.bytes().all(|b| b.is_ascii_hexdigit())
    }
}
pub use lane::LANE_NAME_LEN;
