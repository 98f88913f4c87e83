//! Deploying a 100-student class: `cargo bench -p proxlab-hub --bench classes`.
//!
//! A real hub and two real agents on a two-node pve-sim cluster, with a 2 GiB template on
//! shared storage. Prints the time to export the class base (a full copy of the template
//! disk), the time from the start of cloning until all 101 VMs (100 students and the
//! teacher's) are registered in the hub's inventory, and, measured in the same run as the
//! baseline, a bare loop of 101 `qemu-img create` overlays on the same base. Asserts nothing
//! about speed.
//!
//! `PROXLAB_BENCH_STORAGE=local` puts the template on pve1's node-local storage instead, so
//! the run also copies the class base to pve2 through the hub, and prints how long that took.
//! `PROXLAB_BENCH_FILL_MIB=N` first writes N MiB of data into the template's disk (with
//! `qemu-io`), so the copies move real bytes rather than holes.

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::HashSet;
use std::time::Instant;

use common::{SimCluster, TestHub};
use proxlab_hub::db::states::{ClassVmKind, ClassVmState};
use proxlab_hub::db::users::Role;
use proxlab_hub::domain::classes::{self, ClassRequest};
use proxlab_hub::domain::viewer::Viewer;

const TEMPLATE: u32 = 9000;
const STUDENTS: u32 = 100;

#[tokio::main]
async fn main() {
    let hub = TestHub::start().await;
    let storage = std::env::var("PROXLAB_BENCH_STORAGE").unwrap_or_else(|_| "shared".into());
    let sim = SimCluster::init_on(hub.dir.path(), "pve1,pve2", &["bench-tpl:2G"], &storage);
    let _agents = [
        hub.sim_agent(&sim, "pve1").await,
        hub.sim_agent(&sim, "pve2").await,
    ];
    let state = hub.hub().state.clone();
    let mut inventory = state.inventory_changes.subscribe();
    let template = common::vm_key(&state.db, "pve1", TEMPLATE).await;
    while state.db.vm(template).await.unwrap().is_none() {
        let _ = inventory.recv().await;
    }
    let fill_mib: u64 = std::env::var("PROXLAB_BENCH_FILL_MIB")
        .ok()
        .and_then(|mib| mib.parse().ok())
        .unwrap_or(0);
    if fill_mib > 0 {
        let disk = common::find_file(&sim.root, &format!("base-{TEMPLATE}-disk-0.qcow2"))
            .expect("the template disk");
        let status = std::process::Command::new("qemu-io")
            .args(["-c", &format!("write -P 0x5a 0 {fill_mib}M")])
            .arg(&disk)
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "qemu-io failed on {}", disk.display());
    }
    proxlab_hub::domain::accounts::create_user(
        &state.db,
        "tina",
        Role::Teacher,
        Some("a-long-password"),
    )
    .await
    .unwrap();
    let teacher = Viewer::from(&state.db.user_by_name("tina").await.unwrap().unwrap());

    let mut progress = state.jobs.subscribe();
    let started = Instant::now();
    let (class_id, _) = classes::create_class(
        &state,
        &teacher,
        &ClassRequest {
            name: "Bench".into(),
            description: String::new(),
            template: Some(template),
            seats: STUDENTS,
            node: None,
            cores: None,
            memory_mib: None,
            empty: Default::default(),
            plugins: Vec::new(),
        },
    )
    .await
    .unwrap();
    let rows = state.db.class_vms(class_id).await.unwrap();
    let bases: Vec<u32> = rows
        .iter()
        .filter(|vm| vm.kind == ClassVmKind::Base)
        .map(|vm| vm.vmid)
        .collect();
    let base = bases[0];
    let clones: HashSet<u32> = rows
        .iter()
        .filter(|vm| vm.kind != ClassVmKind::Base)
        .map(|vm| vm.vmid)
        .collect();
    loop {
        let base_row = state.db.class_vms(class_id).await.unwrap();
        if base_row
            .iter()
            .any(|vm| vm.vmid == base && vm.state == ClassVmState::Ready)
        {
            break;
        }
        let _ = progress.recv().await;
    }
    let base_done = started.elapsed();
    let copying = Instant::now();
    loop {
        let rows = state.db.class_vms(class_id).await.unwrap();
        let ready = |vmid: &u32| {
            rows.iter()
                .any(|vm| vm.vmid == *vmid && vm.state == ClassVmState::Ready)
        };
        if bases.iter().all(ready) {
            break;
        }
        let _ = progress.recv().await;
    }
    let copies_done = copying.elapsed();
    let cloning = Instant::now();
    loop {
        let stored: HashSet<u32> = state
            .db
            .list_vms()
            .await
            .unwrap()
            .iter()
            .map(|vm| vm.vmid)
            .collect();
        if clones.is_subset(&stored) {
            break;
        }
        let _ = inventory.recv().await;
    }
    let clones_done = cloning.elapsed();

    // The baseline: the same number of bare overlays on the same base, one after another.
    let base_disk =
        common::find_file(&sim.root, &format!("base-{base}-disk-0.qcow2")).expect("the base disk");
    let scratch = tempfile::tempdir().unwrap();
    let baseline = Instant::now();
    for n in 0..clones.len() {
        let status = std::process::Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b"])
            .arg(&base_disk)
            .arg(scratch.path().join(format!("overlay-{n}.qcow2")))
            .status()
            .unwrap();
        assert!(status.success());
    }
    let baseline = baseline.elapsed();
    let on = |node: &str| {
        rows.iter()
            .filter(|vm| vm.kind != ClassVmKind::Base && vm.node == node)
            .count()
    };
    println!(
        "class of {STUDENTS} students (+ teacher VM) from a 2 GiB template, 2 nodes ({} + {} VMs)",
        on("pve1"),
        on("pve2")
    );
    println!(
        "base export (full copy of the template disk): {:>8.0} ms",
        base_done.as_secs_f64() * 1000.0
    );
    if bases.len() > 1 {
        let copy = common::find_file(&sim.root, &format!("base-{}-disk-0.qcow2", bases[1]))
            .expect("the copy");
        println!(
            "base copy to pve2 through the hub ({}): {:>8.0} ms",
            human_size(std::fs::metadata(copy).unwrap().len()),
            copies_done.as_secs_f64() * 1000.0
        );
    }
    println!(
        "cloning until all {} VMs are registered:    {:>8.0} ms",
        clones.len(),
        clones_done.as_secs_f64() * 1000.0
    );
    println!(
        "baseline, {} bare `qemu-img create` overlays: {:>7.0} ms",
        clones.len(),
        baseline.as_secs_f64() * 1000.0
    );
}

fn human_size(bytes: u64) -> String {
    format!("{:.1} MiB file", bytes as f64 / f64::from(1 << 20))
}
