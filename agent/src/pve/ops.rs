//! VM operations through `qm`: power, destroy, snapshots.

use proxlab_protocol::inventory::PowerState;
use proxlab_protocol::vm_ops::{PowerAction, SnapshotOp};

use super::command::PveError;
use super::node::Node;

/// The VM's power state from `qm status`.
pub async fn status(node: &Node, vmid: u32) -> Result<PowerState, PveError> {
    let out = node.qm(["status", &vmid.to_string()]).await?;
    Ok(match out.trim().strip_prefix("status: ") {
        Some("running") => PowerState::Running,
        Some("stopped") => PowerState::Stopped,
        Some("paused") => PowerState::Paused,
        _ => PowerState::Unknown,
    })
}

pub async fn power(node: &Node, vmid: u32, action: PowerAction) -> Result<PowerState, PveError> {
    let id = vmid.to_string();
    match action {
        PowerAction::Start => node.qm(["start", &id]).await?,
        PowerAction::Stop => node.qm(["stop", &id]).await?,
        PowerAction::Reboot => node.qm(["reboot", &id]).await?,
        PowerAction::Reset => node.qm(["reset", &id]).await?,
        PowerAction::Shutdown {
            timeout_secs,
            force_stop,
        } => {
            let timeout = timeout_secs.to_string();
            let force = if force_stop { "1" } else { "0" };
            node.qm(["shutdown", &id, "--timeout", &timeout, "--forceStop", force])
                .await?
        }
    };
    status(node, vmid).await
}

/// Destroys a VM and its disks; templates only when asked.
pub async fn destroy(node: &Node, vmid: u32, allow_template: bool) -> Result<(), PveError> {
    let config = node.require_config(vmid)?;
    if config.main().get("template") == Some("1") && !allow_template {
        return Err(PveError::Invalid(format!(
            "VM {vmid} is a template; destroying it needs allow_template"
        )));
    }
    node.qm([
        "destroy",
        &vmid.to_string(),
        "--purge",
        "1",
        "--destroy-unreferenced-disks",
        "1",
    ])
    .await
    .map(drop)
}

pub async fn snapshot(node: &Node, vmid: u32, name: &str, op: &SnapshotOp) -> Result<(), PveError> {
    let id = vmid.to_string();
    match op {
        SnapshotOp::Create { description } => {
            let mut args = vec!["snapshot".to_owned(), id, name.to_owned()];
            if let Some(text) = description {
                args.extend(["--description".to_owned(), text.clone()]);
            }
            node.qm(args).await?
        }
        SnapshotOp::Rollback => node.qm(["rollback", &id, name]).await?,
        SnapshotOp::Delete => node.qm(["delsnapshot", &id, name]).await?,
    };
    Ok(())
}
