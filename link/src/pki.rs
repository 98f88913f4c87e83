//! Certificates for the link: the hub's CA, its server certificate, and node certificates
//! issued from agents' certificate signing requests.

use std::fmt;
use std::str::FromStr;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SerialNumber,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};

/// How long certificates are valid.
const CA_VALIDITY_DAYS: i64 = 20 * 365;
const LEAF_VALIDITY_DAYS: i64 = 5 * 365;

/// Failures handling certificates and keys.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("invalid PEM ({what}): {detail}")]
    Pem { what: &'static str, detail: String },
    #[error("invalid certificate: {0}")]
    Certificate(String),
    #[error("invalid certificate signing request: {0}")]
    Csr(String),
    #[error("invalid CA pin {0:?}: expected sha256:<64 hex digits>")]
    Pin(String),
}

/// A PEM certificate with its PEM private key.
#[derive(Clone)]
pub struct CertAndKey {
    pub cert_pem: String,
    pub key_pem: String,
}

impl fmt::Debug for CertAndKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertAndKey")
            .field("key_pem", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// The SHA-256 fingerprint of a CA certificate's DER encoding, written `sha256:<hex>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    pub fn of_der(der: &[u8]) -> Self {
        Self(Sha256::digest(der).into())
    }

    /// The fingerprint of the first certificate in a PEM bundle.
    pub fn of_pem(pem: &str) -> Result<Self, PkiError> {
        Ok(Self::of_der(&cert_der_from_pem(pem)?))
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", hex::encode(self.0))
    }
}

impl FromStr for Fingerprint {
    type Err = PkiError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || PkiError::Pin(text.to_owned());
        let digits = text.strip_prefix("sha256:").ok_or_else(bad)?;
        // Accept the colon-separated form that openssl prints, too.
        let digits: String = digits.chars().filter(|c| *c != ':').collect();
        let bytes = hex::decode(digits).map_err(|_| bad())?;
        Ok(Self(bytes.try_into().map_err(|_| bad())?))
    }
}

/// Parses the first certificate of a PEM document.
pub fn cert_der_from_pem(pem: &str) -> Result<CertificateDer<'static>, PkiError> {
    CertificateDer::from_pem_slice(pem.as_bytes()).map_err(|err| PkiError::Pem {
        what: "certificate",
        detail: err.to_string(),
    })
}

/// Parses every certificate of a PEM document.
pub fn cert_chain_from_pem(pem: &str) -> Result<Vec<CertificateDer<'static>>, PkiError> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| PkiError::Pem {
            what: "certificate chain",
            detail: err.to_string(),
        })
}

/// Parses a PEM private key.
pub fn private_key_from_pem(pem: &str) -> Result<PrivateKeyDer<'static>, PkiError> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|err| PkiError::Pem {
        what: "private key",
        detail: err.to_string(),
    })
}

fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] &= 0x7f; // keep the serial positive
    SerialNumber::from_slice(&bytes)
}

fn validity(params: &mut CertificateParams, days: i64) {
    let now = rcgen::date_time_ymd(1970, 1, 1)
        + std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
    // Allow for small clock differences between hub and nodes.
    params.not_before = now - std::time::Duration::from_secs(3600);
    params.not_after = now + std::time::Duration::from_secs(days as u64 * 86_400);
}

/// The hub's certificate authority.
pub struct CertificateAuthority {
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl CertificateAuthority {
    /// Creates a new CA named after the hub.
    pub fn generate(common_name: &str) -> Result<(Self, CertAndKey), PkiError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, common_name);
        name.push(DnType::OrganizationName, "proxlab");
        params.distinguished_name = name;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.serial_number = Some(random_serial());
        validity(&mut params, CA_VALIDITY_DAYS);
        let cert = params.self_signed(&key)?;
        let pair = CertAndKey {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        };
        Ok((Self::load(&pair)?, pair))
    }

    /// Loads a CA from its PEM certificate and key.
    pub fn load(pair: &CertAndKey) -> Result<Self, PkiError> {
        let key = KeyPair::from_pem(&pair.key_pem)?;
        let issuer = Issuer::from_ca_cert_pem(&pair.cert_pem, key)?;
        Ok(Self {
            cert_pem: pair.cert_pem.clone(),
            issuer,
        })
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn fingerprint(&self) -> Result<Fingerprint, PkiError> {
        Fingerprint::of_pem(&self.cert_pem)
    }

    /// Issues the hub's QUIC server certificate for [`proxlab_protocol::HUB_SERVER_NAME`].
    pub fn issue_server_cert(&self) -> Result<CertAndKey, PkiError> {
        let key = KeyPair::generate()?;
        let mut params =
            CertificateParams::new(vec![proxlab_protocol::HUB_SERVER_NAME.to_owned()])?;
        params
            .distinguished_name
            .push(DnType::CommonName, proxlab_protocol::HUB_SERVER_NAME);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.serial_number = Some(random_serial());
        params.use_authority_key_identifier_extension = true;
        validity(&mut params, LEAF_VALIDITY_DAYS);
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(CertAndKey {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Signs a node's certificate signing request. Only the CSR's public key is used: the
    /// subject is `node_name` and the usage is client authentication, whatever the CSR asks.
    pub fn sign_node_csr(&self, csr_pem: &str, node_name: &str) -> Result<String, PkiError> {
        let csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|err| PkiError::Csr(err.to_string()))?;
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, node_name);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.serial_number = Some(random_serial());
        params.use_authority_key_identifier_extension = true;
        validity(&mut params, LEAF_VALIDITY_DAYS);
        let request = CertificateSigningRequestParams {
            params,
            public_key: csr.public_key,
        };
        Ok(request.signed_by(&self.issuer)?.pem())
    }
}

/// A self-signed certificate for a web server known by `names` (DNS names or IP addresses;
/// the first is also the subject), for a portal that has no certificate of its own.
pub fn self_signed_web_cert(names: &[String]) -> Result<CertAndKey, PkiError> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(names.to_vec())?;
    if let Some(first) = names.first() {
        params.distinguished_name.push(DnType::CommonName, first);
    }
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.serial_number = Some(random_serial());
    validity(&mut params, LEAF_VALIDITY_DAYS);
    let cert = params.self_signed(&key)?;
    Ok(CertAndKey {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// A node's freshly generated private key and the CSR for it.
pub fn generate_node_key_and_csr(node_name: &str) -> Result<CertAndKey, PkiError> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, node_name);
    let csr = params.serialize_request(&key)?;
    Ok(CertAndKey {
        cert_pem: csr.pem()?,
        key_pem: key.serialize_pem(),
    })
}

/// The subject common name of a certificate: for node certificates, the node name.
pub fn common_name(der: &[u8]) -> Result<String, PkiError> {
    use x509_parser::prelude::FromDer;
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(der)
        .map_err(|err| PkiError::Certificate(err.to_string()))?;
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .ok_or_else(|| PkiError::Certificate("no common name".into()))?;
    cn.as_str()
        .map(str::to_owned)
        .map_err(|err| PkiError::Certificate(err.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_text_round_trips() {
        let fp = Fingerprint([0xab; 32]);
        let text = fp.to_string();
        assert_eq!(text, format!("sha256:{}", "ab".repeat(32)));
        assert_eq!(text.parse::<Fingerprint>().unwrap(), fp);
        let colons = format!("sha256:{}", vec!["AB"; 32].join(":"));
        assert_eq!(colons.parse::<Fingerprint>().unwrap(), fp);
    }

    #[test]
    fn bad_pins_are_refused() {
        for bad in [
            "",
            "sha256:",
            "sha1:abcd",
            "sha256:zz",
            &format!("sha256:{}", "ab".repeat(31)),
        ] {
            assert!(bad.parse::<Fingerprint>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn node_csr_is_signed_with_the_hub_chosen_name() {
        let (ca, _) = CertificateAuthority::generate("test hub").unwrap();
        let node = generate_node_key_and_csr("claims-other-name").unwrap();
        let cert_pem = ca.sign_node_csr(&node.cert_pem, "pve1").unwrap();
        let der = cert_der_from_pem(&cert_pem).unwrap();
        assert_eq!(common_name(&der).unwrap(), "pve1");
    }

    #[test]
    fn garbage_csr_is_refused() {
        let (ca, _) = CertificateAuthority::generate("test hub").unwrap();
        assert!(matches!(
            ca.sign_node_csr("not a csr", "pve1"),
            Err(PkiError::Csr(_))
        ));
    }

    #[test]
    fn ca_reloads_from_pem_with_the_same_fingerprint() {
        let (ca, pair) = CertificateAuthority::generate("test hub").unwrap();
        let again = CertificateAuthority::load(&pair).unwrap();
        assert_eq!(ca.fingerprint().unwrap(), again.fingerprint().unwrap());
    }

    #[test]
    fn serials_differ() {
        assert_ne!(random_serial().to_bytes(), random_serial().to_bytes());
    }
}
