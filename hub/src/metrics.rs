//! The hub's metrics, served at `/metrics` in the Prometheus text format (OpenMetrics) with
//! conventional names: what happens is counted where it happens (HTTP requests, calls to
//! agents, jobs, live-update streams, base copies, clones); what is true now (agents
//! connected, consoles open, database connections) is read when the metrics are scraped.
//!
//! One set per process: the counters live as long as the hub does.

use std::sync::LazyLock;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use proxlab_metrics::{Operations, OutcomeLabel, Seconds};

pub use proxlab_metrics::CONTENT_TYPE;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    method: String,
    /// The route's template (`/classes/{id}`), never the path itself, so a scraper sees a
    /// bounded set of series.
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabels {
    state: String,
}

/// What the hub is at the moment of a scrape.
#[derive(Debug, Clone, Copy, Default)]
pub struct Now {
    pub agents_connected: usize,
    pub console_sessions: usize,
    pub db_connections: u32,
    pub db_idle_connections: usize,
}

/// Every metric of the hub.
pub struct HubMetrics {
    registry: Registry,
    http_requests: Family<HttpLabels, Counter>,
    http_seconds: Family<RouteLabels, Histogram, Seconds>,
    agent_calls: Operations,
    jobs: Operations,
    live_streams: Gauge,
    base_copy_bytes: Counter,
    clones: Family<OutcomeLabel, Counter>,
    agents_connected: Gauge,
    console_sessions: Gauge,
    db_connections: Family<PoolLabels, Gauge>,
}

static METRICS: LazyLock<HubMetrics> = LazyLock::new(HubMetrics::new);

/// The hub's metrics.
pub fn metrics() -> &'static HubMetrics {
    &METRICS
}

impl HubMetrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("proxlab_hub");
        let http_requests = Family::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by method, route and status",
            Family::clone(&http_requests),
        );
        let http_seconds = Family::new_with_constructor(Seconds);
        registry.register_with_unit(
            "http_request_duration",
            "Time to answer an HTTP request, by route (a live stream counts until it ends)",
            Unit::Seconds,
            Family::clone(&http_seconds),
        );
        let agent_calls = Operations::register(
            &mut registry,
            "agent_calls",
            "Requests to agents (ok, remote-error, offline, timeout, link)",
        );
        let jobs = Operations::register(&mut registry, "jobs", "Class jobs ended (done, failed)");
        for kind in crate::db::states::JobKind::ALL {
            jobs.expect(kind.as_str(), &["done", "failed"]);
        }
        let live_streams = Gauge::default();
        registry.register(
            "live_update_streams",
            "Browsers following live updates (server-sent events) now",
            live_streams.clone(),
        );
        let base_copy_bytes = Counter::default();
        registry.register_with_unit(
            "base_copy",
            "Bytes of class bases copied between nodes",
            Unit::Bytes,
            base_copy_bytes.clone(),
        );
        let clones = Family::default();
        registry.register(
            "clones",
            "Linked clones made for classes, by outcome (ok, failed)",
            Family::clone(&clones),
        );
        let agents_connected = Gauge::default();
        registry.register(
            "agents_connected",
            "Agents connected now",
            agents_connected.clone(),
        );
        let console_sessions = Gauge::default();
        registry.register(
            "console_sessions",
            "Console sessions open now",
            console_sessions.clone(),
        );
        let db_connections = Family::default();
        registry.register(
            "db_connections",
            "Database pool connections now, by state (idle, in-use)",
            Family::clone(&db_connections),
        );
        let metrics = Self {
            registry,
            http_requests,
            http_seconds,
            agent_calls,
            jobs,
            live_streams,
            base_copy_bytes,
            clones,
            agents_connected,
            console_sessions,
            db_connections,
        };
        // Zero series from the start, so rates have them before the first clone.
        metrics.clones_made(0, 0);
        metrics
    }

    /// Counts an answered HTTP request.
    pub fn http_request(&self, method: &str, route: &str, status: u16, took: Duration) {
        self.http_requests
            .get_or_create(&HttpLabels {
                method: method.to_owned(),
                route: route.to_owned(),
                status,
            })
            .inc();
        self.http_seconds
            .get_or_create(&RouteLabels {
                route: route.to_owned(),
            })
            .observe(took.as_secs_f64());
    }

    /// Counts a request to an agent and how it ended.
    pub fn agent_call(&self, kind: &str, outcome: &str, took: Duration) {
        self.agent_calls.ended(kind, outcome, took);
    }

    /// Counts a class job that ended.
    pub fn job_ended(&self, kind: &str, done: bool, took: Duration) {
        let outcome = if done { "done" } else { "failed" };
        self.jobs.ended(kind, outcome, took);
    }

    /// Counts a live-update stream while the returned guard lives.
    pub fn live_stream(&self) -> LiveStream {
        self.live_streams.inc();
        LiveStream(self.live_streams.clone())
    }

    /// Counts bytes of a base copied to another node.
    pub fn base_copied(&self, bytes: u64) {
        self.base_copy_bytes.inc_by(bytes);
    }

    /// Counts linked clones made and failed.
    pub fn clones_made(&self, made: u64, failed: u64) {
        for (outcome, n) in [("ok", made), ("failed", failed)] {
            self.clones
                .get_or_create(&OutcomeLabel {
                    outcome: outcome.to_owned(),
                })
                .inc_by(n);
        }
    }

    /// Every metric in the text format, with what is true `now`.
    pub fn render(&self, now: Now) -> String {
        let gauge = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        self.agents_connected.set(gauge(now.agents_connected));
        self.console_sessions.set(gauge(now.console_sessions));
        let idle = now.db_idle_connections.min(now.db_connections as usize);
        for (state, n) in [
            ("idle", idle),
            ("in-use", now.db_connections as usize - idle),
        ] {
            self.db_connections
                .get_or_create(&PoolLabels {
                    state: state.to_owned(),
                })
                .set(gauge(n));
        }
        proxlab_metrics::render(&self.registry)
    }
}

/// A live-update stream being counted; dropping it stops counting it.
pub struct LiveStream(Gauge);

impl Drop for LiveStream {
    fn drop(&mut self) {
        self.0.dec();
    }
}
