//! Idle shutdown on a node with no hub at all (an agent cut off from its hub): the enforcer
//! warns, shuts down through the real `qm` of pve-sim, powers off a guest that ignores the
//! request, and keeps what it did on disk for the hub it reaches later.

#[path = "support/sim.rs"]
mod sim;

use std::sync::Arc;
use std::time::Duration;

use proxlab_agent::collect::{Collector, Report};
use proxlab_agent::idle::IdleEnforcer;
use proxlab_agent::idle::clock::IdleClock;
use proxlab_agent::pve::config::PveConfig;
use proxlab_agent::pve::node::Node;
use proxlab_protocol::Event;
use proxlab_protocol::idle::{IdleOutcome, IdlePolicies, IdlePolicy, IdleReason, VmIdlePolicy};
use proxlab_protocol::inventory::PowerState;
use tokio::sync::broadcast;

const VMID: u32 = 100;

/// The next event of `kind` the enforcer or the collector reports, within a minute.
async fn next_event(
    reports: &mut broadcast::Receiver<Report>,
    wanted: fn(&Event) -> bool,
) -> Event {
    tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            match reports.recv().await {
                Ok(Report::Event(event)) if wanted(&event) => return event,
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(err) => panic!("the collector stopped: {err}"),
            }
        }
    })
    .await
    .expect("the event within a minute")
}

/// The node `pve1` of the cluster in `root`, its collector, a clock the test moves, and an
/// idle enforcer keeping its state in `state_dir` (in memory without one).
async fn enforcer_on(
    root: &std::path::Path,
    state_dir: Option<&std::path::Path>,
) -> (Arc<Node>, Arc<Collector>, Arc<IdleClock>, Arc<IdleEnforcer>) {
    let node = Arc::new(Node::new(PveConfig::for_sim(root, "pve1")));
    let collector = Collector::start(node.clone()).await;
    let clock = Arc::new(IdleClock::default());
    let enforcer = Arc::new(IdleEnforcer::new(
        node.clone(),
        collector.clone(),
        clock.clone(),
        state_dir,
    ));
    (node, collector, clock, enforcer)
}

#[tokio::test]
async fn a_node_alone_warns_shuts_down_powers_off_a_hung_guest_and_keeps_the_report() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("pve");
    let state_dir = dir.path().join("state");
    std::fs::create_dir_all(&state_dir).unwrap();
    sim::init_node(&root, "tmpl:64M");
    sim::run(
        &root,
        &["qm", "create", &VMID.to_string(), "--name", "lab-vm"],
    );
    // The guest ignores the power button.
    sim::run(
        &root,
        &["script", &VMID.to_string(), "--hung-shutdown", "on"],
    );

    let (node, collector, clock, enforcer) = enforcer_on(&root, Some(&state_dir)).await;
    let mut reports = collector.subscribe();
    sim::run(&root, &["qm", "start", &VMID.to_string()]);
    next_event(&mut reports, |event| {
        matches!(event, Event::InventoryDelta { delta }
            if delta.upserted.iter().any(|vm| vm.vmid == VMID && vm.status == PowerState::Running))
    })
    .await;

    let policy = IdlePolicy {
        no_connection_secs: Some(600),
        disconnected_secs: None,
        idle_guest: None,
        warn_secs: 300,
        shutdown_timeout_secs: 1,
        hard_stop: true,
        guest_message: false,
    };
    enforcer
        .set_policies(IdlePolicies {
            vms: vec![VmIdlePolicy { vmid: VMID, policy }],
        })
        .unwrap();
    let started = clock.now();
    enforcer.pass();

    // Five minutes before the ten are up, the warning.
    clock.set_skew(301);
    enforcer.pass();
    let warning = next_event(&mut reports, |event| {
        matches!(event, Event::IdleWarning { .. })
    })
    .await;
    let Event::IdleWarning {
        vmid,
        reason,
        stop_at_unix,
        secs_left,
    } = warning
    else {
        unreachable!()
    };
    assert_eq!((vmid, reason), (VMID, IdleReason::NoConnection));
    assert!(
        (started + 600..=started + 602).contains(&stop_at_unix),
        "{stop_at_unix}"
    );
    assert!((298..=300).contains(&secs_left), "{secs_left}");

    // At ten, the shutdown: ignored by the guest, so powered off.
    clock.set_skew(601);
    enforcer.pass();
    let stopped = next_event(&mut reports, |event| {
        matches!(event, Event::IdleStopped { .. })
    })
    .await;
    let Event::IdleStopped { stop } = stopped else {
        unreachable!()
    };
    assert_eq!(stop.vmid, VMID);
    assert_eq!(stop.reason, IdleReason::NoConnection);
    assert_eq!(stop.idle_secs, 600);
    assert_eq!(stop.outcome, IdleOutcome::PoweredOff);
    let status = node.qm(["status", &VMID.to_string()]).await.unwrap();
    assert_eq!(status.trim(), "status: stopped");

    // An agent started again (the hub still away) knows its policies and what it did, and
    // tells the hub it reaches.
    let again = IdleEnforcer::new(node, collector, clock, Some(&state_dir));
    let replay = again.replay();
    assert_eq!(replay, [Event::IdleStopped { stop }]);
    let kept: IdlePolicies = serde_json::from_str(
        &std::fs::read_to_string(state_dir.join("idle-policies.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(kept.vms.len(), 1);
}

/// The commands the guest of `vmid` was asked to run, as pve-sim logged them.
fn guest_commands(root: &std::path::Path, vmid: u32) -> Vec<Vec<String>> {
    let script: serde_json::Value =
        serde_json::from_str(&sim::output(root, &["script", &vmid.to_string()])).unwrap();
    serde_json::from_value(script["exec_log"].clone()).unwrap()
}

#[tokio::test]
async fn the_warning_is_shown_inside_guests_that_have_a_guest_agent() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("pve");
    sim::init_node(&root, "tmpl:64M");
    // A Linux guest and a Windows guest with the guest agent, and a guest without one.
    let guests = [
        (100, "l26", true),
        (101, "win11", true),
        (102, "l26", false),
    ];
    for (vmid, ostype, agent) in guests {
        let id = vmid.to_string();
        let agent = if agent { "1" } else { "0" };
        sim::run(
            &root,
            &["qm", "create", &id, "--ostype", ostype, "--agent", agent],
        );
        sim::run(&root, &["script", &id, "--guest-agent", "on"]);
    }
    let (_node, collector, clock, enforcer) = enforcer_on(&root, None).await;
    let mut reports = collector.subscribe();
    for (vmid, _, _) in guests {
        sim::run(&root, &["qm", "start", &vmid.to_string()]);
    }
    let policy = IdlePolicy {
        no_connection_secs: Some(600),
        disconnected_secs: None,
        idle_guest: None,
        warn_secs: 300,
        shutdown_timeout_secs: 1,
        hard_stop: true,
        guest_message: true,
    };
    let vms = guests
        .iter()
        .map(|(vmid, _, _)| VmIdlePolicy {
            vmid: *vmid,
            policy: policy.clone(),
        })
        .collect();
    enforcer.set_policies(IdlePolicies { vms }).unwrap();
    // Every VM must be seen running before the clock moves, or its timer starts late.
    let running = |vmid| {
        collector
            .vm(vmid)
            .is_some_and(|vm| vm.status == PowerState::Running)
    };
    while !guests.iter().all(|(vmid, _, _)| running(*vmid)) {
        next_event(&mut reports, |event| {
            matches!(event, Event::InventoryDelta { .. })
        })
        .await;
    }
    enforcer.pass();
    clock.set_skew(301);
    enforcer.pass();

    // The message goes out beside the warning; wait until both guests have it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let (linux, windows) = loop {
        let seen = (guest_commands(&root, 100), guest_commands(&root, 101));
        if !seen.0.is_empty() && !seen.1.is_empty() {
            break seen;
        }
        assert!(tokio::time::Instant::now() < deadline, "no guest message");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(linux.len(), 1, "once: {linux:?}");
    assert_eq!(linux[0][0], "wall");
    assert!(linux[0][1].contains("shuts down in 5 min"), "{linux:?}");
    assert_eq!(&windows[0][..2], ["msg", "*"]);
    assert!(
        windows[0][3].starts_with("proxlab: Nobody has connected"),
        "{windows:?}"
    );
    // A further pass with the warning still in force says nothing more.
    enforcer.pass();
    assert_eq!(guest_commands(&root, 100).len(), 1);
    assert!(
        guest_commands(&root, 102).is_empty(),
        "no guest agent, no message"
    );
    for (vmid, _, _) in guests {
        sim::run(&root, &["qm", "stop", &vmid.to_string()]);
    }
}
