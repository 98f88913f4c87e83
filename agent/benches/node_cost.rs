//! `cargo bench -p proxlab-agent --bench node_cost`: what the agent's watching costs a busy
//! node. One simulated node holds 200 VMs, 50 of them running and 40 of those with a guest
//! agent; the agent's real collector watches it for a while, and the bench prints the CPU
//! the agent used, the CPU of the processes it started, and how many of each tool it
//! started, scaled to one hour.
//!
//! It needs the `pve-sim` binary (`cargo build -p pve-sim`); it builds it if missing.
//! `PROXLAB_BENCH_SECONDS` (default 60) sets how long the collector is watched.

#[path = "../tests/support/sim.rs"]
mod sim;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use proxlab_agent::collect::Collector;
use proxlab_agent::pve::command::runs_so_far;
use proxlab_agent::pve::config::PveConfig;
use proxlab_agent::pve::node::Node;

const VMS: u32 = 200;
const RUNNING: u32 = 50;
const WITH_GUEST_AGENT: u32 = 40;
const FIRST_VMID: u32 = 1000;

/// CPU seconds (user + system) of this process, and of its children it has waited for
/// (`/proc/self/stat` fields 14-17).
fn cpu_seconds() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let (_, rest) = stat.rsplit_once(") ").unwrap();
    let ticks: Vec<f64> = rest
        .split(' ')
        .skip(11)
        .take(4)
        .map(|field| field.parse().unwrap())
        .collect();
    let per_second = proxlab_agent::collect::procfs::TICKS_PER_SEC;
    (
        (ticks[0] + ticks[1]) / per_second,
        (ticks[2] + ticks[3]) / per_second,
    )
}

/// A small VM config; the collector reads nothing else for a stopped VM.
fn write_config(root: &Path, vmid: u32, agent: bool) {
    let mac = format!(
        "BC:24:11:{:02X}:{:02X}:{:02X}",
        vmid >> 16,
        (vmid >> 8) & 0xff,
        vmid & 0xff
    );
    let agent_line = if agent { "agent: 1\n" } else { "" };
    let text = format!(
        "{agent_line}boot: order=scsi0\ncores: 2\nmemory: 2048\nname: student-{vmid}\n\
         net0: virtio={mac},bridge=vmbr0\nostype: l26\nscsihw: virtio-scsi-single\n\
         smbios1: uuid=6c9b1f2e-0000-4000-8000-{vmid:012}\n"
    );
    let dir = root.join("etc/pve/nodes/pve1/qemu-server");
    std::fs::write(dir.join(format!("{vmid}.conf")), text).unwrap();
}

fn main() {
    let seconds = std::env::var("PROXLAB_BENCH_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60u64);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("pve");
    sim::init_node(&root, "bench:64M");
    for i in 0..VMS {
        write_config(&root, FIRST_VMID + i, i < WITH_GUEST_AGENT);
    }
    for i in 0..RUNNING {
        let vmid = (FIRST_VMID + i).to_string();
        if i < WITH_GUEST_AGENT {
            sim::run(&root, &["script", &vmid, "--guest-agent", "on"]);
        }
        sim::run(&root, &["qm", "start", &vmid]);
    }

    let config = PveConfig::for_sim(&root, "pve1");
    let node = Arc::new(Node::new(config));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (agent_cpu, tools_cpu, runs, elapsed, vms) = runtime.block_on(async {
        let collector = Collector::start(node).await;
        // The first pass asks every guest agent at once; measure the steady state after it.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let runs_before = runs_so_far();
        let (self_before, children_before) = cpu_seconds();
        let started = Instant::now();
        tokio::time::sleep(Duration::from_secs(seconds)).await;
        let (self_after, children_after) = cpu_seconds();
        let elapsed = started.elapsed().as_secs_f64();
        let runs: Vec<(String, u64)> = runs_so_far()
            .into_iter()
            .map(|(tool, after)| {
                let before = runs_before.get(&tool).copied().unwrap_or(0);
                (tool, after - before)
            })
            .filter(|(_, started)| *started > 0)
            .collect();
        // The cluster's template is not one of the measured VMs.
        let vms: Vec<_> = collector
            .snapshot()
            .vms
            .into_iter()
            .filter(|vm| !vm.template)
            .collect();
        (
            self_after - self_before,
            children_after - children_before,
            runs,
            elapsed,
            vms,
        )
    });

    let running = vms
        .iter()
        .filter(|vm| vm.status == proxlab_protocol::inventory::PowerState::Running)
        .count();
    let with_guest_ips = vms
        .iter()
        .filter(|vm| vm.ips.iter().any(|ip| ip.address.starts_with("10.")))
        .count();
    assert_eq!(vms.len(), VMS as usize, "the collector sees every VM");
    assert_eq!(
        running, RUNNING as usize,
        "the collector sees every running VM"
    );
    let per_hour = 3600.0 / elapsed;
    let spawned: Vec<String> = runs
        .iter()
        .map(|(tool, n)| format!("{tool} {:.0}/h", *n as f64 * per_hour))
        .collect();
    println!(
        "node cost ({VMS} VMs, {RUNNING} running, {WITH_GUEST_AGENT} with a guest agent; \
         watched {elapsed:.0} s): agent {:.1} CPU s/h, tools it started {:.1} CPU s/h, \
         spawns: {}; {with_guest_ips} VMs with guest-agent addresses",
        agent_cpu * per_hour,
        tools_cpu * per_hour,
        if spawned.is_empty() {
            "none".to_owned()
        } else {
            spawned.join(", ")
        },
    );
    // The simulated VMs are not children of this process; stop them.
    for i in 0..RUNNING {
        let _ = Command::new(sim::sim_binary())
            .args(["qm", "stop", &(FIRST_VMID + i).to_string()])
            .env("PVE_SIM_ROOT", &root)
            .env("PVE_SIM_NODE", "pve1")
            .output();
    }
}
