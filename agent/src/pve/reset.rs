//! Resetting a linked clone to its class base: new overlays over the same base, the same
//! volume ids, config and MACs.

use std::path::Path;

use proxlab_protocol::inventory::PowerState;

use super::clones::{create_overlay, file_image, image_drives, is_state_disk};
use super::command::PveError;
use super::node::Node;
use super::ops;

/// Returns a linked clone to its base: stops it, recreates each overlay from the same base
/// (same file, same volume id, so config and MACs stay), and restores its power state.
pub async fn reset(
    node: &Node,
    vmid: u32,
    leave_stopped: bool,
    identity: Option<&str>,
) -> Result<PowerState, PveError> {
    let config = node.require_config(vmid)?;
    ops::check_identity(&config, vmid, identity)?;
    let overlays: Vec<(String, proxlab_pve::volid::Image)> = image_drives(&config)
        .iter()
        .filter(|d| !is_state_disk(d))
        .filter_map(|d| file_image(d.volume()).ok())
        .filter(|(_, image)| image.base.is_some())
        .collect();
    if overlays.is_empty() {
        return Err(PveError::Invalid(format!(
            "VM {vmid} is not a linked clone, so it cannot be reset to its base"
        )));
    }
    let was_running = ops::status(node, vmid).await? == PowerState::Running;
    if was_running {
        node.qm(["stop", &vmid.to_string()]).await?;
    }
    {
        let _lock = node.lock_vm(vmid).await?;
        for (storage, image) in &overlays {
            let root = node.storage_root(storage).await?;
            let dir: &Path = &root.join("images").join(vmid.to_string());
            let backing = image.relative_backing().expect("filtered to overlays");
            let fresh = format!(".{}.reset", image.name);
            create_overlay(node, dir, &fresh, &backing).await?;
            std::fs::rename(dir.join(&fresh), dir.join(&image.name))?;
        }
    }
    if was_running && !leave_stopped {
        node.qm(["start", &vmid.to_string()]).await?;
    }
    ops::status(node, vmid).await
}
