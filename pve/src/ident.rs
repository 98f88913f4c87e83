//! Generated identities: MAC addresses, UUIDs.

use rand::RngCore;

/// Proxmox's default MAC prefix (its own OUI).
pub const DEFAULT_MAC_PREFIX: &str = "BC:24:11";

/// Whether `mac` is a unicast MAC address `XX:XX:XX:XX:XX:XX` (any case).
pub fn is_unicast_mac(mac: &str) -> bool {
    let groups: Vec<&str> = mac.split(':').collect();
    groups.len() == 6
        && groups
            .iter()
            .all(|group| group.len() == 2 && group.bytes().all(|b| b.is_ascii_hexdigit()))
        && u8::from_str_radix(groups[0], 16).is_ok_and(|first| first & 1 == 0)
}

/// Checks a MAC prefix such as `BC:24:11`: one to five hex pairs, unicast.
pub fn validate_mac_prefix(prefix: &str) -> Result<(), String> {
    let groups: Vec<&str> = prefix.split(':').collect();
    let pairs = groups
        .iter()
        .all(|group| group.len() == 2 && group.bytes().all(|b| b.is_ascii_hexdigit()));
    let unicast = u8::from_str_radix(groups[0], 16).is_ok_and(|first| first & 1 == 0);
    if pairs && unicast && (1..=5).contains(&groups.len()) {
        Ok(())
    } else {
        Err(format!(
            "invalid MAC prefix {prefix:?}: expected 1 to 5 hex pairs like BC:24:11, unicast"
        ))
    }
}

/// A random MAC address under `prefix`, upper-case, as Proxmox generates them: random
/// bytes with the multicast bit cleared and the local bit set, then the prefix laid over.
pub fn random_mac(prefix: &str, rng: &mut impl RngCore) -> String {
    let mut bytes = [0u8; 6];
    rng.fill_bytes(&mut bytes);
    bytes[0] = (bytes[0] & 0xfe) | 0x02;
    for (slot, group) in bytes.iter_mut().zip(prefix.split(':')) {
        if let Ok(value) = u8::from_str_radix(group, 16) {
            *slot = value;
        }
    }
    bytes
        .iter()
        .map(|byte| format!("{byte:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// A random (version 4) UUID, lower-case.
pub fn random_uuid(rng: &mut impl RngCore) -> String {
    let mut bytes = [0u8; 16];
    rng.fill_bytes(&mut bytes);
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex = hex::encode(bytes);
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// A VM's SMBIOS UUID (`smbios1: uuid=...`): what tells one VM from another that reused its
/// VMID, since every clone gets a fresh one.
pub fn smbios_uuid(config: &crate::config::VmConfig) -> Option<String> {
    let smbios = crate::propstring::PropertyString::parse(config.main().get("smbios1")?).ok()?;
    smbios.get("uuid").map(str::to_ascii_lowercase)
}

/// Checks a VM name: a DNS name (`label(.label)*`, labels of letters, digits and inner
/// hyphens), as Proxmox's `name` key requires.
pub fn validate_vm_name(name: &str) -> Result<(), String> {
    let label_ok = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    if !name.is_empty() && name.len() <= 253 && name.split('.').all(label_ok) {
        Ok(())
    } else {
        Err(format!(
            "invalid VM name {name:?}: use letters, digits and hyphens (a DNS name)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    #[test]
    fn macs_carry_the_prefix_and_are_unicast() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..1000 {
            let mac = random_mac(DEFAULT_MAC_PREFIX, &mut rng);
            assert!(mac.starts_with("BC:24:11:"), "{mac}");
            assert!(is_unicast_mac(&mac), "{mac}");
            assert!(seen.insert(mac));
        }
        let local = random_mac("", &mut rng);
        assert!(is_unicast_mac(&local));
        assert_eq!(
            u8::from_str_radix(&local[..2], 16).unwrap() & 0x02,
            0x02,
            "locally administered"
        );
    }

    #[test]
    fn mac_checks() {
        assert!(is_unicast_mac("bc:24:11:2c:69:ec"));
        assert!(!is_unicast_mac("01:00:5e:00:00:01"), "multicast");
        assert!(!is_unicast_mac("BC:24:11:2C:69"));
        assert!(validate_mac_prefix("BC:24:11").is_ok());
        assert!(validate_mac_prefix("01:24").is_err());
        assert!(validate_mac_prefix("BC:2").is_err());
    }

    #[test]
    fn vm_names() {
        for good in ["lab1-alice", "a", "web.lab", "X-1"] {
            assert!(validate_vm_name(good).is_ok(), "{good}");
        }
        for bad in ["", "-a", "a-", "a_b", "a..b", "über", "a b"] {
            assert!(validate_vm_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn uuids_are_version_4() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let uuid = random_uuid(&mut rng);
        assert_eq!(uuid.len(), 36);
        assert_eq!(&uuid[14..15], "4");
        assert!(matches!(&uuid[19..20], "8" | "9" | "a" | "b"));
    }
}
