//! Events the agent pushes on its control stream.

use serde::{Deserialize, Serialize};

use crate::idle::{IdleReason, IdleStop};
use crate::inventory::{Inventory, InventoryDelta, NodeMetrics};

/// One event with its sequence number. Sequence numbers start at 1 on every connection and
/// increase by one, so the hub can detect a gap and ask for a full snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventFrame {
    pub seq: u64,
    pub event: Event,
}

/// What happened on the node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Event {
    /// The agent is alive. `unix_ms` is the agent's clock, for skew detection.
    Heartbeat { unix_ms: u64 },
    /// The full inventory: on every connect, and when the hub asks for a resync.
    Inventory { inventory: Inventory },
    /// What changed since the previous inventory event.
    InventoryDelta { delta: InventoryDelta },
    /// Node load.
    Metrics { metrics: NodeMetrics },
    /// How a VM's plugin steps at one hook went: `error` is `None` when every plugin
    /// succeeded; what they found and what they tell the VM's user come along.
    PluginSteps {
        vmid: u32,
        hook: String,
        #[serde(default)]
        error: Option<String>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        findings: Vec<crate::plugins::PluginFinding>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        notices: Vec<crate::plugins::PluginNotice>,
    },
    /// A VM will be shut down at `stop_at_unix` (agent clock), `secs_left` from now, by an
    /// idle policy unless someone uses it or says they are still there. Sent again when the
    /// time moves.
    IdleWarning {
        vmid: u32,
        reason: IdleReason,
        stop_at_unix: u64,
        /// Seconds from now to `stop_at_unix`, for a hub whose clock differs from the node's.
        #[serde(default)]
        secs_left: u32,
    },
    /// The warning for this VM no longer holds (someone came back, or it stopped).
    IdleCleared { vmid: u32 },
    /// The agent shut a VM down by an idle policy.
    IdleStopped { stop: IdleStop },
    /// An event kind added by a newer protocol version; the hub ignores it.
    #[serde(other)]
    Unknown,
}
