//! This machine's own addresses (a node's, which no tunnel may reach; the demo's, where its
//! simulated VMs' services listen): read from the kernel's tables (`/proc/net/fib_trie` for
//! IPv4, `/proc/net/if_inet6` for IPv6), no tool involved.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv6Addr};
use std::path::Path;

/// Every address assigned to one of this machine's interfaces.
pub fn read() -> BTreeSet<IpAddr> {
    read_from(Path::new("/proc/net"))
}

/// This machine's first IPv4 address that is not loopback, if it has one.
pub fn primary_ipv4() -> Option<IpAddr> {
    read()
        .into_iter()
        .find(|address| address.is_ipv4() && !address.is_loopback())
}

fn read_from(proc_net: &Path) -> BTreeSet<IpAddr> {
    let mut addresses = BTreeSet::new();
    if let Ok(text) = std::fs::read_to_string(proc_net.join("fib_trie")) {
        addresses.extend(parse_fib_trie(&text));
    }
    if let Ok(text) = std::fs::read_to_string(proc_net.join("if_inet6")) {
        addresses.extend(parse_if_inet6(&text));
    }
    addresses
}

/// The IPv4 addresses of `fib_trie`'s local table: a leaf (`|-- ADDRESS`) followed by a
/// `/32 host LOCAL` line.
fn parse_fib_trie(text: &str) -> impl Iterator<Item = IpAddr> + '_ {
    let mut leaf = None;
    text.lines().filter_map(move |line| {
        let line = line.trim();
        if let Some(address) = line.strip_prefix("|-- ") {
            leaf = address.parse::<IpAddr>().ok();
            None
        } else if line.starts_with("/32 host LOCAL") {
            leaf
        } else {
            None
        }
    })
}

/// The addresses of `if_inet6`: 32 hexadecimal digits first on each line.
fn parse_if_inet6(text: &str) -> impl Iterator<Item = IpAddr> + '_ {
    text.lines().filter_map(|line| {
        let hex = line.split_whitespace().next()?;
        let bits = u128::from_str_radix(hex, 16)
            .ok()
            .filter(|_| hex.len() == 32)?;
        Some(IpAddr::V6(Ipv6Addr::from(bits)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIB_TRIE: &str = "Main:
  +-- 0.0.0.0/0 3 0 5
     |-- 0.0.0.0
        /0 universe UNICAST
     +-- 127.0.0.0/8 2 0 2
        +-- 127.0.0.0/31 1 0 0
           |-- 127.0.0.0
              /8 host LOCAL
           |-- 127.0.0.1
              /32 host LOCAL
        |-- 127.255.255.255
           /32 link BROADCAST
     +-- 192.0.2.0/24 2 0 2
        |-- 192.0.2.0
           /24 link UNICAST
        |-- 192.0.2.2
           /32 host LOCAL
        |-- 192.0.2.255
           /32 link BROADCAST
";

    #[test]
    fn local_ipv4_addresses_are_the_host_local_leaves() {
        let found: Vec<IpAddr> = parse_fib_trie(FIB_TRIE).collect();
        let expected: Vec<IpAddr> =
            vec!["127.0.0.1".parse().unwrap(), "192.0.2.2".parse().unwrap()];
        assert_eq!(found, expected);
    }

    #[test]
    fn ipv6_addresses_come_from_if_inet6() {
        let text = "fd000000000000000000000000000002 04 40 00 82     eth0\n\
                    00000000000000000000000000000001 01 80 10 80       lo\n\
                    nonsense\n";
        let found: Vec<IpAddr> = parse_if_inet6(text).collect();
        let expected: Vec<IpAddr> = vec!["fd00::2".parse().unwrap(), "::1".parse().unwrap()];
        assert_eq!(found, expected);
    }

    #[test]
    fn this_machine_has_a_loopback_address() {
        assert!(read().contains(&"127.0.0.1".parse::<IpAddr>().unwrap()));
    }
}
