//! One-shot enrollment of a new agent.

use serde::{Deserialize, Serialize};

/// Sent by `proxlab-agent enroll` on an [`crate::ALPN_ENROLL`] connection.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollRequest {
    /// The one-time join token, as printed by `proxlab-hub token create`.
    pub token: String,
    pub node_name: String,
    pub agent_version: String,
    /// A PEM certificate signing request for the key the agent generated.
    pub csr_pem: String,
    /// The node's Proxmox cluster (older agents do not send it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<crate::ClusterIdentity>,
}

impl std::fmt::Debug for EnrollRequest {
    // The token is a secret: never let it reach a log through `{:?}`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnrollRequest")
            .field("token", &"<redacted>")
            .field("node_name", &self.node_name)
            .field("agent_version", &self.agent_version)
            .field("cluster", &self.cluster)
            .finish_non_exhaustive()
    }
}

/// The hub's answer to a successful enrollment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollResponse {
    /// The node name the certificate was issued for.
    pub node_name: String,
    /// The agent's certificate, signed by the hub's CA.
    pub certificate_pem: String,
    /// The hub's CA certificate, to verify the hub from now on.
    pub ca_pem: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_hides_the_token() {
        let request = EnrollRequest {
            token: "secret-token-value".into(),
            node_name: "pve1".into(),
            agent_version: "0.1.0".into(),
            csr_pem: String::new(),
            cluster: None,
        };
        let shown = format!("{request:?}");
        assert!(!shown.contains("secret-token-value"));
        assert!(shown.contains("pve1"));
    }
}
