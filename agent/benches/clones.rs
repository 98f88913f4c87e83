//! `cargo bench -p proxlab-agent --bench clones`: 100 linked clones of a 1 GiB base on one
//! simulated node through the agent's real clone path, against a bare loop of 100
//! `qemu-img create` overlays measured in the same run. Prints one line of figures.
//!
//! It needs the `pve-sim` binary (`cargo build -p pve-sim`); it builds it if missing.
//! `PROXLAB_BENCH_CLONES` (default 100) and `PROXLAB_BENCH_CONCURRENCY` (default: the
//! agent's) change the run.

#[path = "../tests/support/sim.rs"]
mod sim;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use proxlab_agent::pve::clones::clone_many;
use proxlab_agent::pve::config::PveConfig;
use proxlab_agent::pve::node::Node;
use proxlab_protocol::clones::{CloneTarget, Hardware};

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn bare_loop(images: &Path, count: usize) -> f64 {
    let dir = images.join("bare");
    std::fs::create_dir_all(&dir).unwrap();
    let started = Instant::now();
    for i in 0..count {
        let status = Command::new("qemu-img")
            .args([
                "create",
                "-q",
                "-f",
                "qcow2",
                "-F",
                "qcow2",
                "-b",
                "../9000/base-9000-disk-0.qcow2",
            ])
            .arg(format!("bare-{i}.qcow2"))
            .args(["-o", "extended_l2=on,cluster_size=128k"])
            .current_dir(&dir)
            .status()
            .unwrap();
        assert!(status.success());
    }
    started.elapsed().as_secs_f64() * 1000.0
}

fn main() {
    let count = env_number("PROXLAB_BENCH_CLONES", 100);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("pve");
    sim::init_node(&root, "bench:1G");
    let mut config = PveConfig::for_sim(&root, "pve1");
    // The real qemu-img, as on a Proxmox node (the simulator's wrapper only adds faults).
    config.qemu_img = "qemu-img".into();
    let concurrency = env_number("PROXLAB_BENCH_CONCURRENCY", config.clone_concurrency);
    let node = Arc::new(Node::new(config));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        // Warm up: storage paths are looked up once, the base file enters the page cache.
        let warm = vec![CloneTarget { vmid: 999, name: "warm-up".into() }];
        clone_many(&node, 9000, warm, 1, Hardware::default(), None, |_| {}).await.unwrap();

        let targets: Vec<CloneTarget> = (0..count as u32)
            .map(|i| CloneTarget { vmid: 1000 + i, name: format!("student-{i}") })
            .collect();
        let started = Instant::now();
        let outcomes = clone_many(&node, 9000, targets, concurrency, Hardware::default(), None, |_| {}).await.unwrap();
        let total_ms = started.elapsed().as_secs_f64() * 1000.0;
        let failed: Vec<_> = outcomes.iter().filter(|o| o.error.is_some()).collect();
        assert!(failed.is_empty(), "clones failed: {failed:?}");

        let images = root.join("nodes/pve1/var/lib/vz/images");
        let bare_ms = bare_loop(&images, count);
        println!(
            "clones: n={count} total_ms={total_ms:.0} per_vm_ms={:.1} bare_qemu_img_ms={bare_ms:.0} ratio={:.2} concurrency={concurrency}",
            total_ms / count as f64,
            total_ms / bare_ms
        );
    });
}
