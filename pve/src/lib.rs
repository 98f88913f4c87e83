//! Proxmox VE's formats as pure code: no I/O, no processes.
//!
//! * [`config`]: VM configuration files, read losslessly and written either as Proxmox
//!   writes them or exactly as they were.
pub mod config;
