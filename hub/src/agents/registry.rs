//! The live sessions: at most one per node. A new connection for a node replaces the old.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use proxlab_protocol::CloseCode;
use tokio::sync::broadcast;

/// A node came online or went offline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeStateChange {
    pub node: String,
    pub online: bool,
}

/// An event an agent reported (inventory, deltas, metrics), with its node.
#[derive(Debug, Clone)]
pub struct AgentEvent {
    pub node: String,
    /// The node's cluster (`clusters.id`): the VMIDs in the event are that cluster's.
    pub cluster_id: i64,
    pub event: proxlab_protocol::Event,
}

/// What the hub knows about one live session.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    pub node: String,
    pub agent_version: String,
    pub remote: SocketAddr,
    pub connected_at: Instant,
    pub capabilities: HashSet<String>,
    /// The fingerprint of the certificate the agent connected with.
    pub fingerprint: String,
}

#[derive(Debug)]
pub(super) struct Session {
    pub(super) id: u64,
    pub(super) connection: quinn::Connection,
    pub(super) info: SessionInfo,
}

#[derive(Debug, Default)]
struct Inner {
    next_id: u64,
    sessions: HashMap<String, Session>,
}

/// The registry of connected agents. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AgentRegistry {
    inner: Arc<Mutex<Inner>>,
    changes: broadcast::Sender<NodeStateChange>,
    events: broadcast::Sender<AgentEvent>,
    /// Where base copies' bytes travel, once the server listens for lanes.
    lanes: Arc<std::sync::OnceLock<Arc<super::lanes::Lanes>>>,
}

impl Default for AgentRegistry {
    fn default() -> Self {
        Self {
            inner: Arc::default(),
            changes: broadcast::channel(1024).0,
            events: broadcast::channel(4096).0,
            lanes: Arc::default(),
        }
    }
}

impl AgentRegistry {
    /// Base copies use `lanes` from now on (set once, by the server).
    pub(super) fn set_lanes(&self, lanes: Arc<super::lanes::Lanes>) {
        let _ = self.lanes.set(lanes);
    }

    /// The hub's lanes, when it listens for them.
    pub(super) fn lanes(&self) -> Option<&Arc<super::lanes::Lanes>> {
        self.lanes.get()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding this lock cannot leave the map half-updated.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Registers a session, closing and replacing any older one for the same node.
    /// Returns the new session's id.
    pub(super) fn register(&self, connection: quinn::Connection, info: SessionInfo) -> u64 {
        let node = info.node.clone();
        let replaced = {
            let mut inner = self.lock();
            inner.next_id += 1;
            let id = inner.next_id;
            let old = inner.sessions.insert(
                node.clone(),
                Session {
                    id,
                    connection,
                    info,
                },
            );
            (id, old)
        };
        let (id, old) = replaced;
        if let Some(old) = old {
            tracing::info!(node = %node, "a new connection replaces the old session");
            old.connection.close(
                CloseCode::Replaced.code().into(),
                b"replaced by a newer connection",
            );
        } else {
            let _ = self.changes.send(NodeStateChange { node, online: true });
        }
        id
    }

    /// Removes a session if it is still the current one for its node. Returns whether it was
    /// (a replaced session's end does not take the node offline).
    pub(super) fn unregister(&self, node: &str, id: u64) -> bool {
        let removed = {
            let mut inner = self.lock();
            match inner.sessions.get(node) {
                Some(session) if session.id == id => inner.sessions.remove(node).is_some(),
                _ => false,
            }
        };
        if removed {
            let _ = self.changes.send(NodeStateChange {
                node: node.to_owned(),
                online: false,
            });
        }
        removed
    }

    pub(super) fn connection(&self, node: &str) -> Option<(quinn::Connection, SessionInfo)> {
        self.lock()
            .sessions
            .get(node)
            .map(|session| (session.connection.clone(), session.info.clone()))
    }

    /// Closes a node's session, if any, with `code`.
    pub fn disconnect(&self, node: &str, code: CloseCode) {
        if let Some((connection, _)) = self.connection(node) {
            connection.close(code.code().into(), code.to_string().as_bytes());
        }
    }

    /// Closes every session, for hub shutdown.
    pub fn disconnect_all(&self, code: CloseCode) {
        let connections: Vec<_> = self
            .lock()
            .sessions
            .values()
            .map(|session| session.connection.clone())
            .collect();
        for connection in connections {
            connection.close(code.code().into(), code.to_string().as_bytes());
        }
    }

    /// Closes a node's session with `code` and `reason`, if it is still the one that
    /// connected with the certificate `fingerprint` (a newer enrollment's is left alone).
    pub(super) fn close_session(
        &self,
        node: &str,
        fingerprint: &str,
        code: CloseCode,
        reason: &str,
    ) {
        if let Some((connection, info)) = self.connection(node)
            && info.fingerprint == fingerprint
        {
            connection.close(code.code().into(), reason.as_bytes());
        }
    }

    /// Every live session.
    pub fn sessions(&self) -> Vec<SessionInfo> {
        self.lock()
            .sessions
            .values()
            .map(|session| session.info.clone())
            .collect()
    }

    pub fn is_online(&self, node: &str) -> bool {
        self.lock().sessions.contains_key(node)
    }

    pub fn session(&self, node: &str) -> Option<SessionInfo> {
        self.connection(node).map(|(_, info)| info)
    }

    pub fn online_nodes(&self) -> Vec<String> {
        let mut nodes: Vec<_> = self.lock().sessions.keys().cloned().collect();
        nodes.sort();
        nodes
    }

    /// Subscribes to what agents report.
    pub fn subscribe_events(&self) -> broadcast::Receiver<AgentEvent> {
        self.events.subscribe()
    }

    pub(super) fn publish(&self, node: &str, cluster_id: i64, event: proxlab_protocol::Event) {
        let _ = self.events.send(AgentEvent {
            node: node.to_owned(),
            cluster_id,
            event,
        });
    }

    /// Subscribes to online/offline changes.
    pub fn subscribe(&self) -> broadcast::Receiver<NodeStateChange> {
        self.changes.subscribe()
    }

    /// Waits until `node` is online (or offline), without polling.
    pub async fn wait_for(&self, node: &str, online: bool) {
        let mut changes = self.subscribe();
        if self.is_online(node) == online {
            return;
        }
        loop {
            match changes.recv().await {
                Ok(change) if change.node == node && change.online == online => return,
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    if self.is_online(node) == online {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }
}
