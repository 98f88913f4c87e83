//! rustls configurations for the link. QUIC needs TLS 1.3; the crypto is ring's.

use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::pki::{self, CertAndKey, Fingerprint, PkiError};

/// Failures building a TLS configuration.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error(transparent)]
    Pki(#[from] PkiError),
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("TLS verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    #[error("QUIC crypto: {0}")]
    Quic(String),
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The provider for lanes: AES-128-GCM first (the client's order decides in TLS 1.3), which
/// needs fewer rounds per byte than AES-256 for the gigabytes a lane carries.
fn lane_provider() -> Arc<CryptoProvider> {
    let mut provider = rustls::crypto::ring::default_provider();
    provider
        .cipher_suites
        .sort_by_key(|suite| suite.suite() != rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
    Arc::new(provider)
}

fn roots_of(ca_pem: &str) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    roots.add(pki::cert_der_from_pem(ca_pem)?)?;
    Ok(Arc::new(roots))
}

/// The hub's server configuration.
///
/// Client certificates are optional at the TLS layer so that a new agent can enroll; when
/// one is presented it must chain to the hub's CA, or the handshake fails. The hub then
/// requires a certificate on every [`proxlab_protocol::ALPN_LINK`] connection.
pub fn hub_server_config(
    ca_pem: &str,
    server: &CertAndKey,
) -> Result<quinn::ServerConfig, TlsError> {
    let mut config = hub_rustls_config(ca_pem, server, ClientCerts::Optional)?;
    config.alpn_protocols = vec![
        proxlab_protocol::ALPN_LINK.to_vec(),
        proxlab_protocol::ALPN_ENROLL.to_vec(),
    ];
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(config)
        .map_err(|err| TlsError::Quic(err.to_string()))?;
    Ok(quinn::ServerConfig::with_crypto(Arc::new(crypto)))
}

/// The hub's configuration for lanes (TCP, see `proxlab_protocol::base_copy::lane`): only
/// enrolled nodes, with a certificate of the hub's CA.
pub fn hub_lane_config(
    ca_pem: &str,
    server: &CertAndKey,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let mut config = hub_rustls_config(ca_pem, server, ClientCerts::Required)?;
    config.alpn_protocols = vec![proxlab_protocol::ALPN_LANE.to_vec()];
    // A lane is used once. A session ticket would also be bytes the sending node never
    // reads, and a socket closed with unread bytes ends in a reset that loses the last of
    // the image on its way to the hub.
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClientCerts {
    Optional,
    Required,
}

fn hub_rustls_config(
    ca_pem: &str,
    server: &CertAndKey,
    client_certs: ClientCerts,
) -> Result<rustls::ServerConfig, TlsError> {
    let provider = provider();
    let mut verifier =
        WebPkiClientVerifier::builder_with_provider(roots_of(ca_pem)?, provider.clone());
    if client_certs == ClientCerts::Optional {
        verifier = verifier.allow_unauthenticated();
    }
    let mut chain = pki::cert_chain_from_pem(&server.cert_pem)?;
    chain.push(pki::cert_der_from_pem(ca_pem)?);
    Ok(rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier.build()?)
        .with_single_cert(chain, pki::private_key_from_pem(&server.key_pem)?)?)
}

/// An enrolled agent's client configuration: it trusts only the hub's CA and presents the
/// node certificate.
pub fn agent_client_config(
    ca_pem: &str,
    identity: &CertAndKey,
) -> Result<quinn::ClientConfig, TlsError> {
    let mut config = agent_rustls_config(ca_pem, identity, provider())?;
    config.alpn_protocols = vec![proxlab_protocol::ALPN_LINK.to_vec()];
    quic_client(config)
}

/// The same for the agent's lanes to the hub (TCP).
pub fn agent_lane_config(
    ca_pem: &str,
    identity: &CertAndKey,
) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let mut config = agent_rustls_config(ca_pem, identity, lane_provider())?;
    config.alpn_protocols = vec![proxlab_protocol::ALPN_LANE.to_vec()];
    Ok(Arc::new(config))
}

fn agent_rustls_config(
    ca_pem: &str,
    identity: &CertAndKey,
    provider: Arc<CryptoProvider>,
) -> Result<rustls::ClientConfig, TlsError> {
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots_of(ca_pem)?)
        .with_client_auth_cert(
            pki::cert_chain_from_pem(&identity.cert_pem)?,
            pki::private_key_from_pem(&identity.key_pem)?,
        )?)
}

fn quic_client(config: rustls::ClientConfig) -> Result<quinn::ClientConfig, TlsError> {
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(config)
        .map_err(|err| TlsError::Quic(err.to_string()))?;
    Ok(quinn::ClientConfig::new(Arc::new(crypto)))
}

/// What the pinned verifier saw, so enrollment can explain a refusal in plain words.
#[derive(Debug, Default, Clone)]
pub struct PinCheck(Arc<Mutex<Option<PinOutcome>>>);

/// The result of checking the hub's chain against the pin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PinOutcome {
    /// The chain held a CA with the pinned fingerprint, and the server certificate verified.
    Matched { ca_pem_der: Vec<u8> },
    /// No certificate in the chain had the pinned fingerprint.
    Mismatch { presented: Vec<Fingerprint> },
}

impl PinCheck {
    pub fn outcome(&self) -> Option<PinOutcome> {
        self.0.lock().ok().and_then(|guard| guard.clone())
    }

    fn record(&self, outcome: PinOutcome) {
        if let Ok(mut guard) = self.0.lock() {
            *guard = Some(outcome);
        }
    }
}

/// Trusts a hub whose chain contains a CA with the pinned fingerprint and whose server
/// certificate that CA signed. Used once, for enrollment, before the agent has the CA.
#[derive(Debug)]
struct PinnedCaVerifier {
    pin: Fingerprint,
    provider: Arc<CryptoProvider>,
    check: PinCheck,
}

impl ServerCertVerifier for PinnedCaVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(ca) = intermediates
            .iter()
            .find(|cert| Fingerprint::of_der(cert) == self.pin)
        else {
            self.check.record(PinOutcome::Mismatch {
                presented: intermediates
                    .iter()
                    .map(|c| Fingerprint::of_der(c))
                    .collect(),
            });
            return Err(rustls::Error::General(format!(
                "the hub's CA does not match the pinned fingerprint {}",
                self.pin
            )));
        };
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone().into_owned())?;
        let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            self.provider.clone(),
        )
        .build()
        .map_err(|err| rustls::Error::General(err.to_string()))?;
        inner.verify_server_cert(end_entity, &[], server_name, ocsp_response, now)?;
        self.check.record(PinOutcome::Matched {
            ca_pem_der: ca.to_vec(),
        });
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The client configuration for enrollment: no client certificate, and trust in the hub
/// through the pinned CA fingerprint alone. The returned [`PinCheck`] tells what was seen.
pub fn enroll_client_config(pin: Fingerprint) -> Result<(quinn::ClientConfig, PinCheck), TlsError> {
    let provider = provider();
    let check = PinCheck::default();
    let verifier = Arc::new(PinnedCaVerifier {
        pin,
        provider: provider.clone(),
        check: check.clone(),
    });
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = vec![proxlab_protocol::ALPN_ENROLL.to_vec()];
    Ok((quic_client(config)?, check))
}

/// The certificate chain a peer presented, if any.
pub fn peer_certificates(connection: &quinn::Connection) -> Option<Vec<CertificateDer<'static>>> {
    connection
        .peer_identity()?
        .downcast::<Vec<CertificateDer<'static>>>()
        .ok()
        .map(|chain| *chain)
        .filter(|chain| !chain.is_empty())
}

/// The ALPN protocol a connection negotiated.
pub fn negotiated_alpn(connection: &quinn::Connection) -> Option<Vec<u8>> {
    connection
        .handshake_data()?
        .downcast::<quinn::crypto::rustls::HandshakeData>()
        .ok()?
        .protocol
}
