//! Which Proxmox cluster a node belongs to.

use serde::{Deserialize, Serialize};

/// A node's cluster, as its agent reads it from `/etc/pve`.
///
/// Names alone do not tell clusters apart: two schools' clusters may both be called `lab`,
/// and every standalone node is a cluster of its own. The fingerprint of the cluster's root
/// CA (created once, when the first node was installed, and shared by every member) does.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ClusterIdentity {
    /// The cluster's name (`cluster.name` in `.members`), or `standalone <node>` for a node
    /// that belongs to no cluster.
    pub name: String,
    /// `sha256:<hex>` of `/etc/pve/pve-root-ca.pem`; empty when the node has none.
    #[serde(default)]
    pub ca_fingerprint: String,
}

impl ClusterIdentity {
    /// The name a node outside every cluster reports.
    pub fn standalone(node: &str) -> Self {
        Self {
            name: format!("standalone {node}"),
            ca_fingerprint: String::new(),
        }
    }

    /// Whether this is a single node rather than a Proxmox cluster.
    pub fn is_standalone(&self) -> bool {
        self.name.starts_with("standalone ")
    }
}

impl std::fmt::Display for ClusterIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name)
    }
}
