//! Volume ids (`storage:volname`) and where their files live on directory storages.
//!
//! Names are validated so that no path derived from a volume id can leave its storage:
//! owner directories are numeric VMIDs and file names contain no `/` and never start with a
//! dot.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// Why a volume id is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VolumeError {
    #[error("unable to parse volume ID '{0}'")]
    Syntax(String),
    #[error("invalid storage id {0:?}")]
    StorageId(String),
    #[error("unable to parse directory volume name '{0}'")]
    VolumeName(String),
    #[error("invalid file name {0:?}")]
    FileName(String),
}

/// Checks a storage id: `[a-z][a-z0-9\-_.]*[a-z0-9]`, case-insensitive.
pub fn validate_storage_id(id: &str) -> Result<(), VolumeError> {
    let bytes = id.as_bytes();
    let ok = bytes.len() >= 2
        && bytes[0].is_ascii_alphabetic()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(VolumeError::StorageId(id.to_owned()))
    }
}

/// Checks a single file name: not empty, no `/`, no control characters, no leading dot.
pub fn validate_file_name(name: &str) -> Result<(), VolumeError> {
    let ok = !name.is_empty()
        && !name.starts_with('.')
        && !name.contains('/')
        && !name.chars().any(char::is_control);
    if ok {
        Ok(())
    } else {
        Err(VolumeError::FileName(name.to_owned()))
    }
}

/// A volume id: `local:100/vm-100-disk-0.qcow2`, `local-lvm:vm-100-disk-0`, `local:iso/x.iso`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VolumeId {
    pub storage: String,
    pub volname: String,
}

impl FromStr for VolumeId {
    type Err = VolumeError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (storage, volname) = text
            .split_once(':')
            .filter(|(_, volname)| !volname.is_empty())
            .ok_or_else(|| VolumeError::Syntax(text.to_owned()))?;
        validate_storage_id(storage).map_err(|_| VolumeError::Syntax(text.to_owned()))?;
        Ok(Self {
            storage: storage.to_owned(),
            volname: volname.to_owned(),
        })
    }
}

impl fmt::Display for VolumeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.storage, self.volname)
    }
}

/// A VM disk image: its owner, its name, and the base it is a linked clone of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// The VMID that owns the image (its directory on file storages).
    pub vmid: u32,
    /// `vm-101-disk-0.qcow2` on file storages, `vm-101-disk-0` on block storages.
    pub name: String,
    pub base: Option<BaseRef>,
}

/// The base image a linked clone is built on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseRef {
    pub vmid: u32,
    pub name: String,
}

/// What a volume holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Volume {
    Image(Image),
    Iso(String),
}

fn parse_vmid(text: &str) -> Option<u32> {
    (!text.starts_with('0') && text.bytes().all(|b| b.is_ascii_digit()))
        .then(|| text.parse().ok())
        .flatten()
}

/// The VMID inside an image name: `vm-101-disk-0.qcow2` or `base-100-disk-0` → 101 / 100.
fn name_vmid(name: &str) -> Option<u32> {
    let rest = name
        .strip_prefix("vm-")
        .or_else(|| name.strip_prefix("base-"))?;
    let (digits, tail) = rest.split_once('-')?;
    (!tail.is_empty()).then_some(())?;
    parse_vmid(digits)
}

fn image_name(name: &str) -> Result<u32, VolumeError> {
    validate_file_name(name)?;
    name_vmid(name).ok_or_else(|| VolumeError::VolumeName(name.to_owned()))
}

/// An image file name on a file storage also needs its format as extension.
fn image_file_name(name: &str) -> Result<u32, VolumeError> {
    let vmid = image_name(name)?;
    match name.rsplit_once('.') {
        Some((_, "raw" | "qcow2" | "vmdk")) => Ok(vmid),
        _ => Err(VolumeError::VolumeName(name.to_owned())),
    }
}

impl VolumeId {
    /// Builds a volume id from parts, validating them.
    pub fn new(storage: &str, volname: &str) -> Result<Self, VolumeError> {
        format!("{storage}:{volname}").parse()
    }

    /// What the volume holds, on a file storage (`dir`, `nfs`, `cifs`):
    /// `<vmid>/<name>`, `<basevmid>/<basename>/<vmid>/<name>`, or `iso/<name>`.
    pub fn file_volume(&self) -> Result<Volume, VolumeError> {
        let bad = || VolumeError::VolumeName(self.volname.clone());
        let parts: Vec<&str> = self.volname.split('/').collect();
        match parts.as_slice() {
            ["iso", name] => {
                validate_file_name(name)?;
                Ok(Volume::Iso((*name).to_owned()))
            }
            [owner, name] => {
                image_file_name(name)?;
                Ok(Volume::Image(Image {
                    vmid: parse_vmid(owner).ok_or_else(bad)?,
                    name: (*name).to_owned(),
                    base: None,
                }))
            }
            [base_owner, base_name, owner, name] => {
                image_file_name(base_name)?;
                image_file_name(name)?;
                if !base_name.starts_with("base-") {
                    return Err(bad());
                }
                Ok(Volume::Image(Image {
                    vmid: parse_vmid(owner).ok_or_else(bad)?,
                    name: (*name).to_owned(),
                    base: Some(BaseRef {
                        vmid: parse_vmid(base_owner).ok_or_else(bad)?,
                        name: (*base_name).to_owned(),
                    }),
                }))
            }
            _ => Err(bad()),
        }
    }

    /// What the volume holds, on a block storage (`lvmthin`, `zfspool`, `rbd`):
    /// `<name>` or `<basename>/<name>`.
    pub fn block_volume(&self) -> Result<Image, VolumeError> {
        let bad = || VolumeError::VolumeName(self.volname.clone());
        match self.volname.split('/').collect::<Vec<_>>().as_slice() {
            [name] => Ok(Image {
                vmid: image_name(name)?,
                name: (*name).to_owned(),
                base: None,
            }),
            [base_name, name] => Ok(Image {
                vmid: image_name(name)?,
                name: (*name).to_owned(),
                base: Some(BaseRef {
                    vmid: image_name(base_name)?,
                    name: (*base_name).to_owned(),
                }),
            }),
            _ => Err(bad()),
        }
    }
}

impl Image {
    /// Whether this is a template's base image.
    pub fn is_base(&self) -> bool {
        self.name.starts_with("base-")
    }

    /// The file format, from the extension (file storages).
    pub fn format(&self) -> Option<&str> {
        let (_, ext) = self.name.rsplit_once('.')?;
        matches!(ext, "qcow2" | "raw" | "vmdk").then_some(ext)
    }

    /// The path of the image below a file storage's root: `<root>/images/<vmid>/<name>`.
    pub fn path(&self, storage_root: &Path) -> PathBuf {
        storage_root
            .join("images")
            .join(self.vmid.to_string())
            .join(&self.name)
    }

    /// The backing file a linked clone's overlay names, relative to its own directory:
    /// `../<basevmid>/<basename>`.
    pub fn relative_backing(&self) -> Option<String> {
        self.base
            .as_ref()
            .map(|base| format!("../{}/{}", base.vmid, base.name))
    }

    /// The volume name on a file storage.
    pub fn file_volname(&self) -> String {
        match &self.base {
            Some(base) => format!("{}/{}/{}/{}", base.vmid, base.name, self.vmid, self.name),
            None => format!("{}/{}", self.vmid, self.name),
        }
    }
}

/// The path of an ISO image below a file storage's root.
pub fn iso_path(storage_root: &Path, name: &str) -> PathBuf {
    storage_root.join("template").join("iso").join(name)
}

/// `vm-<vmid>-disk-<n>[.<format>]`.
pub fn disk_name(vmid: u32, n: u32, format: Option<&str>) -> String {
    match format {
        Some(format) => format!("vm-{vmid}-disk-{n}.{format}"),
        None => format!("vm-{vmid}-disk-{n}"),
    }
}

/// The base name a template's disk gets: `vm-…` becomes `base-…`.
pub fn base_name_of(name: &str) -> String {
    match name.strip_prefix("vm-") {
        Some(rest) => format!("base-{rest}"),
        None => name.to_owned(),
    }
}

/// Checks a VMID: 100 to 999999999.
pub fn validate_vmid(vmid: u32) -> Result<(), String> {
    if (100..=999_999_999).contains(&vmid) {
        Ok(())
    } else {
        Err(format!("invalid VMID {vmid}: expected 100 to 999999999"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn volid(text: &str) -> VolumeId {
        text.parse().unwrap()
    }

    #[test]
    fn file_images_and_linked_clones() {
        let Volume::Image(image) = volid("local:100/vm-100-disk-0.qcow2")
            .file_volume()
            .unwrap()
        else {
            panic!()
        };
        assert_eq!(
            (image.vmid, image.format(), image.is_base()),
            (100, Some("qcow2"), false)
        );
        assert_eq!(
            image.path(Path::new("/var/lib/vz")),
            Path::new("/var/lib/vz/images/100/vm-100-disk-0.qcow2")
        );

        let linked = volid("local:9000/base-9000-disk-0.qcow2/101/vm-101-disk-0.qcow2");
        let Volume::Image(clone) = linked.file_volume().unwrap() else {
            panic!()
        };
        assert_eq!(clone.vmid, 101);
        assert_eq!(
            clone.relative_backing().as_deref(),
            Some("../9000/base-9000-disk-0.qcow2")
        );
        assert_eq!(clone.file_volname(), linked.volname);
        // The TPM state of a restored VM may live under another VMID's directory.
        assert!(volid("local:108/vm-100-disk-1.raw").file_volume().is_ok());
    }

    #[test]
    fn block_images() {
        let image = volid("local-zfs:base-100-disk-0/vm-101-disk-0")
            .block_volume()
            .unwrap();
        assert_eq!(image.vmid, 101);
        assert_eq!(image.base.unwrap().vmid, 100);
        assert_eq!(
            volid("local-lvm:vm-100-disk-0")
                .block_volume()
                .unwrap()
                .vmid,
            100
        );
    }

    #[test]
    fn isos() {
        assert_eq!(
            volid("local:iso/debian-12.iso").file_volume().unwrap(),
            Volume::Iso("debian-12.iso".into())
        );
        assert_eq!(
            iso_path(Path::new("/s"), "debian-12.iso"),
            Path::new("/s/template/iso/debian-12.iso")
        );
    }

    #[test]
    fn nothing_escapes_the_storage() {
        for bad in [
            "local:../etc/passwd",
            "local:100/../../etc/shadow",
            "local:100/..",
            "local:iso/../../x.iso",
            "local:iso/.hidden.iso",
            "local:100/vm-100-disk-0.qcow2/../../x",
            "local:0100/vm-100-disk-0.qcow2",
            "local:100/notadisk.qcow2",
            "local:100/base-1-disk-0/101/vm-101-disk-0",
        ] {
            let parsed = volid(bad);
            assert!(parsed.file_volume().is_err(), "{bad} accepted");
        }
        assert!(volid("local-lvm:../vm-100-disk-0").block_volume().is_err());
    }

    #[test]
    fn syntax_errors() {
        for bad in ["nocolon", "local:", ":x", "1local:x", "l:x", "loc al:x"] {
            assert_eq!(
                bad.parse::<VolumeId>(),
                Err(VolumeError::Syntax(bad.into())),
                "{bad}"
            );
        }
    }

    #[test]
    fn names() {
        assert_eq!(disk_name(101, 0, Some("qcow2")), "vm-101-disk-0.qcow2");
        assert_eq!(disk_name(101, 2, None), "vm-101-disk-2");
        assert_eq!(base_name_of("vm-100-disk-0.qcow2"), "base-100-disk-0.qcow2");
        assert!(validate_vmid(99).is_err());
        assert!(validate_vmid(100).is_ok());
    }
}
