//! The Proxmox driver: the only module that runs `qm`, `pvesh`, `pvesm` and `qemu-img` or
//! touches `/etc/pve`.

pub mod base_copy;
pub mod clones;
pub mod command;
pub mod config;
pub mod node;
pub mod ops;

use proxlab_protocol::{ErrorKind, RemoteError};

pub use command::PveError;

/// Turns a driver error into what the hub is told: a kind it can act on, and Proxmox's words.
pub fn remote_error(err: &PveError) -> RemoteError {
    let message = err.message();
    let kind = match err {
        PveError::Timeout { .. } => ErrorKind::Timeout,
        PveError::Spawn { .. } | PveError::Io(_) => ErrorKind::Internal,
        PveError::NotFound(_) => ErrorKind::NotFound,
        _ if message.contains("does not exist") => ErrorKind::NotFound,
        _ if message.contains("is locked")
            || message.contains("already exists")
            || message.contains("already running")
            || message.contains("got timeout") =>
        {
            ErrorKind::Conflict
        }
        PveError::Invalid(_) => ErrorKind::BadRequest,
        PveError::CommandFailed { .. } => ErrorKind::Failed,
    };
    RemoteError::new(kind, message)
}
