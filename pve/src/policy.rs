//! What a VM config may hold when its words come from outside the node: a class base copied
//! from another node, the hub's hardware choices, a plugin's edits.
//!
//! A node's operator may give a VM anything Proxmox allows, including keys that reach the
//! host itself: raw QEMU `args` (a `-drive` on a host disk), a `hookscript` run as root,
//! PCI/USB/serial/parallel passthrough, host directories (`virtiofs`), shared host memory
//! (`ivshmem`), CPU pinning. Proxmox lets only `root@pam` set most of them. A config that
//! arrives over the link must never carry them, so it is checked against an allowlist here,
//! in one place, and refused with the offending key named.
//!
//! The allowlist keeps what shapes a guest without reaching past it: names and notes, CPU
//! and memory within what the node has, firmware and machine type, emulated devices, NICs,
//! cloud-init settings, and disks that are volumes on the node's storages (never a host path
//! or the host's CD drive). Values are checked too, not only keys.

use crate::config::VmConfig;
use crate::config::schema::split_index;
use crate::drive::{Drive, DriveKey};
use crate::ident::validate_vm_name;
use crate::net::Nic;
use crate::propstring::PropertyString;
use crate::volid::{Volume, VolumeId};

/// What the node has, which bounds CPU and memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeLimits {
    /// Logical CPUs: Proxmox refuses to start a VM with more vCPUs than this.
    pub cpus: u32,
    /// Physical memory in MiB.
    pub memory_mib: u64,
}

/// Why an entry may not be written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{key}': {reason}")]
pub struct Refusal {
    pub key: String,
    pub reason: String,
}

fn refuse(key: &str, reason: impl Into<String>) -> Refusal {
    Refusal {
        key: key.to_owned(),
        reason: reason.into(),
    }
}

/// Longest description Proxmox stores (its schema's `maxLength`).
pub const MAX_DESCRIPTION_BYTES: usize = 8 * 1024;
/// Longest value of any other entry.
pub const MAX_VALUE_BYTES: usize = 4 * 1024;

/// Keys whose value is free of host reach once its type and length are right.
const PLAIN_KEYS: &[&str] = &[
    "acpi",
    "agent",
    "audio0",
    "autostart",
    "bios",
    "boot",
    "bootdisk",
    "cipassword",
    "citype",
    "ciupgrade",
    "ciuser",
    "cpu",
    "freeze",
    "hotplug",
    "keyboard",
    "kvm",
    "localtime",
    "machine",
    "meta",
    "migrate_downtime",
    "migrate_speed",
    "nameserver",
    "numa",
    "onboot",
    "ostype",
    "reboot",
    "scsihw",
    "searchdomain",
    "smbios1",
    "spice_enhancements",
    "sshkeys",
    "startdate",
    "startup",
    "tablet",
    "tdf",
    "vga",
    "vmgenid",
    "watchdog",
];

/// Keys that reach the host, named so the refusal can say why.
const HOST_KEYS: &[(&str, &str)] = &[
    ("args", "raw QEMU arguments reach the host"),
    ("hookscript", "a hook script runs on the host as root"),
    ("hostpci", "PCI passthrough hands a host device to the VM"),
    ("parallel", "parallel ports pass a host device through"),
    ("virtiofs", "virtiofs shares a host directory"),
    ("ivshmem", "ivshmem maps host shared memory"),
    ("affinity", "CPU pinning is the node operator's choice"),
    ("hugepages", "huge pages are the node operator's choice"),
    ("keephugepages", "huge pages are the node operator's choice"),
    ("arch", "the CPU architecture is the node operator's choice"),
    ("cicustom", "custom cloud-init files are read from the node"),
    (
        "protection",
        "a protected VM could never be removed by proxlab",
    ),
    ("lock", "locks belong to the node"),
    ("template", "only proxlab itself marks a template"),
];

/// The `rng0` sources Proxmox allows.
const RNG_SOURCES: &[&str] = &["/dev/urandom", "/dev/random", "/dev/hwrng"];

/// Checks one entry of a config that came from outside the node.
pub fn check_entry(key: &str, value: &str, limits: &NodeLimits) -> Result<(), Refusal> {
    let max = if key == "description" {
        MAX_DESCRIPTION_BYTES
    } else {
        MAX_VALUE_BYTES
    };
    if value.len() > max {
        return Err(refuse(key, format!("longer than {max} bytes")));
    }
    if key != "description" && value.chars().any(char::is_control) {
        return Err(refuse(key, "contains a control character"));
    }
    let (base, index) = split_index(key);
    if let Some((_, reason)) = HOST_KEYS.iter().find(|(name, _)| *name == base) {
        return Err(refuse(key, *reason));
    }
    if let Some(drive_key) = DriveKey::parse(key) {
        return check_drive(key, drive_key, value);
    }
    match (base, index) {
        ("name", None) => validate_vm_name(value).map_err(|reason| refuse(key, reason)),
        ("description", None) => Ok(()),
        ("tags", None) => check_tags(key, value),
        ("cores" | "vcpus", None) => check_range(key, value, 1, u64::from(limits.cpus)),
        ("sockets", None) => check_range(key, value, 1, 4),
        ("cpulimit", None) => check_number(key, value, f64::from(limits.cpus)),
        ("cpuunits", None) => check_range(key, value, 1, 262_144),
        ("shares", None) => check_range(key, value, 0, 50_000),
        ("memory", None) => check_memory(key, value, limits),
        ("balloon", None) => check_range(key, value, 0, limits.memory_mib),
        ("rng", Some(0)) => check_rng(key, value),
        ("net", Some(index)) => Nic::parse(index, value)
            .map(drop)
            .map_err(|err| refuse(key, err.to_string())),
        ("ipconfig", Some(_)) => Ok(()),
        // `numa` alone is a flag; `numaN` binds guest memory to host nodes.
        ("numa", Some(_)) => Err(refuse(
            key,
            "NUMA host binding is the node operator's choice",
        )),
        ("serial", Some(_)) if value == "socket" => Ok(()),
        ("serial", Some(_)) => Err(refuse(key, "only 'socket' serial ports are allowed")),
        ("usb", Some(_)) => check_usb(key, value),
        _ if PLAIN_KEYS.contains(&key) => Ok(()),
        _ => Err(refuse(
            key,
            "not a setting proxlab writes from outside the node",
        )),
    }
}

/// Checks every entry of a config's main section.
pub fn check_config(config: &VmConfig, limits: &NodeLimits) -> Result<(), Refusal> {
    for (key, value) in config.main().entries() {
        check_entry(key, value, limits)?;
    }
    if let Some(text) = config.main().description() {
        check_entry("description", &text, limits)?;
    }
    Ok(())
}

/// Whether a key may be removed from a VM that proxlab made: optional settings only, never
/// the first NIC, the guest agent switch, identities or disks.
pub fn check_removal(key: &str) -> Result<(), Refusal> {
    let (base, index) = split_index(key);
    let removable = matches!(
        (base, index),
        (
            "tags"
                | "description"
                | "ciuser"
                | "cipassword"
                | "sshkeys"
                | "nameserver"
                | "searchdomain"
                | "onboot"
                | "startup"
                | "balloon"
                | "cpulimit"
                | "cpuunits"
                | "vga"
                | "keyboard",
            None
        ) | ("ipconfig", Some(_))
    ) || matches!((base, index), ("net", Some(n)) if n > 0);
    if removable {
        Ok(())
    } else {
        Err(refuse(key, "may not be removed"))
    }
}

fn check_range(key: &str, value: &str, min: u64, max: u64) -> Result<(), Refusal> {
    let number: u64 = value
        .parse()
        .map_err(|_| refuse(key, format!("{value:?} is not a whole number")))?;
    if (min..=max).contains(&number) {
        Ok(())
    } else {
        Err(refuse(key, format!("{number} is outside {min}..={max}")))
    }
}

fn check_number(key: &str, value: &str, max: f64) -> Result<(), Refusal> {
    let number: f64 = value
        .parse()
        .map_err(|_| refuse(key, format!("{value:?} is not a number")))?;
    if (0.0..=max).contains(&number) {
        Ok(())
    } else {
        Err(refuse(key, format!("{number} is outside 0..={max}")))
    }
}

/// `memory: [current=]<MiB>`.
fn check_memory(key: &str, value: &str, limits: &NodeLimits) -> Result<(), Refusal> {
    let props = PropertyString::parse(value).map_err(|err| refuse(key, err.to_string()))?;
    let current = props
        .default_value()
        .or_else(|| props.get("current"))
        .ok_or_else(|| refuse(key, "no size given"))?;
    check_range(key, current, 16, limits.memory_mib)
}

/// Proxmox's tag syntax: `[a-z0-9_][a-z0-9_\-+.]*`, separated by `;`, `,` or spaces.
fn check_tags(key: &str, value: &str) -> Result<(), Refusal> {
    let tag_ok = |tag: &str| {
        tag.len() <= 64
            && tag.bytes().enumerate().all(|(at, b)| {
                b.is_ascii_alphanumeric()
                    || b == b'_'
                    || (at > 0 && matches!(b, b'-' | b'+' | b'.'))
            })
    };
    if value
        .split([';', ',', ' '])
        .filter(|tag| !tag.is_empty())
        .all(tag_ok)
    {
        Ok(())
    } else {
        Err(refuse(key, format!("{value:?} is not a list of tags")))
    }
}

fn check_rng(key: &str, value: &str) -> Result<(), Refusal> {
    let props = PropertyString::parse(value).map_err(|err| refuse(key, err.to_string()))?;
    let source = props.get("source").or_else(|| props.default_value());
    match source {
        Some(source) if RNG_SOURCES.contains(&source) => Ok(()),
        _ => Err(refuse(
            key,
            "the entropy source must be one of Proxmox's three",
        )),
    }
}

/// `usbN`: only SPICE redirection; a host device or mapping passes the host's USB through.
fn check_usb(key: &str, value: &str) -> Result<(), Refusal> {
    let props = PropertyString::parse(value).map_err(|err| refuse(key, err.to_string()))?;
    let host = props.get("host").or_else(|| props.default_value());
    let only_known = props
        .options()
        .all(|(name, _)| matches!(name, "host" | "usb3"));
    if host == Some("spice") && only_known {
        Ok(())
    } else {
        Err(refuse(key, "only SPICE USB redirection is allowed"))
    }
}

/// A disk must be a volume on one of the node's storages, or an empty CD drive: never a
/// host path, and never the host's own CD drive (`cdrom`).
fn check_drive(key: &str, drive_key: DriveKey, value: &str) -> Result<(), Refusal> {
    let drive = Drive::parse(drive_key, value).map_err(|err| refuse(key, err.to_string()))?;
    let volume = drive.volume();
    if volume == "none" {
        return Ok(());
    }
    let parsed: VolumeId = volume
        .parse()
        .map_err(|_| refuse(key, format!("{volume:?} is not a volume on a storage")))?;
    if drive.is_cdrom() && !drive.is_cloudinit() {
        return match parsed.file_volume() {
            Ok(Volume::Iso(_)) => Ok(()),
            _ => Err(refuse(key, format!("{volume:?} is not an ISO image"))),
        };
    }
    let image =
        matches!(parsed.file_volume(), Ok(Volume::Image(_))) || parsed.block_volume().is_ok();
    if image {
        Ok(())
    } else {
        Err(refuse(
            key,
            format!("{volume:?} is not a disk image volume"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NODE: NodeLimits = NodeLimits {
        cpus: 16,
        memory_mib: 65_536,
    };

    #[test]
    fn a_plain_lab_vm_passes() {
        let config = VmConfig::parse(
            "#Lab VM\nagent: 1\nboot: order=scsi0;net0\ncores: 4\nmemory: 4096\nname: lab-1\n\
             net0: virtio=BC:24:11:00:00:01,bridge=vmbr0,tag=20\nostype: l26\n\
             scsi0: local:100/vm-100-disk-0.qcow2,size=8G\nscsihw: virtio-scsi-single\n\
             ide2: local:iso/debian.iso,media=cdrom\nide0: local:100/vm-100-cloudinit.qcow2,media=cdrom\n\
             serial0: socket\nusb0: spice,usb3=1\nrng0: source=/dev/urandom\ntags: lab;year-1\n\
             smbios1: uuid=7b6e7d6a-0000-4000-8000-000000000001\nvmgenid: 7b6e7d6a-0000-4000-8000-000000000002\n\
             efidisk0: local:100/vm-100-disk-1.qcow2,efitype=4m,size=528K\nnuma: 0\n",
        );
        check_config(&config, &NODE).unwrap();
    }

    #[test]
    fn keys_that_reach_the_host_are_refused() {
        for (key, value) in [
            ("args", "-drive file=/dev/sda"),
            ("hookscript", "local:snippets/own.pl"),
            ("hostpci0", "0000:01:00.0"),
            ("parallel0", "/dev/parport0"),
            ("serial1", "/dev/ttyS0"),
            ("usb0", "host=1234:5678"),
            ("usb1", "spice,mapping=keys"),
            ("virtiofs0", "dirid=home"),
            ("ivshmem", "size=32"),
            ("affinity", "0-3"),
            ("numa0", "cpus=0-1,hostnodes=0"),
            ("hugepages", "1024"),
            ("cicustom", "user=local:snippets/u.yaml"),
            ("protection", "1"),
            ("lock", "backup"),
            ("rng0", "source=/dev/sda"),
            ("scsi1", "/dev/sdb"),
            ("sata0", "file=/etc/shadow"),
            ("ide2", "cdrom,media=cdrom"),
            ("ide3", "local:100/vm-100-disk-3.qcow2,media=cdrom"),
            ("scsi2", "local:../../etc/shadow"),
            ("frobnicate", "1"),
        ] {
            let refused = check_entry(key, value, &NODE).unwrap_err();
            assert_eq!(refused.key, key, "{key}: {refused}");
        }
    }

    #[test]
    fn values_are_checked_not_only_keys() {
        for (key, value, expected) in [
            ("cores", "8192", "outside 1..=16"),
            ("vcpus", "0", "outside"),
            ("memory", "4194304", "outside 16..=65536"),
            ("memory", "current=1048576", "outside"),
            ("balloon", "99999999", "outside"),
            ("cpulimit", "64", "outside"),
            ("name", "db;rm -rf", "DNS name"),
            ("tags", "a b\tc", "control"),
            ("tags", "-lead", "tags"),
            ("net0", "bogus=BC:24:11:00:00:01", "model"),
            (
                "description",
                &"x".repeat(MAX_DESCRIPTION_BYTES + 1),
                "longer",
            ),
            ("ciuser", "bob\nargs: -x", "control"),
        ] {
            let refused = check_entry(key, value, &NODE).unwrap_err();
            assert!(
                refused.reason.contains(expected),
                "{key}={value}: {refused}"
            );
        }
        check_entry("memory", "current=2048", &NODE).unwrap();
        check_entry("cores", "16", &NODE).unwrap();
    }

    #[test]
    fn only_optional_settings_may_be_removed() {
        for key in ["tags", "description", "net1", "ipconfig0", "cipassword"] {
            check_removal(key).unwrap();
        }
        for key in [
            "net0", "agent", "name", "scsi0", "smbios1", "vmgenid", "memory",
        ] {
            check_removal(key).unwrap_err();
        }
    }
}
