//! HTTPS for the portal: the certificate it shows and the TLS settings, with HTTP/2 offered
//! first so a browser multiplexes every page's requests and live streams over one connection.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use proxlab_link::files::write_atomic;
use proxlab_link::pki::{self, CertAndKey, Fingerprint};
use rustls::ServerConfig;

use crate::config::{HubConfig, PortalTls};
use crate::paths::DataDir;

/// What the portal's TLS listener needs, and what to tell the operator about it.
pub struct PortalCertificate {
    pub server: Arc<ServerConfig>,
    /// The SHA-256 fingerprint of the certificate, for people checking a self-signed one.
    pub fingerprint: Fingerprint,
    /// Where the certificate was read from.
    pub source: String,
}

/// The TLS settings of the portal, or `None` when it serves plain HTTP.
pub fn load(config: &HubConfig, data_dir: &DataDir) -> Result<Option<PortalCertificate>> {
    let (pair, source) = match &config.tls {
        PortalTls::Off => return Ok(None),
        PortalTls::Files { cert, key } => (read_pem_files(cert, key)?, cert.display().to_string()),
        PortalTls::SelfSigned => {
            let path = data_dir.portal_cert();
            (self_signed(config, data_dir)?, path.display().to_string())
        }
    };
    let chain = pki::cert_chain_from_pem(&pair.cert_pem)
        .with_context(|| format!("reading the certificate in {source}"))?;
    let key = pki::private_key_from_pem(&pair.key_pem)
        .with_context(|| format!("reading the private key for {source}"))?;
    let fingerprint = Fingerprint::of_der(&chain[0]);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut server = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .with_context(|| format!("the certificate in {source} does not match its key"))?;
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Some(PortalCertificate {
        server: Arc::new(server),
        fingerprint,
        source,
    }))
}

fn read_pem_files(cert: &Path, key: &Path) -> Result<CertAndKey> {
    Ok(CertAndKey {
        cert_pem: std::fs::read_to_string(cert)
            .with_context(|| format!("reading tls_cert {}", cert.display()))?,
        key_pem: std::fs::read_to_string(key)
            .with_context(|| format!("reading tls_key {}", key.display()))?,
    })
}

/// The hub's own certificate: made at first start, then reused so browsers that accepted it
/// keep accepting it. Delete the two files to make a new one (after changing names).
fn self_signed(config: &HubConfig, data_dir: &DataDir) -> Result<CertAndKey> {
    let (cert, key) = (data_dir.portal_cert(), data_dir.portal_key());
    if cert.exists() && key.exists() {
        return read_pem_files(&cert, &key);
    }
    let names = certificate_names(config);
    let pair = pki::self_signed_web_cert(&names).context("making the portal certificate")?;
    write_atomic(&key, pair.key_pem.as_bytes(), true)
        .with_context(|| format!("writing {}", key.display()))?;
    write_atomic(&cert, pair.cert_pem.as_bytes(), false)
        .with_context(|| format!("writing {}", cert.display()))?;
    tracing::info!(names = ?names, path = %cert.display(), "made a self-signed portal certificate");
    Ok(pair)
}

/// The names a self-signed certificate answers to: the public URL's host, this machine's
/// name, the listening address when it is a specific one, and loopback.
fn certificate_names(config: &HubConfig) -> Vec<String> {
    let mut names = Vec::new();
    if let Some(host) = config.public_url.as_deref().and_then(url_host) {
        names.push(host);
    }
    if let Ok(hostname) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        names.push(hostname.trim().to_owned());
    }
    if !config.http_addr.ip().is_unspecified() {
        names.push(config.http_addr.ip().to_string());
    }
    names.extend(["localhost", "127.0.0.1", "::1"].map(str::to_owned));
    let mut seen = std::collections::HashSet::new();
    names.retain(|name| !name.is_empty() && seen.insert(name.clone()));
    names
}

/// The host of `https://host[:port][/path]` (brackets removed from an IPv6 address).
fn url_host(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split('/').next()?;
    let host = match authority.strip_prefix('[') {
        Some(bracketed) => bracketed.split(']').next()?,
        None => authority
            .rsplit_once(':')
            .map_or(authority, |(host, _)| host),
    };
    (!host.is_empty()).then(|| host.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_hosts() {
        assert_eq!(
            url_host("https://lab.school").as_deref(),
            Some("lab.school")
        );
        assert_eq!(
            url_host("https://lab.school:8443/portal").as_deref(),
            Some("lab.school")
        );
        assert_eq!(
            url_host("https://[2001:db8::1]:443/").as_deref(),
            Some("2001:db8::1")
        );
        assert_eq!(url_host("lab.school"), None);
    }

    #[test]
    fn a_self_signed_certificate_is_made_once_and_names_the_site() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir::new(tmp.path());
        std::fs::create_dir_all(dir.pki_dir()).unwrap();
        let mut config = HubConfig::new(tmp.path());
        config.tls = PortalTls::SelfSigned;
        config.public_url = Some("https://lab.school:8443".into());
        let names = certificate_names(&config);
        assert_eq!(names[0], "lab.school");
        assert!(names.contains(&"127.0.0.1".to_owned()));
        let first = load(&config, &dir).unwrap().unwrap();
        let again = load(&config, &dir).unwrap().unwrap();
        assert_eq!(first.fingerprint, again.fingerprint);
        assert_eq!(first.server.alpn_protocols[0], b"h2");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.portal_key())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_key_that_does_not_match_the_certificate_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let one = pki::self_signed_web_cert(&["a.example".into()]).unwrap();
        let two = pki::self_signed_web_cert(&["b.example".into()]).unwrap();
        let (cert, key) = (tmp.path().join("c.pem"), tmp.path().join("k.pem"));
        std::fs::write(&cert, &one.cert_pem).unwrap();
        std::fs::write(&key, &two.key_pem).unwrap();
        let mut config = HubConfig::new(tmp.path());
        config.tls = PortalTls::Files { cert, key };
        let err = load(&config, &DataDir::new(tmp.path())).err().unwrap();
        assert!(format!("{err:#}").contains("does not match"), "{err:#}");
    }
}
