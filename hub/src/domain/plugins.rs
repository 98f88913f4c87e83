//! Plugins at the hub: admins upload them (manifest and component), enable them for every
//! class or let classes choose them, and the hub pushes them to every agent — on upload, and
//! to each agent when it connects. Agents check the hash, the manifest and the component
//! again before they use a plugin.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use proxlab_protocol::plugin_manifest::Manifest;
use proxlab_protocol::plugins::{
    PluginFinding, PluginInstall, PluginNotice, PluginRemove, VmAssigned, VmAssignedReply,
    VmUnassigned,
};
use sha2::{Digest, Sha256};
use tokio::task::JoinHandle;

use proxlab_protocol::Event;

use crate::HubState;
use crate::agents::{AgentEvent, CallError};
use crate::db::DbError;
use crate::db::now_unix;
use crate::db::plugin_settings::NewNote;
use crate::db::plugins::{NewPlugin, PluginRow};
use crate::domain::audit::{self, Outcome};
use crate::domain::plugin_settings;
use crate::domain::viewer::Viewer;
use crate::vm_key::VmKey;

pub use proxlab_protocol::plugins::MAX_WASM_BYTES;

#[derive(Debug, thiserror::Error)]
pub enum PluginFault {
    #[error("no such plugin")]
    NotFound,
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Db(#[from] DbError),
}

/// How one agent took a plugin.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NodeInstall {
    pub node: String,
    /// `None` when the agent installed it; why not otherwise.
    pub error: Option<String>,
    /// Capabilities the node's operator does not grant this build, with why.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub withheld: Vec<String>,
}

/// Checks and stores an upload, then pushes it to the online agents and reports how each
/// took it (agents that are offline get it when they connect).
pub async fn upload(
    state: &Arc<HubState>,
    viewer: &Viewer,
    manifest_text: &str,
    wasm: &[u8],
) -> Result<(PluginRow, Vec<NodeInstall>), PluginFault> {
    let manifest = Manifest::parse(manifest_text).map_err(PluginFault::Invalid)?;
    if wasm.len() > MAX_WASM_BYTES {
        return Err(PluginFault::Invalid(format!(
            "the component is {} bytes; the limit is {MAX_WASM_BYTES}",
            wasm.len()
        )));
    }
    // A component (not a core module): magic, then layer 1.
    if wasm.len() < 8 || &wasm[..4] != b"\0asm" || wasm[6..8] != [1, 0] {
        return Err(PluginFault::Invalid(
            "the file is not a WebAssembly component (build for wasm32-wasip2)".into(),
        ));
    }
    let sha256 = hex::encode(Sha256::digest(wasm));
    let hooks: Vec<&str> = manifest.hooks.iter().map(|hook| hook.as_str()).collect();
    let capabilities: Vec<&str> = manifest
        .capabilities
        .iter()
        .map(|capability| capability.as_str())
        .collect();
    state
        .db
        .put_plugin(&NewPlugin {
            id: &manifest.id,
            version: &manifest.version,
            api: &manifest.api,
            hooks,
            capabilities,
            manifest: manifest_text,
            sha256: &sha256,
            wasm_base64: &BASE64.encode(wasm),
            size_bytes: wasm.len() as u64,
            uploaded_by: &viewer.username,
            uploaded_at: now_unix(),
        })
        .await?;
    audit::record(
        &state.db,
        viewer,
        "plugin.upload",
        &manifest.id,
        Outcome::Ok,
        &format!("version {} sha256 {sha256}", manifest.version),
    )
    .await;
    let installs = state.registry.online_nodes().into_iter().map(|node| {
        let id = &manifest.id;
        async move {
            match install_on(state, &node, id).await {
                Ok(withheld) => NodeInstall {
                    node,
                    error: None,
                    withheld,
                },
                Err(error) => NodeInstall {
                    node,
                    error: Some(error),
                    withheld: Vec::new(),
                },
            }
        }
    });
    let nodes = futures_util::future::join_all(installs).await;
    let row = state
        .db
        .plugin(&manifest.id)
        .await?
        .ok_or(PluginFault::NotFound)?;
    Ok((row, nodes))
}

/// Deletes a plugin and removes it from the agents that are online.
pub async fn delete(state: &Arc<HubState>, viewer: &Viewer, id: &str) -> Result<(), PluginFault> {
    if !state.db.delete_plugin(id).await? {
        return Err(PluginFault::NotFound);
    }
    audit::record(&state.db, viewer, "plugin.delete", id, Outcome::Ok, "").await;
    for node in state.registry.online_nodes() {
        let (state, id) = (state.clone(), id.to_owned());
        tokio::spawn(async move {
            if let Err(err) = state
                .registry
                .call(&node, &PluginRemove { id: id.clone() })
                .await
            {
                tracing::warn!(%node, plugin = %id, %err, "could not remove a plugin");
            }
        });
    }
    Ok(())
}

/// Runs a plugin for every class, or only for classes that choose it.
pub async fn set_for_all_classes(
    state: &HubState,
    viewer: &Viewer,
    id: &str,
    all: bool,
) -> Result<(), PluginFault> {
    if !state.db.set_plugin_for_all(id, all).await? {
        return Err(PluginFault::NotFound);
    }
    let detail = if all { "all classes" } else { "chosen classes" };
    audit::record(&state.db, viewer, "plugin.scope", id, Outcome::Ok, detail).await;
    Ok(())
}

/// Sends one plugin to one agent, logging the outcome.
fn spawn_install(state: Arc<HubState>, node: String, id: String) {
    tokio::spawn(async move {
        if let Err(err) = install_on(&state, &node, &id).await {
            tracing::warn!(%node, plugin = %id, %err, "the agent did not install a plugin");
        }
    });
}

/// Sends one plugin to one agent and waits for its answer: the capabilities the node withholds
/// from it, if any.
pub async fn install_on(state: &HubState, node: &str, id: &str) -> Result<Vec<String>, String> {
    let Some((manifest, wasm, sha256)) = state
        .db
        .plugin_files(id)
        .await
        .map_err(|err| err.to_string())?
    else {
        return Ok(Vec::new());
    };
    let request = PluginInstall {
        manifest,
        wasm,
        sha256,
    };
    let installed = state
        .registry
        .call(node, &request)
        .await
        .map_err(|err| err.to_string())?;
    tracing::info!(%node, plugin = %installed.id, version = %installed.version, compile_ms = installed.compile_ms, "plugin installed");
    for reason in &installed.withheld {
        tracing::warn!(%node, plugin = %installed.id, "withheld by the node's operator: {reason}");
    }
    Ok(installed.withheld)
}

/// Pushes every plugin to each agent as it comes online, and records how the plugin steps
/// agents run on their own (after a VM's first start) went.
pub fn start_sync(state: Arc<HubState>) -> JoinHandle<()> {
    use tokio::sync::broadcast::error::RecvError;
    let mut changes = state.registry.subscribe();
    let mut events = state.registry.subscribe_events();
    tokio::spawn(async move {
        for node in state.registry.online_nodes() {
            install_all(&state, &node).await;
        }
        loop {
            tokio::select! {
                change = changes.recv() => match change {
                    Ok(change) if change.online => install_all(&state, &change.node).await,
                    Ok(_) | Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => return,
                },
                event = events.recv() => match event {
                    Ok(AgentEvent {
                        node,
                        cluster_id,
                        event: Event::PluginSteps { vmid, hook, error, findings, notices },
                    }) => {
                        let key = VmKey::new(cluster_id, vmid);
                        let report = StepsReport { hook: &hook, error: error.as_deref(), findings: &findings, notices: &notices };
                        record_steps(&state.db, &state.jobs, &node, key, report).await;
                    }
                    Ok(_) | Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => return,
                },
            }
        }
    })
}

/// How a VM's plugin steps at one hook went, as its agent reported.
struct StepsReport<'a> {
    hook: &'a str,
    error: Option<&'a str>,
    findings: &'a [PluginFinding],
    notices: &'a [PluginNotice],
}

/// Shows a failed plugin step on the class VM (and clears an earlier one once they pass),
/// and keeps what the plugins found and told the VM's user for the class and VM pages.
async fn record_steps(
    db: &crate::db::Db,
    jobs: &crate::domain::classes::jobs::JobQueue,
    node: &str,
    key: VmKey,
    report: StepsReport<'_>,
) {
    let hook = report.hook;
    if let Some(error) = report.error {
        tracing::warn!(%node, vmid = key.vmid, hook, %error, "a plugin step failed");
    }
    let mut notes: Vec<NewNote<'_>> = report
        .findings
        .iter()
        .map(|finding| NewNote {
            plugin: &finding.plugin,
            severity: &finding.severity,
            message: &finding.message,
            secret: None,
        })
        .collect();
    notes.extend(report.notices.iter().map(|notice| NewNote {
        plugin: &notice.plugin,
        severity: "notice",
        message: &notice.message,
        secret: notice.secret.as_deref(),
    }));
    let message = report
        .error
        .map(|error| format!("{hook}: {error}"))
        .unwrap_or_default();
    // Kept only while the VM is a class's (not after `before-delete` removed it).
    match db.set_class_vm_error(key, &message).await {
        Ok(Some(class_id)) => {
            if let Err(err) = db.replace_plugin_notes(key, hook, &notes).await {
                tracing::error!(%err, %key, "cannot record what plugins said");
            }
            jobs.announce(class_id);
        }
        Ok(None) => {}
        Err(err) => tracing::error!(%err, %key, "cannot record a plugin step"),
    }
}

async fn install_all(state: &Arc<HubState>, node: &str) {
    match state.db.plugins().await {
        Ok(plugins) => {
            for plugin in plugins {
                spawn_install(state.clone(), node.to_owned(), plugin.id);
            }
        }
        Err(err) => tracing::error!(%err, "cannot list plugins"),
    }
}

/// What telling an agent of a VM's student needs, owned, for a background task.
struct Teller {
    db: crate::db::Db,
    registry: crate::agents::AgentRegistry,
    jobs: crate::domain::classes::jobs::JobQueue,
}

impl Teller {
    fn new(state: &HubState) -> Self {
        Self {
            db: state.db.clone(),
            registry: state.registry.clone(),
            jobs: state.jobs.clone(),
        }
    }

    /// The node a class VM is on.
    async fn node(&self, class_id: i64, key: VmKey) -> Option<String> {
        let vms = self.db.class_vms(class_id).await.unwrap_or_default();
        vms.into_iter().find(|vm| vm.key == key).map(|vm| vm.node)
    }

    /// Records how it went: a failure shows on the class VM.
    async fn told(&self, node: &str, key: VmKey, hook: &str, error: Option<CallError>) {
        let error = error.map(|err| err.to_string());
        let report = StepsReport {
            hook,
            error: error.as_deref(),
            findings: &[],
            notices: &[],
        };
        record_steps(&self.db, &self.jobs, node, key, report).await;
    }
}

/// Tells a class VM's agent who got the VM, so its plugins can rename it, run their
/// `assigned` steps and know the student at its first start. In the background; a node
/// that is away misses it (the VM keeps its name). A failed step shows on the class VM.
pub async fn tell_assignment(state: &HubState, class_id: i64, key: VmKey, student: &str) {
    let student_facts = match plugin_settings::student_facts(state, student).await {
        Ok(facts) => facts,
        Err(err) => {
            tracing::warn!(vmid = key.vmid, %err, "plugins not told of an assignment");
            return;
        }
    };
    let request = VmAssigned {
        vmid: key.vmid,
        student: student.to_owned(),
        student_facts,
    };
    let teller = Teller::new(state);
    tokio::spawn(async move {
        let Some(node) = teller.node(class_id, key).await else {
            return;
        };
        let outcome = teller.registry.call(&node, &request).await;
        if let Ok(VmAssignedReply { name: Some(name) }) = &outcome {
            tracing::info!(vmid = key.vmid, %name, "renamed by plugins");
        }
        teller.told(&node, key, "assigned", outcome.err()).await;
    });
}

/// Tells a class VM's agent its student left it, before it is made fresh for the next one:
/// its plugins' `unassigned` steps run. A failure shows on the class VM.
pub async fn tell_unassignment(state: &HubState, node: &str, key: VmKey) {
    let outcome = state
        .registry
        .call(node, &VmUnassigned { vmid: key.vmid })
        .await;
    Teller::new(state)
        .told(node, key, "unassigned", outcome.err())
        .await;
}
