//! The clone rewrite: a new VM's config from a source config, as `qm clone` makes it.
//!
//! Identity is regenerated (name, every NIC's MAC, the SMBIOS UUID, the VM generation id),
//! snapshot state, pending changes, unused volumes, the template flag and any lock are
//! dropped, and each disk is remapped by the caller, who decides where the new disks live.
//! Everything else, including keys proxlab does not know, is kept as it was.

use std::fmt::Display;

use rand::RngCore;

use crate::config::schema::split_index;
use crate::config::{Line, SectionKind, VmConfig};
use crate::drive::{Drive, DriveKey};
use crate::ident::{random_mac, random_uuid, validate_mac_prefix, validate_vm_name};
use crate::net::Nic;
use crate::propstring::PropertyString;

/// Keys a clone never inherits.
const DROPPED_KEYS: &[&str] = &[
    "template",
    "lock",
    "parent",
    "snaptime",
    "vmstate",
    "snapstate",
    "runningcpu",
    "runningmachine",
    "running-nets-host-mtu",
];

/// Whether a clone leaves `key` out: snapshot and run-time state, the template flag, locks
/// and unused volumes.
pub fn is_dropped(key: &str) -> bool {
    DROPPED_KEYS.contains(&key) || matches!(split_index(key), ("unused", Some(_)))
}

/// Why a clone could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CloneError {
    #[error("{0}")]
    Invalid(String),
    #[error("{key}: {message}")]
    Entry { key: String, message: String },
}

/// What the new VM is called, and how its MACs look.
#[derive(Debug, Clone)]
pub struct CloneSpec<'a> {
    pub name: &'a str,
    /// The MAC prefix, Proxmox's default is [`crate::ident::DEFAULT_MAC_PREFIX`].
    pub mac_prefix: &'a str,
}

fn entry_error(key: &str, message: impl Display) -> CloneError {
    CloneError::Entry {
        key: key.to_owned(),
        message: message.to_string(),
    }
}

/// Rewrites `source` into a new VM's config. `remap` gets each disk that holds an image (not
/// CD-ROMs or empty drives) and returns the new volume id for it.
pub fn clone_config<E: Display>(
    source: &VmConfig,
    spec: &CloneSpec<'_>,
    rng: &mut impl RngCore,
    mut remap: impl FnMut(&Drive) -> Result<String, E>,
) -> Result<VmConfig, CloneError> {
    validate_vm_name(spec.name).map_err(CloneError::Invalid)?;
    validate_mac_prefix(spec.mac_prefix).map_err(CloneError::Invalid)?;
    let mut config = VmConfig::default();
    let main = config.main_mut();
    main.lines = source
        .main()
        .lines
        .iter()
        .filter(|line| !matches!(line, Line::Blank(_)))
        .cloned()
        .collect();
    main.retain_keys(|key| !is_dropped(key));

    let entries: Vec<(String, String)> = main
        .entries()
        .into_iter()
        .map(|(key, value)| (key.to_owned(), value.to_owned()))
        .collect();
    for (key, value) in entries {
        let new_value = if let Some(drive_key) = DriveKey::parse(&key) {
            let mut drive =
                Drive::parse(drive_key, &value).map_err(|err| entry_error(&key, err))?;
            if !drive.is_disk_image() {
                continue;
            }
            let volume = remap(&drive).map_err(|err| entry_error(&key, err))?;
            drive
                .set_volume(&volume)
                .map_err(|err| entry_error(&key, err))?;
            drive.value()
        } else if let ("net", Some(index)) = split_index(&key) {
            let mut nic = Nic::parse(index, &value).map_err(|err| entry_error(&key, err))?;
            nic.mac = Some(random_mac(spec.mac_prefix, rng));
            nic.canonical_value()
        } else if key == "smbios1" {
            let mut smbios = PropertyString::parse(&value).map_err(|err| entry_error(&key, err))?;
            smbios
                .set("uuid", &random_uuid(rng))
                .map_err(|err| entry_error(&key, err))?;
            smbios.to_string()
        } else if key == "vmgenid" && value != "0" {
            random_uuid(rng)
        } else {
            continue;
        };
        main.set(&key, &new_value)
            .map_err(|err| entry_error(&key, err))?;
    }
    if main.get("smbios1").is_none() {
        let uuid = random_uuid(rng);
        main.set("smbios1", &format!("uuid={uuid}"))
            .map_err(|err| entry_error("smbios1", err))?;
    }
    main.set("name", spec.name)
        .map_err(|err| entry_error("name", err))?;
    debug_assert!(config.sections.iter().all(|s| s.kind == SectionKind::Main));
    Ok(config)
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;
    use crate::config::WriteMode;
    use crate::ident::DEFAULT_MAC_PREFIX;
    use crate::volid::{Volume, VolumeId};

    const TEMPLATE: &str = "\
#Ubuntu lab template
boot: order=scsi0;net0
cores: 2
efidisk0: local:9000/base-9000-disk-1.qcow2,efitype=4m,size=528K
ide2: none,media=cdrom
lock: backup
memory: 2048
name: ubuntu-tmpl
net0: virtio=BC:24:11:AA:BB:CC,bridge=vmbr0,firewall=1
net1: e1000=BC:24:11:AA:BB:CD,bridge=vmbr1,tag=30
parent: before-upgrade
scsi0: local:9000/base-9000-disk-0.qcow2,iothread=1,size=8G
smbios1: uuid=11111111-2222-4333-8444-555555555555,manufacturer=proxlab
custom-key: kept as is
template: 1
unused0: local:9000/vm-9000-disk-5.qcow2
vmgenid: 22222222-2222-4222-8222-222222222222

[PENDING]
memory: 4096

[before-upgrade]
cores: 2
snaptime: 1700000000
";

    fn clone_with_rng(seed: u64) -> VmConfig {
        let source = VmConfig::parse(TEMPLATE);
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let spec = CloneSpec {
            name: "lab-alice",
            mac_prefix: DEFAULT_MAC_PREFIX,
        };
        clone_config(&source, &spec, &mut rng, |drive| {
            let volid: VolumeId = drive.volume().parse().unwrap();
            let Volume::Image(base) = volid.file_volume().unwrap() else {
                panic!("not an image")
            };
            let name = base.name.replace("base-9000", "vm-101");
            Ok::<_, String>(format!("local:{}/{}/101/{name}", base.vmid, base.name))
        })
        .unwrap()
    }

    #[test]
    fn identity_is_new_and_state_is_dropped() {
        let config = clone_with_rng(1);
        let main = config.main();
        assert_eq!(main.get("name"), Some("lab-alice"));
        for dropped in ["template", "lock", "parent", "unused0"] {
            assert_eq!(main.get(dropped), None, "{dropped}");
        }
        assert_eq!(config.sections.len(), 1, "pending and snapshots dropped");
        let nics = config.nics();
        assert_eq!(nics.len(), 2);
        for nic in &nics {
            assert!(nic.mac.as_deref().unwrap().starts_with("BC:24:11:"));
            assert_ne!(nic.mac.as_deref(), Some("BC:24:11:AA:BB:CC"));
        }
        assert_eq!(nics[1].tag(), Some(30));
        assert_eq!(
            nics[0].canonical_value().split_once(',').unwrap().1,
            "bridge=vmbr0,firewall=1"
        );
        let smbios = main.get("smbios1").unwrap();
        assert!(smbios.contains("manufacturer=proxlab"));
        assert!(!smbios.contains("11111111-2222"));
        assert_ne!(
            main.get("vmgenid"),
            Some("22222222-2222-4222-8222-222222222222")
        );
        assert_eq!(main.get("ide2"), Some("none,media=cdrom"));
        assert_eq!(main.description().as_deref(), Some("Ubuntu lab template"));
        let lossless = config.write_canonical(WriteMode::Lossless);
        assert!(lossless.contains("custom-key: kept as is\n"), "{lossless}");
    }

    #[test]
    fn disks_are_remapped_with_their_options() {
        let config = clone_with_rng(2);
        assert_eq!(
            config.main().get("scsi0"),
            Some("local:9000/base-9000-disk-0.qcow2/101/vm-101-disk-0.qcow2,iothread=1,size=8G")
        );
        assert!(
            config.main().get("efidisk0").unwrap().starts_with(
                "local:9000/base-9000-disk-1.qcow2/101/vm-101-disk-1.qcow2,efitype=4m"
            )
        );
    }

    #[test]
    fn two_clones_never_share_an_identity() {
        let (a, b) = (clone_with_rng(3), clone_with_rng(4));
        for key in ["net0", "net1", "smbios1", "vmgenid"] {
            assert_ne!(a.main().get(key), b.main().get(key), "{key}");
        }
    }

    #[test]
    fn vmgenid_zero_stays_and_missing_smbios_is_added() {
        let source = VmConfig::parse("name: x\nvmgenid: 0\n");
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        let spec = CloneSpec {
            name: "y",
            mac_prefix: "02:00",
        };
        let config =
            clone_config(&source, &spec, &mut rng, |_| Ok::<_, String>(String::new())).unwrap();
        assert_eq!(config.main().get("vmgenid"), Some("0"));
        assert!(config.main().get("smbios1").unwrap().starts_with("uuid="));
    }

    #[test]
    fn errors_are_reported_per_entry() {
        let source = VmConfig::parse("scsi0: local:9/base-9-disk-0.qcow2\n");
        let mut rng = rand::rngs::StdRng::seed_from_u64(6);
        let spec = CloneSpec {
            name: "ok",
            mac_prefix: DEFAULT_MAC_PREFIX,
        };
        let err = clone_config(&source, &spec, &mut rng, |_| Err("storage full")).unwrap_err();
        assert_eq!(err.to_string(), "scsi0: storage full");
        let bad_name = CloneSpec {
            name: "not ok",
            mac_prefix: DEFAULT_MAC_PREFIX,
        };
        assert!(
            clone_config(&source, &bad_name, &mut rng, |_| Ok::<_, String>(
                String::new()
            ))
            .is_err()
        );
    }
}
