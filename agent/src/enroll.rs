//! `proxlab-agent enroll`: trade a join token for a node certificate.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use proxlab_link::pki::{self, CertAndKey, Fingerprint};
use proxlab_link::tls::{PinOutcome, enroll_client_config};
use proxlab_link::{read_frame, write_frame};
use proxlab_protocol::limits::{FRAME_READ_TIMEOUT, MAX_ENROLL_FRAME_LEN, MAX_FRAME_LEN};
use proxlab_protocol::names::validate_node_name;
use proxlab_protocol::{ClusterIdentity, EnrollRequest, EnrollResponse, ResponseFrame};

use crate::identity::{Enrollment, Identity};
use crate::link::connect::{client_endpoint, dial, resolve};
use crate::paths::StateDir;

/// How long enrollment may take in all.
const ENROLL_TIMEOUT: Duration = Duration::from_secs(30);

/// What the operator gave `enroll`.
#[derive(Clone)]
pub struct EnrollParams {
    pub hub: String,
    pub token: String,
    pub ca_pin: Fingerprint,
    pub node_name: String,
    /// The node's Proxmox cluster, for the hub to group it with its peers.
    pub cluster: Option<ClusterIdentity>,
    /// Replace an existing enrollment in the state directory.
    pub force: bool,
}

/// Enrolls this node. Nothing is written unless the hub accepted the token and everything
/// it returned checks out.
pub async fn enroll(dir: &StateDir, params: &EnrollParams) -> Result<Enrollment> {
    validate_node_name(&params.node_name).map_err(anyhow::Error::msg)?;
    if Identity::is_enrolled(dir) && !params.force {
        bail!(
            "this node is already enrolled (see {}); pass --force to enroll again",
            dir.enrollment().display()
        );
    }
    let key_and_csr = pki::generate_node_key_and_csr(&params.node_name)?;
    let response = tokio::time::timeout(ENROLL_TIMEOUT, exchange(params, &key_and_csr.cert_pem))
        .await
        .context("the hub did not answer the enrollment in time")??;
    let presented = Fingerprint::of_pem(&response.ca_pem)?;
    if presented != params.ca_pin {
        bail!(
            "the hub returned a CA ({presented}) that does not match --ca-pin {}",
            params.ca_pin
        );
    }
    let cert_der = pki::cert_der_from_pem(&response.certificate_pem)?;
    let issued_to = pki::common_name(&cert_der)?;
    if issued_to != params.node_name {
        bail!(
            "the hub issued a certificate for {issued_to:?}, not {:?}",
            params.node_name
        );
    }
    let identity = Identity {
        enrollment: Enrollment {
            hub: params.hub.clone(),
            node_name: params.node_name.clone(),
            ca_pin: params.ca_pin.to_string(),
        },
        node: CertAndKey {
            cert_pem: response.certificate_pem,
            key_pem: key_and_csr.key_pem,
        },
        ca_pem: response.ca_pem,
    };
    identity.save(dir)?;
    Ok(identity.enrollment)
}

async fn exchange(params: &EnrollParams, csr_pem: &str) -> Result<EnrollResponse> {
    let addr = resolve(&params.hub).await?;
    let endpoint = client_endpoint(addr)?;
    let (config, pin_check) = enroll_client_config(params.ca_pin)?;
    let connection = match dial(&endpoint, addr, config).await {
        Ok(connection) => connection,
        Err(err) => {
            if let Some(PinOutcome::Mismatch { presented }) = pin_check.outcome() {
                let presented: Vec<String> = presented.iter().map(ToString::to_string).collect();
                bail!(
                    "refusing the hub at {}: its CA fingerprint is {}, but --ca-pin is {}. \
                     Check the pin printed by `proxlab-hub token create`.",
                    params.hub,
                    presented.join(", "),
                    params.ca_pin
                );
            }
            bail!("cannot connect to the hub at {}: {err}", params.hub);
        }
    };
    let request = EnrollRequest {
        token: params.token.trim().to_owned(),
        node_name: params.node_name.clone(),
        agent_version: env!("CARGO_PKG_VERSION").to_owned(),
        csr_pem: csr_pem.to_owned(),
        cluster: params.cluster.clone(),
    };
    let (mut send, mut recv) = connection
        .open_bi()
        .await
        .context("opening the enrollment stream")?;
    write_frame(&mut send, &request, MAX_ENROLL_FRAME_LEN).await?;
    let _ = send.finish();
    let answer: ResponseFrame = read_frame(&mut recv, MAX_FRAME_LEN, FRAME_READ_TIMEOUT)
        .await
        .context("reading the hub's answer")?;
    connection.close(0u32.into(), b"enrolled");
    endpoint.wait_idle().await;
    match answer {
        ResponseFrame::Ok { body } => {
            serde_json::from_value(body).context("the hub's answer is not an enrollment")
        }
        ResponseFrame::Err { error } => bail!("the hub refused the enrollment: {}", error.message),
        ResponseFrame::Progress { .. } => bail!("the hub answered out of protocol"),
    }
}
