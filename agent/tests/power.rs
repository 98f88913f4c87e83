//! Power actions through the real driver against pve-sim.

#[path = "support/sim.rs"]
mod sim;

use std::sync::Arc;

use proxlab_agent::pve::config::PveConfig;
use proxlab_agent::pve::node::Node;
use proxlab_agent::pve::ops;
use proxlab_protocol::inventory::PowerState;
use proxlab_protocol::vm_ops::PowerAction;

/// Two starts of one stopped VM at once (a hub that took over a crashed hub's scheduled
/// start, say): `qm` refuses the one that comes second ("already running"), and both callers
/// are told the truth, that the VM runs. A start of a template still fails.
#[tokio::test]
async fn a_start_that_loses_a_race_to_another_start_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    sim::init_node(root, "tmpl:64M");
    sim::run(root, &["qm", "clone", "9000", "100", "--name", "vm-100"]);
    // Both starts pass `qm status` before either reaches the node's lock.
    sim::run(root, &["fault", "--latency", "qm start=300"]);
    let node = Arc::new(Node::new(PveConfig::for_sim(root, "pve1")));
    let (first, second) = tokio::join!(
        ops::power(&node, 100, PowerAction::Start),
        ops::power(&node, 100, PowerAction::Start)
    );
    assert_eq!(first.unwrap(), PowerState::Running);
    assert_eq!(second.unwrap(), PowerState::Running);
    let template = ops::power(&node, 9000, PowerAction::Start).await;
    assert!(template.is_err(), "{template:?}");
    sim::run(root, &["qm", "stop", "100"]);
}
