//! What a `configure` hook may change in a new VM's config, and applying it.
//!
//! Plugins may set a short list of keys that shape a VM without giving it more than a VM of
//! the class should have: descriptive keys, CPU and memory, NICs (keeping their MAC),
//! cloud-init settings, boot order and start-up flags. Every value must then pass the
//! policy for configs from outside the node ([`proxlab_pve::policy`]: names are DNS names,
//! CPU and memory within the node's, ...), and only optional settings may be deleted.
//! Everything else — raw QEMU `args`, `hookscript`, disks and their volume ids, `lock`,
//! `template`, `protection`, identities such as `smbios1` and `vmgenid` — is refused, and
//! one refused edit fails the whole step.

use proxlab_pve::config::VmConfig;
use proxlab_pve::net::Nic;
use proxlab_pve::policy::{self, NodeLimits};

/// One edit a plugin asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Edit {
    Set(String, String),
    Delete(String),
}

/// Keys a plugin may set or delete as they are.
const PLAIN_KEYS: &[&str] = &[
    "name",
    "tags",
    "description",
    "cores",
    "sockets",
    "vcpus",
    "cpu",
    "cpulimit",
    "cpuunits",
    "memory",
    "balloon",
    "shares",
    "onboot",
    "startup",
    "boot",
    "agent",
    "ostype",
    "ciuser",
    "cipassword",
    "citype",
    "ciupgrade",
    "sshkeys",
    "nameserver",
    "searchdomain",
    "keyboard",
    "vga",
];

/// `prefix` followed by a number: `net3`, `ipconfig0`.
fn numbered(key: &str, prefix: &str) -> bool {
    key.strip_prefix(prefix)
        .is_some_and(|n| !n.is_empty() && n.len() <= 3 && n.bytes().all(|b| b.is_ascii_digit()))
}

fn allowed(key: &str) -> bool {
    PLAIN_KEYS.contains(&key) || numbered(key, "net") || numbered(key, "ipconfig")
}

/// Applies `edits` to `config`'s main section, or changes nothing and says which edit is
/// refused and why.
pub fn apply(config: &VmConfig, edits: &[Edit], limits: &NodeLimits) -> Result<VmConfig, String> {
    let mut edited = config.clone();
    for edit in edits {
        let key = match edit {
            Edit::Set(key, _) | Edit::Delete(key) => key,
        };
        if !allowed(key) {
            return Err(format!("a plugin may not change '{key}'"));
        }
        match edit {
            Edit::Set(key, value) => {
                policy::check_entry(key, value, limits).map_err(|refusal| refusal.to_string())?;
                if let Some(index) = key.strip_prefix("net") {
                    keep_mac(config, key, index, value)?;
                }
                edited
                    .main_mut()
                    .set(key, value)
                    .map_err(|reason| format!("{key}: {reason}"))?;
            }
            Edit::Delete(key) => {
                policy::check_removal(key).map_err(|refusal| refusal.to_string())?;
                edited.main_mut().remove(key);
            }
        }
    }
    Ok(edited)
}

/// A NIC may be re-plugged (bridge, VLAN tag, model options) but keeps its MAC, which
/// proxlab made unique.
fn keep_mac(config: &VmConfig, key: &str, index: &str, value: &str) -> Result<(), String> {
    let index: u32 = index.parse().map_err(|_| format!("'{key}' is not a NIC"))?;
    let new = Nic::parse(index, value).map_err(|err| format!("{key}: {err}"))?;
    let old = config
        .main()
        .get(key)
        .and_then(|old| Nic::parse(index, old).ok())
        .and_then(|nic| nic.mac);
    match (old, new.mac) {
        (Some(old), Some(new)) if !old.eq_ignore_ascii_case(&new) => Err(format!(
            "{key}: a plugin may not change a NIC's MAC address"
        )),
        (Some(_), None) => Err(format!("{key}: keep the NIC's MAC address")),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NODE: NodeLimits = NodeLimits {
        cpus: 8,
        memory_mib: 32_768,
    };

    fn config() -> VmConfig {
        VmConfig::parse(
            "cores: 2\nmemory: 2048\nname: lab-1\nnet0: virtio=BC:24:11:00:00:01,bridge=vmbr0\nscsi0: local:100/vm-100-disk-0.qcow2,size=8G\n",
        )
    }

    #[test]
    fn allowed_edits_apply() {
        let edited = apply(
            &config(),
            &[
                Edit::Set("tags".into(), "lab;vlan-120".into()),
                Edit::Set(
                    "net0".into(),
                    "virtio=BC:24:11:00:00:01,bridge=vmbr1,tag=120".into(),
                ),
                Edit::Set("memory".into(), "4096".into()),
                Edit::Delete("tags".into()),
                Edit::Set("name".into(), "lab-ada".into()),
            ],
            &NODE,
        )
        .unwrap();
        let main = edited.main();
        assert_eq!(main.get("tags"), None);
        assert_eq!(
            main.get("net0"),
            Some("virtio=BC:24:11:00:00:01,bridge=vmbr1,tag=120")
        );
        assert_eq!(main.get("memory"), Some("4096"));
        assert_eq!(main.get("name"), Some("lab-ada"));
    }

    #[test]
    fn forbidden_keys_and_bad_values_are_refused() {
        for (edit, expected) in [
            (Edit::Set("args".into(), "-no-shutdown".into()), "'args'"),
            (
                Edit::Set("hookscript".into(), "local:snippets/x.pl".into()),
                "'hookscript'",
            ),
            (
                Edit::Set("scsi0".into(), "local:9/vm-9-disk-0.raw".into()),
                "'scsi0'",
            ),
            (Edit::Delete("lock".into()), "'lock'"),
            (Edit::Set("template".into(), "1".into()), "'template'"),
            (Edit::Set("smbios1".into(), "uuid=x".into()), "'smbios1'"),
            (Edit::Set("cores".into(), "many".into()), "cores"),
            (
                Edit::Set("tags".into(), "a\nargs: -x".into()),
                "control character",
            ),
            (
                Edit::Set(
                    "net0".into(),
                    "virtio=BC:24:11:99:99:99,bridge=vmbr0".into(),
                ),
                "MAC",
            ),
            (Edit::Set("protection".into(), "1".into()), "'protection'"),
            (Edit::Set("cores".into(), "8192".into()), "outside 1..=8"),
            (Edit::Set("memory".into(), "4194304".into()), "outside"),
            (
                Edit::Set("name".into(), "no spaces allowed".into()),
                "DNS name",
            ),
            (Edit::Delete("net0".into()), "may not be removed"),
            (Edit::Delete("agent".into()), "may not be removed"),
        ] {
            let err = apply(&config(), std::slice::from_ref(&edit), &NODE).unwrap_err();
            assert!(err.contains(expected), "{edit:?}: {err}");
        }
    }
}
