//! Which Proxmox cluster this node belongs to, read from the cluster file system.

use std::path::Path;

use proxlab_protocol::ClusterIdentity;
use proxlab_pve::cluster::Members;
use sha2::{Digest, Sha256};

/// This node's name as the cluster file system knows it (`nodename` in `.members`).
pub fn member_name(etc_pve: &Path) -> Option<String> {
    let members = read_members(etc_pve)?;
    (!members.nodename.is_empty()).then_some(members.nodename)
}

/// The cluster `node` belongs to: the name from `.members` and the fingerprint of the
/// cluster's root CA, or `standalone <node>` when `.members` names no cluster.
pub fn identity(etc_pve: &Path, node: &str) -> ClusterIdentity {
    let ca_fingerprint = std::fs::read(etc_pve.join("pve-root-ca.pem"))
        .map(|pem| format!("sha256:{}", hex(&Sha256::digest(pem))))
        .unwrap_or_default();
    let cluster_name = read_members(etc_pve)
        .and_then(|members| members.cluster)
        .map(|cluster| cluster.name)
        .filter(|name| !name.is_empty());
    match cluster_name {
        Some(name) => ClusterIdentity {
            name,
            ca_fingerprint,
        },
        None => ClusterIdentity {
            ca_fingerprint,
            ..ClusterIdentity::standalone(node)
        },
    }
}

fn read_members(etc_pve: &Path) -> Option<Members> {
    let text = std::fs::read_to_string(etc_pve.join(".members")).ok()?;
    match Members::parse(&text) {
        Ok(members) => Some(members),
        Err(err) => {
            tracing::warn!(%err, "cannot read /etc/pve/.members");
            None
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLUSTERED: &str = r#"{
"nodename": "pve2",
"version": 5,
"cluster": { "name": "lab-a", "version": 3, "nodes": 2, "quorate": 1 },
"nodelist": {
  "pve1": { "id": 1, "online": 1, "ip": "10.0.0.1"},
  "pve2": { "id": 2, "online": 1, "ip": "10.0.0.2"}
  }
}
"#;

    #[test]
    fn a_cluster_member_reports_the_cluster_name_and_its_ca() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(".members"), CLUSTERED).unwrap();
        std::fs::write(dir.path().join("pve-root-ca.pem"), "ca one").unwrap();
        let one = identity(dir.path(), "pve2");
        assert_eq!(one.name, "lab-a");
        assert!(one.ca_fingerprint.starts_with("sha256:"));
        assert_eq!(one.ca_fingerprint.len(), "sha256:".len() + 64);
        assert_eq!(member_name(dir.path()).as_deref(), Some("pve2"));

        // Another cluster of the same name has another CA.
        std::fs::write(dir.path().join("pve-root-ca.pem"), "ca two").unwrap();
        let two = identity(dir.path(), "pve2");
        assert_eq!(two.name, one.name);
        assert_ne!(two, one);
    }

    #[test]
    fn a_node_in_no_cluster_is_standalone() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(".members"),
            "{\n\"nodename\": \"pve9\",\n\"version\": 1\n}\n",
        )
        .unwrap();
        let identity = identity(dir.path(), "pve9");
        assert_eq!(identity.name, "standalone pve9");
        assert!(identity.is_standalone());
        assert_eq!(identity.ca_fingerprint, "");
    }

    #[test]
    fn unreadable_members_leave_the_node_standalone() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(".members"), "not json").unwrap();
        assert!(identity(dir.path(), "pve1").is_standalone());
        assert_eq!(member_name(dir.path()), None);
    }
}
