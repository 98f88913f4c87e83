//! What a hook is told about its VM, in one shape for both contract versions: the class,
//! the VM and its config, the student, the site and the plugin's settings. Plugins of API
//! 0.1.0 see the part of it their contract has.
//!
//! It is also the JSON an author gives `proxlab-agent plugin run` and `plugin test`: every
//! field but the class's id, name and slug and the VM's id, kind and index may be left out.

use std::collections::BTreeMap;

use proxlab_protocol::plugins::{PluginClass, PluginSite, PluginStudent};
use serde::{Deserialize, Serialize};

use super::bindings::{ClassInfo, VmInfo};
use super::bindings_v2::types as v2;
use super::manifest::SettingValue;

/// The VM a hook runs for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmFacts {
    pub vmid: u32,
    /// `teacher` or `student`.
    pub kind: String,
    /// Its position within its class, from 0 (the teacher's VM).
    pub index: u32,
    /// The username of its student, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub student: Option<String>,
    /// The name proxlab would give it.
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub node: String,
    #[serde(default)]
    pub cluster: String,
}

/// Everything one hook call is told.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HookFacts {
    pub class: PluginClass,
    pub vm: VmFacts,
    /// More about the VM's student.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub student: Option<PluginStudent>,
    /// The VM's config (its own section, the description included).
    #[serde(default)]
    pub config: Vec<(String, String)>,
    #[serde(default)]
    pub site: PluginSite,
    /// This plugin's settings.
    #[serde(default)]
    pub settings: BTreeMap<String, SettingValue>,
}

impl HookFacts {
    /// The student as the hook sees them: the full facts, or just the username.
    fn student_facts(&self) -> Option<PluginStudent> {
        self.student.clone().or_else(|| {
            self.vm.student.clone().map(|username| PluginStudent {
                display_name: username.clone(),
                username,
                ..PluginStudent::default()
            })
        })
    }

    pub(super) fn class_v1(&self) -> ClassInfo {
        ClassInfo {
            id: self.class.id,
            name: self.class.name.clone(),
            slug: self.class.slug.clone(),
        }
    }

    pub(super) fn vm_v1(&self) -> VmInfo {
        VmInfo {
            vmid: self.vm.vmid,
            kind: self.vm.kind.clone(),
            index: self.vm.index,
            student: self
                .vm
                .student
                .clone()
                .or_else(|| self.student.as_ref().map(|s| s.username.clone())),
            name: self.vm.name.clone(),
        }
    }

    /// The facts as contract 0.2.0 has them; `node` and `agent_version` fill what the
    /// input leaves out.
    pub(super) fn v2(&self, node: &str, agent_version: &str) -> v2::Facts {
        let class = &self.class;
        let or = |given: &str, fallback: &str| {
            if given.is_empty() { fallback } else { given }.to_owned()
        };
        v2::Facts {
            class: v2::ClassFacts {
                id: class.id,
                name: class.name.clone(),
                slug: class.slug.clone(),
                description: class.description.clone(),
                course_code: class.course_code.clone(),
                owners: class.owners.clone(),
                seats: class.seats,
                template: class.template.clone(),
                cores: class.cores,
                memory_mib: class.memory_mib,
            },
            vm: v2::VmFacts {
                vmid: self.vm.vmid,
                kind: self.vm.kind.clone(),
                index: self.vm.index,
                name: self.vm.name.clone(),
                node: or(&self.vm.node, node),
                cluster: self.vm.cluster.clone(),
                config: self.config.clone(),
            },
            student: self.student_facts().map(|student| v2::StudentFacts {
                username: student.username,
                display_name: student.display_name,
                email: student.email,
                groups: student.groups,
            }),
            site: v2::SiteFacts {
                hub_url: self.site.hub_url.clone(),
                agent_version: agent_version.to_owned(),
            },
            settings: self
                .settings
                .iter()
                .map(|(name, value)| {
                    let value = match value {
                        SettingValue::Text(text) => v2::SettingValue::Text(text.clone()),
                        SettingValue::Integer(n) => v2::SettingValue::Integer(*n),
                        SettingValue::Boolean(b) => v2::SettingValue::Boolean(*b),
                    };
                    (name.clone(), value)
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_0_1_input_file_still_reads_and_the_student_is_known_either_way() {
        let facts: HookFacts = serde_json::from_str(
            r#"{"class": {"id": 4, "name": "Net", "slug": "net"},
                "vm": {"vmid": 101, "kind": "student", "index": 1, "student": "ada", "name": "net-1"},
                "config": [["cores", "2"]]}"#,
        )
        .unwrap();
        let v2 = facts.v2("pve1", "1.0");
        assert_eq!(v2.vm.node, "pve1");
        assert_eq!(v2.student.unwrap().username, "ada");
        let facts: HookFacts = serde_json::from_str(
            r#"{"class": {"id": 4, "name": "Net", "slug": "net"},
                "vm": {"vmid": 101, "kind": "student", "index": 1},
                "student": {"username": "bo", "display_name": "Bo B"},
                "settings": {"cores": 4, "label": "x", "on": true}}"#,
        )
        .unwrap();
        assert_eq!(facts.vm_v1().student.as_deref(), Some("bo"));
        assert_eq!(facts.settings["cores"], SettingValue::Integer(4));
        assert_eq!(facts.settings["on"], SettingValue::Boolean(true));
        let unknown = serde_json::from_str::<HookFacts>(
            r#"{"class": {"id": 1, "name": "a", "slug": "a"}, "vm": {"vmid": 1, "kind": "student", "index": 1}, "vms": 1}"#,
        );
        assert!(unknown.unwrap_err().to_string().contains("vms"));
    }
}
