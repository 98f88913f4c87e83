//! The hub's configuration: defaults, then the TOML file, then environment and flags.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Deserialize;

use crate::paths::DEFAULT_DATA_DIR;

/// The default config file of an installed hub.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/proxlab/hub.toml";

/// The commented example config that `proxlab-hub default-config` prints and packages ship.
pub const EXAMPLE_CONFIG: &str = include_str!("../hub.example.toml");

/// The hub config file. Every key is optional; unknown keys are an error.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    pub data_dir: Option<PathBuf>,
    pub http_addr: Option<SocketAddr>,
    pub quic_addr: Option<SocketAddr>,
    /// `sqlite://...` or `postgres://...`; default: `hub.db` in the data directory.
    pub database_url: Option<String>,
    /// The `HOST:PORT` agents dial, as printed in enroll commands.
    pub public_address: Option<String>,
}

impl ConfigFile {
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

/// The settings the hub runs with.
#[derive(Debug, Clone)]
pub struct HubConfig {
    pub data_dir: PathBuf,
    pub http_addr: SocketAddr,
    pub quic_addr: SocketAddr,
    pub database_url: Option<String>,
    pub public_address: Option<String>,
}

impl HubConfig {
    /// Defaults for a data directory.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            http_addr: "127.0.0.1:8080".parse().expect("valid default"),
            quic_addr: "0.0.0.0:7443".parse().expect("valid default"),
            database_url: None,
            public_address: None,
        }
    }

    /// Applies a config file over the defaults.
    pub fn from_file(file: ConfigFile) -> Self {
        let mut config = Self::new(file.data_dir.unwrap_or_else(|| DEFAULT_DATA_DIR.into()));
        if let Some(addr) = file.http_addr {
            config.http_addr = addr;
        }
        if let Some(addr) = file.quic_addr {
            config.quic_addr = addr;
        }
        config.database_url = file.database_url;
        config.public_address = file.public_address;
        config
    }

    /// The address agents should dial, for enroll commands.
    pub fn agent_facing_address(&self) -> String {
        if let Some(address) = &self.public_address {
            return address.clone();
        }
        let port = self.quic_addr.port();
        if self.quic_addr.ip().is_unspecified() {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|name| name.trim().to_owned())
                .unwrap_or_else(|_| "localhost".into());
            format!("{host}:{port}")
        } else {
            self.quic_addr.to_string()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_parses() {
        let file: ConfigFile = toml::from_str(EXAMPLE_CONFIG).unwrap();
        let config = HubConfig::from_file(file);
        assert_eq!(config.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = toml::from_str::<ConfigFile>("data_dri = \"/tmp\"").unwrap_err();
        assert!(err.to_string().contains("data_dri"), "{err}");
    }

    #[test]
    fn file_values_override_defaults() {
        let file: ConfigFile =
            toml::from_str("http_addr = \"0.0.0.0:9000\"\npublic_address = \"hub.school:7443\"")
                .unwrap();
        let config = HubConfig::from_file(file);
        assert_eq!(config.http_addr.port(), 9000);
        assert_eq!(config.agent_facing_address(), "hub.school:7443");
    }
}
