//! Keeps every agent's idle policies in step with the classes (on connect, and whenever a
//! class changes), and turns what agents report into notices, audit entries and tile reasons.

use std::collections::BTreeMap;
use std::sync::Arc;

use proxlab_protocol::Event;
use proxlab_protocol::idle::{IdleOutcome, IdlePolicies, IdleReason, IdleStop, VmIdlePolicy};
use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinHandle;

use super::{IdleSettings, idle_because, notice_key, stopped_because};
use crate::HubState;
use crate::agents::AgentEvent;
use crate::db::idle::IdleStopRow;
use crate::db::now_unix;
use crate::domain::audit::{self, Actor, Outcome};
use crate::domain::notices::Notice;
use crate::inventory::InventoryChange;
use crate::vm_key::VmKey;

/// The actor automatic idle shutdowns are recorded under.
pub const ACTOR: &str = "idle shutdown";

/// Starts the tasks that push policies and record reports; the handle ends both. They are
/// apart so a node slow to take its policies never holds up what the others report.
pub fn start(state: Arc<HubState>) -> JoinHandle<()> {
    let mut events = state.registry.subscribe_events();
    let recorder_state = state.clone();
    let recorder = tokio::spawn(async move {
        loop {
            match events.recv().await {
                Ok(AgentEvent {
                    node,
                    cluster_id,
                    event,
                }) => on_event(&recorder_state, &node, cluster_id, event).await,
                Err(RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "idle: agent events were missed");
                }
                Err(RecvError::Closed) => return,
            }
        }
    });
    let pusher = push_policies(state);
    tokio::spawn(async move {
        // Aborting this task drops both handles, which ends both tasks.
        let _recorder = AbortOnDrop(recorder);
        let mut pusher = AbortOnDrop(pusher);
        let _ = (&mut pusher.0).await;
    })
}

/// Aborts a task when dropped.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Sends the nodes their policies: all of them on start, a node's on its (re)connect, the
/// changed ones on a class change.
fn push_policies(state: Arc<HubState>) -> JoinHandle<()> {
    let mut node_changes = state.registry.subscribe();
    let mut class_changes = state.jobs.subscribe();
    tokio::spawn(async move {
        // What each node was last sent, so a class change reaches only the nodes it changes.
        let mut sent: BTreeMap<String, IdlePolicies> = BTreeMap::new();
        push_changed(&state, &mut sent).await;
        loop {
            tokio::select! {
                change = node_changes.recv() => match change {
                    Ok(change) => {
                        // A node that (re)connects is sent its policies whatever it had.
                        sent.remove(&change.node);
                        if change.online {
                            push_changed(&state, &mut sent).await;
                        }
                    }
                    Err(RecvError::Lagged(_)) => {
                        sent.clear();
                        push_changed(&state, &mut sent).await;
                    }
                    Err(RecvError::Closed) => return,
                },
                change = class_changes.recv() => match change {
                    Ok(_) | Err(RecvError::Lagged(_)) => push_changed(&state, &mut sent).await,
                    Err(RecvError::Closed) => return,
                },
            }
        }
    })
}

/// Every node's policies, from the classes' settings and VMs.
async fn policies_by_node(state: &HubState) -> Option<BTreeMap<String, IdlePolicies>> {
    let rows = match state.db.idle_policy_vms().await {
        Ok(rows) => rows,
        Err(err) => {
            tracing::error!(%err, "idle: cannot read the policies");
            return None;
        }
    };
    let mut by_node: BTreeMap<String, IdlePolicies> = BTreeMap::new();
    for (node, vmid, row) in rows {
        if let Some(policy) = IdleSettings::from_row(&row).policy() {
            by_node
                .entry(node)
                .or_default()
                .vms
                .push(VmIdlePolicy { vmid, policy });
        }
    }
    Some(by_node)
}

/// Sends each online node its policies when they differ from what it was last sent, to all
/// such nodes at once.
async fn push_changed(state: &HubState, sent: &mut BTreeMap<String, IdlePolicies>) {
    let Some(mut by_node) = policies_by_node(state).await else {
        return;
    };
    let changed: Vec<(String, IdlePolicies)> = state
        .registry
        .online_nodes()
        .into_iter()
        .map(|node| {
            let policies = by_node.remove(&node).unwrap_or_default();
            (node, policies)
        })
        .filter(|(node, policies)| sent.get(node) != Some(policies))
        .collect();
    let sends = changed.into_iter().map(|(node, policies)| async move {
        let delivered = send(state, &node, &policies).await;
        (node, policies, delivered)
    });
    for (node, policies, delivered) in futures_util::future::join_all(sends).await {
        if delivered {
            sent.insert(node, policies);
        }
    }
}

/// Sends every online node its policies now, and waits for their answers: a teacher who
/// saves settings knows the nodes have them (a node that is away gets them when it is back).
pub async fn push_now(state: &HubState) {
    let Some(mut by_node) = policies_by_node(state).await else {
        return;
    };
    let sends = state.registry.online_nodes().into_iter().map(|node| {
        let policies = by_node.remove(&node).unwrap_or_default();
        async move { send(state, &node, &policies).await }
    });
    futures_util::future::join_all(sends).await;
}

async fn send(state: &HubState, node: &str, policies: &IdlePolicies) -> bool {
    match state.registry.call(node, policies).await {
        Ok(_) => {
            tracing::debug!(%node, vms = policies.vms.len(), "idle: policies sent");
            true
        }
        Err(err) => {
            tracing::warn!(%node, %err, "idle: cannot send the policies");
            false
        }
    }
}

async fn on_event(state: &HubState, node: &str, cluster_id: i64, event: Event) {
    let key = |vmid| VmKey::new(cluster_id, vmid);
    match event {
        Event::IdleWarning {
            vmid,
            reason,
            secs_left,
            ..
        } => warn(state, key(vmid), reason, secs_left).await,
        Event::IdleCleared { vmid } => state.notices.withdraw(&notice_key(key(vmid))),
        Event::IdleStopped { stop } => record_stop(state, node, key(stop.vmid), stop).await,
        _ => {}
    }
}

/// Tells the VM's user (and the class's owners) it stops soon unless they are still there.
async fn warn(state: &HubState, vm: VmKey, reason: IdleReason, secs_left: u32) {
    let Ok(Some(class_id)) = state.db.class_of_vm(vm).await else {
        return;
    };
    let user_ids: Vec<i64> = match state.db.class_assignees(class_id).await {
        Ok(assignees) => assignees
            .into_iter()
            .filter(|(assigned, _)| *assigned == vm)
            .map(|(_, user)| user)
            .collect(),
        Err(err) => {
            tracing::warn!(%err, %vm, "idle: cannot find the VM's user");
            return;
        }
    };
    // The node's clock may differ from the hub's: its time left is what counts.
    let now = now_unix();
    let at = now + i64::from(secs_left);
    let minutes = u64::from(secs_left).div_ceil(60);
    let message = format!(
        "This VM shuts down in {minutes} min because {}. Save your work, or say you are \
         still here.",
        idle_because(reason)
    );
    state.notices.publish(
        Notice {
            key: notice_key(vm),
            user_ids,
            class_id,
            vmids: vec![vm],
            message,
            at,
            still_here: Some(vm),
            withdrawn: false,
        },
        now,
    );
}

/// Records a shutdown an agent did (once, however often it is reported).
async fn record_stop(state: &HubState, node: &str, vm: VmKey, stop: IdleStop) {
    state.notices.withdraw(&notice_key(vm));
    let class_id = state.db.class_of_vm(vm).await.ok().flatten();
    let (outcome, message) = match &stop.outcome {
        IdleOutcome::ShutDown => ("shut-down", String::new()),
        IdleOutcome::PoweredOff => ("powered-off", String::new()),
        IdleOutcome::Failed { message } => ("failed", message.clone()),
    };
    let row = IdleStopRow {
        id: stop.id.clone(),
        vm: Some(vm),
        vmid: stop.vmid,
        node: node.to_owned(),
        class_id,
        reason: stop.reason.as_str().to_owned(),
        idle_secs: i64::from(stop.idle_secs),
        at: i64::try_from(stop.at_unix).unwrap_or(i64::MAX),
        outcome: outcome.to_owned(),
        message: message.clone(),
    };
    match state.db.record_idle_stop(&row).await {
        Ok(true) => {}
        Ok(false) => return,
        Err(err) => {
            tracing::error!(%err, vmid = stop.vmid, "idle: cannot record a shutdown");
            return;
        }
    }
    let because = stopped_because(stop.reason, row.idle_secs);
    let (audit_outcome, detail) = match &stop.outcome {
        IdleOutcome::ShutDown => (Outcome::Ok, because.clone()),
        IdleOutcome::PoweredOff => (
            Outcome::Ok,
            format!("{because}; the guest ignored the shutdown and was powered off"),
        ),
        IdleOutcome::Failed { message } => (Outcome::Failed, format!("{because}: {message}")),
    };
    let target = vm.audit_target();
    let entry = audit::Entry::new("vm.shutdown", &target, audit_outcome, &detail);
    audit::record_entry(&state.db, Actor::Automatic(ACTOR), entry).await;
    if !matches!(stop.outcome, IdleOutcome::Failed { .. })
        && let Err(err) = state.db.set_stop_reason(vm, &because, row.at).await
    {
        tracing::warn!(%err, vmid = stop.vmid, "idle: cannot record why the VM stopped");
    }
    // Pages show the tile's new reason at once (the node may have reported the VM stopped
    // before it reported why).
    let _ = state.inventory_changes.send(InventoryChange {
        node: node.to_owned(),
        vms: vec![vm],
    });
    if let Some(class_id) = class_id {
        state.jobs.announce(class_id);
    }
}
