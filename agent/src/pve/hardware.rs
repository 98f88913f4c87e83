//! Changing a VM's hardware (a class's hardware change): cores, memory, a NIC's bridge and
//! VLAN and a serial port through `qm set`, disks through `qm resize`. Proxmox itself writes
//! the config, so every line the change does not touch (EFI and TPM disks, machine and OS
//! type, cloud-init, `args`) stays as Proxmox writes it. A running VM takes what Proxmox
//! hot-plugs at once and the rest at its next start (`[PENDING]`); disks grow at once.
//!
//! The change is compared with what the VM has, counting its pending values, so repeating
//! one that was applied runs no command.

use proxlab_protocol::vm_ops::{DiskSize, HardwareChange, HardwareReply, NicPlacement};
use proxlab_pve::config::{SectionKind, VmConfig};
use proxlab_pve::drive::{Drive, DriveKey};
use proxlab_pve::net::Nic;
use proxlab_pve::policy;
use proxlab_pve::size::{format_size, parse_memory_mib, parse_size};

use super::command::PveError;
use super::node::Node;
use super::ops;

/// Applies `change` to VM `vmid` (see the module docs). Returns which config keys changed at
/// once and which wait for the VM's next start.
pub async fn change_hardware(
    node: &Node,
    vmid: u32,
    identity: Option<&str>,
    change: &HardwareChange,
) -> Result<HardwareReply, PveError> {
    proxlab_pve::volid::validate_vmid(vmid).map_err(PveError::Invalid)?;
    let config = node.require_config(vmid)?;
    ops::check_identity(&config, vmid, identity)?;
    let settings = settings_to_change(&config, change)?;
    for (key, value) in &settings {
        policy::check_entry(key, value, &node.limits)
            .map_err(|err| PveError::Invalid(err.to_string()))?;
    }
    let growths = disks_to_grow(&config, &change.disks)?;
    let mut touched: Vec<String> = Vec::new();
    if !settings.is_empty() {
        let mut args = vec!["set".to_owned(), vmid.to_string()];
        for (key, value) in &settings {
            args.extend([format!("--{key}"), value.clone()]);
            touched.push(key.clone());
        }
        node.qm(args).await?;
    }
    for growth in &growths {
        node.qm([
            "resize".to_owned(),
            vmid.to_string(),
            growth.slot.clone(),
            growth.size_bytes.to_string(),
        ])
        .await?;
        touched.push(growth.slot.clone());
    }
    let waiting = node.require_config(vmid)?.pending_keys();
    let (pending, applied) = touched.into_iter().partition(|key| waiting.contains(key));
    Ok(HardwareReply { applied, pending })
}

/// A key's value as the VM will have it after its next start: pending, else current.
fn upcoming<'a>(config: &'a VmConfig, key: &str) -> Option<&'a str> {
    config
        .section(&SectionKind::Pending)
        .and_then(|pending| pending.get(key))
        .or_else(|| config.main().get(key))
}

/// The `qm set` options the change needs: only what differs from the upcoming config.
fn settings_to_change(
    config: &VmConfig,
    change: &HardwareChange,
) -> Result<Vec<(String, String)>, PveError> {
    let mut settings = Vec::new();
    if let Some(cores) = change.cores
        && upcoming(config, "cores").and_then(|v| v.parse::<u32>().ok()) != Some(cores)
    {
        settings.push(("cores".to_owned(), cores.to_string()));
    }
    if let Some(memory) = change.memory_mib
        && upcoming(config, "memory").and_then(parse_memory_mib) != Some(memory)
    {
        settings.push(("memory".to_owned(), memory.to_string()));
    }
    if let Some(placement) = &change.nic {
        let key = format!("net{}", placement.index);
        let value = upcoming(config, &key).ok_or_else(|| {
            PveError::Invalid(format!(
                "VM has no {key} to move to bridge {}",
                placement.bridge
            ))
        })?;
        let moved = placed_nic(placement, value)?;
        if moved != value {
            settings.push((key, moved));
        }
    }
    if change.add_serial && upcoming(config, "serial0").is_none() {
        settings.push(("serial0".to_owned(), "socket".to_owned()));
    }
    Ok(settings)
}

/// The NIC `value` on the placement's bridge and VLAN; its model, MAC and other options stay.
fn placed_nic(placement: &NicPlacement, value: &str) -> Result<String, PveError> {
    let invalid =
        |err: &dyn std::fmt::Display| PveError::Invalid(format!("net{}: {err}", placement.index));
    let valid_bridge = !placement.bridge.is_empty()
        && placement.bridge.len() <= 15
        && placement
            .bridge
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !valid_bridge {
        return Err(PveError::Invalid(format!(
            "{:?} is not a bridge name (letters, digits, '-', '_' and '.', at most 15)",
            placement.bridge
        )));
    }
    if placement.vlan.is_some_and(|tag| !(1..=4094).contains(&tag)) {
        return Err(PveError::Invalid("a VLAN tag is 1 to 4094".into()));
    }
    let mut nic = Nic::parse(placement.index, value).map_err(|err| invalid(&err))?;
    if nic.bridge() == Some(placement.bridge.as_str()) && nic.tag() == placement.vlan {
        return Ok(value.to_owned());
    }
    nic.options
        .set("bridge", &placement.bridge)
        .map_err(|err| invalid(&err))?;
    match placement.vlan {
        Some(tag) => nic
            .options
            .set("tag", &tag.to_string())
            .map_err(|err| invalid(&err))?,
        None => drop(nic.options.remove("tag")),
    }
    Ok(nic.canonical_value())
}

/// The disks that must grow; a smaller size than a disk has is refused before anything
/// changes.
fn disks_to_grow<'a>(
    config: &VmConfig,
    wanted: &'a [DiskSize],
) -> Result<Vec<&'a DiskSize>, PveError> {
    let mut growths = Vec::new();
    for disk in wanted {
        let key = DriveKey::parse(&disk.slot)
            .ok_or_else(|| PveError::Invalid(format!("{:?} is not a disk slot", disk.slot)))?;
        let value = config
            .main()
            .get(&disk.slot)
            .ok_or_else(|| PveError::Invalid(format!("VM has no disk {}", disk.slot)))?;
        let drive = Drive::parse(key, value).map_err(|err| PveError::Invalid(err.to_string()))?;
        let state_disk = matches!(disk.slot.as_str(), "efidisk0" | "tpmstate0");
        if !drive.is_disk_image() || state_disk {
            return Err(PveError::Invalid(format!(
                "{} is not a disk that can grow",
                disk.slot
            )));
        }
        let current = drive.option("size").and_then(parse_size).unwrap_or(0);
        if disk.size_bytes < current {
            return Err(PveError::Invalid(format!(
                "{} is {}; disks only grow",
                disk.slot,
                format_size(current)
            )));
        }
        if disk.size_bytes > current {
            growths.push(disk);
        }
    }
    Ok(growths)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn placement(bridge: &str, vlan: Option<u16>) -> NicPlacement {
        NicPlacement {
            index: 0,
            bridge: bridge.into(),
            vlan,
        }
    }

    #[test]
    fn a_nic_moves_keeping_its_model_mac_and_options() {
        let value = "virtio=7A:6C:A5:8B:11:93,bridge=vmbr0,firewall=1";
        assert_eq!(
            placed_nic(&placement("vmbr1", Some(30)), value).unwrap(),
            "virtio=7A:6C:A5:8B:11:93,bridge=vmbr1,firewall=1,tag=30"
        );
        let tagged = "virtio=7A:6C:A5:8B:11:93,bridge=vmbr1,firewall=1,tag=30";
        assert_eq!(
            placed_nic(&placement("vmbr1", None), tagged).unwrap(),
            "virtio=7A:6C:A5:8B:11:93,bridge=vmbr1,firewall=1"
        );
        assert_eq!(placed_nic(&placement("vmbr0", None), value).unwrap(), value);
        for (bridge, vlan) in [
            ("", None),
            ("vmbr0;x", None),
            ("a-very-long-bridge", None),
            ("vmbr0", Some(4095)),
        ] {
            assert!(
                placed_nic(&placement(bridge, vlan), value).is_err(),
                "{bridge} {vlan:?}"
            );
        }
    }

    #[test]
    fn only_what_differs_from_the_upcoming_config_is_set() {
        let config = VmConfig::parse(
            "cores: 2\nmemory: 2048\nnet0: virtio=7A:6C:A5:8B:11:93,bridge=vmbr0\n\n[PENDING]\ncores: 4\n",
        );
        let change = HardwareChange {
            cores: Some(4),
            memory_mib: Some(4096),
            add_serial: true,
            nic: Some(placement("vmbr0", None)),
            ..HardwareChange::default()
        };
        assert_eq!(
            settings_to_change(&config, &change).unwrap(),
            vec![
                ("memory".to_owned(), "4096".to_owned()),
                ("serial0".to_owned(), "socket".to_owned())
            ]
        );
        let no_nic = HardwareChange {
            nic: Some(NicPlacement {
                index: 1,
                ..placement("vmbr0", None)
            }),
            ..HardwareChange::default()
        };
        assert!(settings_to_change(&config, &no_nic).is_err());
    }

    #[test]
    fn disks_only_grow() {
        let config = VmConfig::parse(
            "scsi0: local:100/vm-100-disk-0.qcow2,size=8G\nide2: local:iso/x.iso,media=cdrom\n\
             efidisk0: local:100/vm-100-disk-1.raw,size=528K\n",
        );
        let size = |slot: &str, gib: u64| DiskSize {
            slot: slot.into(),
            size_bytes: gib << 30,
        };
        let same = [size("scsi0", 8)];
        assert!(disks_to_grow(&config, &same).unwrap().is_empty());
        let bigger = [size("scsi0", 16)];
        assert_eq!(disks_to_grow(&config, &bigger).unwrap().len(), 1);
        for refused in [
            size("scsi0", 4),
            size("ide2", 16),
            size("efidisk0", 1),
            size("scsi1", 16),
            size("bogus", 1),
        ] {
            let err = disks_to_grow(&config, std::slice::from_ref(&refused)).unwrap_err();
            assert!(matches!(err, PveError::Invalid(_)), "{err:?}");
        }
    }
}
