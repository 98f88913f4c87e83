//! A VM's first start: once its guest agent answers, the `after-start` steps it was cloned
//! with run, once, and the hub hears how they went.

use std::sync::Arc;
use std::time::Duration;

use proxlab_protocol::Event;

use super::PluginRegistry;
use crate::collect::Collector;
use crate::pve::node::Node;
use crate::pve::qemu_socket;

/// How long to wait for a started VM's guest agent.
const GUEST_AGENT_WAIT: Duration = Duration::from_secs(300);
const POLL: Duration = Duration::from_secs(1);

/// Runs `vmid`'s after-start steps in the background if it has any pending, and tells the
/// hub how they went.
pub fn spawn(node: Arc<Node>, registry: Arc<PluginRegistry>, collector: Arc<Collector>, vmid: u32) {
    if !registry.has_first_start(vmid) {
        return;
    }
    tokio::spawn(async move {
        let report = |error: Option<String>| {
            collector.report(Event::PluginSteps {
                vmid,
                hook: "after-start".into(),
                error,
            });
        };
        let deadline = tokio::time::Instant::now() + GUEST_AGENT_WAIT;
        let channel = node.qga_socket(vmid);
        // The guest agent starts with the guest's OS; nothing announces it, so ask.
        while qemu_socket::guest_agent(&channel, "guest-ping", POLL)
            .await
            .is_err()
        {
            if tokio::time::Instant::now() >= deadline {
                let error = format!(
                    "steps not run: the guest agent did not answer within {} s",
                    GUEST_AGENT_WAIT.as_secs()
                );
                tracing::error!(vmid, "after-start {error}");
                report(Some(error));
                return;
            }
            tokio::time::sleep(POLL).await;
        }
        let outcome = tokio::task::spawn_blocking(move || registry.first_start(vmid)).await;
        match outcome {
            Ok(Ok(())) => {
                tracing::info!(vmid, "after-start steps done");
                report(None);
            }
            Ok(Err(err)) => {
                tracing::error!(vmid, %err, "an after-start step failed");
                report(Some(err));
            }
            Err(err) => {
                tracing::error!(vmid, %err, "after-start steps panicked");
                report(Some(format!("the steps panicked: {err}")));
            }
        }
    });
}
