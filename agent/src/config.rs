//! The agent's configuration file (`/etc/proxlab/agent.toml`), optional.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Deserialize;

/// The commented example config that `proxlab-agent default-config` prints.
pub const EXAMPLE_CONFIG: &str = include_str!("../agent.example.toml");

/// The agent config file. Every key is optional; unknown keys are an error.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// Where the node's key, certificate and the hub's CA live.
    pub state_dir: Option<PathBuf>,
    /// Overrides the hub address recorded at enrollment (`HOST:PORT`).
    pub hub: Option<String>,
    /// Where Proxmox's tools and files are.
    #[serde(default)]
    pub pve: crate::pve::config::PveConfig,
    /// Plugin limits, grants and the drop-in directory.
    #[serde(default)]
    pub plugins: crate::plugins::PluginSettings,
    /// Which VM ports the hub may open tunnels to (SSH, RDP).
    #[serde(default)]
    pub tunnels: crate::tunnel::policy::TunnelSettings,
    /// Where the agent serves its metrics.
    #[serde(default)]
    pub metrics: MetricsSettings,
}

/// The `[metrics]` section.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSettings {
    /// `ADDRESS:PORT` for `GET /metrics` (Prometheus); unset: no metrics are served. The
    /// endpoint has no authentication: use a loopback or management address.
    pub listen: Option<std::net::SocketAddr>,
}

impl AgentConfig {
    /// Reads `path`. A missing file is fine only if `required` is false.
    pub fn load(path: &Path, required: bool) -> Result<Self> {
        match std::fs::read_to_string(path) {
            Ok(text) => toml::from_str(&text).with_context(|| format!("in {}", path.display())),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound && !required => {
                Ok(Self::default())
            }
            Err(err) => Err(err).with_context(|| format!("reading {}", path.display())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_parses() {
        toml::from_str::<AgentConfig>(EXAMPLE_CONFIG).unwrap();
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = toml::from_str::<AgentConfig>("hubb = \"x:1\"").unwrap_err();
        assert!(err.to_string().contains("hubb"), "{err}");
    }
}
