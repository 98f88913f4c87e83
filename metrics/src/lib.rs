//! What the hub's and the agent's Prometheus metrics share: the label sets both use, a
//! histogram of seconds, operations counted by kind and outcome with their durations, and
//! the rendering in the OpenMetrics text format Prometheus reads.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

/// The content type of [`render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Every metric of `registry` in the OpenMetrics text format.
pub fn render(registry: &Registry) -> String {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry)
        .expect("writing to a String does not fail");
    text
}

/// One label, `kind`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: String,
}

/// One label, `outcome`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindOutcomeLabels {
    kind: String,
    outcome: String,
}

/// Histograms of seconds, from 1 ms to about 4.4 minutes.
#[derive(Clone, Copy, Debug)]
pub struct Seconds;

impl MetricConstructor<Histogram> for Seconds {
    fn new_metric(&self) -> Histogram {
        Histogram::new(exponential_buckets(0.001, 4.0, 10))
    }
}

/// Operations of several kinds: `<name>_total{kind,outcome}` counts them as they end, and
/// `<name>_duration_seconds{kind}` how long they took.
#[derive(Clone, Debug)]
pub struct Operations {
    ended: Family<KindOutcomeLabels, Counter>,
    took: Family<KindLabel, Histogram, Seconds>,
}

impl Operations {
    /// Registers the pair as `<name>` and `<name>_duration` in `registry`.
    pub fn register(registry: &mut Registry, name: &str, help: &str) -> Self {
        let operations = Self {
            ended: Family::default(),
            took: Family::new_with_constructor(Seconds),
        };
        registry.register(
            name,
            format!("{help}, by kind and outcome"),
            operations.ended.clone(),
        );
        registry.register_with_unit(
            format!("{name}_duration"),
            format!("How long they took ({help}), by kind"),
            Unit::Seconds,
            operations.took.clone(),
        );
        operations
    }

    /// Counts one that ended with `outcome` after `took`.
    pub fn ended(&self, kind: &str, outcome: &str, took: Duration) {
        self.ended
            .get_or_create(&KindOutcomeLabels {
                kind: kind.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
        self.took
            .get_or_create(&KindLabel {
                kind: kind.to_owned(),
            })
            .observe(took.as_secs_f64());
    }

    /// Makes the series of `kind` with each of `outcomes` exist at zero, so rates and
    /// dashboards have them before the first one ends.
    pub fn expect(&self, kind: &str, outcomes: &[&str]) {
        for outcome in outcomes {
            self.ended.get_or_create_owned(&KindOutcomeLabels {
                kind: kind.to_owned(),
                outcome: (*outcome).to_owned(),
            });
        }
        self.took.get_or_create_owned(&KindLabel {
            kind: kind.to_owned(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_render_as_counters_and_histograms() {
        let mut registry = Registry::with_prefix("test");
        let jobs = Operations::register(&mut registry, "jobs", "Jobs ended");
        jobs.expect("deploy", &["done", "failed"]);
        jobs.ended("deploy", "done", Duration::from_millis(30));
        let text = render(&registry);
        assert!(
            text.contains("test_jobs_total{kind=\"deploy\",outcome=\"done\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("test_jobs_total{kind=\"deploy\",outcome=\"failed\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains("test_jobs_duration_seconds_count{kind=\"deploy\"} 1\n"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"));
    }
}
