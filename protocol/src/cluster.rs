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

    /// Checks what an agent reported: a cluster name as Proxmox allows (letters, digits and
    /// inner hyphens) or `standalone <node>`, and an empty or `sha256:<64 hex>` fingerprint.
    pub fn validate(&self) -> Result<(), String> {
        let label = self.name.strip_prefix("standalone ").unwrap_or(&self.name);
        if crate::names::validate_node_name(label).is_err() {
            return Err(format!(
                "invalid cluster name {:?}: use 1 to 63 letters, digits and inner hyphens",
                self.name
            ));
        }
        let hex = self.ca_fingerprint.strip_prefix("sha256:");
        let fingerprint_ok = self.ca_fingerprint.is_empty()
            || hex.is_some_and(|hex| {
                hex.len() == 64 && hex.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f'))
            });
        if !fingerprint_ok {
            return Err(format!(
                "invalid cluster CA fingerprint {:?}: expected sha256: and 64 hex digits",
                self.ca_fingerprint
            ));
        }
        Ok(())
    }
}

impl std::fmt::Display for ClusterIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(name: &str, ca_fingerprint: &str) -> ClusterIdentity {
        ClusterIdentity {
            name: name.into(),
            ca_fingerprint: ca_fingerprint.into(),
        }
    }

    #[test]
    fn accepts_what_proxmox_nodes_report() {
        let hex = "0123456789abcdef".repeat(4);
        for identity in [
            cluster("lab-a", &format!("sha256:{hex}")),
            cluster("lab-a", ""),
            ClusterIdentity::standalone("pve1"),
        ] {
            assert_eq!(identity.validate(), Ok(()), "{identity:?}");
        }
    }

    #[test]
    fn refuses_everything_else() {
        let long = "x".repeat(64);
        for identity in [
            cluster("", ""),
            cluster("lab a", ""),
            cluster("<b>lab</b>", ""),
            cluster(&long, ""),
            cluster("standalone ", ""),
            cluster("lab", "sha256:XYZ"),
            cluster("lab", &format!("sha256:{}", "A".repeat(64))),
            cluster("lab", "md5:00"),
        ] {
            assert!(identity.validate().is_err(), "{identity:?} accepted");
        }
    }
}
