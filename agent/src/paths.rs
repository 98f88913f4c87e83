//! Where the agent keeps its identity inside the state directory.

use std::path::{Path, PathBuf};

/// The default state directory of an installed agent.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/proxlab-agent";

/// The default config file of an installed agent.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/proxlab/agent.toml";

/// The files of one state directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
}

impl StateDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The node's private key. It never leaves the node.
    pub fn node_key(&self) -> PathBuf {
        self.root.join("node.key")
    }

    /// The node's certificate, signed by the hub's CA.
    pub fn node_cert(&self) -> PathBuf {
        self.root.join("node.crt")
    }

    /// The hub's CA certificate.
    pub fn ca_cert(&self) -> PathBuf {
        self.root.join("ca.crt")
    }

    /// Which hub this node enrolled with, and as what name.
    pub fn enrollment(&self) -> PathBuf {
        self.root.join("enrollment.toml")
    }
}
