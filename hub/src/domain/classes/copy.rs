//! Copying a class base to a node that cannot reach the first base's disks (node-local
//! storage): the hub reads the base's images from its node chunk by chunk and writes them on
//! the other, reading the next chunk while the last is written, then has that node register
//! the copy as a base of its own. When both nodes hold copies of an older base (a class's
//! previous version), only the difference to it travels. See `proxlab_protocol::base_copy`.

use proxlab_protocol::base_copy::{
    BaseExport, BaseImport, BaseRead, BaseReceive, BaseSend, BaseWrite, Chunk,
};

use super::steps::{BASE_TIMEOUT, StepResult, is_link_failure, mark};
use crate::HubState;
use crate::agents::CallError;
use crate::agents::relay::ImageCopy;
use crate::db::classes::MAX_ATTEMPTS;
use crate::db::classes::{ClassRow, ClassVmRow};
use crate::db::states::ClassVmState;

/// An older base both nodes of a copy hold: its VMID on the sending node and on the
/// receiving one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Reference {
    pub on_source: u32,
    pub on_target: u32,
}

/// Makes `target` (a base on another node) a copy of the ready base `source`, with its
/// images on `storage` there; with a `reference`, only the difference to it is sent.
/// Returns the bytes sent, when it was this call that copied.
pub(super) async fn copy_base(
    state: &HubState,
    class: &ClassRow,
    source: &ClassVmRow,
    target: &ClassVmRow,
    name: &str,
    storage: &str,
    reference: Option<Reference>,
) -> StepResult<Option<u64>> {
    if target.attempts >= MAX_ATTEMPTS {
        return Err(format!(
            "the class base could not be copied to node {}: {}",
            target.node, target.error
        ));
    }
    // Copied before a restart, but not yet recorded.
    if let Ok(Some(vm)) = state.db.vm(target.key).await
        && vm.template
    {
        mark(state, class.id, target.key, ClassVmState::Ready, "", false).await;
        return Ok(None);
    }
    state.registry.wait_for(&source.node, true).await;
    state.registry.wait_for(&target.node, true).await;
    match transfer(state, source, target, name, storage, reference, false).await {
        Ok(sent) => {
            mark(state, class.id, target.key, ClassVmState::Ready, "", true).await;
            return Ok(Some(sent));
        }
        // Started again from the beginning when both nodes are back.
        Err(err) if is_link_failure(&err) => {}
        Err(err) => {
            let error = format!("copying the base to node {}: {err}", target.node);
            mark(
                state,
                class.id,
                target.key,
                ClassVmState::Failed,
                &error,
                true,
            )
            .await;
        }
    }
    Ok(None)
}

/// Makes `target` a copy of what the stopped teacher VM holds, sending only its overlays on
/// the older base `reference` (which both nodes have): the teacher VM's disks are the new
/// version, so this runs while its own node makes the new base from the same disks. Returns
/// the bytes sent. A failure is returned, not recorded: the publish then copies the new
/// base the usual way.
pub(super) async fn copy_from_teacher(
    state: &HubState,
    class: &ClassRow,
    teacher: &ClassVmRow,
    target: &ClassVmRow,
    name: &str,
    storage: &str,
    reference: Reference,
) -> Result<u64, String> {
    if let Ok(Some(vm)) = state.db.vm(target.key).await
        && vm.template
    {
        mark(state, class.id, target.key, ClassVmState::Ready, "", false).await;
        return Ok(0);
    }
    state.registry.wait_for(&teacher.node, true).await;
    state.registry.wait_for(&target.node, true).await;
    let sent = transfer(state, teacher, target, name, storage, Some(reference), true)
        .await
        .map_err(|err| err.to_string())?;
    mark(state, class.id, target.key, ClassVmState::Ready, "", true).await;
    Ok(sent)
}

/// Copies the base (or with `from_vm`, the stopped VM `source` as a base); returns the bytes
/// sent.
async fn transfer(
    state: &HubState,
    source: &ClassVmRow,
    target: &ClassVmRow,
    name: &str,
    storage: &str,
    reference: Option<Reference>,
    from_vm: bool,
) -> Result<u64, CallError> {
    let registry = &state.registry;
    let diff_against = reference.map(|reference| reference.on_source);
    let export = registry
        .call(
            &source.node,
            &BaseExport {
                base_vmid: source.vmid,
                diff_against,
                from_vm,
            },
        )
        .await?;
    let read = |disk: u32, offset: u64| async move {
        let request = BaseRead {
            base_vmid: source.vmid,
            disk,
            offset,
            diff_against,
            from_vm,
        };
        registry.call(&source.node, &request).await
    };
    let write = |disk: u32, offset: u64, chunk: Chunk| async move {
        let request = BaseWrite {
            base_vmid: target.vmid,
            storage: storage.to_owned(),
            disk,
            offset,
            chunk,
        };
        let written = registry.call(&target.node, &request).await;
        if written.is_ok() {
            crate::metrics::metrics().base_copied(u64::from(request.chunk.len));
        }
        written
    };
    let streams = registry.streams_images(&source.node) && registry.streams_images(&target.node);
    let mut sent = 0;
    for (disk, image) in (0u32..).zip(&export.disks) {
        if streams {
            let copy = ImageCopy {
                source_node: source.node.clone(),
                send: BaseSend {
                    base_vmid: source.vmid,
                    disk,
                    offset: 0,
                    diff_against,
                    from_vm,
                    lane: None,
                },
                target_node: target.node.clone(),
                receive: BaseReceive {
                    base_vmid: target.vmid,
                    storage: storage.to_owned(),
                    disk,
                    bytes: image.bytes,
                    // The same image of the same export: what a cut-off copy of it left on
                    // the target is resumed, never what another copy left.
                    copy_id: format!(
                        "{}:{}:{}:{from_vm}:{disk}:{}",
                        source.node,
                        source.vmid,
                        diff_against.unwrap_or(0),
                        image.bytes
                    ),
                    lane: None,
                },
            };
            let copied = registry.copy_image(copy).await?;
            if copied.resumed_at > 0 {
                tracing::info!(
                    node = %target.node, base = target.vmid, disk,
                    resumed_at = copied.resumed_at, "resumed a base copy"
                );
            }
            sent += copied.sent;
            continue;
        }
        let mut offset = 0;
        let mut chunk = read(disk, offset).await?;
        loop {
            let len = u64::from(chunk.len);
            if len == 0 || offset + len >= image.bytes {
                write(disk, offset, chunk).await?;
                break;
            }
            let (written, next) =
                tokio::join!(write(disk, offset, chunk), read(disk, offset + len));
            written?;
            chunk = next?;
            offset += len;
        }
        sent += image.bytes;
    }
    let diff_of: Vec<Option<String>> = export
        .disks
        .iter()
        .map(|disk| disk.diff_of.clone())
        .collect();
    let differences = diff_of.iter().any(Option::is_some);
    let import = BaseImport {
        base_vmid: target.vmid,
        name: name.to_owned(),
        storage: storage.to_owned(),
        config: export.config,
        disks: export.disks.iter().map(|disk| disk.bytes).collect(),
        diff_of: if differences { diff_of } else { Vec::new() },
        reference: reference
            .filter(|_| differences)
            .map(|reference| reference.on_target),
    };
    registry
        .call_with(
            &target.node,
            &import,
            &crate::agents::new_op_id(),
            BASE_TIMEOUT,
            |_| {},
        )
        .await?;
    Ok(sent)
}
