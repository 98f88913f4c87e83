//! The QUIC transport shared by `proxlab-agent` and `proxlab-hub`.
//!
//! * [`pki`]: the hub's private CA, node certificates, CSRs, and CA fingerprints (pins).
//! * [`tls`]: rustls configurations (TLS 1.3, ring) for both sides of the link and for
//!   enrollment, where the agent trusts the hub only through a pinned CA fingerprint.
//! * [`frames`]: reading and writing [`proxlab_protocol::frame`]s on quinn streams, with
//!   size limits and timeouts.
//! * [`transport`]: quinn endpoint settings (keep-alive, idle timeout, stream limits).
//! * [`local_addresses`]: this machine's own IP addresses, which tunnels never reach.
//!
//! Nothing here knows about nodes, tokens or databases; those belong to the programs.

pub mod files;
pub mod frames;
pub mod local_addresses;
pub mod pki;
pub mod tls;
pub mod transport;

pub use frames::{FrameIoError, read_frame, read_frame_or_end, write_frame};
pub use pki::{Fingerprint, PkiError};
