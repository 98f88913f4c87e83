//! The wire contract between `proxlab-agent` and `proxlab-hub`.
//!
//! This crate holds types, version constants, limits and pure codec helpers. It performs no
//! I/O and does not depend on an async runtime; the QUIC side lives in `proxlab-link`.
//!
//! # Encoding
//!
//! Every message is one *frame*: a 4-byte big-endian length followed by that many bytes of
//! UTF-8 JSON. JSON is self-describing, so a reader can skip what it does not know, and the
//! golden files under `tests/golden/` stay readable in review. The length is checked against
//! a maximum before any buffer is allocated (see [`frame`]).
//!
//! # Streams
//!
//! * The agent opens the **control stream** right after the handshake and sends a [`Hello`].
//!   The hub answers with a [`Welcome`] or closes the connection with
//!   [`CloseCode::VersionMismatch`]. The same stream then carries the agent's
//!   [`EventFrame`]s (heartbeats, and later inventory) in order, each with a sequence number.
//! * Each hub-to-agent request is its own bidirectional stream: one [`RequestFrame`], then any
//!   number of [`ResponseFrame::Progress`] frames and exactly one final
//!   [`ResponseFrame::Ok`] or [`ResponseFrame::Err`].
//! * A console is a request stream too ([`console::ConsoleOpen`]): after its one `Ok` frame
//!   the stream carries the console's raw bytes both ways instead of frames.
//! * A tunnel ([`tunnel::TunnelOpen`]) is the same: after its `Ok` frame the stream carries the
//!   bytes of a TCP connection from the node to a port of a VM (SSH, RDP).
//! * Enrollment uses its own ALPN ([`ALPN_ENROLL`]) on a connection without a client
//!   certificate: one [`EnrollRequest`], one [`EnrollResponse`] or [`RemoteError`].
//!
//! # Compatibility rules
//!
//! The protocol version is `major.minor` ([`PROTOCOL_VERSION`]).
//!
//! * Peers with different **major** versions refuse each other: the hub closes the connection
//!   with [`CloseCode::VersionMismatch`] and a message naming both versions.
//! * A **minor** version may only add: new optional fields (always `#[serde(default)]`), new
//!   event kinds, new request kinds, new error kinds. Readers ignore unknown fields; an unknown
//!   event or error kind decodes to its `Unknown` variant instead of failing.
//! * A new request kind is gated by a *capability*: the agent lists the request kinds it
//!   serves in its [`Hello`], and the hub never sends one the agent did not list. An agent one
//!   minor version behind therefore keeps working through a rolling upgrade.
//! * Field names and meanings of a released minor version never change. The golden-file tests
//!   make any change to the encoding a visible diff.

pub mod base_copy;
pub mod clones;
pub mod close;
pub mod cluster;
pub mod console;
pub mod enroll;
pub mod error;
pub mod event;
pub mod frame;
pub mod hello;
pub mod idle;
pub mod inventory;
pub mod limits;
pub mod names;
pub mod plugin_manifest;
pub mod plugins;
pub mod request;
pub mod requests;
pub mod tunnel;
pub mod vm_ops;

pub use close::CloseCode;
pub use cluster::ClusterIdentity;
pub use enroll::{EnrollRequest, EnrollResponse};
pub use error::{ErrorKind, RemoteError};
pub use event::{Event, EventFrame};
pub use hello::{Hello, ProtocolVersion, Welcome};
pub use request::{NoProgress, Request, RequestFrame, ResponseFrame};

/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: ProtocolVersion = ProtocolVersion { major: 1, minor: 0 };

/// ALPN of an enrolled agent's long-lived connection.
pub const ALPN_LINK: &[u8] = b"proxlab/1";

/// ALPN of a one-shot enrollment connection (no client certificate yet).
pub const ALPN_ENROLL: &[u8] = b"proxlab-enroll/1";

/// ALPN of a lane: a TCP + TLS connection carrying one image of a base copy (see
/// [`base_copy::lane`]).
pub const ALPN_LANE: &[u8] = b"proxlab-lane/1";

/// The TLS server name every agent asks for and every hub certificate carries.
///
/// Trust in the hub comes from its pinned private CA, not from DNS, so agents may dial the
/// hub by any address while the name checked stays fixed.
pub const HUB_SERVER_NAME: &str = "hub.proxlab.internal";
