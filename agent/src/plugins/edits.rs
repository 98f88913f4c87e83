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
//!
//! Edits compose: a plugin's `describe` edit replaces only its own section of the
//! description (between `<!-- proxlab:ID -->` and `<!-- /proxlab:ID -->` lines), and two
//! plugins that change the same key in one step are a conflict ([`Step`]), which fails it,
//! rather than the later one silently winning.

use std::collections::BTreeMap;

use proxlab_pve::config::VmConfig;
use proxlab_pve::net::Nic;
use proxlab_pve::policy::{self, NodeLimits};

/// One edit a plugin asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Edit {
    Set(String, String),
    Delete(String),
    /// The plugin's own section of the description.
    Describe(String),
}

impl Edit {
    /// The key the edit changes on its own (a description section is shared).
    pub fn key(&self) -> Option<&str> {
        match self {
            Edit::Set(key, _) | Edit::Delete(key) => Some(key),
            Edit::Describe(_) => None,
        }
    }
}

/// The edits of one step: every plugin run at one hook for one VM. Remembers who changed
/// which key, so a second plugin changing it is reported as a conflict.
#[derive(Debug, Default)]
pub struct Step {
    changed_by: BTreeMap<String, String>,
}

impl Step {
    /// Applies `plugin`'s edits, or changes nothing and says why not.
    pub fn apply(
        &mut self,
        config: &VmConfig,
        plugin: &str,
        edits: &[Edit],
        limits: &NodeLimits,
    ) -> Result<VmConfig, String> {
        for key in edits.iter().filter_map(Edit::key) {
            if let Some(other) = self.changed_by.get(key).filter(|other| *other != plugin) {
                return Err(format!(
                    "plugins {other} and {plugin} both change '{key}' in this step; that is a \
                     conflict (run only one of them for the class, or have one leave '{key}' \
                     alone)"
                ));
            }
        }
        let edited = apply(config, plugin, edits, limits)?;
        for key in edits.iter().filter_map(Edit::key) {
            self.changed_by.insert(key.to_owned(), plugin.to_owned());
        }
        Ok(edited)
    }
}

/// The markers of `plugin`'s section of a description.
fn markers(plugin: &str) -> (String, String) {
    (
        format!("<!-- proxlab:{plugin} -->"),
        format!("<!-- /proxlab:{plugin} -->"),
    )
}

/// `description` with `plugin`'s section replaced by `text` (added at the end if it had
/// none; removed when `text` is empty). The rest stays as it was.
pub fn with_section(description: &str, plugin: &str, text: &str) -> String {
    let (open, close) = markers(plugin);
    let lines: Vec<&str> = description.lines().collect();
    let start = lines.iter().position(|line| line.trim() == open);
    let end = start.and_then(|start| {
        lines[start..]
            .iter()
            .position(|line| line.trim() == close)
            .map(|at| start + at)
    });
    let mut kept: Vec<&str> = match (start, end) {
        (Some(start), Some(end)) => {
            let mut kept = lines[..start].to_vec();
            kept.extend_from_slice(&lines[end + 1..]);
            kept
        }
        _ => lines,
    };
    while kept.last().is_some_and(|line| line.trim().is_empty()) {
        kept.pop();
    }
    let mut out = kept.join("\n");
    let text = text.trim_end();
    if !text.is_empty() {
        if !out.is_empty() {
            out.push_str("\n\n");
        }
        out.push_str(&format!("{open}\n{text}\n{close}"));
    }
    out
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

/// Applies `plugin`'s `edits` to `config`'s main section, or changes nothing and says which
/// edit is refused and why.
pub fn apply(
    config: &VmConfig,
    plugin: &str,
    edits: &[Edit],
    limits: &NodeLimits,
) -> Result<VmConfig, String> {
    let mut edited = config.clone();
    for edit in edits {
        let key = match edit {
            Edit::Set(key, _) | Edit::Delete(key) => key,
            Edit::Describe(text) => {
                let description = edited.main().description().unwrap_or_default();
                let described = with_section(&description, plugin, text);
                policy::check_entry("description", &described, limits)
                    .map_err(|refusal| refusal.to_string())?;
                edited.main_mut().set_description(&described);
                continue;
            }
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
            Edit::Describe(_) => unreachable!("handled above"),
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
            "p",
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
            let err = apply(&config(), "p", std::slice::from_ref(&edit), &NODE).unwrap_err();
            assert!(err.contains(expected), "{edit:?}: {err}");
        }
    }

    #[test]
    fn descriptions_keep_a_section_per_plugin() {
        let first = with_section("Set up by Ms Smith", "describe", "Student: Ada");
        assert_eq!(
            first,
            "Set up by Ms Smith\n\n<!-- proxlab:describe -->\nStudent: Ada\n<!-- /proxlab:describe -->"
        );
        let both = with_section(&first, "ipam", "Address: 10.0.0.5");
        let again = with_section(&both, "describe", "Student: Bo");
        assert!(again.starts_with("Set up by Ms Smith\n"), "{again}");
        assert!(
            again.contains("Student: Bo") && !again.contains("Ada"),
            "{again}"
        );
        assert!(again.contains("Address: 10.0.0.5"), "{again}");
        assert_eq!(with_section(&first, "describe", ""), "Set up by Ms Smith");
        let edited = apply(
            &config(),
            "describe",
            &[Edit::Describe("Student: Ada".into())],
            &NODE,
        )
        .unwrap();
        assert!(
            edited
                .main()
                .description()
                .unwrap()
                .contains("Student: Ada")
        );
    }

    #[test]
    fn two_plugins_changing_one_key_are_a_conflict() {
        let mut step = Step::default();
        let config = step
            .apply(
                &config(),
                "a",
                &[Edit::Set("cores".into(), "4".into())],
                &NODE,
            )
            .unwrap();
        let config = step
            .apply(
                &config,
                "a",
                &[Edit::Set("cores".into(), "2".into())],
                &NODE,
            )
            .unwrap();
        let err = step
            .apply(&config, "b", &[Edit::Delete("cores".into())], &NODE)
            .unwrap_err();
        assert!(err.contains("plugins a and b both change 'cores'"), "{err}");
        step.apply(&config, "b", &[Edit::Describe("x".into())], &NODE)
            .unwrap();
    }
}
