//! The hub's CA and QUIC server certificate: created on first start, reused afterwards.

use anyhow::{Context, Result};
use proxlab_link::files::write_atomic;
use proxlab_link::pki::{CertAndKey, CertificateAuthority};

use crate::paths::DataDir;

/// The hub's loaded certificates and keys.
pub struct HubPki {
    pub ca: CertificateAuthority,
    pub server: CertAndKey,
    /// The secret behind QUIC stateless resets, the same across restarts.
    pub reset_key: Vec<u8>,
    /// The secret invite links are derived from (see `classes::invites`).
    pub invite_key: Vec<u8>,
}

/// A secret of 32 random bytes, created once.
fn load_or_create_key(path: &std::path::Path) -> Result<Vec<u8>> {
    match std::fs::read(path) {
        Ok(key) if key.len() == 32 => Ok(key),
        Ok(_) => anyhow::bail!("{} is damaged; delete it to make a new one", path.display()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            let key: [u8; 32] = rand::random();
            write_atomic(path, &key, true)
                .with_context(|| format!("writing {}", path.display()))?;
            Ok(key.to_vec())
        }
        Err(err) => Err(err).with_context(|| format!("reading {}", path.display())),
    }
}

fn read_pair(cert: &std::path::Path, key: &std::path::Path) -> Result<Option<CertAndKey>> {
    match (std::fs::read_to_string(cert), std::fs::read_to_string(key)) {
        (Ok(cert_pem), Ok(key_pem)) => Ok(Some(CertAndKey { cert_pem, key_pem })),
        (Err(err), _) | (_, Err(err)) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        (Err(err), _) => Err(err).with_context(|| format!("reading {}", cert.display())),
        (_, Err(err)) => Err(err).with_context(|| format!("reading {}", key.display())),
    }
}

fn write_pair(pair: &CertAndKey, cert: &std::path::Path, key: &std::path::Path) -> Result<()> {
    write_atomic(key, pair.key_pem.as_bytes(), true)
        .with_context(|| format!("writing {}", key.display()))?;
    write_atomic(cert, pair.cert_pem.as_bytes(), false)
        .with_context(|| format!("writing {}", cert.display()))
}

/// Loads the CA and server certificate from the data directory, creating them if absent.
pub fn load_or_create(dir: &DataDir) -> Result<HubPki> {
    let pki_dir = dir.pki_dir();
    std::fs::create_dir_all(&pki_dir).with_context(|| format!("creating {}", pki_dir.display()))?;
    let ca = match read_pair(&dir.ca_cert(), &dir.ca_key())? {
        Some(pair) => CertificateAuthority::load(&pair).context("loading the hub CA")?,
        None => {
            let hostname = sysname();
            let (ca, pair) =
                CertificateAuthority::generate(&format!("proxlab hub CA ({hostname})"))
                    .context("creating the hub CA")?;
            write_pair(&pair, &dir.ca_cert(), &dir.ca_key())?;
            tracing::info!(pin = %ca.fingerprint()?, "created a new hub CA");
            ca
        }
    };
    let server = match read_pair(&dir.server_cert(), &dir.server_key())? {
        Some(pair) => pair,
        None => {
            let pair = ca
                .issue_server_cert()
                .context("issuing the QUIC server certificate")?;
            write_pair(&pair, &dir.server_cert(), &dir.server_key())?;
            pair
        }
    };
    let reset_key = load_or_create_key(&pki_dir.join("quic-reset.key"))?;
    let invite_key = load_or_create_key(&pki_dir.join("invite.key"))?;
    Ok(HubPki {
        ca,
        server,
        reset_key,
        invite_key,
    })
}

fn sysname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .unwrap_or_else(|_| "localhost".into())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn created_once_then_reused_with_private_keys() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir::new(tmp.path());
        let first = load_or_create(&dir).unwrap();
        let second = load_or_create(&dir).unwrap();
        assert_eq!(
            first.ca.fingerprint().unwrap(),
            second.ca.fingerprint().unwrap()
        );
        assert_eq!(first.server.cert_pem, second.server.cert_pem);
        for key in [dir.ca_key(), dir.server_key()] {
            let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", key.display());
        }
    }
}
