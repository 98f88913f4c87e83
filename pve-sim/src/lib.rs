//! pve-sim: a simulated Proxmox VE node (and cluster) that looks like the real thing from
//! the outside: `qm`, `pvesh` and `pvesm` with Proxmox's outputs, errors and exit codes,
//! over a directory tree laid out like `/etc/pve` and `/var/run/qemu-server`, with real
//! `qemu-img` for disks and real processes for running VMs.

pub mod args;
pub mod init;
pub mod json;
pub mod monitor;
pub mod pvesh;
pub mod pvesm;
pub mod qemu;
pub mod qemu_img;
pub mod qm;
pub mod rfb;
pub mod runtime;
pub mod script;
pub mod serial;
pub mod sim;
pub mod storage;
pub mod store;
pub mod time;
pub mod tools;
pub mod vmproc;
