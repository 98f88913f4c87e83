//! A simulated node's VMs: what a lab node of a school looks like to the hub (a third of the
//! VMs running, each with a disk, a NIC and, when running, an address), and the changes a
//! real node reports over time.

use proxlab_protocol::inventory::{
    DiskInfo, Inventory, IpAddress, IpSource, NicInfo, NodeMetrics, PowerState, StorageInfo,
    VmInfo, VmLoad,
};
use rand::Rng;

/// The VMIDs of node number `index`: a block of 100 per node, from 1000.
pub fn vmid(node_index: usize, vm_index: usize) -> u32 {
    1000 + (node_index as u32) * 100 + vm_index as u32
}

/// The node number and VM number of a VMID made by [`vmid`].
pub fn locate(vmid: u32) -> (usize, usize) {
    let offset = (vmid - 1000) as usize;
    (offset / 100, offset % 100)
}

/// The state of one simulated node's VMs.
pub struct NodeVms {
    node: String,
    vms: Vec<VmInfo>,
}

fn mac(vmid: u32) -> String {
    let bytes = vmid.to_be_bytes();
    format!(
        "BC:24:11:{:02X}:{:02X}:{:02X}",
        bytes[1], bytes[2], bytes[3]
    )
}

fn address(vmid: u32, generation: u8) -> IpAddress {
    IpAddress {
        address: format!("10.{}.{}.{}", generation, (vmid >> 8) & 0xff, vmid & 0xff),
        mac: mac(vmid),
        source: IpSource::Neighbor,
    }
}

fn storage() -> StorageInfo {
    StorageInfo {
        id: "local".into(),
        kind: "dir".into(),
        shared: false,
        active: true,
        content: vec!["images".into(), "iso".into()],
        total_bytes: 2 << 40,
        used_bytes: 1 << 40,
        avail_bytes: 1 << 40,
    }
}

impl NodeVms {
    pub fn new(node: &str, node_index: usize, count: usize) -> Self {
        let vms = (0..count)
            .map(|vm_index| {
                let vmid = vmid(node_index, vm_index);
                let running = vm_index % 3 == 0;
                VmInfo {
                    vmid,
                    name: format!("lab-{node_index}-{vm_index}"),
                    node: node.to_owned(),
                    status: if running {
                        PowerState::Running
                    } else {
                        PowerState::Stopped
                    },
                    template: false,
                    cores: 2,
                    sockets: 1,
                    memory_mib: 4096,
                    disks: vec![DiskInfo {
                        key: "scsi0".into(),
                        volid: format!("local:{vmid}/vm-{vmid}-disk-0.qcow2"),
                        size_bytes: 32 << 30,
                    }],
                    nics: vec![NicInfo {
                        key: "net0".into(),
                        model: "virtio".into(),
                        mac: mac(vmid),
                        bridge: Some("vmbr0".into()),
                        vlan: None,
                    }],
                    tags: vec!["lab".into()],
                    lock: None,
                    uptime_secs: if running { 3600 } else { 0 },
                    cpu: 0.0,
                    mem_bytes: 0,
                    ips: if running {
                        vec![address(vmid, 0)]
                    } else {
                        Vec::new()
                    },
                    identity: Some(format!("00000000-0000-4000-8000-{vmid:012}")),
                    pending: Vec::new(),
                }
            })
            .collect();
        Self {
            node: node.to_owned(),
            vms,
        }
    }

    pub fn inventory(&self) -> Inventory {
        Inventory {
            vms: self.vms.clone(),
            storages: vec![storage()],
            isos: Vec::new(),
        }
    }

    /// How many VMs the node has (at least one: see the CLI's `--vms`).
    pub fn vm_count(&self) -> usize {
        self.vms.len()
    }

    /// Starts a stopped VM or stops a running one; returns it as it is now.
    pub fn toggle_power(&mut self, index: usize) -> VmInfo {
        let vm = &mut self.vms[index];
        if vm.status == PowerState::Running {
            vm.status = PowerState::Stopped;
            vm.uptime_secs = 0;
            vm.ips.clear();
        } else {
            vm.status = PowerState::Running;
            vm.ips = vec![address(vm.vmid, 0)];
        }
        vm.clone()
    }

    /// A running VM's guest took another address (DHCP renewal, a second NIC coming up).
    /// Returns it, or `None` for a stopped VM.
    pub fn change_address(&mut self, index: usize) -> Option<VmInfo> {
        let vm = &mut self.vms[index];
        if vm.status != PowerState::Running {
            return None;
        }
        let generation = rand::rng().random_range(1..=250);
        vm.ips = vec![address(vm.vmid, generation)];
        Some(vm.clone())
    }

    /// The node's load and its running VMs' load, as the agent sends every 10 s.
    pub fn metrics(&mut self, uptime_secs: u64) -> NodeMetrics {
        let mut rng = rand::rng();
        let vms = self
            .vms
            .iter_mut()
            .filter(|vm| vm.status == PowerState::Running)
            .map(|vm| {
                vm.uptime_secs += 10;
                VmLoad {
                    vmid: vm.vmid,
                    cpu: rng.random_range(0.0..1.0),
                    mem_bytes: rng.random_range(1u64 << 30..4u64 << 30),
                    uptime_secs: vm.uptime_secs,
                }
            })
            .collect();
        NodeMetrics {
            cpu: rng.random_range(0.1..0.6),
            cpu_count: 32,
            memory_total_bytes: 256 << 30,
            memory_used_bytes: rng.random_range(64u64 << 30..192u64 << 30),
            load_average: [4.0, 3.5, 3.0],
            uptime_secs,
            storages: Vec::new(),
            vms,
        }
    }

    pub fn node(&self) -> &str {
        &self.node
    }
}
