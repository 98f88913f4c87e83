//! Bulk actions on a class's VMs, kept as tasks: each run is a row in the class's task log
//! with the result for every VM (like Proxmox's task list), and its audit entries name the
//! task so the audit log shows them as one group.

use crate::HubState;
use crate::db::now_unix;
use crate::db::states::{ClassVmKind, ClassVmState};
use crate::db::tasks::{TaskResultRow, TaskRow};
use crate::domain::access::VmAction;
use crate::domain::viewer::Viewer;
use crate::domain::vms;

use super::{ClassError, owned_class};

/// Which VMs of the class a bulk action is for. There is no default: nothing chosen is a
/// question back to the teacher, never "all".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    All,
    Vms(Vec<u32>),
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
    owned_class(state, viewer, class_id).await?;
    let vmids: Vec<u32> = state
        .db
        .class_vms(class_id)
        .await?
        .into_iter()
        .filter(|vm| vm.kind != ClassVmKind::Base && vm.state == ClassVmState::Ready)
        .map(|vm| vm.vmid)
        .filter(|vmid| match selection {
            Selection::All => true,
            Selection::Vms(chosen) => chosen.contains(vmid),
        })
        .collect();
    if vmids.is_empty() {
        return Err(ClassError::Invalid(
            "none of the chosen VMs is ready for this".into(),
        ));
    }
    let task_id = state
        .db
        .insert_task(
            class_id,
            action.as_str(),
            &viewer.username,
            vmids.len(),
            now_unix(),
        )
        .await?;
    let runs = vmids
        .iter()
        .map(|vmid| vms::power_in_task(state, viewer, *vmid, action, Some(task_id)));
    let outcomes = futures_util::future::join_all(runs).await;
    for (vmid, outcome) in vmids.iter().zip(outcomes) {
        let result = match outcome {
            Ok(status) => TaskResultRow {
                vmid: *vmid,
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
                    vmid: *vmid,
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
    owned_class(state, viewer, class_id).await?;
    Ok(state.db.class_tasks(class_id, limit).await?)
}

/// One task of a class the viewer owns, with its results.
pub async fn report(
    state: &HubState,
    viewer: &Viewer,
    class_id: i64,
    task_id: i64,
) -> Result<TaskReport, ClassError> {
    owned_class(state, viewer, class_id).await?;
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
