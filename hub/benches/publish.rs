//! Publishing a new version to a 100-student class: `cargo bench -p proxlab-hub --bench publish`.
//!
//! A real hub and two real agents on a two-node pve-sim cluster, with a template on pve1's
//! node-local storage holding 1 GiB of data (`PROXLAB_BENCH_FILL_MIB` changes it). The class
//! (100 students and the teacher VM) is deployed first; then the running teacher VM is
//! published with *re-make every VM now*. Prints the time of each stage (the teacher VM's
//! shutdown, the new base made from it on its node, and on the other node from the teacher
//! VM's changes sent through the hub meanwhile, the teacher VM moved onto it, every student
//! VM re-made) and, measured in the same run, the baseline: a
//! bare `qemu-img convert` of the teacher VM's disk and 101 bare `qemu-img create` overlays
//! on the result. Asserts nothing about speed.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{SimCluster, TestHub};
use proxlab_hub::db::classes::ClassVmRow;
use proxlab_hub::db::states::{ClassVmKind, ClassVmState, Rollout};
use proxlab_hub::db::users::Role;
use proxlab_hub::domain::classes::versions::{self, RolloutChoice};
use proxlab_hub::domain::classes::{self, ClassRequest};
use proxlab_hub::domain::viewer::Viewer;
use proxlab_protocol::inventory::PowerState;
use proxlab_protocol::vm_ops::{PowerAction, VmPower};

const TEMPLATE: u32 = 9000;
const STUDENTS: u32 = 100;

#[tokio::main]
async fn main() {
    let hub = TestHub::start().await;
    let sim = SimCluster::init_on(hub.dir.path(), "pve1,pve2", &["bench-tpl:2G"], "local");
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
        .unwrap_or(1024);
    let template_disk =
        common::find_file(&sim.root, &format!("base-{TEMPLATE}-disk-0.qcow2")).unwrap();
    qemu_io(&template_disk, &format!("write -P 0x5a 0 {fill_mib}M"));
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
    let (class_id, job) = classes::create_class(
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
    while !state
        .db
        .job(job)
        .await
        .unwrap()
        .unwrap()
        .state
        .is_finished()
    {
        let _ = progress.recv().await;
    }
    let rows = state.db.class_vms(class_id).await.unwrap();
    let teacher_vm = rows
        .iter()
        .find(|vm| vm.kind == ClassVmKind::Teacher)
        .unwrap()
        .clone();
    let start = VmPower {
        vmid: teacher_vm.vmid,
        action: PowerAction::Start,
    };
    state.registry.call(&teacher_vm.node, &start).await.unwrap();
    // The teacher's change: 64 MiB at 1 GiB.
    let teacher_disk =
        common::find_file(&sim.root, &format!("vm-{}-disk-0.qcow2", teacher_vm.vmid)).unwrap();
    qemu_io(&teacher_disk, "write -P 0x33 1G 64M");

    let started = Instant::now();
    let (number, job) = versions::publish(
        &state,
        &teacher,
        class_id,
        "bench",
        RolloutChoice {
            rollout: Rollout::Now,
            warn_minutes: 0,
        },
    )
    .await
    .unwrap();
    let mut stages: Vec<(&str, Duration)> = Vec::new();
    let mut teacher_stopped = None;
    let mut changes = state.inventory_changes.subscribe();
    loop {
        let done = state
            .db
            .job(job)
            .await
            .unwrap()
            .unwrap()
            .state
            .is_finished();
        let rows = state.db.class_vms(class_id).await.unwrap();
        if teacher_stopped.is_none()
            && state
                .db
                .vm(teacher_vm.key)
                .await
                .unwrap()
                .is_some_and(|vm| vm.status == PowerState::Stopped)
        {
            teacher_stopped = Some(started.elapsed());
        }
        record(&mut stages, "new base made on pve1", started, || {
            bases(&rows, number)
                .iter()
                .any(|base| base.node == "pve1" && ready(base))
        });
        record(&mut stages, "new base on both nodes", started, || {
            bases(&rows, number).iter().all(|base| ready(base))
        });
        record(&mut stages, "teacher VM moved onto it", started, || {
            on_version(&rows, ClassVmKind::Teacher, number) == 1
        });
        record(&mut stages, "all student VMs re-made", started, || {
            on_version(&rows, ClassVmKind::Student, number) == STUDENTS as usize
        });
        if done {
            break;
        }
        tokio::select! {
            _ = progress.recv() => {}
            _ = changes.recv() => {}
        }
    }
    let total = started.elapsed();
    // The baseline, in the same run and as warm a cache: what the disks alone cost (the
    // teacher VM's disk now holds the same data, on the new base).
    let scratch = tempfile::tempdir_in(hub.dir.path()).unwrap();
    let baseline_started = Instant::now();
    let flat = scratch.path().join("flat.qcow2");
    run(
        "qemu-img",
        &["convert", "-U", "-O", "qcow2"],
        &[&teacher_disk, &flat],
    );
    let convert = baseline_started.elapsed();
    for n in 0..=STUDENTS {
        let overlay = scratch.path().join(format!("overlay-{n}.qcow2"));
        run(
            "qemu-img",
            &["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b"],
            &[&flat, &overlay],
        );
    }
    let baseline = baseline_started.elapsed();
    drop(scratch);

    let job = state.db.job(job).await.unwrap().unwrap();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "publish of v{number} to {STUDENTS} students (+ teacher VM on {}), template with \
         {fill_mib} MiB on local storage, 2 nodes: {}",
        teacher_vm.node, job.message
    );
    if let Some(stopped) = teacher_stopped {
        println!("  teacher VM seen stopped:        {:>8.0} ms", ms(stopped));
    }
    let mut last = Duration::ZERO;
    for (stage, at) in &stages {
        println!(
            "  {stage:<31} {:>8.0} ms (stage {:>6.0} ms)",
            ms(*at),
            ms(at.saturating_sub(last))
        );
        last = *at;
    }
    println!("  job ended:                      {:>8.0} ms", ms(total));
    println!(
        "baseline: qemu-img convert {:.0} ms + {} qemu-img create = {:.0} ms; ratio {:.2}",
        ms(convert),
        STUDENTS + 1,
        ms(baseline),
        total.as_secs_f64() / baseline.as_secs_f64()
    );
}

/// Notes when `reached` first holds.
fn record(
    stages: &mut Vec<(&'static str, Duration)>,
    stage: &'static str,
    started: Instant,
    reached: impl FnOnce() -> bool,
) {
    if !stages.iter().any(|(seen, _)| *seen == stage) && reached() {
        stages.push((stage, started.elapsed()));
    }
}

fn bases(rows: &[ClassVmRow], number: i64) -> Vec<&ClassVmRow> {
    rows.iter()
        .filter(|vm| vm.kind == ClassVmKind::Base && vm.version == Some(number))
        .collect()
}

fn ready(vm: &ClassVmRow) -> bool {
    vm.state == ClassVmState::Ready
}

fn on_version(rows: &[ClassVmRow], kind: ClassVmKind, number: i64) -> usize {
    rows.iter()
        .filter(|vm| vm.kind == kind && vm.version == Some(number))
        .count()
}

fn qemu_io(disk: &std::path::Path, command: &str) {
    let status = std::process::Command::new("qemu-io")
        .args(["-f", "qcow2", "-c", command])
        .arg(disk)
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "qemu-io {command} on {}", disk.display());
}

fn run(program: &str, args: &[&str], paths: &[&std::path::Path]) {
    let status = std::process::Command::new(program)
        .args(args)
        .args(paths)
        .status()
        .unwrap();
    assert!(status.success(), "{program} {args:?}");
}
