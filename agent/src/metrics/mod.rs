//! The agent's metrics, in the Prometheus text format (OpenMetrics) on a local address
//! (`[metrics] listen` in `agent.toml`, see [`serve`]): whether the hub link is up, requests
//! from the hub by kind and outcome, tools started, linked clones made, base bytes copied,
//! and the node's VMs by state at the moment of the scrape.
//!
//! One set per process.

pub mod serve;

use std::sync::LazyLock;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};
use proxlab_metrics::{Operations, OutcomeLabel};
use proxlab_protocol::inventory::{Inventory, PowerState};

pub use proxlab_metrics::CONTENT_TYPE;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ToolLabels {
    tool: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabels {
    direction: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: String,
}

/// Every metric of the agent.
pub struct AgentMetrics {
    registry: Registry,
    hub_connected: Gauge,
    requests: Operations,
    tool_runs: Family<ToolLabels, Counter>,
    clones: Family<OutcomeLabel, Counter>,
    base_copy_bytes: Family<DirectionLabels, Counter>,
    vms: Family<StateLabels, Gauge>,
}

static METRICS: LazyLock<AgentMetrics> = LazyLock::new(AgentMetrics::new);

/// The agent's metrics.
pub fn metrics() -> &'static AgentMetrics {
    &METRICS
}

impl AgentMetrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("proxlab_agent");
        let hub_connected = Gauge::default();
        registry.register(
            "hub_connected",
            "1 while the link to the hub is up",
            hub_connected.clone(),
        );
        let requests = Operations::register(
            &mut registry,
            "requests",
            "Requests from the hub (ok, error)",
        );
        let tool_runs = Family::default();
        registry.register(
            "tool_runs",
            "Proxmox tools started (qm, pvesh, pvesm, qemu-img), by tool",
            Family::clone(&tool_runs),
        );
        let clones = Family::default();
        registry.register(
            "clones",
            "Linked clones made, by outcome (ok, failed)",
            Family::clone(&clones),
        );
        let base_copy_bytes = Family::default();
        registry.register_with_unit(
            "base_copy",
            "Bytes of bases copied to or from other nodes, by direction (sent, received)",
            Unit::Bytes,
            Family::clone(&base_copy_bytes),
        );
        let vms = Family::default();
        registry.register(
            "vms",
            "VMs on this node, by state (running, paused, stopped, template)",
            Family::clone(&vms),
        );
        let metrics = Self {
            registry,
            hub_connected,
            requests,
            tool_runs,
            clones,
            base_copy_bytes,
            vms,
        };
        // Zero series from the start, so rates have them before the first.
        for ok in [true, false] {
            metrics.clones.get_or_create_owned(&OutcomeLabel {
                outcome: if ok { "ok" } else { "failed" }.to_owned(),
            });
            metrics.base_copied(ok, 0);
        }
        metrics
    }

    /// Records whether the link to the hub is up.
    pub fn hub_link(&self, up: bool) {
        self.hub_connected.set(i64::from(up));
    }

    /// Counts a request from the hub and how it ended.
    pub fn request(&self, kind: &str, ok: bool, took: Duration) {
        self.requests
            .ended(kind, if ok { "ok" } else { "error" }, took);
    }

    /// Counts a linked clone made or failed.
    pub fn clone_made(&self, ok: bool) {
        self.clones
            .get_or_create(&OutcomeLabel {
                outcome: if ok { "ok" } else { "failed" }.to_owned(),
            })
            .inc();
    }

    /// Counts base bytes `sent` to, or received from, another node.
    pub fn base_copied(&self, sent: bool, bytes: u64) {
        self.base_copy_bytes
            .get_or_create(&DirectionLabels {
                direction: if sent { "sent" } else { "received" }.to_owned(),
            })
            .inc_by(bytes);
    }

    /// Every metric in the text format, with the VMs of `inventory`.
    pub fn render(&self, inventory: &Inventory) -> String {
        for (tool, started) in crate::pve::command::runs_so_far() {
            let counter = self.tool_runs.get_or_create(&ToolLabels { tool });
            counter.inc_by(started.saturating_sub(counter.get()));
        }
        let mut by_state = [
            ("running", 0),
            ("paused", 0),
            ("stopped", 0),
            ("template", 0),
        ];
        for vm in &inventory.vms {
            let state = match vm.status {
                _ if vm.template => 3,
                PowerState::Running => 0,
                PowerState::Paused => 1,
                PowerState::Stopped | PowerState::Unknown => 2,
            };
            by_state[state].1 += 1;
        }
        for (state, count) in by_state {
            self.vms
                .get_or_create(&StateLabels {
                    state: state.to_owned(),
                })
                .set(count);
        }
        proxlab_metrics::render(&self.registry)
    }
}
