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
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

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
struct KindOutcomeLabels {
    kind: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabels {
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
    agent_calls: Family<KindOutcomeLabels, Counter>,
    agent_call_seconds: Family<KindLabels, Histogram, Seconds>,
    jobs: Family<KindOutcomeLabels, Counter>,
    job_seconds: Family<KindLabels, Histogram, Seconds>,
    live_streams: Gauge,
    base_copy_bytes: Counter,
    clones: Family<OutcomeLabels, Counter>,
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
        let metrics = Self {
            registry: Registry::with_prefix("proxlab_hub"),
            http_requests: Family::default(),
            http_seconds: Family::new_with_constructor(Seconds),
            agent_calls: Family::default(),
            agent_call_seconds: Family::new_with_constructor(Seconds),
            jobs: Family::default(),
            job_seconds: Family::new_with_constructor(Seconds),
            live_streams: Gauge::default(),
            base_copy_bytes: Counter::default(),
            clones: Family::default(),
            agents_connected: Gauge::default(),
            console_sessions: Gauge::default(),
            db_connections: Family::default(),
        };
        let mut registry = metrics.registry;
        registry.register(
            "http_requests",
            "HTTP requests answered, by method, route and status",
            metrics.http_requests.clone(),
        );
        registry.register_with_unit(
            "http_request_duration",
            "Time to answer an HTTP request, by route (a live stream counts until it ends)",
            Unit::Seconds,
            metrics.http_seconds.clone(),
        );
        registry.register(
            "agent_calls",
            "Requests to agents, by kind and outcome (ok, remote-error, offline, timeout, link)",
            metrics.agent_calls.clone(),
        );
        registry.register_with_unit(
            "agent_call_duration",
            "Time until an agent answered a request, by kind",
            Unit::Seconds,
            metrics.agent_call_seconds.clone(),
        );
        registry.register(
            "jobs",
            "Class jobs ended, by kind and outcome (done, failed)",
            metrics.jobs.clone(),
        );
        registry.register_with_unit(
            "job_duration",
            "Time a class job ran, by kind",
            Unit::Seconds,
            metrics.job_seconds.clone(),
        );
        registry.register(
            "live_update_streams",
            "Browsers following live updates (server-sent events) now",
            metrics.live_streams.clone(),
        );
        registry.register_with_unit(
            "base_copy",
            "Bytes of class bases copied between nodes",
            Unit::Bytes,
            metrics.base_copy_bytes.clone(),
        );
        registry.register(
            "clones",
            "Linked clones made for classes, by outcome (ok, failed)",
            metrics.clones.clone(),
        );
        registry.register(
            "agents_connected",
            "Agents connected now",
            metrics.agents_connected.clone(),
        );
        registry.register(
            "console_sessions",
            "Console sessions open now",
            metrics.console_sessions.clone(),
        );
        registry.register(
            "db_connections",
            "Database pool connections now, by state (idle, in-use)",
            metrics.db_connections.clone(),
        );
        let metrics = Self {
            registry,
            ..metrics
        };
        // Series that exist from the start, at zero, so rates and dashboards have them
        // before the first job or clone.
        for kind in crate::db::states::JobKind::ALL {
            for outcome in ["done", "failed"] {
                metrics.jobs.get_or_create_owned(&KindOutcomeLabels {
                    kind: kind.as_str().to_owned(),
                    outcome: outcome.to_owned(),
                });
            }
            metrics.job_seconds.get_or_create_owned(&KindLabels {
                kind: kind.as_str().to_owned(),
            });
        }
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
        self.agent_calls
            .get_or_create(&KindOutcomeLabels {
                kind: kind.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
        self.agent_call_seconds
            .get_or_create(&KindLabels {
                kind: kind.to_owned(),
            })
            .observe(took.as_secs_f64());
    }

    /// Counts a class job that ended.
    pub fn job_ended(&self, kind: &str, done: bool, took: Duration) {
        let outcome = if done { "done" } else { "failed" };
        self.jobs
            .get_or_create(&KindOutcomeLabels {
                kind: kind.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
        self.job_seconds
            .get_or_create(&KindLabels {
                kind: kind.to_owned(),
            })
            .observe(took.as_secs_f64());
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
                .get_or_create(&OutcomeLabels {
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
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String does not fail");
        text
    }
}

/// A live-update stream being counted; dropping it stops counting it.
pub struct LiveStream(Gauge);

impl Drop for LiveStream {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The content type of [`HubMetrics::render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
