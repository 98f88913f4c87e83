//! The request kinds of this protocol version.

use serde::{Deserialize, Serialize};

use crate::request::{NoProgress, Request};

/// The longest delay a [`Ping`] may ask for.
pub const MAX_PING_DELAY_MS: u64 = 60_000;

/// Echoes `payload` after `delay_ms`: proves the path and measures round trips.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ping {
    #[serde(default)]
    pub payload: String,
    /// Wait this long before answering (at most [`MAX_PING_DELAY_MS`]).
    #[serde(default)]
    pub delay_ms: u64,
}

/// The answer to [`Ping`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pong {
    pub payload: String,
}

impl Request for Ping {
    const KIND: &'static str = "ping";
    type Response = Pong;
    type Progress = NoProgress;
}

/// Asks the agent about its node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {}

/// Facts about the node the agent runs on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfoReply {
    pub hostname: String,
    pub kernel: String,
    pub os: String,
    pub cpu_count: u32,
    pub memory_total_bytes: u64,
    pub memory_used_bytes: u64,
    pub uptime_secs: u64,
    pub agent_version: String,
}

impl Request for NodeInfo {
    const KIND: &'static str = "node-info";
    type Response = NodeInfoReply;
    type Progress = NoProgress;
}
