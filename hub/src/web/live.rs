//! Live views: what changed, read from the database and rendered once for every open
//! live-update stream. A change used to cost each stream its own queries (a site with 100
//! open pages read the same VM 100 times, and every node's metrics made each admin's stream
//! read every node); now one task reads each changed VM or node once, and each stream only
//! decides what its viewer may see ([`LiveVm::visible_to`]).

use std::sync::Arc;

use tokio::sync::broadcast;

use crate::agents::{AgentRegistry, NodeStateChange};
use crate::db::Db;
use crate::db::inventory::{VmFilter, VmRow};
use crate::domain::access;
use crate::domain::viewer::Viewer;
use crate::inventory::InventoryChange;
use crate::vm_key::VmKey;
use crate::web::views::{NodeView, VmView};

/// A changed VM as every stream may send it.
#[derive(Debug)]
pub struct LiveVm {
    row: VmRow,
    /// The `vm` event's data: the VM's [`VmView`] as JSON.
    pub json: String,
}

impl LiveVm {
    pub fn key(&self) -> VmKey {
        self.row.key
    }

    /// Whether `viewer` may see it; `owned_classes` are the classes the viewer owns.
    pub fn visible_to(&self, viewer: &Viewer, owned_classes: &[i64]) -> bool {
        let owns_class = self
            .row
            .class_id
            .is_some_and(|class_id| owned_classes.contains(&class_id));
        access::can_see_vm(viewer, &self.row, owns_class)
    }
}

/// One change, ready to send.
#[derive(Debug)]
pub enum LiveUpdate {
    /// VMs whose stored data changed, and those among them that no longer exist.
    Vms {
        present: Vec<LiveVm>,
        gone: Vec<VmKey>,
    },
    /// A node's view, for admins: its metrics or its online state changed.
    Node { json: String },
    /// Changes were lost (the reader fell behind): streams should have their pages reload.
    Lost,
}

/// What changed, once per change.
#[derive(Debug, Clone)]
pub struct LiveViews {
    sender: broadcast::Sender<Arc<LiveUpdate>>,
}

/// Updates a slow stream may fall behind by before it is told to resync.
const BACKLOG: usize = 1024;

impl LiveViews {
    /// Starts the reader of inventory changes and node state changes.
    pub fn start(
        db: Db,
        registry: AgentRegistry,
        inventory_changes: &broadcast::Sender<InventoryChange>,
    ) -> Self {
        let sender = broadcast::channel(BACKLOG).0;
        let views = Self {
            sender: sender.clone(),
        };
        let mut changes = inventory_changes.subscribe();
        let mut node_states = registry.subscribe();
        tokio::spawn(async move {
            loop {
                let update = tokio::select! {
                    change = changes.recv() => match change {
                        Ok(change) => read_change(&db, &registry, &change).await,
                        Err(broadcast::error::RecvError::Lagged(_)) => Some(LiveUpdate::Lost),
                        Err(broadcast::error::RecvError::Closed) => return,
                    },
                    change = node_states.recv() => match change {
                        Ok(NodeStateChange { node, online }) => read_node(&db, &node, online).await,
                        Err(broadcast::error::RecvError::Lagged(_)) => Some(LiveUpdate::Lost),
                        Err(broadcast::error::RecvError::Closed) => return,
                    },
                };
                if let Some(update) = update {
                    // No stream open is fine.
                    let _ = sender.send(Arc::new(update));
                }
            }
        });
        views
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<LiveUpdate>> {
        self.sender.subscribe()
    }
}

async fn read_change(
    db: &Db,
    registry: &AgentRegistry,
    change: &InventoryChange,
) -> Option<LiveUpdate> {
    if change.vms.is_empty() {
        return read_node(db, &change.node, registry.is_online(&change.node)).await;
    }
    let filter = VmFilter {
        keys: Some(change.vms.clone()),
        ..VmFilter::default()
    };
    let rows = match db.find_vms(&filter).await {
        Ok(rows) => rows,
        Err(err) => {
            tracing::warn!(%err, "live updates cannot read the changed VMs");
            return Some(LiveUpdate::Lost);
        }
    };
    let gone = change
        .vms
        .iter()
        .copied()
        .filter(|key| !rows.iter().any(|row| row.key == *key))
        .collect();
    let present = rows
        .into_iter()
        .map(|row| LiveVm {
            json: to_json(&VmView::new(&row)),
            row,
        })
        .collect();
    Some(LiveUpdate::Vms { present, gone })
}

/// A node's view with the registry's word on whether it is online (newer than the
/// database's: an agent that just left is recorded offline a moment later).
async fn read_node(db: &Db, node: &str, online: bool) -> Option<LiveUpdate> {
    match db.node_overview(node).await {
        Ok(Some(overview)) => {
            let mut view = NodeView::from(&overview);
            view.online = online;
            Some(LiveUpdate::Node {
                json: to_json(&view),
            })
        }
        Ok(None) => None,
        Err(err) => {
            tracing::warn!(%err, "live updates cannot read the node");
            None
        }
    }
}

fn to_json<T: serde::Serialize>(view: &T) -> String {
    serde_json::to_string(view).unwrap_or_else(|_| "null".into())
}
