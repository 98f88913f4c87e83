//! Copying a class base to a node that cannot reach the first base's disks (node-local
//! storage): the hub reads the base's images from its node chunk by chunk and writes them on
//! the other, reading the next chunk while the last is written, then has that node register
//! the copy as a base of its own. See `proxlab_protocol::base_copy`.

use proxlab_protocol::base_copy::{BaseExport, BaseImport, BaseRead, BaseWrite, Chunk};

use super::steps::{BASE_TIMEOUT, StepResult, is_link_failure, mark};
use crate::HubState;
use crate::agents::CallError;
use crate::db::classes::MAX_ATTEMPTS;
use crate::db::classes::{ClassRow, ClassVmRow};
use crate::db::states::ClassVmState;

/// Makes `target` (a base on another node) a copy of the ready base `source`, with its
/// images on `storage` there.
pub(super) async fn copy_base(
    state: &HubState,
    class: &ClassRow,
    source: &ClassVmRow,
    target: &ClassVmRow,
    name: &str,
    storage: &str,
) -> StepResult<()> {
    if target.attempts >= MAX_ATTEMPTS {
        return Err(format!(
            "the class base could not be copied to node {}: {}",
            target.node, target.error
        ));
    }
    // Copied before a restart, but not yet recorded.
    if let Ok(Some(vm)) = state.db.vm(target.vmid).await
        && vm.template
    {
        mark(state, class.id, target.vmid, ClassVmState::Ready, "", false).await;
        return Ok(());
    }
    state.registry.wait_for(&source.node, true).await;
    state.registry.wait_for(&target.node, true).await;
    match transfer(state, source, target, name, storage).await {
        Ok(()) => mark(state, class.id, target.vmid, ClassVmState::Ready, "", true).await,
        // Started again from the beginning when both nodes are back.
        Err(err) if is_link_failure(&err) => {}
        Err(err) => {
            let error = format!("copying the base to node {}: {err}", target.node);
            mark(
                state,
                class.id,
                target.vmid,
                ClassVmState::Failed,
                &error,
                true,
            )
            .await;
        }
    }
    Ok(())
}

async fn transfer(
    state: &HubState,
    source: &ClassVmRow,
    target: &ClassVmRow,
    name: &str,
    storage: &str,
) -> Result<(), CallError> {
    let registry = &state.registry;
    let export = registry
        .call(
            &source.node,
            &BaseExport {
                base_vmid: source.vmid,
            },
        )
        .await?;
    let read = |disk: u32, offset: u64| async move {
        let request = BaseRead {
            base_vmid: source.vmid,
            disk,
            offset,
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
        registry.call(&target.node, &request).await
    };
    for (disk, image) in (0u32..).zip(&export.disks) {
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
    }
    let import = BaseImport {
        base_vmid: target.vmid,
        name: name.to_owned(),
        storage: storage.to_owned(),
        config: export.config,
        disks: export.disks.iter().map(|disk| disk.bytes).collect(),
    };
    registry
        .call_with(
            &target.node,
            &import,
            &crate::agents::new_op_id(),
            BASE_TIMEOUT,
            |_| {},
        )
        .await
        .map(drop)
}
