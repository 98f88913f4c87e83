//! Property tests: whatever the input, reading never panics, the preserving writer gives the
//! input back, and canonical output is a fixed point.

use std::path::{Component, Path};

use proptest::prelude::*;
use proxlab_pve::config::{VmConfig, WriteMode};
use proxlab_pve::propstring::PropertyString;
use proxlab_pve::volid::{Volume, VolumeId};

/// Lines that look like config lines, and some that do not.
fn config_line() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z][a-z_-]{0,8}[0-9]{0,2}: [ -~]{0,24}",
        "(cores|memory|numa|onboot|sockets|name|net0|scsi0|delete|description|args|cdrom): [ -~]{0,16}",
        "#[ -~]{0,16}",
        "\\[(PENDING|special:cloudinit|special:fleecing|special:x|[a-z][a-z0-9_-]{0,6}|[^\\]]{0,6})\\] {0,2}",
        " {0,3}",
        "\\PC{0,20}",
    ]
}

/// Whether text holds `%` followed by two hex digits.
fn has_percent_escape(text: &str) -> bool {
    text.as_bytes()
        .windows(3)
        .any(|w| w[0] == b'%' && w[1].is_ascii_hexdigit() && w[2].is_ascii_hexdigit())
}

fn config_text() -> impl Strategy<Value = String> {
    (prop::collection::vec(config_line(), 0..30), any::<bool>()).prop_map(|(lines, newline)| {
        let mut text = lines.join("\n");
        if newline {
            text.push('\n');
        }
        text
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn preserving_write_gives_the_input_back(text in config_text()) {
        let config = VmConfig::parse(&text);
        prop_assert_eq!(config.write_preserving(), text);
    }

    #[test]
    fn canonical_write_is_stable(text in config_text()) {
        let config = VmConfig::parse(&text);
        // Proxmox writes a literal `%` as it is but reads `%XX` as an escape, so a description
        // holding text like "%2A" changes on every round trip, in Proxmox as here. The writer
        // matches Proxmox's byte for byte; such descriptions are outside this property.
        prop_assume!(!config.sections.iter().any(|section| section
            .description()
            .is_some_and(|text| has_percent_escape(&text))));
        for mode in [WriteMode::Proxmox, WriteMode::Lossless] {
            let once = config.write_canonical(mode);
            let twice = VmConfig::parse(&once).write_canonical(mode);
            prop_assert_eq!(&twice, &once);
        }
        // What Proxmox mode writes, Proxmox reads without a single warning.
        let proxmox = VmConfig::parse(&config.write_canonical(WriteMode::Proxmox));
        prop_assert!(proxmox.warnings().is_empty(), "{:?}", proxmox.warnings());
        let _ = VmConfig::parse_strict(&text, 100);
    }

    #[test]
    fn arbitrary_bytes_never_panic(text in "\\PC{0,200}") {
        let config = VmConfig::parse(&text);
        let _ = config.write_canonical(WriteMode::Lossless);
        let _ = config.drives();
        let _ = config.nics();
    }

    #[test]
    fn property_strings_round_trip(text in "[a-z0-9=:,._/-]{0,40}") {
        if let Ok(parsed) = PropertyString::parse(&text) {
            prop_assert_eq!(parsed.to_string(), text);
            let canonical = PropertyString::parse(&parsed.canonical()).unwrap();
            prop_assert_eq!(canonical.canonical(), parsed.canonical());
        }
    }

    #[test]
    fn volume_paths_never_leave_the_storage(text in "[a-z]{2,6}:[a-z0-9./_-]{1,60}") {
        if let Ok(volid) = text.parse::<VolumeId>()
            && let Ok(Volume::Image(image)) = volid.file_volume()
        {
            let path = image.path(Path::new("/storage"));
            prop_assert!(path.starts_with("/storage/images"));
            prop_assert!(path.components().all(|c| !matches!(c, Component::ParentDir | Component::CurDir)));
            prop_assert_eq!(path.components().count(), 5, "{}", path.display());
        }
    }
}

/// Lines a hostile peer might send in a VM config: keys that reach the host, drives on host
/// paths, and ordinary settings with odd values.
fn hostile_line() -> impl Strategy<Value = String> {
    prop_oneof![
        "(args|hookscript|hostpci[0-9]|parallel[0-2]|virtiofs[0-9]|ivshmem|affinity|numa[0-7]|cicustom|protection|lock): [ -~]{0,24}",
        "(scsi|sata|ide|virtio)[0-9]: (/dev/[a-z]{2,4}|/etc/[a-z]{2,8}|cdrom|none|[a-z]{2,6}:[a-z0-9./_-]{1,24})(,media=cdrom)?",
        "(serial[0-3]|usb[0-9]): (socket|/dev/ttyS0|host=[0-9a-f:]{4,9}|spice|spice,usb3=1|spice,mapping=x)",
        "(cores|sockets|vcpus|memory|balloon|cpulimit|name|tags|rng0|net[0-3]|description): [ -~]{0,24}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Whatever a config holds, the policy for configs from outside the node answers without
    /// panicking, and nothing it accepts reaches the host.
    #[test]
    fn the_outside_config_policy_never_lets_host_keys_through(
        lines in prop::collection::vec(hostile_line(), 0..12),
    ) {
        use proxlab_pve::config::schema::split_index;
        use proxlab_pve::policy::{NodeLimits, check_config};
        let config = VmConfig::parse(&lines.join("\n"));
        let limits = NodeLimits { cpus: 8, memory_mib: 16_384 };
        if check_config(&config, &limits).is_ok() {
            for (key, value) in config.main().entries() {
                let (base, index) = split_index(key);
                let reaches_host = matches!(
                    base,
                    "args" | "hookscript" | "hostpci" | "parallel" | "virtiofs" | "ivshmem"
                        | "affinity" | "cicustom" | "protection" | "lock"
                ) || (base == "numa" && index.is_some());
                prop_assert!(!reaches_host, "{key}: {value}");
                // Only the entropy source may name a device (one of Proxmox's three).
                prop_assert!(
                    key == "rng0" || (!value.contains("/dev/") && !value.contains("/etc/")),
                    "{key}: {value}"
                );
                if base == "serial" {
                    prop_assert_eq!(value, "socket");
                }
            }
        }
    }
}
