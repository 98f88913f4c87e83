//! Tunnels: a stream to a TCP port of a VM, for SSH and RDP through the hub.
//!
//! The hub opens a bidirectional stream and sends a [`TunnelOpen`] request frame naming the
//! VM, one of its addresses and a port. The agent connects from the node to that address
//! and answers with one `Ok` frame ([`TunnelReady`]) or an `Err` frame; after `Ok` the stream
//! carries the TCP connection's bytes both ways, as a console's does (see [`crate::console`]).
//!
//! The agent only connects to an address it has itself seen the VM use (from the guest agent
//! or the node's neighbour table), never to one of the node's own addresses or a loopback,
//! link-local, multicast or unspecified one, and only to a port its operator allows: a hub
//! cannot use an agent to reach anything else on the node's networks.

use std::net::IpAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::request::{NoProgress, Request};

/// How long the agent waits for the VM to accept the TCP connection.
pub const TUNNEL_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Opens a TCP connection to a port of a VM; the stream then carries its bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TunnelOpen {
    pub vmid: u32,
    /// One of the VM's addresses, as the agent reported it.
    pub address: IpAddr,
    pub port: u16,
}

/// The connection is made: raw bytes follow.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TunnelReady {}

impl Request for TunnelOpen {
    const KIND: &'static str = "tunnel-open";
    type Response = TunnelReady;
    type Progress = NoProgress;
}

/// Whether an address can never be a VM's own on a network a user reaches: loopback,
/// link-local, multicast, unspecified or broadcast. Agents refuse tunnels to them whatever a
/// guest claims.
pub fn is_never_a_vm_address(address: &IpAddr) -> bool {
    match address {
        IpAddr::V4(v4) => {
            v4.is_loopback()
                || v4.is_link_local()
                || v4.is_multicast()
                || v4.is_unspecified()
                || v4.is_broadcast()
        }
        IpAddr::V6(v6) => {
            let mapped_v4 = v6.to_ipv4_mapped();
            v6.is_loopback()
                || v6.is_multicast()
                || v6.is_unspecified()
                || (v6.segments()[0] & 0xffc0) == 0xfe80
                || mapped_v4.is_some_and(|v4| is_never_a_vm_address(&IpAddr::V4(v4)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_and_special_addresses_are_never_a_vms() {
        for never in [
            "127.0.0.1",
            "127.8.9.1",
            "169.254.169.254",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "::",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
        ] {
            assert!(is_never_a_vm_address(&never.parse().unwrap()), "{never}");
        }
        for vm in ["192.168.1.50", "10.0.0.7", "2001:db8::5", "::ffff:10.0.0.7"] {
            assert!(!is_never_a_vm_address(&vm.parse().unwrap()), "{vm}");
        }
    }
}
