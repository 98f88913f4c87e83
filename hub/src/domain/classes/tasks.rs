//! Bulk actions on a class's VMs, kept as tasks: each run is a row in the class's task log
//! with the result for every VM (like Proxmox's task list), and its audit entries name the
//! task so the audit log shows them as one group.

use std::future::Future;

use proxlab_protocol::inventory::PowerState;
use tokio::sync::broadcast;

use crate::HubState;
use crate::db::classes::ClassVmRow;
use crate::db::inventory::VmRow;
use crate::db::now_unix;
use crate::db::states::{ClassVmKind, ClassVmState};
use crate::db::tasks::{TaskResultRow, TaskRow};
use crate::domain::access::VmAction;
use crate::domain::audit::Actor;
use crate::domain::viewer::Viewer;
use crate::domain::vms::{self, VmOpError};
use crate::vm_key::{VmKey, VmRef};

use super::{ClassError, class_in_view, class_vm_named};

/// Which VMs of the class a bulk action is for. There is no default: nothing chosen is a
/// question back to the teacher, never "all".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    All,
    Vms(Vec<VmRef>),
}

/// A task and what it did to each VM.
#[derive(Debug, Clone)]
pub struct TaskReport {
    pub task: TaskRow,
    pub results: Vec<TaskResultRow>,
}

/// Runs `action` on the chosen ready VMs of the class (never its base) at once, and records
/// the task. Returns the task's id.
pub async fn run_bulk(
    state: &HubState,
    viewer: &Viewer,
    class_id: i64,
    action: VmAction,
    selection: &Selection,
) -> Result<i64, ClassError> {
    // Power actions on the class's VMs are what assistants are there for.
    class_in_view(state, viewer, class_id).await?;
    let rows = state.db.class_vms(class_id).await?;
    let chosen: Vec<&ClassVmRow> = match selection {
        Selection::All => rows.iter().collect(),
        Selection::Vms(chosen) => {
            let mut named = Vec::with_capacity(chosen.len());
            for vm in chosen {
                named.extend(class_vm_named(&rows, *vm)?);
            }
            named
        }
    };
    let mut vmids: Vec<VmKey> = chosen
        .into_iter()
        .filter(|vm| vm.kind != ClassVmKind::Base && vm.state == ClassVmState::Ready)
        .map(|vm| vm.key)
        .collect();
    vmids.sort();
    vmids.dedup();
    if vmids.is_empty() {
        return Err(ClassError::Invalid(
            "none of the chosen VMs is ready for this".into(),
        ));
    }
    let power = |vmid, task| vms::power_in_task(state, viewer, vmid, action, Some(task));
    run_task(state, class_id, action, &viewer.username, &vmids, power).await
}

/// The class's student VMs that are made and in the inventory, as the inventory has them.
pub async fn student_vms(state: &HubState, class_id: i64) -> Result<Vec<VmRow>, ClassError> {
    let mut vms = Vec::new();
    for row in state.db.class_vms(class_id).await? {
        if row.kind == ClassVmKind::Student
            && row.state == ClassVmState::Ready
            && let Some(vm) = state.db.vm(row.key).await?
        {
            vms.push(vm);
        }
    }
    Ok(vms)
}

/// Runs `action` on the class's student VMs that are ready and not already where the
/// action takes them, as the hub by `rule` (a schedule, say). Returns the task's id, or
/// `None` when no VM needed it. A stop is a shutdown, and a power-off where the guest does
/// not shut down in time.
pub async fn run_automatic(
    state: &HubState,
    class_id: i64,
    action: VmAction,
    rule: &'static str,
) -> Result<Option<i64>, ClassError> {
    let vmids: Vec<VmKey> = student_vms(state, class_id)
        .await?
        .into_iter()
        .filter(|vm| (vm.status != PowerState::Stopped) == (action == VmAction::Stop))
        .map(|vm| vm.key)
        .collect();
    if vmids.is_empty() {
        return Ok(None);
    }
    run_automatic_on(state, class_id, &vmids, action, rule)
        .await
        .map(Some)
}

/// Runs `action` on the given VMs of the class as one task, as the hub by `rule`; returns
/// the task's id. A stop is a shutdown, and a power-off where the guest does not shut down
/// in time.
pub async fn run_automatic_on(
    state: &HubState,
    class_id: i64,
    vmids: &[VmKey],
    action: VmAction,
    rule: &'static str,
) -> Result<i64, ClassError> {
    let power = |vmid, task| async move {
        let vm = state.db.vm(vmid).await?.ok_or(VmOpError::NotFound)?;
        let actor = Actor::Automatic(rule);
        if action != VmAction::Stop {
            return vms::power_vm(state, actor, &vm, action, Some(task)).await;
        }
        match vms::power_vm(state, actor, &vm, VmAction::Shutdown, Some(task)).await {
            Err(VmOpError::Node { .. }) => {
                vms::power_vm(state, actor, &vm, VmAction::Stop, Some(task)).await
            }
            done => done,
        }
    };
    run_task(state, class_id, action, rule, vmids, power).await
}

/// Stops the given VMs of the class as one task by `rule`, each with the reason its tile
/// shows once it is stopped; a VM that does not stop loses its reason again. Returns the
/// task's id.
pub async fn stop_with_reasons(
    state: &HubState,
    class_id: i64,
    stops: &[(VmKey, String)],
    rule: &'static str,
    now: i64,
) -> Result<i64, ClassError> {
    for (vmid, reason) in stops {
        state.db.set_stop_reason(*vmid, reason, now).await?;
    }
    let vmids: Vec<VmKey> = stops.iter().map(|(vmid, _)| *vmid).collect();
    let task = run_automatic_on(state, class_id, &vmids, VmAction::Stop, rule).await;
    let failed: Vec<VmKey> = match &task {
        Ok(task) => state
            .db
            .task_results(*task)
            .await?
            .into_iter()
            .filter(|result| !result.ok)
            .map(|result| result.key)
            .collect(),
        Err(_) => vmids,
    };
    for vmid in failed {
        state.db.clear_stop_reason(vmid).await?;
    }
    task
}

/// How long a task waits for VMs its class has just made to reach the inventory.
const INVENTORY_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Waits (a little) until the inventory holds each VM: a class VM is ready once its node
/// made it, and the node's report of it may arrive a moment later. A VM still missing after
/// [`INVENTORY_WAIT`] is left to fail as missing.
async fn in_inventory(state: &HubState, vmids: &[VmKey]) {
    let mut changes = state.inventory_changes.subscribe();
    let wait = async {
        loop {
            let mut missing = false;
            for vmid in vmids {
                missing |= matches!(state.db.vm(*vmid).await, Ok(None));
            }
            if !missing {
                return;
            }
            if let Err(broadcast::error::RecvError::Closed) = changes.recv().await {
                return;
            }
        }
    };
    let _ = tokio::time::timeout(INVENTORY_WAIT, wait).await;
}

/// Runs `power` on every VM at once as one task of the class, recording each result.
async fn run_task<F, Fut>(
    state: &HubState,
    class_id: i64,
    action: VmAction,
    started_by: &str,
    vmids: &[VmKey],
    power: F,
) -> Result<i64, ClassError>
where
    F: Fn(VmKey, i64) -> Fut,
    Fut: Future<Output = Result<PowerState, VmOpError>>,
{
    in_inventory(state, vmids).await;
    let task_id = state
        .db
        .insert_task(
            class_id,
            action.as_str(),
            started_by,
            vmids.len(),
            now_unix(),
        )
        .await?;
    let runs = vmids.iter().map(|vmid| power(*vmid, task_id));
    let outcomes = futures_util::future::join_all(runs).await;
    for (vmid, outcome) in vmids.iter().zip(outcomes) {
        let result = match outcome {
            Ok(status) => TaskResultRow {
                key: *vmid,
                vmid: vmid.vmid,
                ok: true,
                message: format!(
                    "Done: it is {}.",
                    crate::db::inventory::power_state_text(status)
                ),
                detail: String::new(),
            },
            Err(err) => {
                let (message, detail) = err.explain();
                TaskResultRow {
                    key: *vmid,
                    vmid: vmid.vmid,
                    ok: false,
                    message,
                    detail,
                }
            }
        };
        state.db.insert_task_result(task_id, &result).await?;
    }
    state.db.finish_task(task_id, now_unix()).await?;
    Ok(task_id)
}

/// The newest tasks of a class the viewer owns.
pub async fn recent(
    state: &HubState,
    viewer: &Viewer,
    class_id: i64,
    limit: u32,
) -> Result<Vec<TaskRow>, ClassError> {
    class_in_view(state, viewer, class_id).await?;
    Ok(state.db.class_tasks(class_id, limit).await?)
}

/// One task of a class the viewer owns, with its results.
pub async fn report(
    state: &HubState,
    viewer: &Viewer,
    class_id: i64,
    task_id: i64,
) -> Result<TaskReport, ClassError> {
    class_in_view(state, viewer, class_id).await?;
    let task = state
        .db
        .class_task(class_id, task_id)
        .await
        .map_err(|err| match err {
            crate::db::DbError::NotFound => ClassError::NotFound,
            other => other.into(),
        })?;
    let results = state.db.task_results(task_id).await?;
    Ok(TaskReport { task, results })
}
