//! Proxmox VE's formats as pure code: no I/O, no processes.
//!
//! * [`config`]: VM configuration files, read losslessly and written either as Proxmox
//!   writes them or exactly as they were.
//! * [`propstring`], [`drive`], [`net`]: the property-string values inside them.
//! * [`volid`]: volume ids, and the paths of their files on directory storages.
//! * [`storage_cfg`], [`cluster`]: `storage.cfg`, `.members` and `.vmlist`.
//! * [`ident`]: MAC addresses, UUIDs and names; [`size`]: disk sizes.
//! * [`clone`]: the config rewrite that makes a linked clone's config.
//! * [`policy`]: what a config from outside the node may hold.

pub mod clone;
pub mod cluster;
pub mod config;
pub mod drive;
pub mod ident;
pub mod net;
pub mod policy;
pub mod propstring;
pub mod size;
pub mod storage_cfg;
pub mod volid;
