//! Building a template by hand: a VM made to install an operating system from an ISO image
//! (with the machine that OS wants), and turning it into a template once it is installed.
//! No password passes through here: the installer asks for them in the VM's console.

use proxlab_protocol::vm_ops::{GuestOs, VmInstall};
use proxlab_pve::config::VmConfig;
use proxlab_pve::drive::Drive;
use proxlab_pve::volid::{Volume, VolumeId};

use super::command::PveError;
use super::node::Node;
use super::ops;

/// Creates the VM of `spec` (see [`VmInstall`]).
pub async fn install(node: &Node, spec: &VmInstall) -> Result<(), PveError> {
    ops::check_new_vm(node, &spec.vm)?;
    check_iso(node, &spec.iso).await?;
    if ops::already_created(node, &spec.vm)? {
        return Ok(());
    }
    let storage = node
        .storage_cfg()?
        .get(&spec.vm.storage)
        .cloned()
        .ok_or_else(|| PveError::NotFound(format!("no storage {}", spec.vm.storage)))?;
    // qcow2 on directory storages, so the template's clones can be linked clones; block
    // storages have one format.
    let format = if storage.is_file_based() {
        ",format=qcow2"
    } else {
        ""
    };
    let disk = format!("{}:{}{format}", spec.vm.storage, spec.vm.disk_gib);
    let mut args = ops::create_args(&spec.vm);
    let settings = machine(spec, &disk);
    for (key, value) in settings {
        args.push(format!("--{key}"));
        args.push(value);
    }
    node.qm(args).await.map(drop)
}

/// The config keys a new VM for `spec.os` gets beyond its name, cores and memory.
fn machine(spec: &VmInstall, disk: &str) -> Vec<(&'static str, String)> {
    let storage = &spec.vm.storage;
    let cdrom = format!("{},media=cdrom", spec.iso);
    let bridge = &spec.vm.bridge;
    match spec.os {
        GuestOs::Linux => vec![
            ("ostype", "l26".into()),
            ("scsihw", "virtio-scsi-single".into()),
            ("scsi0", format!("{disk},discard=on,iothread=1")),
            ("ide2", cdrom),
            ("net0", format!("virtio,bridge={bridge}")),
            ("boot", "order=scsi0;ide2;net0".into()),
            ("agent", "1".into()),
            ("serial0", "socket".into()),
        ],
        GuestOs::Windows11 => vec![
            ("ostype", "win11".into()),
            ("machine", "q35".into()),
            ("bios", "ovmf".into()),
            (
                "efidisk0",
                format!("{storage}:1,efitype=4m,pre-enrolled-keys=1"),
            ),
            ("tpmstate0", format!("{storage}:1,version=v2.0")),
            ("sata0", format!("{disk},discard=on")),
            ("ide2", cdrom),
            ("net0", format!("e1000e,bridge={bridge}")),
            ("boot", "order=sata0;ide2;net0".into()),
            ("agent", "1".into()),
        ],
        GuestOs::Other => vec![
            ("scsihw", "virtio-scsi-single".into()),
            ("scsi0", disk.to_owned()),
            ("ide2", cdrom),
            ("net0", format!("virtio,bridge={bridge}")),
            ("boot", "order=scsi0;ide2;net0".into()),
        ],
    }
}

/// The ISO must be an ISO volume of a storage the node has, and exist.
async fn check_iso(node: &Node, iso: &str) -> Result<(), PveError> {
    let parsed: VolumeId = iso
        .parse()
        .map_err(|err| PveError::Invalid(format!("{iso:?} is not an ISO volume: {err}")))?;
    match parsed.file_volume() {
        Ok(Volume::Iso(_)) => {}
        _ => {
            return Err(PveError::Invalid(format!(
                "{iso:?} is not an ISO image (storage:iso/name.iso)"
            )));
        }
    }
    let path = node.volume_path(iso).await?;
    if !path.is_file() {
        return Err(PveError::NotFound(format!("the node has no ISO {iso}")));
    }
    Ok(())
}

/// Makes the stopped VM `vmid` a template (see [`proxlab_protocol::vm_ops::VmMakeTemplate`]).
pub async fn make_template(node: &Node, vmid: u32, identity: Option<&str>) -> Result<(), PveError> {
    proxlab_pve::volid::validate_vmid(vmid).map_err(PveError::Invalid)?;
    let config = node.require_config(vmid)?;
    ops::check_identity(&config, vmid, identity)?;
    if config.main().get("template") == Some("1") {
        return Ok(());
    }
    if ops::status(node, vmid).await? != proxlab_protocol::inventory::PowerState::Stopped {
        return Err(PveError::Conflict(format!(
            "VM {vmid} is running; shut it down before making it a template"
        )));
    }
    let emptied = empty_cd_drives(&config);
    if !emptied.is_empty() {
        let mut args = vec!["set".to_owned(), vmid.to_string()];
        for (key, value) in emptied {
            args.extend([format!("--{key}"), value]);
        }
        node.qm(args).await?;
    }
    node.qm(["template".to_owned(), vmid.to_string()])
        .await
        .map(drop)
}

/// Every CD drive holding an image, as it is once empty (`none,media=cdrom`).
fn empty_cd_drives(config: &VmConfig) -> Vec<(String, String)> {
    config
        .drives()
        .into_iter()
        .filter(|drive| drive.is_cdrom() && !drive.is_cloudinit())
        .filter(|drive| !matches!(drive.volume(), "none" | "cdrom" | ""))
        .filter_map(|drive: Drive| {
            let mut empty = drive.clone();
            empty.set_volume("none").ok()?;
            Some((drive.key.to_string(), empty.value()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_template_keeps_no_iso() {
        let config = VmConfig::parse(
            "ide2: local:iso/debian-12.iso,media=cdrom\nide0: none,media=cdrom\n\
             scsi0: local:100/vm-100-disk-0.qcow2,size=8G\n",
        );
        assert_eq!(
            empty_cd_drives(&config),
            vec![("ide2".to_owned(), "none,media=cdrom".to_owned())]
        );
    }
}
