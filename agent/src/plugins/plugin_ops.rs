//! The hub's plugin requests: install and remove, a VM's student coming or going, and the
//! steps before a VM is deleted.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use proxlab_protocol::plugins::{PluginInstall, PluginInstalled, PluginStudent};
use proxlab_protocol::vm_ops::Done;
use proxlab_protocol::{ErrorKind, RemoteError};
use proxlab_pve::config::VmConfig;

use super::files::MAX_WASM_BYTES;
use super::{Hook, PluginRegistry};
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

/// A student got a class VM (`student` set) or left it: its plugins rename it and edit its
/// config, which `qm set` then changes (pending, where the VM runs and Proxmox cannot
/// change a key live).
pub async fn assignment(
    node: &Arc<Node>,
    registry: &Arc<PluginRegistry>,
    vmid: u32,
    student: Option<PluginStudent>,
) -> Result<Option<String>, RemoteError> {
    let _lock = node
        .lock_vm(vmid)
        .await
        .map_err(|err| crate::pve::remote_error(&err))?;
    let config = node
        .require_config(vmid)
        .map_err(|err| crate::pve::remote_error(&err))?;
    let (plugins, limits, current) = (registry.clone(), node.limits, config.clone());
    let edited = tokio::task::spawn_blocking(move || {
        plugins.assignment(vmid, student.as_ref(), &current, &limits)
    })
    .await
    .map_err(|err| RemoteError::new(ErrorKind::Internal, err.to_string()))?
    .map_err(|message| RemoteError::new(ErrorKind::Failed, message))?;
    let Some(edited) = edited else {
        return Ok(None);
    };
    drop(_lock);
    let args = qm_set_args(vmid, &config, &edited);
    if args.len() > 2 {
        node.qm(&args)
            .await
            .map_err(|err| crate::pve::remote_error(&err))?;
    }
    let renamed = edited
        .main()
        .get("name")
        .filter(|name| config.main().get("name") != Some(name));
    Ok(renamed.map(str::to_owned))
}

/// `qm set` arguments that turn `old`'s main section into `new`'s.
fn qm_set_args(vmid: u32, old: &VmConfig, new: &VmConfig) -> Vec<String> {
    let (old, new) = (old.main(), new.main());
    let mut args = vec!["set".to_owned(), vmid.to_string()];
    for (key, value) in new.entries() {
        if old.get(key) != Some(value) {
            args.extend([format!("--{key}"), value.to_owned()]);
        }
    }
    if old.description() != new.description() {
        args.extend([
            "--description".to_owned(),
            new.description().unwrap_or_default(),
        ]);
    }
    let gone: Vec<&str> = old
        .entries()
        .into_iter()
        .map(|(key, _)| key)
        .filter(|key| new.get(key).is_none())
        .collect();
    if !gone.is_empty() {
        args.extend(["--delete".to_owned(), gone.join(",")]);
    }
    args
}

/// A class VM is about to be destroyed: its `before-delete` hooks run (within their
/// deadline), and the hub hears how they went. The VM is destroyed whatever they say.
pub async fn before_delete(
    node: &Arc<Node>,
    registry: &Arc<PluginRegistry>,
    collector: &Arc<crate::collect::Collector>,
    vmid: u32,
) {
    if !registry.has_hook(vmid, Hook::BeforeDelete) {
        return;
    }
    let Ok(config) = node.require_config(vmid) else {
        return;
    };
    let plugins = registry.clone();
    let report =
        tokio::task::spawn_blocking(move || plugins.run_hook(vmid, Hook::BeforeDelete, &config))
            .await;
    match report {
        Ok(report) => {
            if let Some(err) = &report.error {
                tracing::error!(vmid, %err, "a before-delete step failed; the VM is deleted all the same");
            }
            collector.report(report.event(vmid, Hook::BeforeDelete));
        }
        Err(err) => tracing::error!(vmid, %err, "before-delete steps panicked"),
    }
}

pub fn remove(registry: &PluginRegistry, id: &str) -> Result<Done, RemoteError> {
    registry
        .remove(id)
        .map_err(|err| RemoteError::new(ErrorKind::Internal, err.to_string()))?;
    Ok(Done {})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qm_set_changes_only_what_the_plugins_changed() {
        let old = VmConfig::parse("#old notes\ncores: 2\nname: a\ntags: x\n");
        let new = VmConfig::parse("#new notes\ncores: 2\nname: b\nmemory: 2048\n");
        assert_eq!(
            qm_set_args(101, &old, &new),
            [
                "set",
                "101",
                "--name",
                "b",
                "--memory",
                "2048",
                "--description",
                "new notes",
                "--delete",
                "tags"
            ]
        );
    }
}
