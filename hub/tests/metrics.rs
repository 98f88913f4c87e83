//! `/metrics` on the hub and on an agent, read by Prometheus's own Python parser
//! (`prometheus_client`, its strict OpenMetrics parser): a real hub, a real agent on a
//! one-node pve-sim cluster. Skips with a notice when Python's `prometheus_client` is
//! missing (CI installs it).

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};

use common::{SimCluster, TestHub, within};
use proxlab_hub::config::MetricsAccess;
use proxlab_protocol::requests::Ping;
use reqwest::StatusCode;

const TOKEN: &str = "metrics-token-for-the-test-0123";

/// The samples of an exposition as `name{label="value",...}` → value, as Prometheus's Python
/// client parses them; `None` when that parser is not installed.
fn parse(text: &str) -> Option<BTreeMap<String, f64>> {
    const SCRIPT: &str = "\
import json, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
samples = {}
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        labels = ','.join(f'{k}=\"{v}\"' for k, v in sorted(s.labels.items()))
        samples[f'{s.name}{{{labels}}}'] = s.value
print(json.dumps(samples))
";
    let has_parser = Command::new("python3")
        .args(["-c", "import prometheus_client.openmetrics.parser"])
        .output()
        .is_ok_and(|out| out.status.success());
    if !has_parser {
        eprintln!(
            "NOTICE: Python's prometheus_client is missing (pip install prometheus_client); \
             the metrics test is skipped"
        );
        return None;
    }
    let mut child = Command::new("python3")
        .args(["-c", SCRIPT])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "Prometheus's parser refused the exposition: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(serde_json::from_slice(&out.stdout).unwrap())
}

/// The metric families an exposition declares (`# TYPE <name> <type>`).
fn families(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split(' ').next())
        .map(str::to_owned)
        .collect()
}

/// Every `proxlab_…` series the packaged Grafana dashboard queries is one the hub or the
/// agent exposes (a counter's `_total`, a histogram's `_bucket`, of a declared family).
fn assert_dashboard_queries_exist(exposed: &[String]) {
    let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../packaging/grafana/proxlab-dashboard.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
    let mut queried = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            for (at, _) in expr.match_indices("proxlab_") {
                let name: String = expr[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                let family = ["_total", "_bucket", "_count", "_sum"]
                    .iter()
                    .find_map(|suffix| name.strip_suffix(suffix))
                    .filter(|stem| exposed.iter().any(|f| f == stem))
                    .unwrap_or(&name);
                assert!(
                    exposed.iter().any(|f| f == family),
                    "the dashboard queries {name}, which nothing exposes ({exposed:?})"
                );
                queried += 1;
            }
        }
    }
    assert!(queried >= 10, "{queried} queries");
}

fn sample(samples: &BTreeMap<String, f64>, key: &str) -> f64 {
    *samples
        .get(key)
        .unwrap_or_else(|| panic!("no sample {key} in {samples:#?}"))
}

#[tokio::test]
async fn hub_and_agent_metrics_parse_with_prometheus_and_say_what_happened() {
    if parse("# EOF\n").is_none() {
        return;
    }
    // Scrapers only from a network the test is not on, or with the token.
    let hub = TestHub::start_configured(None, |config| {
        config.metrics = MetricsAccess::new(vec!["192.0.2.0/24".parse().unwrap()], Some(TOKEN));
    })
    .await;
    let sim = SimCluster::init(hub.dir.path(), "pve1", &["tpl:64M"]);
    let agent_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = sim.agent_config(hub.dir.path(), "pve1");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!("[metrics]\nlisten = \"127.0.0.1:{agent_port}\"\n"));
    std::fs::write(&config, text).unwrap();
    hub.enroll("pve1").await;
    let _agent = hub.spawn_agent_with(
        "pve1",
        &config,
        &[
            ("PVE_SIM_ROOT", &sim.root),
            ("PVE_SIM_NODE", std::path::Path::new("pve1")),
        ],
    );
    within("pve1 online", hub.hub().registry().wait_for("pve1", true)).await;

    // One request to the agent, counted on both sides.
    let pong = hub
        .hub()
        .registry()
        .call(
            "pve1",
            &Ping {
                payload: "metrics".into(),
                delay_ms: 0,
            },
        )
        .await
        .unwrap();
    assert_eq!(pong.payload, "metrics");

    let http = reqwest::Client::new();
    let health = http
        .get(format!("{}/health", hub.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK);

    let refused = http
        .get(format!("{}/metrics", hub.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let wrong = http
        .get(format!("{}/metrics", hub.url()))
        .bearer_auth("metrics-token-for-the-test-0124")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::FORBIDDEN);
    let answer = http
        .get(format!("{}/metrics", hub.url()))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    assert!(
        answer.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let hub_text = answer.text().await.unwrap();
    let samples = parse(&hub_text).unwrap();
    assert_eq!(sample(&samples, "proxlab_hub_agents_connected{}"), 1.0);
    assert!(
        sample(
            &samples,
            "proxlab_hub_http_requests_total{method=\"GET\",route=\"/health\",status=\"200\"}"
        ) >= 1.0
    );
    assert!(
        sample(
            &samples,
            "proxlab_hub_http_requests_total{method=\"GET\",route=\"/metrics\",status=\"403\"}"
        ) >= 2.0
    );
    assert!(
        sample(
            &samples,
            "proxlab_hub_http_request_duration_seconds_count{route=\"/health\"}"
        ) >= 1.0
    );
    let connections = sample(&samples, "proxlab_hub_db_connections{state=\"idle\"}")
        + sample(&samples, "proxlab_hub_db_connections{state=\"in-use\"}");
    assert!(connections >= 1.0, "{connections}");
    assert_eq!(sample(&samples, "proxlab_hub_console_sessions{}"), 0.0);
    assert_eq!(
        sample(
            &samples,
            "proxlab_hub_agent_calls_total{kind=\"ping\",outcome=\"ok\"}"
        ),
        1.0
    );

    // The agent's, on its local address.
    let agent_url = format!("http://127.0.0.1:{agent_port}");
    let answer = http
        .get(format!("{agent_url}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    let agent_text = answer.text().await.unwrap();
    let samples = parse(&agent_text).unwrap();
    assert_eq!(sample(&samples, "proxlab_agent_hub_connected{}"), 1.0);
    assert_eq!(
        sample(&samples, "proxlab_agent_vms{state=\"template\"}"),
        1.0
    );
    assert_eq!(
        sample(&samples, "proxlab_agent_vms{state=\"running\"}"),
        0.0
    );
    assert!(sample(&samples, "proxlab_agent_tool_runs_total{tool=\"pvesm\"}") >= 1.0);
    assert_eq!(
        sample(
            &samples,
            "proxlab_agent_requests_total{kind=\"ping\",outcome=\"ok\"}"
        ),
        1.0
    );
    let other = http.get(format!("{agent_url}/")).send().await.unwrap();
    assert_eq!(other.status(), StatusCode::NOT_FOUND);
    let posted = http
        .post(format!("{agent_url}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), StatusCode::METHOD_NOT_ALLOWED);

    let exposed: Vec<String> = families(&hub_text)
        .into_iter()
        .chain(families(&agent_text))
        .collect();
    assert_dashboard_queries_exist(&exposed);
}
