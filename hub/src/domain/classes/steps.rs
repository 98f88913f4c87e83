//! What the class jobs' steps share: how long a base copy may take, how a step fails, and
//! how a class VM's state is recorded and announced.

use std::time::Duration;

use crate::HubState;
use crate::agents::CallError;
use crate::db::now_unix;
use crate::db::states::ClassVmState;

/// The longest a base copy may take.
pub(super) const BASE_TIMEOUT: Duration = Duration::from_secs(3600);

/// A job step failed in a way worth reporting; the message is for teachers.
pub(super) type StepResult<T> = Result<T, String>;

/// The node went away mid-call: not the VM's fault, and not an attempt.
pub(super) fn is_link_failure(err: &CallError) -> bool {
    matches!(
        err,
        CallError::Offline(_) | CallError::Link { .. } | CallError::Timeout { .. }
    )
}

pub(super) async fn mark(
    state: &HubState,
    class_id: i64,
    vm: crate::vm_key::VmKey,
    to: ClassVmState,
    error: &str,
    attempt: bool,
) {
    if let Err(err) = state
        .db
        .set_class_vm_state(vm, to, error, attempt, now_unix())
        .await
    {
        tracing::error!(%err, %vm, "cannot record a class VM's state");
    }
    state.jobs.announce(class_id);
}
