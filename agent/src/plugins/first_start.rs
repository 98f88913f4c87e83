//! The hooks that wait for a VM's guest: `after-start` after its first start and
//! `after-reset` after a reset. Once its guest agent answers, the VM's steps at that hook
//! run, and the hub hears how they went (and what they tell the VM's user).

use std::sync::Arc;
use std::time::Duration;

use super::registry::StepReport;
use super::{Hook, PluginRegistry};
use crate::collect::Collector;
use crate::pve::node::Node;
use crate::pve::qemu_socket;

/// How long to wait for a started VM's guest agent.
const GUEST_AGENT_WAIT: Duration = Duration::from_secs(300);
const POLL: Duration = Duration::from_secs(1);

/// Runs `vmid`'s `hook` steps in the background if it has any (pending, for
/// `after-start`), and tells the hub how they went.
pub fn spawn(
    node: Arc<Node>,
    registry: Arc<PluginRegistry>,
    collector: Arc<Collector>,
    vmid: u32,
    hook: Hook,
) {
    if !registry.has_hook(vmid, hook) {
        return;
    }
    tokio::spawn(async move {
        let report = |report: StepReport| collector.report(report.event(vmid, hook));
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
                tracing::error!(vmid, hook = hook.as_str(), "{error}");
                report(StepReport {
                    error: Some(error),
                    ..StepReport::default()
                });
                return;
            }
            tokio::time::sleep(POLL).await;
        }
        let config = match node.require_config(vmid) {
            Ok(config) => config,
            Err(err) => {
                report(StepReport {
                    error: Some(format!("steps not run: {err}")),
                    ..StepReport::default()
                });
                return;
            }
        };
        let outcome =
            tokio::task::spawn_blocking(move || registry.run_hook(vmid, hook, &config)).await;
        match outcome {
            Ok(steps) => {
                match &steps.error {
                    None => tracing::info!(vmid, hook = hook.as_str(), "plugin steps done"),
                    Some(err) => {
                        tracing::error!(vmid, hook = hook.as_str(), %err, "a plugin step failed")
                    }
                }
                report(steps);
            }
            Err(err) => {
                tracing::error!(vmid, %err, "plugin steps panicked");
                report(StepReport {
                    error: Some(format!("the steps panicked: {err}")),
                    ..StepReport::default()
                });
            }
        }
    });
}
