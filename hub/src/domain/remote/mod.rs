//! Reaching a VM over the network through the hub: which ways in a class allows
//! ([`access`]), the tunnel an agent opens to a port of a VM ([`tunnel`]), the SSH terminal
//! the hub runs over one ([`ssh`]), and ports the hub forwards to one ([`forwards`]).
//!
//! The hub never connects to a VM itself: every byte goes through the VM's agent, which
//! checks the address and port again.

pub mod access;
pub mod forwards;
pub mod host_keys;
pub mod ssh;
pub mod tunnel;
