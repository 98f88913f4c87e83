//! The Proxmox driver: the only module that runs `qm`, `pvesh`, `pvesm` and `qemu-img` or
//! touches `/etc/pve`.

pub mod base_copy;
pub mod clones;
pub mod cluster;
pub mod command;
pub mod config;
pub mod console;
pub mod guest;
pub mod hardware;
pub mod install;
pub mod node;
pub mod ops;
pub mod qemu_socket;
pub mod reimage;
pub mod reset;

use proxlab_protocol::{ErrorKind, RemoteError};

pub use command::{Failure, PveError};

/// Turns a driver error into what the hub is told: a kind it can act on, and Proxmox's words.
/// The kind comes from the error's type alone (a tool's stderr was classified where it ran).
pub fn remote_error(err: &PveError) -> RemoteError {
    let kind = match err {
        PveError::Timeout { .. } => ErrorKind::Timeout,
        PveError::Spawn { .. } | PveError::Io(_) => ErrorKind::Internal,
        PveError::NotFound(_)
        | PveError::CommandFailed {
            failure: Failure::NotFound,
            ..
        } => ErrorKind::NotFound,
        PveError::Conflict(_)
        | PveError::CommandFailed {
            failure: Failure::Conflict,
            ..
        } => ErrorKind::Conflict,
        PveError::Invalid(_) => ErrorKind::BadRequest,
        PveError::CommandFailed {
            failure: Failure::Other,
            ..
        } => ErrorKind::Failed,
    };
    RemoteError::new(kind, err.message())
}
