//! The hub's plugin requests: install and remove.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use proxlab_protocol::plugins::{PluginInstall, PluginInstalled, VmAssigned, VmAssignedReply};
use proxlab_protocol::vm_ops::Done;
use proxlab_protocol::{ErrorKind, RemoteError};

use super::PluginRegistry;
use super::files::MAX_WASM_BYTES;
use crate::pve::node::Node;

fn refused(message: String) -> RemoteError {
    RemoteError::new(ErrorKind::BadRequest, message)
}

/// Checks and keeps a plugin the hub sends; compiling happens off the async threads.
pub async fn install(
    registry: &Arc<PluginRegistry>,
    request: PluginInstall,
) -> Result<PluginInstalled, RemoteError> {
    if request.wasm.len() as u64 > MAX_WASM_BYTES * 4 / 3 + 4 {
        return Err(refused(format!(
            "the component is larger than {MAX_WASM_BYTES} bytes"
        )));
    }
    let wasm = BASE64
        .decode(&request.wasm)
        .map_err(|err| refused(format!("the component is not base64: {err}")))?;
    let registry = registry.clone();
    tokio::task::spawn_blocking(move || {
        let started = std::time::Instant::now();
        let plugin = registry
            .install(&request.manifest, &wasm, &request.sha256)
            .map_err(|err| refused(err.to_string()))?;
        tracing::info!(plugin = %plugin.manifest.id, version = %plugin.manifest.version, "plugin installed by the hub");
        Ok(PluginInstalled {
            id: plugin.manifest.id.clone(),
            version: plugin.manifest.version.clone(),
            compile_ms: started.elapsed().as_millis() as u64,
            withheld: registry.host().withheld(&plugin),
        })
    })
    .await
    .map_err(|err| RemoteError::new(ErrorKind::Internal, err.to_string()))?
}

/// A student got a class VM: the `name` hooks run again and the VM takes the new name.
pub async fn assigned(
    node: &Arc<Node>,
    registry: &Arc<PluginRegistry>,
    request: VmAssigned,
) -> Result<VmAssignedReply, RemoteError> {
    let plugins = registry.clone();
    let student = request.student.clone();
    let name = tokio::task::spawn_blocking(move || plugins.assigned(request.vmid, &student))
        .await
        .map_err(|err| RemoteError::new(ErrorKind::Internal, err.to_string()))?
        .map_err(|message| RemoteError::new(ErrorKind::Failed, message))?;
    if let Some(name) = &name {
        node.qm(["set", &request.vmid.to_string(), "--name", name])
            .await
            .map_err(|err| crate::pve::remote_error(&err))?;
    }
    Ok(VmAssignedReply { name })
}

pub fn remove(registry: &PluginRegistry, id: &str) -> Result<Done, RemoteError> {
    registry
        .remove(id)
        .map_err(|err| RemoteError::new(ErrorKind::Internal, err.to_string()))?;
    Ok(Done {})
}
