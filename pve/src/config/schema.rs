//! What Proxmox knows about each configuration key: whether it exists, and how its value is
//! checked and normalised on read (`check_type` in qemu-server).

/// How a key's value is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueType {
    /// `1|on|yes|true` and `0|off|no|false`, normalised to `1`/`0`.
    Boolean,
    /// Digits only, normalised without leading zeros.
    Integer,
    /// Digits with an optional fraction.
    Number,
    /// A free string: surrounding double quotes are stripped.
    Text,
    /// A string with a format (property strings, enums, names): kept verbatim.
    Format,
}

const BOOLEAN_KEYS: &[&str] = &[
    "acpi",
    "autostart",
    "ciupgrade",
    "freeze",
    "keephugepages",
    "kvm",
    "localtime",
    "numa",
    "onboot",
    "protection",
    "reboot",
    "tablet",
    "tdf",
    "template",
];

const INTEGER_KEYS: &[&str] = &[
    "balloon",
    "cores",
    "cpuunits",
    "migrate_speed",
    "shares",
    "smp",
    "snaptime",
    "sockets",
    "vcpus",
];

const NUMBER_KEYS: &[&str] = &["cpulimit", "migrate_downtime"];

const TEXT_KEYS: &[&str] = &["cipassword", "ciuser", "sshkeys"];

const FORMAT_KEYS: &[&str] = &[
    "affinity",
    "agent",
    "amd-sev",
    "arch",
    "args",
    "audio0",
    "bios",
    "boot",
    "bootdisk",
    "cdrom",
    "cicustom",
    "citype",
    "cpu",
    "description",
    "efidisk0",
    "hookscript",
    "hotplug",
    "hugepages",
    "import-working-storage",
    "intel-tdx",
    "ivshmem",
    "keyboard",
    "lock",
    "machine",
    "memory",
    "meta",
    "name",
    "nameserver",
    "ostype",
    "parent",
    "rng0",
    "running-nets-host-mtu",
    "runningcpu",
    "runningmachine",
    "scsihw",
    "searchdomain",
    "smbios1",
    "snapstate",
    "spice_enhancements",
    "startdate",
    "startup",
    "tags",
    "tpmstate0",
    "vga",
    "vmgenid",
    "vmstate",
    "vmstatestorage",
    "watchdog",
];

/// Keys that carry an index, with the highest index Proxmox accepts.
const INDEXED_KEYS: &[(&str, u32)] = &[
    ("hostpci", 15),
    ("ide", 3),
    ("ipconfig", 31),
    ("net", 31),
    ("numa", 7),
    ("parallel", 2),
    ("sata", 5),
    ("scsi", 30),
    ("serial", 3),
    ("unused", 255),
    ("usb", 13),
    ("virtio", 15),
    ("virtiofs", 9),
];

/// Splits `scsi12` into `("scsi", Some(12))`; a key without trailing digits has no index.
pub fn split_index(key: &str) -> (&str, Option<u32>) {
    let base = key.trim_end_matches(|c: char| c.is_ascii_digit());
    if base.len() == key.len() {
        return (key, None);
    }
    (base, key[base.len()..].parse().ok())
}

/// The type of a key Proxmox knows, or `None` for an unknown setting.
pub fn value_type(key: &str) -> Option<ValueType> {
    let lists: [(&[&str], ValueType); 5] = [
        (BOOLEAN_KEYS, ValueType::Boolean),
        (INTEGER_KEYS, ValueType::Integer),
        (NUMBER_KEYS, ValueType::Number),
        (TEXT_KEYS, ValueType::Text),
        (FORMAT_KEYS, ValueType::Format),
    ];
    if let Some((_, kind)) = lists.iter().find(|(keys, _)| keys.contains(&key)) {
        return Some(*kind);
    }
    let (base, index) = split_index(key);
    let index = index?;
    // An index written with a leading zero (`net01`) is not the same key.
    if key[base.len()..].starts_with('0') && index != 0 {
        return None;
    }
    INDEXED_KEYS
        .iter()
        .find(|(name, max)| *name == base && index <= *max)
        .map(|_| ValueType::Format)
}

/// Checks and normalises a value as Proxmox's reader does. `Err` is the reason Proxmox gives.
pub fn check_value(key: &str, value: &str) -> Result<String, String> {
    if value.contains(['\n', '\r']) {
        return Err("property contains a line feed".into());
    }
    let Some(kind) = value_type(key) else {
        return Err(format!("unknown setting '{key}'"));
    };
    match kind {
        ValueType::Boolean => match value.to_ascii_lowercase().as_str() {
            "1" | "on" | "yes" | "true" => Ok("1".into()),
            "0" | "off" | "no" | "false" => Ok("0".into()),
            _ => Err(format!("type check ('boolean') failed - got '{value}'")),
        },
        ValueType::Integer => {
            if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
                let trimmed = value.trim_start_matches('0');
                Ok(if trimmed.is_empty() {
                    "0".into()
                } else {
                    trimmed.into()
                })
            } else {
                Err(format!("type check ('integer') failed - got '{value}'"))
            }
        }
        ValueType::Number => {
            let (whole, fraction) = value.split_once('.').unwrap_or((value, "0"));
            let digits = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
            if digits(whole) && digits(fraction) {
                Ok(value.into())
            } else {
                Err(format!("type check ('number') failed - got '{value}'"))
            }
        }
        ValueType::Text => Ok(value
            .strip_prefix('"')
            .and_then(|inner| inner.strip_suffix('"'))
            .unwrap_or(value)
            .into()),
        ValueType::Format => Ok(value.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn booleans_and_integers_are_normalised() {
        assert_eq!(check_value("onboot", "Yes").unwrap(), "1");
        assert_eq!(check_value("numa", "off").unwrap(), "0");
        assert_eq!(check_value("cores", "0004").unwrap(), "4");
        assert_eq!(check_value("cores", "0").unwrap(), "0");
        assert_eq!(check_value("cpulimit", "1.5").unwrap(), "1.5");
        assert_eq!(check_value("ciuser", "\"bob\"").unwrap(), "bob");
    }

    #[test]
    fn errors_read_like_proxmox() {
        assert_eq!(
            check_value("numa", "verify meee~ :)").unwrap_err(),
            "type check ('boolean') failed - got 'verify meee~ :)'"
        );
        assert_eq!(
            check_value("frobnicate", "1").unwrap_err(),
            "unknown setting 'frobnicate'"
        );
        assert!(check_value("cores", "two").is_err());
        assert!(check_value("cpulimit", "1.").is_err());
    }

    #[test]
    fn indexed_keys_respect_their_ranges() {
        assert!(value_type("scsi30").is_some());
        assert!(value_type("scsi31").is_none());
        assert!(value_type("net0").is_some());
        assert!(value_type("net01").is_none());
        assert!(value_type("unused255").is_some());
        assert!(value_type("efidisk0").is_some());
        assert!(value_type("efidisk1").is_none());
        assert_eq!(split_index("virtio7"), ("virtio", Some(7)));
        assert_eq!(split_index("name"), ("name", None));
    }
}
