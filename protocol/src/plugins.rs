//! Plugins: installing them on agents, and which of them run on a batch of clones.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use crate::plugin_manifest::SettingValue;
use crate::request::{NoProgress, Request};
use crate::vm_ops::Done;

/// The largest plugin component the hub accepts and an agent loads (sent by the hub or
/// dropped into its plugin directory).
pub const MAX_WASM_BYTES: usize = 16 << 20;

/// The class a batch of VMs belongs to, as plugins see it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginClass {
    pub id: i64,
    pub name: String,
    /// The class name reduced to letters, digits and dashes.
    pub slug: String,
    #[serde(default)]
    pub description: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub course_code: Option<String>,
    /// Usernames of its teachers.
    #[serde(default)]
    pub owners: Vec<String>,
    #[serde(default)]
    pub seats: u32,
    /// `<cluster>/<vmid>` of its template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cores: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mib: Option<u32>,
}

/// A student, as plugins see them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginStudent {
    pub username: String,
    #[serde(default)]
    pub display_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Groups from their sign-in source.
    #[serde(default)]
    pub groups: Vec<String>,
}

/// One VM of the batch, as plugins see it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginVm {
    /// `teacher` or `student` (class bases run no hooks).
    pub kind: String,
    /// Its position in the class, from 0 (the teacher's VM).
    pub index: u32,
    /// The student it is for, when it has one already (their username).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub student: Option<String>,
    /// More about that student, for plugins of API 0.2.0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub student_facts: Option<PluginStudent>,
}

/// The site, as plugins see it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginSite {
    /// The hub's public address.
    #[serde(default)]
    pub hub_url: String,
}

/// Each plugin's settings (by plugin id, then by name), resolved for one class: the class's
/// values over the site's over the manifest's defaults.
pub type PluginSettingValues = BTreeMap<String, BTreeMap<String, SettingValue>>;

/// The plugin steps of a batch: which plugins run, in this order, at each hook.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginSteps {
    pub plugins: Vec<String>,
    pub class: PluginClass,
    /// By VMID.
    pub vms: BTreeMap<u32, PluginVm>,
    /// The cluster's name.
    #[serde(default)]
    pub cluster: String,
    #[serde(default)]
    pub site: PluginSite,
    #[serde(default)]
    pub settings: PluginSettingValues,
}

/// Installs (or replaces) a plugin on an agent. The agent checks the hash, the manifest and
/// the component before it keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginInstall {
    /// `plugin.toml`.
    pub manifest: String,
    /// The component, base64-encoded.
    pub wasm: String,
    /// Hex SHA-256 of the component.
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginInstalled {
    pub id: String,
    pub version: String,
    /// How long compiling it took, in milliseconds (0 when it was cached).
    pub compile_ms: u64,
    /// Capabilities the plugin asks for that this node does not grant this build, each with
    /// why (for instance, a grant pinned to an older build): the operator's to review.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub withheld: Vec<String>,
}

impl Request for PluginInstall {
    const KIND: &'static str = "plugin-install";
    type Response = PluginInstalled;
    type Progress = NoProgress;
}

/// A class VM was given to a student: its `name` hooks run again (the VM is renamed), and its
/// after-start steps will know the student.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmAssigned {
    pub vmid: u32,
    pub student: String,
    /// More about the student, for plugins of API 0.2.0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub student_facts: Option<PluginStudent>,
}

/// A class VM's student was taken off it: its `unassigned` hooks run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmUnassigned {
    pub vmid: u32,
}

impl Request for VmUnassigned {
    const KIND: &'static str = "vm-unassigned";
    type Response = Done;
    type Progress = NoProgress;
}

/// What one plugin found, for the class and VM pages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginFinding {
    pub plugin: String,
    /// `warning` or `error`.
    pub severity: String,
    pub message: String,
}

/// What a plugin tells a VM's user after its hook, with a secret shown to them once.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginNotice {
    pub plugin: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

/// Never prints the secret, so no log line holds it.
impl std::fmt::Debug for PluginNotice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginNotice")
            .field("plugin", &self.plugin)
            .field("message", &self.message)
            .field("secret", &self.secret.as_ref().map(|_| "<hidden>"))
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmAssignedReply {
    /// The VM's new name, when a plugin named it.
    #[serde(default)]
    pub name: Option<String>,
}

impl Request for VmAssigned {
    const KIND: &'static str = "vm-assigned";
    type Response = VmAssignedReply;
    type Progress = NoProgress;
}

/// Removes a plugin the hub installed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginRemove {
    pub id: String,
}

impl Request for PluginRemove {
    const KIND: &'static str = "plugin-remove";
    type Response = Done;
    type Progress = NoProgress;
}
