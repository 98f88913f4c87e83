//! How the hub names a VM. Proxmox numbers VMs per cluster, so two clusters may both have a
//! VM 100: the hub keys every VM by its cluster and its VMID.

use std::fmt;
use std::str::FromStr;

/// One VM on the hub: the cluster it lives in (`clusters.id`) and its VMID there. Written
/// `2-100` in URLs, API ids and the audit log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VmKey {
    pub cluster: i64,
    pub vmid: u32,
}

impl VmKey {
    pub const fn new(cluster: i64, vmid: u32) -> Self {
        Self { cluster, vmid }
    }

    /// How the audit log names the VM: `vm:2-100`.
    pub fn audit_target(self) -> String {
        format!("vm:{self}")
    }
}

impl fmt::Display for VmKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.cluster, self.vmid)
    }
}

impl serde::Serialize for VmKey {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// How a request names a VM: by its key, or by its VMID alone, which the hub accepts while
/// only one VM on it has that number (the form every URL had before clusters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmRef {
    Key(VmKey),
    Vmid(u32),
}

impl VmRef {
    /// Whether this names the VM `key` (a bare VMID names every cluster's VM of that number:
    /// use it only among VMs known to hold distinct numbers, or resolve it first).
    pub fn matches(self, key: VmKey) -> bool {
        match self {
            VmRef::Key(named) => named == key,
            VmRef::Vmid(vmid) => vmid == key.vmid,
        }
    }
}

impl fmt::Display for VmRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VmRef::Key(key) => key.fmt(f),
            VmRef::Vmid(vmid) => vmid.fmt(f),
        }
    }
}

/// A VM reference that is neither `CLUSTER-VMID` nor `VMID`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadVmRef(String);

impl fmt::Display for BadVmRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} names no VM: write CLUSTER-VMID (such as 1-100) or a VMID",
            self.0
        )
    }
}

impl std::error::Error for BadVmRef {}

/// A number of digits only (no sign, no spaces) that fits `T`.
fn digits<T: FromStr>(text: &str) -> Option<T> {
    if text.is_empty() || text.len() > 19 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// The VMIDs Proxmox gives out.
pub const VMIDS: std::ops::RangeInclusive<u32> = 100..=999_999_999;

/// A VMID Proxmox could have given out.
fn vmid(text: &str) -> Option<u32> {
    digits(text).filter(|vmid| VMIDS.contains(vmid))
}

impl FromStr for VmRef {
    type Err = BadVmRef;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || BadVmRef(crate::text::truncate_bytes(text, 40));
        match text.split_once('-') {
            None => vmid(text).map(VmRef::Vmid).ok_or_else(bad),
            Some((cluster, number)) => match (digits(cluster), vmid(number)) {
                (Some(cluster), Some(vmid)) => Ok(VmRef::Key(VmKey { cluster, vmid })),
                _ => Err(bad()),
            },
        }
    }
}

impl FromStr for VmKey {
    type Err = BadVmRef;

    /// Only the `CLUSTER-VMID` form.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.parse()? {
            VmRef::Key(key) => Ok(key),
            VmRef::Vmid(_) => Err(BadVmRef(crate::text::truncate_bytes(text, 40))),
        }
    }
}

/// A VM in a request body: `"2-100"`, `"100"`, or the number `100` (as API clients sent
/// VMIDs before clusters).
impl<'de> serde::Deserialize<'de> for VmRef {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;

        impl serde::de::Visitor<'_> for Visitor {
            type Value = VmRef;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a VM as \"CLUSTER-VMID\" or a VMID")
            }

            fn visit_u64<E: serde::de::Error>(self, vmid: u64) -> Result<VmRef, E> {
                u32::try_from(vmid)
                    .ok()
                    .filter(|vmid| VMIDS.contains(vmid))
                    .map(VmRef::Vmid)
                    .ok_or_else(|| E::custom(format!("{vmid} is no VMID")))
            }

            fn visit_i64<E: serde::de::Error>(self, vmid: i64) -> Result<VmRef, E> {
                u64::try_from(vmid)
                    .map_err(|_| E::custom(format!("{vmid} is no VMID")))
                    .and_then(|vmid| self.visit_u64(vmid))
            }

            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<VmRef, E> {
                text.parse().map_err(E::custom)
            }
        }

        deserializer.deserialize_any(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_written_cluster_dash_vmid_and_read_back() {
        let key = VmKey::new(2, 100);
        assert_eq!(key.to_string(), "2-100");
        assert_eq!("2-100".parse(), Ok(VmRef::Key(key)));
        assert_eq!(serde_json::to_string(&key).unwrap(), "\"2-100\"");
    }

    #[test]
    fn a_bare_vmid_is_a_reference_too() {
        assert_eq!("100".parse(), Ok(VmRef::Vmid(100)));
    }

    #[test]
    fn request_bodies_may_name_a_vm_by_number_or_text() {
        let read = |json| serde_json::from_str::<VmRef>(json);
        assert_eq!(read("100").unwrap(), VmRef::Vmid(100));
        assert_eq!(read("\"100\"").unwrap(), VmRef::Vmid(100));
        assert_eq!(read("\"2-100\"").unwrap(), VmRef::Key(VmKey::new(2, 100)));
        for bad in ["-1", "99", "4294967296", "\"two\"", "1.5", "null"] {
            assert!(read(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn anything_else_is_refused_with_its_text() {
        for bad in [
            "",
            "-",
            "1-",
            "-100",
            "+1-100",
            "1-100-2",
            "1 -100",
            "x",
            "4294967296",
            "1-0x10",
            "99",
            "1000000000",
            "1-99",
            "101/../x",
            "-1",
        ] {
            let err = bad.parse::<VmRef>().unwrap_err();
            assert!(err.to_string().contains("CLUSTER-VMID"), "{bad}: {err}");
        }
    }
}
