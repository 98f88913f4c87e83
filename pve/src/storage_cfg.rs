//! `/etc/pve/storage.cfg`: one section per storage, `type: id` then tab-indented properties.

use std::fmt;

use crate::volid::validate_storage_id;

/// A syntax error, with its 1-based line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("storage.cfg line {line}: {message}")]
pub struct StorageCfgError {
    pub line: usize,
    pub message: String,
}

/// Storage types whose volumes all nodes see.
const SHARED_TYPES: &[&str] = &[
    "nfs",
    "cifs",
    "rbd",
    "cephfs",
    "glusterfs",
    "iscsi",
    "iscsidirect",
    "pbs",
];

/// Storage types that keep images as files (and so can hold qcow2 overlays).
const FILE_TYPES: &[&str] = &["dir", "nfs", "cifs", "glusterfs", "cephfs", "btrfs"];

/// One storage definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Storage {
    /// `dir`, `nfs`, `lvmthin`, `zfspool`, `rbd`, ...
    pub kind: String,
    pub id: String,
    /// Properties in file order; flags such as `sparse` or `disable` have no value.
    pub props: Vec<(String, Option<String>)>,
}

impl Storage {
    pub fn new(kind: &str, id: &str) -> Self {
        Self {
            kind: kind.to_owned(),
            id: id.to_owned(),
            props: Vec::new(),
        }
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.props
            .iter()
            .find(|(k, _)| k == key)
            .and_then(|(_, value)| value.as_deref())
    }

    fn flag(&self, key: &str) -> bool {
        self.props
            .iter()
            .any(|(k, value)| k == key && value.as_deref().is_none_or(|v| v == "1"))
    }

    pub fn set(&mut self, key: &str, value: Option<&str>) {
        let value = value.map(str::to_owned);
        match self.props.iter_mut().find(|(k, _)| k == key) {
            Some(prop) => prop.1 = value,
            None => self.props.push((key.to_owned(), value)),
        }
    }

    /// The mount point or directory of a file storage.
    pub fn path(&self) -> Option<&str> {
        self.get("path")
    }

    /// Content types (`images`, `iso`, `rootdir`, ...).
    pub fn content(&self) -> Vec<&str> {
        self.get("content")
            .map(|content| content.split(',').filter(|c| !c.is_empty()).collect())
            .unwrap_or_default()
    }

    pub fn holds(&self, content: &str) -> bool {
        self.content().contains(&content)
    }

    /// Whether every node sees the same volumes (network storage, or `shared` set).
    pub fn is_shared(&self) -> bool {
        SHARED_TYPES.contains(&self.kind.as_str()) || self.flag("shared")
    }

    pub fn is_disabled(&self) -> bool {
        self.flag("disable")
    }

    /// Whether images are files (so qcow2 overlays and linked clones by file work).
    pub fn is_file_based(&self) -> bool {
        FILE_TYPES.contains(&self.kind.as_str())
    }

    /// The nodes this storage is limited to; `None` means all nodes.
    pub fn nodes(&self) -> Option<Vec<&str>> {
        self.get("nodes").map(|nodes| nodes.split(',').collect())
    }

    /// Whether `node` may use this storage.
    pub fn available_on(&self, node: &str) -> bool {
        !self.is_disabled() && self.nodes().is_none_or(|nodes| nodes.contains(&node))
    }
}

/// The whole file.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StorageConfig {
    pub storages: Vec<Storage>,
}

impl StorageConfig {
    pub fn parse(text: &str) -> Result<Self, StorageCfgError> {
        let mut storages: Vec<Storage> = Vec::new();
        let mut current: Option<Storage> = None;
        for (number, line) in text.lines().enumerate() {
            let error = |message: String| StorageCfgError {
                line: number + 1,
                message,
            };
            if line.trim().is_empty() {
                storages.extend(current.take());
                continue;
            }
            if line.trim_start().starts_with('#') {
                continue;
            }
            if line.starts_with([' ', '\t']) {
                let Some(storage) = current.as_mut() else {
                    return Err(error("property outside a section".into()));
                };
                let trimmed = line.trim();
                let (key, value) = match trimmed.split_once(char::is_whitespace) {
                    Some((key, value)) => (key, Some(value.trim().to_owned())),
                    None => (trimmed, None),
                };
                if storage.props.iter().any(|(k, _)| k == key) {
                    return Err(error(format!("duplicate attribute '{key}'")));
                }
                storage.props.push((key.to_owned(), value));
                continue;
            }
            let (kind, id) = line
                .split_once(':')
                .map(|(kind, id)| (kind.trim().to_ascii_lowercase(), id.trim()))
                .filter(|(kind, id)| !kind.is_empty() && !id.contains(char::is_whitespace))
                .ok_or_else(|| error(format!("unable to parse section header '{line}'")))?;
            validate_storage_id(id).map_err(|err| error(err.to_string()))?;
            if storages.iter().chain(current.iter()).any(|s| s.id == id) {
                return Err(error(format!("duplicate storage id '{id}'")));
            }
            storages.extend(current.take());
            current = Some(Storage::new(&kind, id));
        }
        storages.extend(current);
        Ok(Self { storages })
    }

    pub fn get(&self, id: &str) -> Option<&Storage> {
        self.storages.iter().find(|storage| storage.id == id)
    }
}

impl fmt::Display for StorageConfig {
    /// Writes the file: `disable` first, then the properties in order, a blank line between
    /// sections.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, storage) in self.storages.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            writeln!(f, "{}: {}", storage.kind, storage.id)?;
            let ordered = storage
                .props
                .iter()
                .filter(|(key, _)| key == "disable")
                .chain(storage.props.iter().filter(|(key, _)| key != "disable"));
            for (key, value) in ordered {
                match value {
                    Some(value) => writeln!(f, "\t{key} {value}")?,
                    None => writeln!(f, "\t{key}")?,
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "dir: local\n\tpath /var/lib/vz\n\tcontent iso,vztmpl,backup\n\n\
lvmthin: local-lvm\n\tthinpool data\n\tvgname pve\n\tcontent rootdir,images\n\n\
zfspool: local-zfs\n\tpool rpool/data\n\tsparse\n\tcontent images,rootdir\n\n\
nfs: shared-nfs\n\tpath /mnt/pve/shared\n\tserver 10.0.0.10\n\texport /space\n\toptions vers=3,soft\n\tcontent images,iso\n\n\
cifs: smb\n\tpath /mnt/pve/smb\n\tserver 10.0.0.11\n\tshare lab\n\tcontent images\n\n\
rbd: ceph\n\tpool vms\n\tcontent images\n\tnodes pve1,pve2\n\tdisable\n";

    #[test]
    fn parses_every_type_and_round_trips() {
        let config = StorageConfig::parse(SAMPLE).unwrap();
        let ids: Vec<&str> = config.storages.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "local",
                "local-lvm",
                "local-zfs",
                "shared-nfs",
                "smb",
                "ceph"
            ]
        );
        let local = config.get("local").unwrap();
        assert_eq!(local.path(), Some("/var/lib/vz"));
        assert!(local.is_file_based() && !local.is_shared());
        assert!(!config.get("local-lvm").unwrap().is_file_based());
        assert!(config.get("shared-nfs").unwrap().is_shared());
        assert!(config.get("smb").unwrap().holds("images"));
        let ceph = config.get("ceph").unwrap();
        assert!(ceph.is_disabled() && !ceph.available_on("pve1"));
        assert_eq!(ceph.nodes(), Some(vec!["pve1", "pve2"]));
        let written = config.to_string();
        let reread = StorageConfig::parse(&written).unwrap();
        assert_eq!(reread.to_string(), written);
        for storage in &config.storages {
            let again = reread.get(&storage.id).unwrap();
            let mut a = storage.props.clone();
            let mut b = again.props.clone();
            a.sort();
            b.sort();
            assert_eq!(a, b, "{}", storage.id);
        }
        assert!(written.contains("rbd: ceph\n\tdisable\n\tpool vms\n"));
    }

    #[test]
    fn errors_name_the_line() {
        let err = StorageConfig::parse("dir: local\n\tpath /a\n\tpath /b\n").unwrap_err();
        assert_eq!(err.line, 3);
        assert!(err.message.contains("duplicate attribute"));
        assert_eq!(StorageConfig::parse("\tpath /a\n").unwrap_err().line, 1);
        assert!(StorageConfig::parse("dir: ../x\n").is_err());
        assert!(StorageConfig::parse("dir: a1\n\ndir: a1\n").is_err());
    }
}
