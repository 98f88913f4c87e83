//! Tunnels: a stream through the VM's agent to a TCP port of one of the VM's addresses.

use std::net::IpAddr;
use std::time::Duration;

use proxlab_protocol::ErrorKind;
use proxlab_protocol::tunnel::{TUNNEL_CONNECT_TIMEOUT, TunnelOpen, is_never_a_vm_address};

use crate::HubState;
use crate::agents::CallError;
use crate::db::inventory::VmRow;

/// Both halves of a tunnel's stream.
pub struct Tunnel {
    pub to_vm: quinn::SendStream,
    pub from_vm: quinn::RecvStream,
}

/// Why a tunnel could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum TunnelError {
    #[error("{0} has no known network address yet (from its guest agent or the neighbour table)")]
    NoAddress(String),
    #[error("the node refused: {0}")]
    Refused(String),
    #[error("{0}")]
    Unreachable(String),
    #[error("the node could not be reached: {0}")]
    Node(CallError),
}

/// The address tunnels to `vm` go to: the first it reported that can be a VM's, IPv4 first
/// (what students' networks route most often).
pub fn address_of(vm: &VmRow) -> Option<IpAddr> {
    let mut addresses: Vec<IpAddr> = vm
        .ips
        .iter()
        .filter_map(|ip| ip.address.parse().ok())
        .filter(|address| !is_never_a_vm_address(address))
        .collect();
    addresses.sort_by_key(|address| !address.is_ipv4());
    addresses.first().copied()
}

/// Opens a tunnel to `port` of `vm` through its agent.
pub async fn open(state: &HubState, vm: &VmRow, port: u16) -> Result<Tunnel, TunnelError> {
    let address = address_of(vm).ok_or_else(|| TunnelError::NoAddress(vm.name.clone()))?;
    let request = TunnelOpen {
        vmid: vm.vmid,
        address,
        port,
    };
    let timeout = TUNNEL_CONNECT_TIMEOUT + Duration::from_secs(5);
    let (_, to_vm, from_vm) = state
        .registry
        .open_stream(&vm.node, &request, timeout)
        .await
        .map_err(|err| match err {
            CallError::Remote(remote) if remote.kind == ErrorKind::Unauthorized => {
                TunnelError::Refused(remote.message)
            }
            CallError::Remote(remote) => TunnelError::Unreachable(remote.message),
            other => TunnelError::Node(other),
        })?;
    Ok(Tunnel { to_vm, from_vm })
}
