//! The first exchange on an enrolled connection.

use serde::{Deserialize, Serialize};

/// A `major.minor` protocol version. See the crate docs for the compatibility rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProtocolVersion {
    pub major: u16,
    pub minor: u16,
}

impl ProtocolVersion {
    /// Whether a peer speaking `other` can talk to us.
    pub fn is_compatible_with(self, other: ProtocolVersion) -> bool {
        self.major == other.major
    }
}

impl std::fmt::Display for ProtocolVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// Sent by the agent as the first frame of its control stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub protocol: ProtocolVersion,
    /// The agent's package version, for display.
    pub agent_version: String,
    /// The node's name as the agent sees it. The hub trusts the certificate, not this field,
    /// and refuses a mismatch.
    pub node_name: String,
    /// The request kinds this agent serves.
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// The node's Proxmox cluster (older agents do not send it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<crate::ClusterIdentity>,
}

/// The hub's answer to a compatible [`Hello`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    pub protocol: ProtocolVersion,
    pub hub_version: String,
    /// How often the hub expects a heartbeat, in seconds.
    pub heartbeat_secs: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compatibility_is_by_major_version() {
        let v1_0 = ProtocolVersion { major: 1, minor: 0 };
        let v1_3 = ProtocolVersion { major: 1, minor: 3 };
        let v2_0 = ProtocolVersion { major: 2, minor: 0 };
        assert!(v1_0.is_compatible_with(v1_3));
        assert!(!v1_0.is_compatible_with(v2_0));
        assert_eq!(v1_3.to_string(), "1.3");
    }

    #[test]
    fn a_hello_without_a_cluster_still_decodes() {
        let old =
            r#"{"protocol":{"major":1,"minor":0},"agent_version":"0.1.0","node_name":"pve1"}"#;
        let hello: Hello = serde_json::from_str(old).unwrap();
        assert_eq!(hello.cluster, None);
        assert!(hello.capabilities.is_empty());
    }
}
