//! Feeds the [`Meter`] with what agents report and stores the runs it changes: inventories
//! (on every connect: what runs now, with uptimes; what is stopped), deltas (a VM started or
//! stopped) and metrics (every running VM's uptime, every 10 s).

use std::sync::Arc;

use proxlab_protocol::Event;
use proxlab_protocol::inventory::{PowerState, VmInfo};
use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinHandle;

use super::meter::{Meter, Run, Seen};
use crate::HubState;
use crate::agents::AgentEvent;
use crate::db::now_unix;
use crate::vm_key::VmKey;

/// Starts metering: resumes the runs stored as open, then follows the agents' reports.
pub fn start(state: Arc<HubState>) -> JoinHandle<()> {
    // Subscribed before the stored runs are read, so no report falls in between.
    let mut events = state.registry.subscribe_events();
    tokio::spawn(async move {
        let open = match state.db.open_runs().await {
            Ok(open) => open,
            Err(err) => {
                tracing::error!(%err, "quota: cannot read the open runs; metering from now");
                Vec::new()
            }
        };
        let mut meter = Meter::resume(open);
        loop {
            match events.recv().await {
                Ok(AgentEvent {
                    node,
                    cluster_id,
                    event,
                }) => {
                    let changed = fold(&mut meter, &node, cluster_id, &event, now_unix());
                    if let Err(err) = state.db.store_runs(&node, &changed).await {
                        tracing::error!(%err, %node, "quota: cannot store metered runs");
                    }
                }
                Err(RecvError::Lagged(missed)) => {
                    // The next inventory or metrics report of each node puts it right: a run
                    // is known by its boot, not by the reports in between.
                    tracing::warn!(missed, "quota: the meter fell behind");
                }
                Err(RecvError::Closed) => return,
            }
        }
    })
}

/// What one report changes.
fn fold(meter: &mut Meter, node: &str, cluster_id: i64, event: &Event, at: i64) -> Vec<Run> {
    let key = |vmid| VmKey::new(cluster_id, vmid);
    let mut changed = Vec::new();
    // `stopped`: how a stopped VM was seen (in a change, or in a whole inventory).
    let mut see = |vm: &VmInfo, stopped: Seen| {
        if vm.template || vm.node != node {
            return;
        }
        let seen = if vm.status == PowerState::Running {
            Seen::Running {
                uptime_secs: vm.uptime_secs,
            }
        } else {
            stopped
        };
        changed.extend(meter.observe(key(vm.vmid), seen, at));
    };
    match event {
        Event::Inventory { inventory } => {
            for vm in &inventory.vms {
                see(vm, Seen::StoppedUnseen);
            }
        }
        Event::InventoryDelta { delta } => {
            for vm in &delta.upserted {
                see(vm, Seen::Stopped);
            }
            for vmid in &delta.removed {
                changed.extend(meter.observe(key(*vmid), Seen::Stopped, at));
            }
        }
        Event::Metrics { metrics } => {
            for load in &metrics.vms {
                changed.extend(meter.observe(
                    key(load.vmid),
                    Seen::Running {
                        uptime_secs: load.uptime_secs,
                    },
                    at,
                ));
            }
        }
        _ => {}
    }
    changed
}
