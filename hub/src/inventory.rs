//! Keeps the database in step with what agents report: one writer task stores every
//! inventory snapshot, delta and metrics event, then announces which VMs changed (for live
//! pages). Reports that arrive while a write is under way are stored together in the next
//! transaction, so a thousand agents cost a few commits a second, not a thousand. A node's
//! load is stored at every report; its VMs' load (shown as their uptime) at most once a
//! minute, since rewriting every running VM's row every 10 s was most of what a large site
//! wrote.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use proxlab_protocol::Event;
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::TryRecvError;

use crate::agents::{AgentEvent, AgentRegistry};
use crate::db::inventory::AgentReport;
use crate::db::{Db, now_unix};
use crate::vm_key::VmKey;

/// Stored data changed for these VMs of a node (empty: node-level data such as metrics).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InventoryChange {
    pub node: String,
    pub vms: Vec<VmKey>,
}

/// The most reports one transaction stores.
const MAX_BATCH: usize = 256;

/// How often a node's VMs' load is stored.
const VM_LOAD_EVERY: Duration = Duration::from_secs(60);

/// When each node's VMs' load was last stored.
#[derive(Debug, Default)]
struct VmLoadPacer {
    stored_at: HashMap<String, Instant>,
}

impl VmLoadPacer {
    /// Whether `node`'s VM load is due at `now`; if so, it counts as stored from then.
    fn due(&mut self, node: &str, now: Instant) -> bool {
        match self.stored_at.get(node) {
            Some(at) if now.duration_since(*at) < VM_LOAD_EVERY => false,
            _ => {
                self.stored_at.insert(node.to_owned(), now);
                true
            }
        }
    }
}

/// What an event asks the database to keep, and which VMs it touches; `None` for events
/// the database does not keep.
fn report_of(
    event: &Event,
    cluster_id: i64,
    vm_loads: bool,
) -> Option<(AgentReport<'_>, Vec<VmKey>)> {
    let key = |vmid| VmKey::new(cluster_id, vmid);
    match event {
        Event::Inventory { inventory } => Some((
            AgentReport::Inventory(inventory),
            inventory.vms.iter().map(|vm| key(vm.vmid)).collect(),
        )),
        Event::InventoryDelta { delta } => Some((
            AgentReport::Delta(delta),
            delta
                .upserted
                .iter()
                .map(|vm| vm.vmid)
                .chain(delta.removed.iter().copied())
                .map(key)
                .collect(),
        )),
        Event::Metrics { metrics } => {
            Some((AgentReport::Metrics { metrics, vm_loads }, Vec::new()))
        }
        Event::Heartbeat { .. }
        | Event::PluginSteps { .. }
        | Event::IdleWarning { .. }
        | Event::IdleCleared { .. }
        | Event::IdleStopped { .. }
        | Event::Unknown => None,
    }
}

/// Events were lost: has every agent send its whole inventory again.
fn ask_for_resync(registry: &AgentRegistry, missed: u64) {
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

/// Stores one batch and announces what changed. A batch the database refuses is stored
/// again one report at a time, so one bad report loses only itself.
async fn store(
    db: &Db,
    announce: &broadcast::Sender<InventoryChange>,
    pacer: &mut VmLoadPacer,
    batch: &[AgentEvent],
) {
    let started = Instant::now();
    let reports: Vec<(&str, AgentReport<'_>, Vec<VmKey>)> = batch
        .iter()
        .filter_map(
            |AgentEvent {
                 node,
                 cluster_id,
                 event,
             }| {
                let vm_loads = matches!(event, Event::Metrics { .. }) && pacer.due(node, started);
                report_of(event, *cluster_id, vm_loads)
                    .map(|(report, vms)| (node.as_str(), report, vms))
            },
        )
        .collect();
    if reports.is_empty() {
        return;
    }
    let now = now_unix();
    let all: Vec<(&str, AgentReport<'_>)> = reports
        .iter()
        .map(|(node, report, _)| (*node, *report))
        .collect();
    let stored: Vec<bool> = match db.record_reports(&all, now).await {
        Ok(()) => vec![true; reports.len()],
        Err(_) if reports.len() > 1 => {
            let mut stored = Vec::with_capacity(reports.len());
            for (node, report, _) in &reports {
                let result = db.record_reports(&[(node, *report)], now).await;
                if let Err(err) = &result {
                    tracing::warn!(%node, %err, "cannot record what the agent reported");
                }
                stored.push(result.is_ok());
            }
            stored
        }
        Err(err) => {
            tracing::warn!(node = %reports[0].0, %err, "cannot record what the agent reported");
            vec![false]
        }
    };
    for ((node, _, vms), stored) in reports.into_iter().zip(stored) {
        if stored {
            let _ = announce.send(InventoryChange {
                node: node.to_owned(),
                vms,
            });
        }
    }
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
        let mut pacer = VmLoadPacer::default();
        loop {
            let mut batch = match events.recv().await {
                Ok(event) => vec![event],
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    ask_for_resync(&registry, missed);
                    continue;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            };
            let mut closed = false;
            while batch.len() < MAX_BATCH {
                match events.try_recv() {
                    Ok(event) => batch.push(event),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Lagged(missed)) => {
                        ask_for_resync(&registry, missed);
                        break;
                    }
                    Err(TryRecvError::Closed) => {
                        closed = true;
                        break;
                    }
                }
            }
            store(&db, &announce, &mut pacer, &batch).await;
            if closed {
                return;
            }
        }
    });
    (changes, task)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nodes_vm_load_is_due_once_a_minute() {
        let mut pacer = VmLoadPacer::default();
        let start = Instant::now();
        assert!(pacer.due("pve1", start));
        assert!(!pacer.due("pve1", start + Duration::from_secs(10)));
        assert!(
            pacer.due("pve2", start + Duration::from_secs(10)),
            "each node on its own"
        );
        assert!(!pacer.due("pve1", start + Duration::from_secs(59)));
        assert!(pacer.due("pve1", start + VM_LOAD_EVERY));
    }
}
