//! Where the hub keeps its files inside the data directory.

use std::path::{Path, PathBuf};

/// The default data directory of an installed hub.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/proxlab";

/// The files of one data directory.
#[derive(Debug, Clone)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The folder holding the CA and the QUIC server certificate.
    pub fn pki_dir(&self) -> PathBuf {
        self.root.join("pki")
    }

    pub fn ca_cert(&self) -> PathBuf {
        self.pki_dir().join("ca.crt")
    }

    pub fn ca_key(&self) -> PathBuf {
        self.pki_dir().join("ca.key")
    }

    pub fn server_cert(&self) -> PathBuf {
        self.pki_dir().join("server.crt")
    }

    pub fn server_key(&self) -> PathBuf {
        self.pki_dir().join("server.key")
    }

    /// The portal's self-signed HTTPS certificate (`tls = "self-signed"`).
    pub fn portal_cert(&self) -> PathBuf {
        self.pki_dir().join("portal.crt")
    }

    pub fn portal_key(&self) -> PathBuf {
        self.pki_dir().join("portal.key")
    }
}
