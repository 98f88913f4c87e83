//! Where a tunnel may go: one of the VM's own addresses, on a port this node's operator
//! allows (`[tunnels]` in the agent config), never the node itself.

use std::net::IpAddr;

use proxlab_protocol::inventory::{PowerState, VmInfo};
use proxlab_protocol::tunnel::{TunnelOpen, is_never_a_vm_address};
use serde::Deserialize;

/// The `[tunnels]` section of the agent config.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TunnelSettings {
    /// Whether the hub may open tunnels to VMs at all.
    pub enabled: bool,
    /// The VM ports tunnels may reach (SSH and RDP by default).
    pub ports: Vec<u16>,
    /// Lets tunnels reach addresses of this machine: only for labs whose VMs are simulated on
    /// the agent's own machine (the demo, tests). Never set it on a Proxmox node.
    pub allow_node_addresses: bool,
    /// Believes an address only once the node's neighbour table shows it at one of the VM's
    /// NICs (a guest agent can claim any address). Turn off only for VMs the node reaches
    /// through a router, whose addresses the table cannot show.
    pub verify_neighbor: bool,
}

impl Default for TunnelSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            ports: vec![22, 3389],
            allow_node_addresses: false,
            verify_neighbor: true,
        }
    }
}

/// Why a tunnel is refused; the hub passes the text on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("this node's operator has turned tunnels off")]
    Disabled,
    #[error("port {0} is not one this node's operator allows tunnels to")]
    Port(u16),
    #[error("VM {0} does not exist on this node")]
    NoVm(u32),
    #[error("VM {0} is not running")]
    NotRunning(u32),
    #[error("{address} is not an address of VM {vmid}")]
    NotTheVms { vmid: u32, address: IpAddr },
    #[error("{0} is an address of this node, not of a VM")]
    NodeAddress(IpAddr),
}

/// Whether the node's neighbour table (MAC to addresses, see `collect::ips`) shows `address`
/// at one of the VM's NICs.
pub fn seen_at_vms_nic(
    neighbors: &std::collections::HashMap<String, Vec<String>>,
    vm: &VmInfo,
    address: IpAddr,
) -> bool {
    vm.nics.iter().any(|nic| {
        neighbors
            .get(&nic.mac.to_ascii_uppercase())
            .is_some_and(|addresses| {
                addresses
                    .iter()
                    .any(|seen| seen.parse::<IpAddr>() == Ok(address))
            })
    })
}

impl TunnelSettings {
    /// Checks `request` against the VM as the agent sees it (`None`: no such VM) and the
    /// node's own addresses.
    pub fn check(
        &self,
        request: &TunnelOpen,
        vm: Option<&VmInfo>,
        node_addresses: impl FnOnce() -> std::collections::BTreeSet<IpAddr>,
    ) -> Result<(), Refusal> {
        if !self.enabled {
            return Err(Refusal::Disabled);
        }
        if !self.ports.contains(&request.port) {
            return Err(Refusal::Port(request.port));
        }
        let vm = vm.ok_or(Refusal::NoVm(request.vmid))?;
        if vm.status != PowerState::Running {
            return Err(Refusal::NotRunning(vm.vmid));
        }
        let address = request.address;
        let known = vm
            .ips
            .iter()
            .any(|ip| ip.address.parse::<IpAddr>() == Ok(address));
        if !known || is_never_a_vm_address(&address) {
            return Err(Refusal::NotTheVms {
                vmid: vm.vmid,
                address,
            });
        }
        // A guest agent can claim any address, the node's own included.
        if !self.allow_node_addresses && node_addresses().contains(&address) {
            return Err(Refusal::NodeAddress(address));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proxlab_protocol::inventory::{IpAddress, IpSource};

    fn vm(status: PowerState, addresses: &[&str]) -> VmInfo {
        let mut vm: VmInfo = serde_json::from_value(serde_json::json!({
            "vmid": 101, "name": "a", "node": "pve1", "status": "running", "template": false,
            "cores": 1, "sockets": 1, "memory_mib": 512
        }))
        .unwrap();
        vm.status = status;
        vm.ips = addresses
            .iter()
            .map(|address| IpAddress {
                address: (*address).into(),
                mac: "BC:24:11:00:00:01".into(),
                source: IpSource::GuestAgent,
            })
            .collect();
        vm
    }

    fn request(address: &str, port: u16) -> TunnelOpen {
        TunnelOpen {
            vmid: 101,
            address: address.parse().unwrap(),
            port,
        }
    }

    fn node() -> std::collections::BTreeSet<IpAddr> {
        ["192.0.2.2".parse().unwrap()].into()
    }

    #[test]
    fn only_the_vms_own_addresses_on_allowed_ports_pass() {
        let settings = TunnelSettings::default();
        let running = vm(PowerState::Running, &["10.0.0.7", "192.0.2.2", "127.0.0.1"]);
        assert_eq!(
            settings.check(&request("10.0.0.7", 22), Some(&running), node),
            Ok(())
        );
        assert_eq!(
            settings.check(&request("10.0.0.7", 3389), Some(&running), node),
            Ok(())
        );
        assert_eq!(
            settings.check(&request("10.0.0.7", 8006), Some(&running), node),
            Err(Refusal::Port(8006))
        );
        assert!(matches!(
            settings.check(&request("10.0.0.8", 22), Some(&running), node),
            Err(Refusal::NotTheVms { .. })
        ));
        // A guest that claims loopback or the node's own address is not believed.
        assert!(matches!(
            settings.check(&request("127.0.0.1", 22), Some(&running), node),
            Err(Refusal::NotTheVms { .. })
        ));
        assert_eq!(
            settings.check(&request("192.0.2.2", 22), Some(&running), node),
            Err(Refusal::NodeAddress("192.0.2.2".parse().unwrap()))
        );
        let simulated = TunnelSettings {
            allow_node_addresses: true,
            ..TunnelSettings::default()
        };
        assert_eq!(
            simulated.check(&request("192.0.2.2", 22), Some(&running), node),
            Ok(())
        );
    }

    #[test]
    fn a_claimed_address_counts_only_at_the_vms_own_nic() {
        let mut running = vm(PowerState::Running, &["10.0.0.7"]);
        running.nics = serde_json::from_value(serde_json::json!([
            {"key": "net0", "model": "virtio", "mac": "BC:24:11:00:00:01"}
        ]))
        .unwrap();
        let address = "10.0.0.7".parse().unwrap();
        let at_the_vm = [("BC:24:11:00:00:01".to_owned(), vec!["10.0.0.7".to_owned()])].into();
        assert!(seen_at_vms_nic(&at_the_vm, &running, address));
        let elsewhere = [("BC:24:11:00:00:99".to_owned(), vec!["10.0.0.7".to_owned()])].into();
        assert!(!seen_at_vms_nic(&elsewhere, &running, address));
        assert!(!seen_at_vms_nic(&Default::default(), &running, address));
    }

    #[test]
    fn stopped_missing_and_disabled_are_refused() {
        let settings = TunnelSettings::default();
        let stopped = vm(PowerState::Stopped, &["10.0.0.7"]);
        assert_eq!(
            settings.check(&request("10.0.0.7", 22), Some(&stopped), node),
            Err(Refusal::NotRunning(101))
        );
        assert_eq!(
            settings.check(&request("10.0.0.7", 22), None, node),
            Err(Refusal::NoVm(101))
        );
        let off = TunnelSettings {
            enabled: false,
            ..TunnelSettings::default()
        };
        let running = vm(PowerState::Running, &["10.0.0.7"]);
        assert_eq!(
            off.check(&request("10.0.0.7", 22), Some(&running), node),
            Err(Refusal::Disabled)
        );
    }
}
