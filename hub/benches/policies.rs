//! Time policies with a 500-VM class: `cargo bench -p proxlab-hub --bench policies`.
//!
//! A real hub (SQLite) with one class of 500 running student VMs, each with a user, a
//! metered run and every policy on (quota hours, all three idle policies). Prints:
//! - the hub's quota check (every 15 s): wall and CPU per pass, and CPU per minute;
//! - the hub's idle-policy computation for the agents (on every class change);
//! - the agent's idle judgement of 500 VMs (every 2 s): CPU per pass and per minute;
//! - how long after a policy's deadline a real agent asks the node to shut the VM down.
//!
//! Asserts nothing about speed.

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{TestHub, cpu_time};
use proxlab_hub::db::classes::NewClass;
use proxlab_hub::db::now_unix;
use proxlab_hub::db::quota::QuotaRow;
use proxlab_hub::db::states::{ClassVmKind, ClassVmState};
use proxlab_hub::db::users::Role;
use proxlab_hub::domain::quota::enforcer;
use proxlab_hub::domain::quota::meter::Run;
use proxlab_protocol::idle::{IdleGuest, IdlePolicy};
use proxlab_protocol::inventory::{Inventory, PowerState, VmInfo};

const VMS: usize = 500;

fn running_vm(vmid: u32) -> VmInfo {
    VmInfo {
        vmid,
        name: format!("lab-{vmid}"),
        node: "pve1".into(),
        status: PowerState::Running,
        template: false,
        cores: 2,
        sockets: 1,
        memory_mib: 2048,
        disks: vec![],
        nics: vec![],
        tags: vec![],
        lock: None,
        uptime_secs: 1800,
        cpu: 0.01,
        mem_bytes: 1 << 30,
        ips: vec![],
        identity: None,
        pending: Vec::new(),
    }
}

/// Per pass: median wall time and mean CPU time over `passes`.
async fn measure<F, Fut>(passes: u32, mut pass: F) -> (Duration, Duration)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    pass().await;
    let mut walls = Vec::new();
    let cpu_before = cpu_time();
    for _ in 0..passes {
        let started = Instant::now();
        pass().await;
        walls.push(started.elapsed());
    }
    let cpu = (cpu_time() - cpu_before) / passes;
    walls.sort();
    (walls[walls.len() / 2], cpu)
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() {
    let hub = TestHub::start_configured(None, |config| {
        config.schedules.run_scheduler = false;
    })
    .await;
    let state = hub.hub().state.clone();
    let db = &state.db;
    let now = now_unix();
    let teacher = db.insert_user("tina", Role::Teacher, "x", 0).await.unwrap();
    let class = NewClass {
        name: "big".into(),
        seats: VMS as u32,
        ..NewClass::default()
    };
    let class_id = db.insert_class(&class, teacher, 0).await.unwrap();
    let plan: Vec<(ClassVmKind, String)> = (0..VMS)
        .map(|_| (ClassVmKind::Student, "pve1".to_owned()))
        .collect();
    db.insert_join_token("bench-token", None, 0, i64::MAX / 2)
        .await
        .unwrap();
    db.enroll_node("bench-token", "pve1", "fp", now)
        .await
        .unwrap();
    let vmids = db
        .reserve_vmids(class_id, &plan, 10_000..=20_000, now)
        .await
        .unwrap();
    let inventory = Inventory {
        vms: vmids.iter().map(|vm| running_vm(vm.vmid)).collect(),
        storages: vec![],
        isos: vec![],
    };
    db.replace_inventory("pve1", &inventory, now).await.unwrap();
    for (index, vmid) in vmids.iter().enumerate() {
        db.set_class_vm_state(*vmid, ClassVmState::Ready, "", false, now)
            .await
            .unwrap();
        let user = db
            .insert_user(&format!("s{index}"), Role::Student, "x", 0)
            .await
            .unwrap();
        db.assign_vm(*vmid, user, None, now).await.unwrap();
    }
    let runs: Vec<Run> = vmids
        .iter()
        .map(|vm| Run {
            vm: *vm,
            boot_at: now - 1800,
            last_seen: now,
            ended_at: None,
        })
        .collect();
    db.store_runs("pve1", &runs).await.unwrap();
    let quota = QuotaRow {
        class_id,
        hours: 10,
        count_scheduled: false,
        updated_by: "tina".into(),
        updated_at: now,
    };
    db.set_class_quota(class_id, Some(&quota)).await.unwrap();

    let (wall, cpu) = measure(20, || async {
        let pass = enforcer::run_due(&state, now).await.unwrap();
        assert!(pass.stopping.is_empty() && pass.warned.is_empty());
    })
    .await;
    let per_minute = cpu * (60 / enforcer::CHECK_EVERY.as_secs() as u32);
    println!(
        "policies: vms={VMS} quota_pass_p50_ms={:.1} quota_pass_cpu_ms={:.1} \
         quota_cpu_ms_per_minute={:.0}",
        ms(wall),
        ms(cpu),
        ms(per_minute)
    );

    let settings = proxlab_hub::domain::idle::IdleSettings {
        no_connection_minutes: Some(15),
        disconnected_minutes: Some(15),
        idle_guest_minutes: Some(30),
        ..Default::default()
    };
    let teacher_row = db.user_by_name("tina").await.unwrap().unwrap();
    let viewer = proxlab_hub::domain::viewer::Viewer::from(&teacher_row);
    proxlab_hub::domain::idle::set_class_idle(&state, &viewer, class_id, &settings)
        .await
        .unwrap();
    let (wall, cpu) = measure(20, || async {
        let rows = db.idle_policy_vms().await.unwrap();
        assert_eq!(rows.len(), VMS);
    })
    .await;
    println!(
        "policies: idle_policy_computation_p50_ms={:.1} cpu_ms={:.1}",
        ms(wall),
        ms(cpu)
    );

    agent_judgement();
    agent_deadline_to_shutdown().await;
}

/// The agent's pure judgement of 500 VMs with every idle policy on.
fn agent_judgement() {
    use proxlab_agent::idle::tracker::{Observation, Tracker};
    let policy = IdlePolicy {
        no_connection_secs: Some(900),
        disconnected_secs: Some(900),
        idle_guest: Some(IdleGuest {
            secs: 1800,
            cpu_percent: 5,
        }),
        warn_secs: 300,
        shutdown_timeout_secs: 300,
        hard_stop: true,
        guest_message: false,
    };
    let mut trackers: Vec<Tracker> = (0..VMS).map(|_| Tracker::default()).collect();
    let seen = Observation {
        running: true,
        cpu_percent: 1.0,
        open_sessions: 0,
        last_opened: Some(1_000),
        last_closed: Some(1_100),
        last_input: Some(1_050),
    };
    let passes = 2_000u32;
    let cpu_before = cpu_time();
    let started = Instant::now();
    for pass in 0..passes {
        for tracker in &mut trackers {
            std::hint::black_box(tracker.observe(2_000 + u64::from(pass), &policy, &seen));
        }
    }
    let per_pass = started.elapsed() / passes;
    let cpu = (cpu_time() - cpu_before) / passes;
    let per_minute = cpu * (60 / proxlab_agent::idle::PASS_INTERVAL.as_secs() as u32);
    println!(
        "policies: agent_pass_us={:.1} agent_pass_cpu_us={:.1} agent_cpu_ms_per_minute={:.2}",
        per_pass.as_secs_f64() * 1e6,
        cpu.as_secs_f64() * 1e6,
        ms(per_minute)
    );
}

/// A real agent's enforcer on a pve-sim node: from the moment a VM's deadline passes to the
/// shutdown asked of the node (and done), over several deadlines.
async fn agent_deadline_to_shutdown() {
    use proxlab_agent::collect::{Collector, Report};
    use proxlab_agent::idle::IdleEnforcer;
    use proxlab_agent::idle::clock::IdleClock;
    use proxlab_agent::pve::config::PveConfig;
    use proxlab_agent::pve::node::Node;
    use proxlab_protocol::Event;
    use proxlab_protocol::idle::{IdlePolicies, VmIdlePolicy};

    let dir = tempfile::tempdir().unwrap();
    let sim = common::SimCluster::init(dir.path(), "pve1", &["tpl:64M"]);
    let node = Arc::new(Node::new(PveConfig::for_sim(&sim.root, "pve1")));
    let collector = Collector::start(node.clone()).await;
    let clock = Arc::new(IdleClock::default());
    let enforcer = Arc::new(IdleEnforcer::new(
        node.clone(),
        collector.clone(),
        clock.clone(),
        None,
    ));
    enforcer.clone().spawn();
    let mut reports = collector.subscribe();
    let sim_cmd = |args: &[&str]| {
        let status = std::process::Command::new(proxlab_testkit::workspace_bin("pve-sim"))
            .args(args)
            .env("PVE_SIM_ROOT", &sim.root)
            .env("PVE_SIM_NODE", "pve1")
            .status()
            .unwrap();
        assert!(status.success(), "{args:?}");
    };
    sim_cmd(&["qm", "create", "100", "--name", "bench"]);
    let policy = IdlePolicy {
        no_connection_secs: Some(600),
        disconnected_secs: None,
        idle_guest: None,
        warn_secs: 0,
        shutdown_timeout_secs: 30,
        hard_stop: true,
        guest_message: false,
    };
    enforcer
        .set_policies(IdlePolicies {
            vms: vec![VmIdlePolicy { vmid: 100, policy }],
        })
        .unwrap();
    let mut lates = Vec::new();
    let mut skew = 0i64;
    for _ in 0..5 {
        sim_cmd(&["qm", "start", "100"]);
        // Until the enforcer has seen it run (its timer starts then).
        while collector
            .vm(100)
            .is_none_or(|vm| vm.status != PowerState::Running)
        {
            let _ = reports.recv().await;
        }
        tokio::time::sleep(proxlab_agent::idle::PASS_INTERVAL * 2).await;
        skew += 601;
        clock.set_skew(skew);
        let deadline_passed = Instant::now();
        loop {
            if let Ok(Report::Event(Event::IdleStopped { .. })) = reports.recv().await {
                break;
            }
        }
        lates.push(deadline_passed.elapsed());
    }
    lates.sort();
    println!(
        "policies: deadline_to_shutdown_done_ms p50={:.0} max={:.0} (pass every {} s)",
        ms(lates[lates.len() / 2]),
        ms(lates[lates.len() - 1]),
        proxlab_agent::idle::PASS_INTERVAL.as_secs()
    );
}
