//! The agent asks a running VM's QEMU directly: QMP for its run state, the guest agent's
//! channel for its addresses, with no `qm` process in between. Against pve-sim's VM
//! processes (which serve both sockets as QEMU and qemu-guest-agent speak them), and against
//! a real QEMU when Debian's `qemu-system-x86_64` is installed.

#[path = "support/sim.rs"]
mod sim;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use proxlab_agent::collect::Collector;
use proxlab_agent::pve::command::{PveError, runs_so_far};
use proxlab_agent::pve::config::PveConfig;
use proxlab_agent::pve::node::Node;
use proxlab_agent::pve::{ops, qemu_socket};
use proxlab_protocol::inventory::{IpSource, PowerState};

const ASK: Duration = Duration::from_secs(5);

/// Stops the test's VMs however the test ends (they are not its children).
struct StopVms<'a>(&'a Path, &'a [&'a str]);

impl Drop for StopVms<'_> {
    fn drop(&mut self) {
        for vmid in self.1 {
            let _ = std::process::Command::new(sim::sim_binary())
                .args(["qm", "stop", vmid])
                .env("PVE_SIM_ROOT", self.0)
                .env("PVE_SIM_NODE", "pve1")
                .output();
        }
    }
}

#[tokio::test]
async fn run_state_and_guest_addresses_come_from_the_vms_own_sockets() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    sim::init_node(root, "tmpl:64M");
    for vmid in ["100", "101"] {
        sim::run(
            root,
            &["qm", "clone", "9000", vmid, "--name", &format!("vm-{vmid}")],
        );
    }
    sim::run(
        root,
        &[
            "qm",
            "set",
            "100",
            "--agent",
            "enabled=1,fstrim_cloned_disks=1",
        ],
    );
    sim::run(root, &["script", "100", "--guest-agent", "on"]);
    let _stop = StopVms(root, &["100", "101"]);
    sim::run(root, &["qm", "start", "100"]);
    sim::run(root, &["qm", "start", "101"]);
    let node = Arc::new(Node::new(PveConfig::for_sim(root, "pve1")));

    // QMP: running, paused by `qm suspend`, running again after `qm resume`.
    let qmp = node.qmp_socket(100);
    let status = || qemu_socket::qmp_status(&qmp, ASK);
    assert_eq!(status().await.unwrap(), "running");
    sim::run(root, &["qm", "suspend", "100"]);
    assert_eq!(status().await.unwrap(), "paused");
    assert_eq!(ops::status(&node, 100).await.unwrap(), PowerState::Paused);

    // The guest agent lists its interfaces; the answer of an unknown command is an error.
    let channel = node.qga_socket(100);
    let interfaces = qemu_socket::guest_agent(&channel, "guest-network-get-interfaces", ASK)
        .await
        .unwrap();
    let names: Vec<&str> = interfaces
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|nic| nic["name"].as_str())
        .collect();
    assert_eq!(names, ["lo", "eth0"]);
    let unknown = qemu_socket::guest_agent(&channel, "guest-frobnicate", ASK).await;
    assert!(
        matches!(&unknown, Err(PveError::Invalid(message)) if message.contains("guest-frobnicate has not been found")),
        "{unknown:?}"
    );
    // VM 101 has no guest agent configured: there is no channel to ask.
    let absent = qemu_socket::guest_agent(&node.qga_socket(101), "guest-ping", ASK).await;
    assert!(matches!(absent, Err(PveError::Io(_))), "{absent:?}");

    // The collector reports both from the sockets, and starts no `qm` to learn them.
    let qm_before = runs_so_far().get("qm").copied().unwrap_or(0);
    let collector = Collector::start(node.clone()).await;
    let vm = collector.vm(100).unwrap();
    assert_eq!(vm.status, PowerState::Paused);
    assert!(
        vm.ips
            .iter()
            .any(|ip| ip.source == IpSource::GuestAgent && ip.address == "10.0.100.10"),
        "{:?}",
        vm.ips
    );
    assert!(
        vm.uptime_secs < 600,
        "uptime from the process's start: {}",
        vm.uptime_secs
    );
    assert_eq!(collector.vm(101).unwrap().status, PowerState::Running);
    assert_eq!(runs_so_far().get("qm").copied().unwrap_or(0), qm_before);

    sim::run(root, &["qm", "resume", "100"]);
    assert_eq!(status().await.unwrap(), "running");

    // A guest whose agent stops answering leaves the question unanswered, as a real
    // guest does; the deadline ends it.
    sim::run(root, &["script", "100", "--guest-agent", "off"]);
    let silent = qemu_socket::guest_agent(&channel, "guest-ping", Duration::from_millis(300)).await;
    assert!(
        matches!(silent, Err(PveError::Timeout { .. })),
        "{silent:?}"
    );
}

/// With a real QEMU: its own QMP says running and paused, and the channel Proxmox gives an
/// enabled guest agent exists, but nothing answers on it (no guest runs in the test VM).
#[tokio::test]
async fn a_real_qemu_answers_qmp_and_its_guest_agent_channel_stays_silent() {
    let has_qemu = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .any(|dir| dir.join("qemu-system-x86_64").is_file());
    if !has_qemu {
        eprintln!(
            "NOTICE: qemu-system-x86_64 is missing (Debian: qemu-system-x86); the real-QEMU \
             half of the socket test is skipped"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let init = std::process::Command::new(sim::sim_binary())
        .args(["init", "--root"])
        .arg(root)
        .args(["--nodes", "pve1", "--template", "tmpl:64M", "--qemu", "on"])
        .output()
        .unwrap();
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    sim::run(root, &["qm", "clone", "9000", "100", "--name", "vm-100"]);
    sim::run(root, &["qm", "set", "100", "--agent", "1"]);
    let _stop = StopVms(root, &["100"]);
    sim::run(root, &["qm", "start", "100"]);
    let node = Node::new(PveConfig::for_sim(root, "pve1"));

    let socket = node.qmp_socket(100);
    assert_eq!(
        qemu_socket::qmp_status(&socket, ASK).await.unwrap(),
        "running"
    );
    sim::run(root, &["qm", "suspend", "100"]);
    assert_eq!(
        qemu_socket::qmp_status(&socket, ASK).await.unwrap(),
        "paused"
    );

    assert!(
        node.qga_socket(100).exists(),
        "QEMU made the guest agent's channel"
    );
    let silent = qemu_socket::guest_agent(
        &node.qga_socket(100),
        "guest-ping",
        Duration::from_millis(500),
    )
    .await;
    assert!(
        matches!(silent, Err(PveError::Timeout { .. })),
        "{silent:?}"
    );
}
