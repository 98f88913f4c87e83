//! Disk entries: `scsiN`, `virtioN`, `sataN`, `ideN`, `efidisk0`, `tpmstate0`, `unusedN`.

use crate::config::VmConfig;
use crate::config::schema::split_index;
use crate::propstring::{PropertyError, PropertyString};

/// The kinds of disk slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Bus {
    Ide,
    Sata,
    Scsi,
    Virtio,
    EfiDisk,
    TpmState,
    Unused,
}

impl Bus {
    fn prefix(self) -> &'static str {
        match self {
            Bus::Ide => "ide",
            Bus::Sata => "sata",
            Bus::Scsi => "scsi",
            Bus::Virtio => "virtio",
            Bus::EfiDisk => "efidisk",
            Bus::TpmState => "tpmstate",
            Bus::Unused => "unused",
        }
    }

    fn max_index(self) -> u32 {
        match self {
            Bus::Ide => 3,
            Bus::Sata => 5,
            Bus::Scsi => 30,
            Bus::Virtio => 15,
            Bus::EfiDisk | Bus::TpmState => 0,
            Bus::Unused => 255,
        }
    }

    const ALL: [Bus; 7] = [
        Bus::Ide,
        Bus::Sata,
        Bus::Scsi,
        Bus::Virtio,
        Bus::EfiDisk,
        Bus::TpmState,
        Bus::Unused,
    ];
}

/// A disk slot such as `scsi0`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DriveKey {
    pub bus: Bus,
    pub index: u32,
}

impl DriveKey {
    /// Recognises a disk key; `None` for any other key.
    pub fn parse(key: &str) -> Option<Self> {
        let (base, index) = split_index(key);
        let index = index?;
        if key.len() - base.len() > 1 && key[base.len()..].starts_with('0') {
            return None;
        }
        Bus::ALL
            .into_iter()
            .find(|bus| bus.prefix() == base && index <= bus.max_index())
            .map(|bus| DriveKey { bus, index })
    }
}

impl std::fmt::Display for DriveKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}{}", self.bus.prefix(), self.index)
    }
}

/// A disk entry: the volume and its options, kept in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drive {
    pub key: DriveKey,
    props: PropertyString,
}

impl Drive {
    /// Parses a disk value (`[file=]<volume>,opt=...`).
    pub fn parse(key: DriveKey, value: &str) -> Result<Self, PropertyError> {
        let mut props = PropertyString::parse(value)?;
        if let Some(file) = props.remove("file") {
            props.set_default(&file)?;
        }
        Ok(Self { key, props })
    }

    /// The volume: a volume id, an absolute path, `none` or `cdrom`.
    pub fn volume(&self) -> &str {
        self.props.default_value().unwrap_or_default()
    }

    pub fn set_volume(&mut self, volume: &str) -> Result<(), PropertyError> {
        self.props.set_default(volume)
    }

    pub fn option(&self, key: &str) -> Option<&str> {
        self.props.get(key)
    }

    pub fn set_option(&mut self, key: &str, value: &str) -> Result<(), PropertyError> {
        self.props.set(key, value)
    }

    pub fn remove_option(&mut self, key: &str) -> Option<String> {
        self.props.remove(key)
    }

    /// A CD-ROM drive (`media=cdrom`).
    pub fn is_cdrom(&self) -> bool {
        self.option("media") == Some("cdrom")
    }

    /// A cloud-init drive (`vm-<vmid>-cloudinit`).
    pub fn is_cloudinit(&self) -> bool {
        self.volume().contains("-cloudinit")
    }

    /// Whether the drive holds a disk image of the VM's own (not a CD, not empty).
    pub fn is_disk_image(&self) -> bool {
        !self.is_cdrom() && !matches!(self.volume(), "none" | "cdrom" | "")
    }

    /// The value as it was, with edits in place.
    pub fn value(&self) -> String {
        self.props.to_string()
    }

    /// The value in Proxmox's order.
    pub fn canonical_value(&self) -> String {
        self.props.canonical()
    }
}

impl VmConfig {
    /// The disks of the main section, sorted by slot.
    pub fn drives(&self) -> Vec<Drive> {
        let mut drives: Vec<Drive> = self
            .main()
            .entries()
            .into_iter()
            .filter_map(|(key, value)| Drive::parse(DriveKey::parse(key)?, value).ok())
            .collect();
        drives.sort_by_key(|drive| drive.key);
        drives
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        assert_eq!(
            DriveKey::parse("scsi0"),
            Some(DriveKey {
                bus: Bus::Scsi,
                index: 0
            })
        );
        assert_eq!(DriveKey::parse("efidisk0").unwrap().to_string(), "efidisk0");
        assert_eq!(DriveKey::parse("ide4"), None);
        assert_eq!(DriveKey::parse("scsi01"), None);
        assert_eq!(DriveKey::parse("net0"), None);
        assert_eq!(DriveKey::parse("unused255").unwrap().index, 255);
    }

    #[test]
    fn parse_and_edit() {
        let key = DriveKey::parse("scsi0").unwrap();
        let mut drive =
            Drive::parse(key, "file=local:100/vm-100-disk-0.qcow2,size=8G,iothread=1").unwrap();
        assert_eq!(drive.volume(), "local:100/vm-100-disk-0.qcow2");
        assert!(drive.is_disk_image());
        drive.set_volume("local:101/vm-101-disk-0.qcow2").unwrap();
        assert_eq!(
            drive.value(),
            "local:101/vm-101-disk-0.qcow2,size=8G,iothread=1"
        );
        assert_eq!(
            drive.canonical_value(),
            "local:101/vm-101-disk-0.qcow2,iothread=1,size=8G"
        );
        let cd = Drive::parse(DriveKey::parse("ide2").unwrap(), "none,media=cdrom").unwrap();
        assert!(cd.is_cdrom() && !cd.is_disk_image());
    }

    #[test]
    fn drives_of_a_config() {
        let config = VmConfig::parse(
            "scsi1: local:9/vm-9-disk-1.raw\nname: x\nscsi0: local:9/vm-9-disk-0.raw\nide2: none,media=cdrom\n",
        );
        let keys: Vec<String> = config.drives().iter().map(|d| d.key.to_string()).collect();
        assert_eq!(keys, ["ide2", "scsi0", "scsi1"]);
    }
}
