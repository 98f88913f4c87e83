//! VM operations on behalf of a user: authorization, the call to the node's agent, and the
//! audit entry, in one place for pages and the API alike.

use std::time::Duration;

use proxlab_protocol::inventory::PowerState;
use proxlab_protocol::vm_ops::{PowerAction, VmPower, VmReset};

use crate::HubState;
use crate::agents::CallError;
use crate::db::inventory::{VmFilter, VmRow};
use crate::db::{Db, DbError};
use crate::domain::access::{self, VmAction};
use crate::domain::audit::{self, Actor, Outcome};
use crate::domain::viewer::Viewer;
use crate::vm_key::VmKey;

/// How long a guest gets to shut down before the request fails (the VM keeps running).
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a VM operation did not happen.
#[derive(Debug, thiserror::Error)]
pub enum VmOpError {
    /// Missing, or not visible to the user: the same answer for both.
    #[error("there is no such VM")]
    NotFound,
    #[error("{0}")]
    NotAllowed(String),
    /// The user sees the VM but may not do this to it.
    #[error("{0}")]
    Forbidden(String),
    #[error("the node could not {action} the VM: {source}")]
    Node {
        action: &'static str,
        #[source]
        source: CallError,
    },
    #[error(transparent)]
    Db(#[from] DbError),
}

/// The VM with this id, if the viewer may see it.
pub async fn visible_vm(state: &HubState, viewer: &Viewer, key: VmKey) -> Result<VmRow, VmOpError> {
    let Some(vm) = state.db.vm(key).await? else {
        return Err(VmOpError::NotFound);
    };
    let staffs_class = match vm.class_id {
        Some(class_id) => {
            (viewer.is_staff() && state.db.is_class_owner(class_id, viewer.id).await?)
                || state.db.is_class_assistant(class_id, viewer.id).await?
        }
        None => false,
    };
    if access::can_see_vm(viewer, &vm, staffs_class) {
        Ok(vm)
    } else {
        Err(VmOpError::NotFound)
    }
}

/// Of the VMs a bare VMID could name, the ones the viewer may know about: every one for an
/// admin; for others their own VMs and their classes' VMs (also those still being made)
/// and, for staff, the templates. The rest are not theirs to learn of.
pub async fn visible_among(
    db: &Db,
    viewer: &Viewer,
    candidates: Vec<VmKey>,
) -> Result<Vec<VmKey>, DbError> {
    if viewer.is_admin() {
        return Ok(candidates);
    }
    let among = |filter: VmFilter| VmFilter {
        keys: Some(candidates.clone()),
        ..filter
    };
    let mut visible: Vec<VmKey> = db
        .find_vms(&among(VmFilter {
            visible_to: Some(viewer.id),
            ..VmFilter::default()
        }))
        .await?
        .iter()
        .map(|vm| vm.key)
        .collect();
    if access::can_see_templates(viewer) {
        let templates = db.find_vms(&among(VmFilter::templates())).await?;
        visible.extend(templates.iter().map(|vm| vm.key));
    }
    let mut not_made_yet: Vec<VmKey> = db
        .pending_assignments(viewer.id)
        .await?
        .into_iter()
        .map(|(key, _)| key)
        .collect();
    let mut staffed = db.assisted_class_ids(viewer.id).await?;
    if viewer.is_staff() {
        staffed.extend(db.owned_class_ids(viewer.id).await?);
    }
    for class_id in staffed {
        not_made_yet.extend(db.class_vms(class_id).await?.iter().map(|vm| vm.key));
    }
    visible.extend(
        not_made_yet
            .into_iter()
            .filter(|key| candidates.contains(key)),
    );
    visible.sort();
    visible.dedup();
    Ok(visible)
}

/// Asks the node's agent to do `action`; returns the power state afterwards.
pub async fn send_action(
    state: &HubState,
    vm: &VmRow,
    action: VmAction,
) -> Result<PowerState, CallError> {
    let (node, vmid) = (vm.node.as_str(), vm.vmid);
    let power = |action| VmPower { vmid, action };
    let timeout = SHUTDOWN_TIMEOUT + Duration::from_secs(30);
    let op_id = crate::agents::new_op_id();
    let reply = match action {
        VmAction::Start => {
            state
                .registry
                .call(node, &power(PowerAction::Start))
                .await?
        }
        VmAction::Stop => state.registry.call(node, &power(PowerAction::Stop)).await?,
        VmAction::Shutdown => {
            let request = power(PowerAction::Shutdown {
                timeout_secs: SHUTDOWN_TIMEOUT.as_secs() as u32,
                force_stop: false,
            });
            state
                .registry
                .call_with(node, &request, &op_id, timeout, |_| {})
                .await?
        }
        VmAction::Reset => return reset_to_base(state, vm, false).await,
    };
    Ok(reply.status)
}

/// Returns a class VM to its base (only the VM with its known identity), leaving it stopped
/// or in the power state it had; returns the power state afterwards.
async fn reset_to_base(
    state: &HubState,
    vm: &VmRow,
    stopped: bool,
) -> Result<PowerState, CallError> {
    if let (Some(number), Some(class_id)) = (vm.newer_version, vm.class_id)
        && let Some(status) =
            super::classes::publish::reset_to_version(state, vm, class_id, number, stopped).await?
    {
        return Ok(status);
    }
    let request = VmReset {
        vmid: vm.vmid,
        stopped,
        identity: vm.identity.clone(),
    };
    let timeout = SHUTDOWN_TIMEOUT + Duration::from_secs(30);
    let op_id = crate::agents::new_op_id();
    let reply = state
        .registry
        .call_with(&vm.node, &request, &op_id, timeout, |_| {})
        .await?;
    Ok(reply.status)
}

/// Runs a power action and returns the VM's power state afterwards.
pub async fn power(
    state: &HubState,
    viewer: &Viewer,
    key: VmKey,
    action: VmAction,
) -> Result<PowerState, VmOpError> {
    power_in_task(state, viewer, key, action, None).await
}

/// [`power`] as one step of a class task: its audit entry names the task.
pub async fn power_in_task(
    state: &HubState,
    viewer: &Viewer,
    key: VmKey,
    action: VmAction,
    task: Option<i64>,
) -> Result<PowerState, VmOpError> {
    let vm = match visible_vm(state, viewer, key).await {
        Ok(vm) => vm,
        Err(err) => {
            let (action, target) = (format!("vm.{}", action.as_str()), key.audit_target());
            let entry = audit::Entry::new(&action, &target, Outcome::Denied, "not visible");
            audit::record_entry(&state.db, Some(viewer), entry.in_task(task)).await;
            return Err(err);
        }
    };
    if action == VmAction::Start
        && let Err(reason) = crate::domain::quota::check_start(state, viewer, &vm).await
    {
        let (audit_action, target) = ("vm.start", key.audit_target());
        let entry = audit::Entry::new(audit_action, &target, Outcome::Denied, &reason);
        audit::record_entry(&state.db, Some(viewer), entry.in_task(task)).await;
        return Err(VmOpError::NotAllowed(reason));
    }
    power_vm(state, Actor::User(viewer), &vm, action, task).await
}

/// Runs a power action on a VM the actor may act on (checked by the caller), audited as
/// the actor's, as one step of `task` if given.
pub async fn power_vm(
    state: &HubState,
    actor: Actor<'_>,
    vm: &VmRow,
    action: VmAction,
    task: Option<i64>,
) -> Result<PowerState, VmOpError> {
    let (key, vmid) = (vm.key, vm.vmid);
    let target = key.audit_target();
    let audit_action = format!("vm.{}", action.as_str());
    let record = |outcome: Outcome, detail: String| {
        let (action, target) = (&audit_action, &target);
        async move {
            let entry = audit::Entry::new(action, target, outcome, &detail).in_task(task);
            audit::record_entry(&state.db, actor, entry).await;
        }
    };
    // The power state stored may be a moment behind the node, so the node judges that; what
    // can never work is refused here.
    if let Err(reason) = access::may_request(vm, action) {
        record(Outcome::Denied, reason.clone()).await;
        return Err(VmOpError::NotAllowed(reason));
    }
    match send_action(state, vm, action).await {
        Ok(status) => {
            // The agent's answer is newer than the inventory: show it at once.
            if let Err(err) = state
                .db
                .set_vm_status(
                    key,
                    crate::db::inventory::power_state_text(status),
                    crate::db::now_unix(),
                )
                .await
            {
                tracing::warn!(%err, vmid, "cannot record the new power state");
            }
            if status == PowerState::Running
                && let Err(err) = state.db.clear_stop_reason(key).await
            {
                tracing::warn!(%err, vmid, "cannot forget why the VM stopped");
            }
            record(Outcome::Ok, String::new()).await;
            Ok(status)
        }
        Err(source) => {
            record(Outcome::Failed, source.to_string()).await;
            Err(VmOpError::Node {
                action: action.as_str(),
                source,
            })
        }
    }
}

impl VmOpError {
    /// How the failure reads to the person who asked: a sentence, and what the node said,
    /// for staff (empty when there is nothing more to say).
    pub fn explain(&self) -> (String, String) {
        use proxlab_protocol::ErrorKind;
        match self {
            VmOpError::NotFound => ("There is no such VM.".into(), String::new()),
            VmOpError::NotAllowed(reason) | VmOpError::Forbidden(reason) => {
                (crate::text::sentence(reason), String::new())
            }
            VmOpError::Node {
                source: CallError::Remote(remote),
                ..
            } if remote.kind == ErrorKind::NotFound => (
                "The VM no longer exists on its node.".into(),
                remote.to_string(),
            ),
            VmOpError::Node {
                action,
                source: CallError::Remote(remote),
            } if remote.kind == ErrorKind::Conflict => (
                format!(
                    "The VM cannot {action} right now: it is busy (locked, or changing \
                     state). Try again in a moment."
                ),
                remote.to_string(),
            ),
            VmOpError::Node {
                source: source @ CallError::Offline(_),
                ..
            } => (
                "Its node is offline, so nothing was done.".into(),
                source.to_string(),
            ),
            VmOpError::Node {
                action,
                source: source @ CallError::Timeout { .. },
            } => (
                format!("The node did not answer in time; the VM may still {action} on its own."),
                source.to_string(),
            ),
            VmOpError::Node { action, source } => (
                format!("The node could not {action} the VM."),
                source.to_string(),
            ),
            VmOpError::Db(err) => {
                tracing::error!(%err, "a VM operation could not use the database");
                (
                    "The hub could not complete this; the error has been logged.".into(),
                    String::new(),
                )
            }
        }
    }
}

/// How a VM changes hands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handover {
    /// The default: a class VM someone else held is reset to the class base first, so the
    /// new holder never gets another person's disk.
    Fresh,
    /// The teacher chose to hand the disk on as it is.
    KeepDisk,
}

/// Assigns a VM the viewer may see to a user (`None`: takes it away from whoever has it).
/// Only a class's teachers (for its VMs) and admins; in a class, the student is enrolled
/// too, and a VM that changes hands is made fresh first unless `handover` keeps its disk.
pub async fn assign(
    state: &HubState,
    viewer: &Viewer,
    key: VmKey,
    username: Option<&str>,
    handover: Handover,
) -> Result<(), VmOpError> {
    if !viewer.is_staff() {
        return Err(VmOpError::NotFound);
    }
    let vm = visible_vm(state, viewer, key).await?;
    // Seeing a VM is not managing it: a teacher who joined another teacher's class sees
    // the VM they were given, but only the class's teachers (and admins) hand it on.
    let manages = viewer.is_admin()
        || match vm.class_id {
            Some(class_id) => state.db.is_class_owner(class_id, viewer.id).await?,
            None => false,
        };
    if !manages {
        return Err(VmOpError::Forbidden(
            "only the class's teachers or an admin can assign this VM".into(),
        ));
    }
    let Some(class_id) = vm.class_id else {
        return write_assignment(&state.db, viewer.into(), &vm, username).await;
    };
    let changes_hands = vm
        .assignee
        .as_deref()
        .is_some_and(|holder| Some(holder) != username);
    let target = key.audit_target();
    let recycle = match username {
        None => state.db.release_class_vm(key).await?,
        Some(username) => {
            let user = active_user(&state.db, username).await?;
            if changes_hands && handover == Handover::Fresh {
                reset_to_base(state, &vm, true)
                    .await
                    .map_err(|source| VmOpError::Node {
                        action: "reset",
                        source,
                    })?;
            }
            let freed = state
                .db
                .join_class_with_vm(class_id, user.id, key, crate::db::now_unix())
                .await?;
            crate::domain::plugins::tell_assignment(state, class_id, key, &user.username).await;
            freed
        }
    };
    let detail = match (username, handover) {
        (None, _) => String::new(),
        (Some(name), Handover::KeepDisk) if changes_hands => format!("{name}, disk kept"),
        (Some(name), _) => name.to_owned(),
    };
    let action = if username.is_some() {
        "vm.assign"
    } else {
        "vm.unassign"
    };
    audit::record(&state.db, viewer, action, &target, Outcome::Ok, &detail).await;
    if recycle {
        crate::domain::classes::start_recycling(state, viewer, class_id)
            .await
            .map_err(|err| VmOpError::NotAllowed(err.to_string()))?;
    }
    state.jobs.announce(class_id);
    Ok(())
}

/// `proxlab-hub vm assign|unassign` at the command line: the operator may assign any VM
/// that is not a class's, with the same checks and audit as the portal. Class VMs change
/// hands on their class page (or through the API), where the hub resets their disks and
/// keeps the roster.
pub async fn assign_as_operator(
    db: &Db,
    key: VmKey,
    username: Option<&str>,
) -> Result<(), VmOpError> {
    let vm = db.vm(key).await?.ok_or(VmOpError::NotFound)?;
    let vmid = vm.vmid;
    if let Some(class_id) = vm.class_id {
        return Err(VmOpError::NotAllowed(format!(
            "VM {vmid} belongs to class {class_id}: assign it on the class's page or through \
             the API, which resets its disk for its new holder"
        )));
    }
    if username.is_none() && vm.assignee.is_none() {
        return Err(VmOpError::NotAllowed(format!(
            "VM {vmid} is not assigned to anyone"
        )));
    }
    write_assignment(db, Actor::Operator, &vm, username).await
}

async fn active_user(db: &Db, username: &str) -> Result<crate::db::users::UserRow, VmOpError> {
    db.user_by_name(username)
        .await?
        .filter(|user| !user.disabled)
        .ok_or_else(|| VmOpError::NotAllowed(format!("no active user named {username}")))
}

/// Gives a VM outside any class to `username` (or takes it away), and records it.
async fn write_assignment(
    db: &Db,
    actor: Actor<'_>,
    vm: &VmRow,
    username: Option<&str>,
) -> Result<(), VmOpError> {
    let key = vm.key;
    let target = key.audit_target();
    let Some(username) = username else {
        db.unassign_vm(key).await?;
        audit::record(db, actor, "vm.unassign", &target, Outcome::Ok, "").await;
        return Ok(());
    };
    let user = active_user(db, username).await?;
    let assigned_by = match actor {
        Actor::User(viewer) => Some(viewer.id),
        Actor::Anonymous | Actor::Operator | Actor::Automatic(_) => None,
    };
    db.assign_vm(key, user.id, assigned_by, crate::db::now_unix())
        .await?;
    audit::record(db, actor, "vm.assign", &target, Outcome::Ok, username).await;
    Ok(())
}
