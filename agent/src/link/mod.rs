//! The agent's link to the hub: the only module that touches quinn. It keeps one
//! connection up for as long as the agent runs, reconnecting with backoff.

pub mod backoff;
pub mod connect;
pub mod control;
mod events;
mod session;

use std::future::Future;
use std::time::Instant;

use anyhow::{Result, bail};
use proxlab_protocol::CloseCode;

use self::backoff::Backoff;
use self::session::SessionEnd;
use crate::context::Context;
use crate::identity::Identity;

/// Exit status of `run` when the hub told the agent to stop for good (revoked, or an
/// incompatible version). Service managers should not restart on it.
pub const EXIT_REFUSED_BY_HUB: u8 = 3;

/// Why `run` stopped for good.
#[derive(Debug, thiserror::Error)]
#[error("the hub refused this node ({code}): {reason}")]
pub struct RefusedByHub {
    pub code: CloseCode,
    pub reason: String,
}

/// Stays connected to the hub until `shutdown` resolves, or the hub refuses the node.
pub async fn run(
    identity: Identity,
    hub: String,
    context: std::sync::Arc<Context>,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let config = proxlab_link::tls::agent_client_config(&identity.ca_pem, &identity.node)?;
    let lane_tls = proxlab_link::tls::agent_lane_config(&identity.ca_pem, &identity.node)?;
    let node = identity.enrollment.node_name.clone();
    let mut backoff = Backoff::default();
    let mut endpoint: Option<quinn::Endpoint> = None;
    let work = async {
        loop {
            let started = Instant::now();
            let link = session::LinkSettings {
                hub: &hub,
                node: &node,
                config: config.clone(),
                lane_tls: lane_tls.clone(),
            };
            let end = session::run_once(&mut endpoint, link, &context).await;
            backoff.session_ended(started.elapsed());
            match end {
                SessionEnd::Refused { code, reason } => return RefusedByHub { code, reason },
                SessionEnd::Retry { reason } => {
                    let delay = backoff.next_delay();
                    tracing::warn!(%reason, retry_in = ?delay, "not connected to the hub; retrying");
                    tokio::time::sleep(delay).await;
                }
            }
        }
    };
    tokio::select! {
        refused = work => bail!(refused),
        () = shutdown => {
            if let Some(endpoint) = endpoint {
                endpoint.close(CloseCode::Normal.code().into(), b"agent stopping");
                let _ = tokio::time::timeout(std::time::Duration::from_secs(2), endpoint.wait_idle()).await;
            }
            Ok(())
        }
    }
}
