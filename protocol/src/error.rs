//! Errors that travel over the link.

use serde::{Deserialize, Serialize};

/// What kind of failure a [`RemoteError`] reports. Unknown kinds from a newer peer decode as
/// [`ErrorKind::Unknown`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorKind {
    /// The receiver does not implement this request kind.
    Unsupported,
    /// The request was well-formed but its contents were invalid.
    BadRequest,
    /// A frame could not be decoded, or was too large.
    BadFrame,
    /// The operation took longer than its deadline.
    Timeout,
    /// The object named by the request does not exist.
    NotFound,
    /// The request conflicts with the current state (for example a lock or a taken name).
    Conflict,
    /// The caller is not allowed to do this (for example a bad or spent join token).
    Unauthorized,
    /// The operation ran and failed.
    Failed,
    /// A bug or unexpected condition on the remote side.
    Internal,
    /// A kind added by a newer protocol version.
    #[serde(other)]
    Unknown,
}

/// A failure reported by the remote side: a kind for programs, a message for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message} ({kind:?})")]
pub struct RemoteError {
    pub kind: ErrorKind,
    pub message: String,
}

impl RemoteError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}
