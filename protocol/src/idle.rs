//! Idle shutdown: the policies the hub gives an agent for its VMs, and what the agent reports
//! doing with them.
//!
//! The agent evaluates the policies itself, with what it sees on its node (the VM's power
//! state and CPU use, and every console, terminal and tunnel session, all of which it
//! bridges), so they hold while the hub is unreachable. It tells the hub when a VM is about
//! to be stopped ([`crate::Event::IdleWarning`]), when that warning no longer holds
//! ([`crate::Event::IdleCleared`]), and what it did ([`crate::Event::IdleStopped`]; sent
//! again after every reconnect until it is old, so the hub dedupes by [`IdleStop::id`]).

use serde::{Deserialize, Serialize};

use crate::NoProgress;
use crate::request::Request;
use crate::vm_ops::Done;

/// When a VM counts as idle, and what happens then. Each policy is off when `None`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdlePolicy {
    /// The VM started and nobody opened a console, terminal or tunnel for this long.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_connection_secs: Option<u32>,
    /// The last session to the VM ended this long ago.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disconnected_secs: Option<u32>,
    /// The guest used little CPU and got no input through any session for this long.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_guest: Option<IdleGuest>,
    /// How long before the shutdown its users are warned.
    pub warn_secs: u32,
    /// How long the guest has to shut down after the ACPI request.
    pub shutdown_timeout_secs: u32,
    /// Whether a guest that ignores the ACPI request is then powered off.
    pub hard_stop: bool,
    /// Whether the warning is also shown inside the guest (through the QEMU guest agent,
    /// where the VM has one: `wall` on Linux, `msg` on Windows). Older hubs leave it out.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub guest_message: bool,
}

/// The idle-guest policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdleGuest {
    pub secs: u32,
    /// Below this share of the VM's own vCPUs (in percent) the guest counts as idle.
    pub cpu_percent: u8,
}

/// One VM's policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmIdlePolicy {
    pub vmid: u32,
    #[serde(flatten)]
    pub policy: IdlePolicy,
}

/// Replaces every idle policy of the node: VMs not listed have none. Sent on every connect
/// and whenever a class's settings or VMs change; the agent keeps it on disk.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct IdlePolicies {
    pub vms: Vec<VmIdlePolicy>,
}

impl Request for IdlePolicies {
    const KIND: &'static str = "idle-policies";
    type Response = Done;
    type Progress = NoProgress;
}

/// A user said "I'm still here": every idle timer of the VM starts again from now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdleStillHere {
    pub vmid: u32,
}

/// Whether a warning was in force (and is withdrawn now).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdleStillHereReply {
    pub was_warned: bool,
}

impl Request for IdleStillHere {
    const KIND: &'static str = "idle-still-here";
    type Response = IdleStillHereReply;
    type Progress = NoProgress;
}

/// Which policy found the VM idle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IdleReason {
    NoConnection,
    Disconnected,
    IdleGuest,
    #[serde(other)]
    Unknown,
}

impl IdleReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NoConnection => "no-connection",
            Self::Disconnected => "disconnected",
            Self::IdleGuest => "idle-guest",
            Self::Unknown => "unknown",
        }
    }
}

/// How an idle shutdown ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "kebab-case")]
pub enum IdleOutcome {
    /// The guest shut down when asked.
    ShutDown,
    /// The guest ignored the request and was powered off.
    PoweredOff,
    /// The VM still runs: the guest ignored the request and no hard stop was allowed, or the
    /// request failed.
    Failed { message: String },
}

/// One idle shutdown the agent did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdleStop {
    /// Unique per shutdown, so a report sent twice is recorded once.
    pub id: String,
    pub vmid: u32,
    pub reason: IdleReason,
    /// The policy's time: how long the VM had been idle.
    pub idle_secs: u32,
    /// When the shutdown was asked for (Unix seconds, agent clock).
    pub at_unix: u64,
    #[serde(flatten)]
    pub outcome: IdleOutcome,
}
