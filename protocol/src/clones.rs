//! Fast clones: a class base from a template, then many linked clones of it.

use serde::{Deserialize, Serialize};

use crate::request::Request;

/// Makes a class base: a new template VM whose disks are full qcow2 copies of a source
/// template's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MakeBase {
    pub source_vmid: u32,
    pub base_vmid: u32,
    pub name: String,
    /// Where the base's disks go; default: the source's storage.
    #[serde(default)]
    pub storage: Option<String>,
}

/// How far the copy is.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CopyProgress {
    pub done_bytes: u64,
    pub total_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MakeBaseReply {
    pub base_vmid: u32,
    pub volids: Vec<String>,
}

impl Request for MakeBase {
    const KIND: &'static str = "make-base";
    type Response = MakeBaseReply;
    type Progress = CopyProgress;
}

/// One VM to create.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloneTarget {
    pub vmid: u32,
    pub name: String,
}

/// Hardware every clone gets instead of the base's (a class's CPU and memory override).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hardware {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cores: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mib: Option<u64>,
}

impl Hardware {
    /// Nothing to override.
    pub fn is_unchanged(&self) -> bool {
        self.cores.is_none() && self.memory_mib.is_none()
    }
}

/// Creates linked clones of a base, in parallel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloneMany {
    pub base_vmid: u32,
    pub vms: Vec<CloneTarget>,
    /// How many clones run at once; 0 for the agent's default.
    #[serde(default)]
    pub concurrency: u32,
    /// Optional: an agent that predates it ignores it, and the clones keep the base's hardware.
    #[serde(default, skip_serializing_if = "Hardware::is_unchanged")]
    pub hardware: Hardware,
    /// The plugins that name and configure these VMs, and run after their first start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps: Option<crate::plugins::PluginSteps>,
}

/// The outcome for one VM, sent as it completes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloneOutcome {
    pub vmid: u32,
    /// `None` on success; the error otherwise.
    #[serde(default)]
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CloneManyReply {
    pub created: Vec<u32>,
    pub failed: Vec<CloneOutcome>,
}

impl Request for CloneMany {
    const KIND: &'static str = "clone-many";
    type Response = CloneManyReply;
    type Progress = CloneOutcome;
}
