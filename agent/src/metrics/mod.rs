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
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use proxlab_protocol::inventory::{Inventory, PowerState};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindOutcomeLabels {
    kind: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ToolLabels {
    tool: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabels {
    direction: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: String,
}

/// Histograms of seconds, from 1 ms to about 9 minutes.
#[derive(Clone)]
struct Seconds;

impl MetricConstructor<Histogram> for Seconds {
    fn new_metric(&self) -> Histogram {
        Histogram::new(exponential_buckets(0.001, 4.0, 10))
    }
}

/// The content type of [`AgentMetrics::render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Every metric of the agent.
pub struct AgentMetrics {
    registry: Registry,
    hub_connected: Gauge,
    requests: Family<KindOutcomeLabels, Counter>,
    request_seconds: Family<KindLabels, Histogram, Seconds>,
    tool_runs: Family<ToolLabels, Counter>,
    clones: Family<OutcomeLabels, Counter>,
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
        let metrics = Self {
            registry: Registry::with_prefix("proxlab_agent"),
            hub_connected: Gauge::default(),
            requests: Family::default(),
            request_seconds: Family::new_with_constructor(Seconds),
            tool_runs: Family::default(),
            clones: Family::default(),
            base_copy_bytes: Family::default(),
            vms: Family::default(),
        };
        let mut registry = metrics.registry;
        registry.register(
            "hub_connected",
            "1 while the link to the hub is up",
            metrics.hub_connected.clone(),
        );
        registry.register(
            "requests",
            "Requests from the hub, by kind and outcome (ok, error)",
            metrics.requests.clone(),
        );
        registry.register_with_unit(
            "request_duration",
            "Time to answer a request from the hub, by kind",
            Unit::Seconds,
            metrics.request_seconds.clone(),
        );
        registry.register(
            "tool_runs",
            "Proxmox tools started (qm, pvesh, pvesm, qemu-img), by tool",
            metrics.tool_runs.clone(),
        );
        registry.register(
            "clones",
            "Linked clones made, by outcome (ok, failed)",
            metrics.clones.clone(),
        );
        registry.register_with_unit(
            "base_copy",
            "Bytes of bases copied to or from other nodes, by direction (sent, received)",
            Unit::Bytes,
            metrics.base_copy_bytes.clone(),
        );
        registry.register(
            "vms",
            "VMs on this node, by state (running, paused, stopped, template)",
            metrics.vms.clone(),
        );
        let metrics = Self {
            registry,
            ..metrics
        };
        // Series that exist from the start, at zero, so rates have them before the first.
        for ok in [true, false] {
            metrics.clones.get_or_create_owned(&OutcomeLabels {
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
            .get_or_create(&KindOutcomeLabels {
                kind: kind.to_owned(),
                outcome: if ok { "ok" } else { "error" }.to_owned(),
            })
            .inc();
        self.request_seconds
            .get_or_create(&KindLabels {
                kind: kind.to_owned(),
            })
            .observe(took.as_secs_f64());
    }

    /// Counts a linked clone made or failed.
    pub fn clone_made(&self, ok: bool) {
        self.clones
            .get_or_create(&OutcomeLabels {
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
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String does not fail");
        text
    }
}
