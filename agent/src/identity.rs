//! The node's identity: key, certificate, the hub's CA, and the enrollment record.

use anyhow::{Context, Result, bail};
use proxlab_link::files::write_atomic;
use proxlab_link::pki::CertAndKey;
use serde::{Deserialize, Serialize};

use crate::paths::StateDir;

/// What `enroll` recorded besides the certificates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Enrollment {
    pub hub: String,
    pub node_name: String,
    pub ca_pin: String,
}

/// Everything `run` needs to connect.
#[derive(Debug, Clone)]
pub struct Identity {
    pub enrollment: Enrollment,
    pub node: CertAndKey,
    pub ca_pem: String,
}

impl Identity {
    pub fn is_enrolled(dir: &StateDir) -> bool {
        dir.enrollment().exists()
    }

    /// Loads the identity, with a hint when the node has not been enrolled.
    pub fn load(dir: &StateDir) -> Result<Self> {
        if !Self::is_enrolled(dir) {
            bail!(
                "this node is not enrolled (no {}): run `proxlab-agent enroll --hub HOST:PORT \
                 --token TOKEN --ca-pin sha256:...` with a token from `proxlab-hub token create`",
                dir.enrollment().display()
            );
        }
        let read = |path: std::path::PathBuf| {
            std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
        };
        let enrollment: Enrollment =
            toml::from_str(&read(dir.enrollment())?).context("parsing the enrollment record")?;
        Ok(Self {
            enrollment,
            node: CertAndKey {
                cert_pem: read(dir.node_cert())?,
                key_pem: read(dir.node_key())?,
            },
            ca_pem: read(dir.ca_cert())?,
        })
    }

    /// Writes the identity. The enrollment record goes last: it marks the node enrolled.
    pub fn save(&self, dir: &StateDir) -> Result<()> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir.root())
            .with_context(|| format!("creating {}", dir.root().display()))?;
        let write = |path: std::path::PathBuf, text: &str, private: bool| {
            write_atomic(&path, text.as_bytes(), private)
                .with_context(|| format!("writing {}", path.display()))
        };
        write(dir.node_key(), &self.node.key_pem, true)?;
        write(dir.node_cert(), &self.node.cert_pem, false)?;
        write(dir.ca_cert(), &self.ca_pem, false)?;
        let record = toml::to_string(&self.enrollment).context("encoding the enrollment record")?;
        write(dir.enrollment(), &record, false)
    }
}
