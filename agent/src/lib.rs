//! proxlab-agent: runs on each Proxmox node, dials the hub and serves its requests.

pub mod base_stream;
pub mod collect;
pub mod config;
pub mod console;
pub mod context;
pub mod enroll;
pub mod handlers;
pub mod identity;
pub mod idle;
pub mod lane;
pub mod link;
pub mod metrics;
pub mod node_info;
mod op_journal;
pub mod parent;
pub mod paths;
pub mod plugins;
pub mod pve;
pub mod relay;
pub mod tunnel;
