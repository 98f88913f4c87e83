//! A VM's first start: once its guest agent answers, the `after-start` steps it was cloned
//! with run, once.

use std::sync::Arc;
use std::time::Duration;

use super::PluginRegistry;
use crate::pve::node::Node;

/// How long to wait for a started VM's guest agent.
const GUEST_AGENT_WAIT: Duration = Duration::from_secs(300);
const POLL: Duration = Duration::from_secs(1);

/// Runs `vmid`'s after-start steps in the background if it has any pending.
pub fn spawn(node: Arc<Node>, registry: Arc<PluginRegistry>, vmid: u32) {
    if !registry.has_first_start(vmid) {
        return;
    }
    tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + GUEST_AGENT_WAIT;
        let id = vmid.to_string();
        while node.qm(["guest", "cmd", &id, "ping"]).await.is_err() {
            if tokio::time::Instant::now() >= deadline {
                tracing::error!(
                    vmid,
                    "after-start steps not run: the guest agent did not answer within {GUEST_AGENT_WAIT:?}"
                );
                return;
            }
            tokio::time::sleep(POLL).await;
        }
        let outcome = tokio::task::spawn_blocking(move || registry.first_start(vmid)).await;
        match outcome {
            Ok(Ok(())) => tracing::info!(vmid, "after-start steps done"),
            Ok(Err(err)) => tracing::error!(vmid, %err, "an after-start step failed"),
            Err(err) => tracing::error!(vmid, %err, "after-start steps panicked"),
        }
    });
}
