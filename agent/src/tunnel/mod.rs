//! Tunnel streams: a `tunnel-open` request turns its stream into a TCP connection from this
//! node to a port of one of its VMs (SSH, RDP), for as long as either side keeps it.

pub mod policy;

use std::net::{IpAddr, SocketAddr};

use proxlab_protocol::inventory::VmInfo;
use proxlab_protocol::tunnel::{TUNNEL_CONNECT_TIMEOUT, TunnelOpen};
use proxlab_protocol::{ErrorKind, RemoteError};
use tokio::net::TcpStream;

use crate::collect::ips::parse_arp_table;
use crate::context::Context;
use crate::relay::{self, Target};
use policy::Refusal;

/// Serves one tunnel stream whose request frame has been read.
pub async fn serve(
    context: &Context,
    body: serde_json::Value,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) {
    let request: TunnelOpen = match relay::parse_request(body) {
        Ok(request) => request,
        Err(error) => return relay::answer_error(send, error).await,
    };
    let TunnelOpen {
        vmid,
        address,
        port,
    } = request;
    let vm = context.collector.vm(vmid);
    if let Err(refusal) =
        context
            .tunnels
            .check(&request, vm.as_ref(), proxlab_link::local_addresses::read)
    {
        tracing::warn!(vmid, %address, port, %refusal, "tunnel refused");
        return relay::answer_error(send, refusal_error(&refusal)).await;
    }
    let target = SocketAddr::new(address, port);
    let connected = tokio::time::timeout(TUNNEL_CONNECT_TIMEOUT, TcpStream::connect(target)).await;
    // The attempt fills the node's neighbour table; only an address it shows at the VM's own
    // NIC is believed, and until then nothing about the attempt is told.
    if context.tunnels.verify_neighbor && !at_the_vms_nic(context, vm.as_ref(), address).await {
        let refusal = Refusal::NotTheVms { vmid, address };
        tracing::warn!(vmid, %address, port, %refusal, "tunnel refused: not at the VM's NIC");
        return relay::answer_error(send, refusal_error(&refusal)).await;
    }
    let mut stream = match connected {
        Ok(Ok(stream)) => stream,
        Ok(Err(err)) => {
            tracing::info!(vmid, %target, %err, "tunnel: the VM did not accept");
            let error = RemoteError::new(
                ErrorKind::Failed,
                format!("VM {vmid} did not accept a connection on {target}: {err}"),
            );
            return relay::answer_error(send, error).await;
        }
        Err(_) => {
            let error = RemoteError::new(
                ErrorKind::Timeout,
                format!(
                    "VM {vmid} did not answer on {target} within {} s",
                    TUNNEL_CONNECT_TIMEOUT.as_secs()
                ),
            );
            return relay::answer_error(send, error).await;
        }
    };
    let _ = stream.set_nodelay(true);
    if !relay::answer_ready(&mut send).await {
        return;
    }
    tracing::info!(vmid, %target, "tunnel opened");
    let (mut from_vm, mut to_vm) = stream.split();
    let target_side = Target {
        greeting: Vec::new(),
        from: &mut from_vm,
        to: &mut to_vm,
        session: context.idle.sessions().open(vmid),
    };
    let ended_by = relay::run(&mut send, &mut recv, target_side).await;
    tracing::info!(vmid, %target, ended_by, "tunnel closed");
}

/// Whether the node's neighbour table shows `address` at one of the VM's NICs now.
async fn at_the_vms_nic(context: &Context, vm: Option<&VmInfo>, address: IpAddr) -> bool {
    let Some(vm) = vm else {
        return false;
    };
    let table = tokio::fs::read_to_string(&context.node.config.arp_table)
        .await
        .map(|text| parse_arp_table(&text))
        .unwrap_or_default();
    policy::seen_at_vms_nic(&table, vm, address)
}

fn refusal_error(refusal: &Refusal) -> RemoteError {
    let kind = match refusal {
        Refusal::NoVm(_) => ErrorKind::NotFound,
        Refusal::NotRunning(_) => ErrorKind::Conflict,
        Refusal::Disabled
        | Refusal::Port(_)
        | Refusal::NotTheVms { .. }
        | Refusal::NodeAddress(_) => ErrorKind::Unauthorized,
    };
    RemoteError::new(kind, refusal.to_string())
}
