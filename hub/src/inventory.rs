//! Keeps the database in step with what agents report: one writer task applies every
//! inventory snapshot, delta and metrics event, then announces which VMs changed (for live
//! pages).

use proxlab_protocol::Event;
use tokio::sync::broadcast;

use crate::agents::{AgentEvent, AgentRegistry};
use crate::db::{Db, now_unix};

/// Stored data changed for these VMs of a node (empty: node-level data such as metrics).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InventoryChange {
    pub node: String,
    pub vmids: Vec<u32>,
}

/// Starts the writer. Returns the channel that announces each applied change.
pub fn start_recorder(
    db: Db,
    registry: AgentRegistry,
) -> (
    broadcast::Sender<InventoryChange>,
    tokio::task::JoinHandle<()>,
) {
    let changes = broadcast::channel(1024).0;
    let announce = changes.clone();
    let mut events = registry.subscribe_events();
    let task = tokio::spawn(async move {
        loop {
            match events.recv().await {
                Ok(AgentEvent { node, event }) => {
                    let now = now_unix();
                    let (result, vmids) = match &event {
                        Event::Inventory { inventory } => (
                            db.replace_inventory(&node, inventory, now).await,
                            inventory.vms.iter().map(|vm| vm.vmid).collect(),
                        ),
                        Event::InventoryDelta { delta } => (
                            db.apply_delta(&node, delta, now).await,
                            delta
                                .upserted
                                .iter()
                                .map(|vm| vm.vmid)
                                .chain(delta.removed.iter().copied())
                                .collect(),
                        ),
                        Event::Metrics { metrics } => {
                            (db.record_metrics(&node, metrics, now).await, Vec::new())
                        }
                        Event::Heartbeat { .. }
                        | Event::PluginSteps { .. }
                        | Event::IdleWarning { .. }
                        | Event::IdleCleared { .. }
                        | Event::IdleStopped { .. }
                        | Event::Unknown => {
                            continue;
                        }
                    };
                    match result {
                        Ok(()) => {
                            let _ = announce.send(InventoryChange { node, vmids });
                        }
                        Err(err) => {
                            tracing::warn!(%node, %err, "cannot record what the agent reported")
                        }
                    }
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    // Events were lost: have every agent send its whole inventory again.
                    tracing::warn!(missed, "the recorder fell behind; asking agents to resync");
                    for node in registry.online_nodes() {
                        let registry = registry.clone();
                        tokio::spawn(async move {
                            let _ = registry
                                .call(&node, &proxlab_protocol::vm_ops::Resync {})
                                .await;
                        });
                    }
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    });
    (changes, task)
}
