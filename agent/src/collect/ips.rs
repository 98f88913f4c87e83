//! VM addresses: from the guest agent, or from the node's neighbour table.

use std::collections::HashMap;
use std::net::IpAddr;

use proxlab_protocol::inventory::{IpAddress, IpSource};

/// Interfaces inside a guest that are not the VM's own network (container bridges, VPNs).
fn is_internal_interface(name: &str) -> bool {
    name == "lo"
        || [
            "docker", "veth", "br-", "cni", "flannel", "virbr", "lxc", "tun", "tap", "wg",
        ]
        .iter()
        .any(|prefix| name.starts_with(prefix))
}

/// Addresses a user cannot reach a VM on: loopback, link-local, unspecified.
fn is_useful(address: &IpAddr) -> bool {
    match address {
        IpAddr::V4(v4) => !(v4.is_loopback() || v4.is_link_local() || v4.is_unspecified()),
        IpAddr::V6(v6) => {
            !(v6.is_loopback() || v6.is_unspecified() || (v6.segments()[0] & 0xffc0) == 0xfe80)
        }
    }
}

/// The addresses in a `network-get-interfaces` answer that belong to one of `macs`.
pub fn from_guest_agent(answer: &serde_json::Value, macs: &[String]) -> Vec<IpAddress> {
    let mut out = Vec::new();
    for interface in answer.as_array().into_iter().flatten() {
        let name = interface["name"].as_str().unwrap_or_default();
        let Some(mac) = interface["hardware-address"]
            .as_str()
            .map(str::to_ascii_uppercase)
        else {
            continue;
        };
        if is_internal_interface(name) || !macs.contains(&mac) {
            continue;
        }
        for entry in interface["ip-addresses"].as_array().into_iter().flatten() {
            let Some(text) = entry["ip-address"].as_str() else {
                continue;
            };
            let Ok(address) = text.parse::<IpAddr>() else {
                continue;
            };
            if is_useful(&address) {
                out.push(IpAddress {
                    address: address.to_string(),
                    mac: mac.clone(),
                    source: IpSource::GuestAgent,
                });
            }
        }
    }
    out
}

/// MAC (upper-case) to addresses, from `/proc/net/arp`: complete and permanent entries.
pub fn parse_arp_table(text: &str) -> HashMap<String, Vec<String>> {
    let mut table: HashMap<String, Vec<String>> = HashMap::new();
    for line in text.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [ip, _hw_type, flags, mac, ..] = fields.as_slice() else {
            continue;
        };
        let complete =
            u32::from_str_radix(flags.trim_start_matches("0x"), 16).is_ok_and(|f| f & 0x2 != 0);
        if !complete || *mac == "00:00:00:00:00:00" {
            continue;
        }
        if ip.parse::<IpAddr>().is_ok_and(|a| is_useful(&a)) {
            table
                .entry(mac.to_ascii_uppercase())
                .or_default()
                .push((*ip).to_owned());
        }
    }
    table
}

/// The neighbour-table addresses of a VM's MACs.
pub fn from_neighbors(table: &HashMap<String, Vec<String>>, macs: &[String]) -> Vec<IpAddress> {
    macs.iter()
        .flat_map(|mac| {
            table
                .get(mac)
                .into_iter()
                .flatten()
                .map(move |ip| IpAddress {
                    address: ip.clone(),
                    mac: mac.clone(),
                    source: IpSource::Neighbor,
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_agent_addresses_are_matched_and_filtered() {
        let answer = serde_json::json!([
            {"name": "lo", "hardware-address": "00:00:00:00:00:00", "ip-addresses": [{"ip-address": "127.0.0.1"}]},
            {"name": "eth0", "hardware-address": "bc:24:11:2c:69:ec", "ip-addresses": [
                {"ip-address": "192.168.1.50"}, {"ip-address": "fe80::be24:11ff:fe2c:69ec"}, {"ip-address": "2001:db8::5"}]},
            {"name": "docker0", "hardware-address": "bc:24:11:2c:69:ec", "ip-addresses": [{"ip-address": "172.17.0.1"}]},
            {"name": "eth1", "hardware-address": "02:00:00:00:00:09", "ip-addresses": [{"ip-address": "10.9.9.9"}]}
        ]);
        let ips = from_guest_agent(&answer, &["BC:24:11:2C:69:EC".into()]);
        let addresses: Vec<&str> = ips.iter().map(|ip| ip.address.as_str()).collect();
        assert_eq!(addresses, ["192.168.1.50", "2001:db8::5"]);
        assert!(
            ips.iter()
                .all(|ip| ip.source == IpSource::GuestAgent && ip.mac == "BC:24:11:2C:69:EC")
        );
    }

    #[test]
    fn arp_table_keeps_complete_entries() {
        let text = "IP address       HW type     Flags       HW address            Mask     Device\n\
                    10.0.0.5         0x1         0x2         bc:24:11:00:00:01     *        vmbr0\n\
                    10.0.0.6         0x1         0x0         00:00:00:00:00:00     *        vmbr0\n\
                    10.0.0.7         0x1         0x6         bc:24:11:00:00:02     *        vmbr0\n";
        let table = parse_arp_table(text);
        assert_eq!(table.len(), 2);
        let ips = from_neighbors(&table, &["BC:24:11:00:00:01".into()]);
        assert_eq!(ips[0].address, "10.0.0.5");
        assert_eq!(ips[0].source, IpSource::Neighbor);
    }
}
