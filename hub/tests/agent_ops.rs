//! The agent's real driver against pve-sim, through a real hub that receives its events.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use common::{SimCluster, TestHub, within};
use proxlab_hub::agents::{AgentEvent, CallError};
use proxlab_protocol::Event;
use proxlab_protocol::base_copy::{BaseExport, BaseImport, BaseRead, BaseWrite, Chunk};
use proxlab_protocol::clones::{CloneMany, CloneTarget, MakeBase};
use proxlab_protocol::inventory::{IpSource, PowerState, VmInfo};
use proxlab_protocol::vm_ops::{
    PowerAction, Resync, SnapshotOp, VmDestroy, VmPower, VmReset, VmSnapshot,
};
use tokio::sync::broadcast;

/// A hub, a simulated node `pve1` with a template (9000), and its agent.
/// The simulated VMs drop first: their pid files are in the hub's temporary directory.
struct Setup {
    sim: SimCluster,
    hub: TestHub,
    events: broadcast::Receiver<AgentEvent>,
    /// The newest record of every VM seen in events so far.
    latest: BTreeMap<u32, VmInfo>,
    /// What the hub's recorder stored.
    stored: broadcast::Receiver<proxlab_hub::inventory::InventoryChange>,
    _agent: tokio::process::Child,
}

impl Setup {
    async fn new(templates: &[&str]) -> Self {
        let hub = TestHub::start().await;
        let sim = SimCluster::init(hub.dir.path(), "pve1", templates);
        hub.enroll("pve1").await;
        let events = hub.hub().registry().subscribe_events();
        let stored = hub.hub().state.inventory_changes.subscribe();
        let config = sim.agent_config(hub.dir.path(), "pve1");
        let agent = hub.spawn_agent_with(
            "pve1",
            &config,
            &[
                ("PVE_SIM_ROOT", &sim.root),
                ("PVE_SIM_NODE", std::path::Path::new("pve1")),
            ],
        );
        within("pve1 online", hub.hub().registry().wait_for("pve1", true)).await;
        Self {
            hub,
            sim,
            events,
            latest: BTreeMap::new(),
            stored,
            _agent: agent,
        }
    }

    fn registry(&self) -> &proxlab_hub::agents::AgentRegistry {
        self.hub.hub().registry()
    }

    /// Waits for an event that satisfies `matches`, remembering every VM record it passes.
    async fn event(&mut self, what: &str, mut matches: impl FnMut(&Event) -> bool) -> Event {
        let (events, latest) = (&mut self.events, &mut self.latest);
        within(what, async {
            loop {
                match events.recv().await {
                    Ok(AgentEvent { event, .. }) => {
                        let vms = match &event {
                            Event::Inventory { inventory } => inventory.vms.clone(),
                            Event::InventoryDelta { delta } => delta.upserted.clone(),
                            _ => Vec::new(),
                        };
                        for vm in vms {
                            latest.insert(vm.vmid, vm);
                        }
                        if matches(&event) {
                            return event;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(err) => panic!("event channel: {err}"),
                }
            }
        })
        .await
    }

    /// Waits until a VM is seen (in a snapshot or a delta) in a state `matches` accepts.
    async fn vm(&mut self, vmid: u32, what: &str, matches: impl Fn(&VmInfo) -> bool) -> VmInfo {
        if let Some(vm) = self.latest.get(&vmid).filter(|vm| matches(vm)) {
            return vm.clone();
        }
        self.event(what, |event| match event {
            Event::Inventory { inventory } => inventory
                .vms
                .iter()
                .any(|vm| vm.vmid == vmid && matches(vm)),
            Event::InventoryDelta { delta } => delta
                .upserted
                .iter()
                .any(|vm| vm.vmid == vmid && matches(vm)),
            _ => false,
        })
        .await;
        self.latest[&vmid].clone()
    }

    /// Waits until the hub has stored a change to `vmid`.
    async fn stored(&mut self, vmid: u32) {
        let stored = &mut self.stored;
        within("the hub to store the change", async {
            loop {
                match stored.recv().await {
                    Ok(change) if change.vms.iter().any(|vm| vm.vmid == vmid) => return,
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(err) => panic!("{err}"),
                }
            }
        })
        .await;
    }

    async fn clone_many(
        &self,
        vmids: std::ops::Range<u32>,
    ) -> proxlab_protocol::clones::CloneManyReply {
        let request = CloneMany {
            base_vmid: 9000,
            vms: vmids
                .map(|vmid| CloneTarget {
                    vmid,
                    name: format!("lab-{vmid}"),
                })
                .collect(),
            concurrency: 0,
            steps: None,
            hardware: Default::default(),
        };
        self.registry()
            .call_with(
                "pve1",
                &request,
                &proxlab_hub::agents::new_op_id(),
                Duration::from_secs(120),
                |_| {},
            )
            .await
            .unwrap()
    }
}

fn chain_len(sim: &SimCluster, volid: &str) -> usize {
    let path = String::from_utf8(sim.run("pve1", "pvesm", &["path", volid]).stdout).unwrap();
    let out = std::process::Command::new("qemu-img")
        .args([
            "info",
            "-U",
            "--backing-chain",
            "--output=json",
            path.trim(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout)
        .unwrap()
        .len()
}

#[tokio::test]
async fn inventory_arrives_then_changes_made_outside_arrive_as_deltas() {
    let mut setup = Setup::new(&["ubuntu:64M"]).await;
    let snapshot = setup
        .event("the first inventory", |e| {
            matches!(e, Event::Inventory { .. })
        })
        .await;
    let Event::Inventory { inventory } = snapshot else {
        unreachable!()
    };
    let template = inventory
        .vms
        .iter()
        .find(|vm| vm.vmid == 9000)
        .expect("the template is listed");
    assert!(template.template);
    assert_eq!(
        (template.cores, template.memory_mib, template.node.as_str()),
        (2, 2048, "pve1")
    );
    assert_eq!(template.disks[0].volid, "local:9000/base-9000-disk-0.qcow2");
    assert_eq!(template.disks[0].size_bytes, 64 << 20);
    assert!(template.nics[0].mac.starts_with("BC:24:11:"));
    let storages: Vec<&str> = inventory.storages.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(storages, ["local", "shared"]);
    assert!(inventory.storages[1].shared && inventory.storages[0].total_bytes > 0);

    // A VM made and started with qm, behind proxlab's back.
    setup
        .sim
        .ok("pve1", "qm", &["clone", "9000", "150", "--name", "outside"]);
    // A clone is reported while it is made (locked, not yet named) and again once done.
    let made = setup
        .vm(150, "the new VM", |vm| {
            vm.status == PowerState::Stopped && vm.lock.is_none()
        })
        .await;
    assert_eq!(made.name, "outside");
    setup.sim.ok("pve1", "qm", &["start", "150"]);
    let started = Instant::now();
    let running = setup
        .vm(150, "the started VM", |vm| vm.status == PowerState::Running)
        .await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the delta took {:?}",
        started.elapsed()
    );
    assert_eq!(
        running.disks[0].volid,
        "local:9000/base-9000-disk-0.qcow2/150/vm-150-disk-0.qcow2"
    );
    // The hub stored what the agent reported.
    loop {
        setup.stored(150).await;
        let stored = setup
            .hub
            .hub()
            .db()
            .vm(common::key_of(setup.hub.hub().db(), 150).await)
            .await
            .unwrap();
        if stored.is_some_and(|vm| vm.status == PowerState::Running) {
            break;
        }
    }
    let stored = setup
        .hub
        .hub()
        .db()
        .vm(common::key_of(setup.hub.hub().db(), 150).await)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (stored.node.as_str(), stored.name.as_str()),
        ("pve1", "outside")
    );
    assert!(
        setup
            .hub
            .hub()
            .db()
            .vm(common::key_of(setup.hub.hub().db(), 9000).await)
            .await
            .unwrap()
            .unwrap()
            .template
    );
    setup.sim.ok("pve1", "qm", &["stop", "150"]);
    setup.sim.ok("pve1", "qm", &["destroy", "150"]);
    setup
        .event(
            "the removal",
            |e| matches!(e, Event::InventoryDelta { delta } if delta.removed == [150]),
        )
        .await;
    // The hub can ask for everything again at any time.
    setup.registry().call("pve1", &Resync {}).await.unwrap();
    setup
        .event("a resync", |e| matches!(e, Event::Inventory { .. }))
        .await;
}

#[tokio::test]
async fn power_operations_and_their_errors() {
    let mut setup = Setup::new(&["ubuntu:64M"]).await;
    setup.clone_many(200..201).await;
    let registry = setup.registry().clone();
    let power = |action| VmPower { vmid: 200, action };
    assert_eq!(
        registry
            .call("pve1", &power(PowerAction::Start))
            .await
            .unwrap()
            .status,
        PowerState::Running
    );
    setup
        .vm(200, "running", |vm| vm.status == PowerState::Running)
        .await;
    // Asking for the state it is in already is no failure (Proxmox itself refuses).
    assert_eq!(
        registry
            .call("pve1", &power(PowerAction::Start))
            .await
            .unwrap()
            .status,
        PowerState::Running
    );
    assert_eq!(
        registry
            .call("pve1", &power(PowerAction::Reboot))
            .await
            .unwrap()
            .status,
        PowerState::Running
    );
    assert_eq!(
        registry
            .call("pve1", &power(PowerAction::Reset))
            .await
            .unwrap()
            .status,
        PowerState::Running
    );
    let shutdown = power(PowerAction::Shutdown {
        timeout_secs: 5,
        force_stop: false,
    });
    assert_eq!(
        registry.call("pve1", &shutdown).await.unwrap().status,
        PowerState::Stopped
    );
    // A guest that ignores ACPI: an error, then a forced stop.
    registry
        .call("pve1", &power(PowerAction::Start))
        .await
        .unwrap();
    setup
        .sim
        .ok("pve1", "script", &["200", "--hung-shutdown", "on"]);
    let hung = power(PowerAction::Shutdown {
        timeout_secs: 1,
        force_stop: false,
    });
    let err = registry.call("pve1", &hung).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("VM quit/powerdown failed - got timeout"),
        "{err}"
    );
    let forced = power(PowerAction::Shutdown {
        timeout_secs: 1,
        force_stop: true,
    });
    assert_eq!(
        registry.call("pve1", &forced).await.unwrap().status,
        PowerState::Stopped
    );
    assert_eq!(
        registry
            .call("pve1", &power(PowerAction::Stop))
            .await
            .unwrap()
            .status,
        PowerState::Stopped
    );
    // Errors carry Proxmox's words.
    let template = VmPower {
        vmid: 9000,
        action: PowerAction::Start,
    };
    let err = registry.call("pve1", &template).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("you can't start a vm if it's a template"),
        "{err}"
    );
    let missing = VmPower {
        vmid: 4242,
        action: PowerAction::Start,
    };
    match registry.call("pve1", &missing).await.unwrap_err() {
        CallError::Remote(error) => assert_eq!(
            error.kind,
            proxlab_protocol::ErrorKind::NotFound,
            "{}",
            error.message
        ),
        other => panic!("{other}"),
    }
}

#[tokio::test]
async fn destroy_refuses_templates_unless_asked_stops_running_vms_and_removes_disks() {
    let setup = Setup::new(&["ubuntu:64M"]).await;
    setup.clone_many(210..211).await;
    let registry = setup.registry();
    let err = registry
        .call(
            "pve1",
            &VmDestroy {
                vmid: 9000,
                allow_template: false,
                identity: None,
            },
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("is a template"), "{err}");
    let overlay = setup
        .sim
        .root
        .join("nodes/pve1/var/lib/vz/images/210/vm-210-disk-0.qcow2");
    assert!(overlay.exists());
    // A running VM is powered off first: Proxmox itself refuses to destroy it.
    setup.sim.ok("pve1", "qm", &["start", "210"]);
    registry
        .call(
            "pve1",
            &VmDestroy {
                vmid: 210,
                allow_template: false,
                identity: None,
            },
        )
        .await
        .unwrap();
    assert!(!overlay.exists() && setup.sim.config("pve1", 210).is_none());
    registry
        .call(
            "pve1",
            &VmDestroy {
                vmid: 9000,
                allow_template: true,
                identity: None,
            },
        )
        .await
        .unwrap();
    assert!(setup.sim.config("pve1", 9000).is_none());
}

#[tokio::test]
async fn a_reused_vmid_is_another_vm_to_assignments_and_destroys() {
    let mut setup = Setup::new(&["ubuntu:64M"]).await;
    setup.clone_many(202..203).await;
    let first = setup
        .vm(202, "the clone with its identity", |vm| {
            vm.identity.is_some()
        })
        .await;
    let db = setup.hub.hub().state.db.clone();
    // Wait until the hub has stored the VM with its identity, then give it to bob.
    while db
        .vm(common::key_of(&db, 202).await)
        .await
        .unwrap()
        .and_then(|vm| vm.identity)
        != first.identity
    {
        setup.stored(202).await;
    }
    let bob = db
        .insert_user("bob", proxlab_hub::db::users::Role::Student, "x", 0)
        .await
        .unwrap();
    db.assign_vm(common::key_of(&db, 202).await, bob, None, 0)
        .await
        .unwrap();
    assert_eq!(
        db.assigned_vms(bob).await.unwrap(),
        [common::key_of(&db, 202).await]
    );
    // Outside proxlab, 202 is destroyed and another VM takes its number.
    setup.sim.ok("pve1", "qm", &["destroy", "202"]);
    setup
        .sim
        .ok("pve1", "qm", &["create", "202", "--name", "payroll-db"]);
    let newcomer = setup
        .vm(202, "the newcomer", |vm| vm.name == "payroll-db")
        .await;
    assert_ne!(newcomer.identity, first.identity);
    while db
        .vm(common::key_of(&db, 202).await)
        .await
        .unwrap()
        .map(|vm| vm.name)
        .as_deref()
        != Some("payroll-db")
    {
        setup.stored(202).await;
    }
    assert!(
        db.assigned_vms(bob).await.unwrap().is_empty(),
        "bob's assignment ended with his VM"
    );
    // A destroy or reset meant for the first VM does not touch the newcomer.
    let destroy = VmDestroy {
        vmid: 202,
        allow_template: false,
        identity: first.identity.clone(),
    };
    let reset = VmReset {
        vmid: 202,
        stopped: true,
        identity: first.identity.clone(),
    };
    let refusals = [
        setup.registry().call("pve1", &destroy).await.map(drop),
        setup.registry().call("pve1", &reset).await.map(drop),
    ];
    for refused in refusals {
        let refused = refused.unwrap_err();
        assert!(
            refused.to_string().contains("replaced outside proxlab"),
            "{refused}"
        );
    }
    assert!(
        setup
            .sim
            .config("pve1", 202)
            .unwrap()
            .contains("payroll-db")
    );
}

#[tokio::test]
async fn snapshots_through_the_agent() {
    let setup = Setup::new(&["ubuntu:64M"]).await;
    setup.clone_many(220..221).await;
    let registry = setup.registry();
    let snap = |op| VmSnapshot {
        vmid: 220,
        name: "before-lab".into(),
        op,
    };
    registry
        .call(
            "pve1",
            &snap(SnapshotOp::Create {
                description: Some("clean".into()),
            }),
        )
        .await
        .unwrap();
    assert!(
        setup
            .sim
            .config("pve1", 220)
            .unwrap()
            .contains("[before-lab]")
    );
    registry
        .call("pve1", &snap(SnapshotOp::Rollback))
        .await
        .unwrap();
    registry
        .call("pve1", &snap(SnapshotOp::Delete))
        .await
        .unwrap();
    assert!(
        !setup
            .sim
            .config("pve1", 220)
            .unwrap()
            .contains("[before-lab]")
    );
    let err = registry
        .call("pve1", &snap(SnapshotOp::Rollback))
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("snapshot 'before-lab' does not exist"),
        "{err}"
    );
}

#[tokio::test]
async fn make_base_copies_the_template_with_progress() {
    let setup = Setup::new(&["ubuntu:64M"]).await;
    let mut progress = Vec::new();
    let request = MakeBase {
        source_vmid: 9000,
        base_vmid: 9100,
        name: "class-a-base".into(),
        storage: Some("shared".into()),
    };
    let reply = setup
        .registry()
        .call_with("pve1", &request, "op-base", Duration::from_secs(60), |p| {
            progress.push(p)
        })
        .await
        .unwrap();
    assert_eq!(reply.volids, ["shared:9100/base-9100-disk-0.qcow2"]);
    let last = progress.last().expect("progress was reported");
    assert_eq!((last.done_bytes, last.total_bytes), (64 << 20, 64 << 20));
    let config = setup.sim.config("pve1", 9100).unwrap();
    assert!(
        config.contains("template: 1\n") && config.contains("name: class-a-base\n"),
        "{config}"
    );
    assert!(
        config.contains("scsi0: shared:9100/base-9100-disk-0.qcow2,iothread=1,size=64M\n"),
        "{config}"
    );
    assert_eq!(
        chain_len(&setup.sim, "shared:9100/base-9100-disk-0.qcow2"),
        1,
        "a full copy, no backing file"
    );
    // Clones of the new base work like clones of any template.
    let clones = CloneMany {
        base_vmid: 9100,
        vms: vec![CloneTarget {
            vmid: 230,
            name: "s1".into(),
        }],
        concurrency: 0,
        steps: None,
        hardware: Default::default(),
    };
    let reply = setup.registry().call("pve1", &clones).await.unwrap();
    assert_eq!(reply.created, [230]);
    assert_eq!(
        chain_len(
            &setup.sim,
            "shared:9100/base-9100-disk-0.qcow2/230/vm-230-disk-0.qcow2"
        ),
        2
    );
    let taken = setup
        .registry()
        .call(
            "pve1",
            &MakeBase {
                base_vmid: 9100,
                ..request
            },
        )
        .await
        .unwrap_err();
    assert!(taken.to_string().contains("already exists"), "{taken}");
}

/// Sends a whole file to `vmid`'s staged disk 0 on `local`, one chunk.
async fn send_image(setup: &Setup, vmid: u32, bytes: &[u8]) -> Result<u64, CallError> {
    use base64::Engine;
    let write = BaseWrite {
        base_vmid: vmid,
        storage: "local".into(),
        disk: 0,
        offset: 0,
        chunk: Chunk {
            len: bytes.len() as u32,
            data: base64::engine::general_purpose::STANDARD.encode(bytes),
        },
    };
    setup
        .registry()
        .call("pve1", &write)
        .await
        .map(|written| written.bytes)
}

fn import(vmid: u32, config: &str, size: u64) -> BaseImport {
    BaseImport {
        base_vmid: vmid,
        name: format!("copy-{vmid}"),
        storage: "local".into(),
        config: config.into(),
        disks: vec![size],
        diff_of: Vec::new(),
        reference: None,
    }
}

/// Makes class base 9100 from template 9000 on shared storage and describes it for copying.
async fn class_base_9100(setup: &Setup) -> proxlab_protocol::base_copy::BaseExportReply {
    let make = MakeBase {
        source_vmid: 9000,
        base_vmid: 9100,
        name: "class-base".into(),
        storage: Some("shared".into()),
    };
    setup.registry().call("pve1", &make).await.unwrap();
    setup
        .registry()
        .call(
            "pve1",
            &BaseExport {
                base_vmid: 9100,
                diff_against: None,
                from_vm: false,
            },
        )
        .await
        .unwrap()
}

#[tokio::test]
async fn base_copies_are_received_in_order_checked_and_cleaned_up() {
    let setup = Setup::new(&["ubuntu:64M"]).await;
    let registry = setup.registry();
    let export = class_base_9100(&setup).await;
    assert_eq!(export.disks.len(), 1);
    assert_eq!(export.disks[0].key, "scsi0");
    // The whole image, chunk by chunk (a fresh qcow2 is mostly holes: sent as lengths).
    let mut offset = 0;
    let mut chunks = Vec::new();
    while offset < export.disks[0].bytes {
        let chunk = registry
            .call(
                "pve1",
                &BaseRead {
                    base_vmid: 9100,
                    disk: 0,
                    offset,
                    diff_against: None,
                    from_vm: false,
                },
            )
            .await
            .unwrap();
        assert!(chunk.len > 0);
        offset += u64::from(chunk.len);
        chunks.push(chunk);
    }
    assert_eq!(offset, export.disks[0].bytes);
    // Out of order, the wrong size, or onto a taken VMID or a missing storage: refused.
    let write = |vmid: u32, storage: &str, offset: u64, chunk: Chunk| BaseWrite {
        base_vmid: vmid,
        storage: storage.into(),
        disk: 0,
        offset,
        chunk,
    };
    for (request, expected) in [
        (
            write(9200, "local", 4096, chunks[0].clone()),
            "does not follow",
        ),
        (write(9000, "local", 0, chunks[0].clone()), "already exists"),
        (
            write(9200, "nowhere", 0, chunks[0].clone()),
            "does not exist",
        ),
        (
            write(
                9200,
                "local",
                0,
                Chunk {
                    len: 10,
                    data: "AAAA".into(),
                },
            ),
            "carries 3",
        ),
    ] {
        let err = registry.call("pve1", &request).await.unwrap_err();
        assert!(err.to_string().contains(expected), "{err}");
    }
    let mut at = 0;
    for chunk in chunks {
        let len = u64::from(chunk.len);
        let written = registry
            .call("pve1", &write(9200, "local", at, chunk))
            .await
            .unwrap();
        at += len;
        assert_eq!(written.bytes, at);
    }
    let short = registry
        .call("pve1", &import(9200, &export.config, at + 1))
        .await
        .unwrap_err();
    assert!(short.to_string().contains("bytes"), "{short}");
    // The refused import discarded what was staged: sent again, it registers.
    let staged = String::from_utf8(
        setup
            .sim
            .run(
                "pve1",
                "pvesm",
                &["path", "shared:9100/base-9100-disk-0.qcow2"],
            )
            .stdout,
    )
    .unwrap();
    let image = std::fs::read(staged.trim()).unwrap();
    assert_eq!(send_image(&setup, 9200, &image).await.unwrap(), at);
    let reply = registry
        .call("pve1", &import(9200, &export.config, at))
        .await
        .unwrap();
    assert_eq!(reply.volids, ["local:9200/base-9200-disk-0.qcow2"]);
    let config = setup.sim.config("pve1", 9200).unwrap();
    assert!(
        config.contains("template: 1\n") && config.contains("name: copy-9200\n"),
        "{config}"
    );
    assert_eq!(
        chain_len(&setup.sim, "local:9200/base-9200-disk-0.qcow2"),
        1
    );
    // Reading is for class bases only.
    let clones = CloneMany {
        base_vmid: 9200,
        vms: vec![CloneTarget {
            vmid: 231,
            name: "s1".into(),
        }],
        concurrency: 0,
        steps: None,
        hardware: Default::default(),
    };
    assert_eq!(registry.call("pve1", &clones).await.unwrap().created, [231]);
    let not_base = registry
        .call(
            "pve1",
            &BaseExport {
                base_vmid: 231,
                diff_against: None,
                from_vm: false,
            },
        )
        .await
        .unwrap_err();
    assert!(
        not_base.to_string().contains("not a template"),
        "{not_base}"
    );
    let no_disk = registry
        .call(
            "pve1",
            &BaseRead {
                base_vmid: 9200,
                disk: 3,
                offset: 0,
                diff_against: None,
                from_vm: false,
            },
        )
        .await
        .unwrap_err();
    assert!(no_disk.to_string().contains("no disk 3"), "{no_disk}");
}

/// A newer base sent as its difference to an older one both nodes hold: only the changed
/// clusters travel, and the receiving node rebuilds the very same disk on its own copy of the
/// older base, as a plain image. Differences without a reference are refused.
#[tokio::test]
async fn a_base_sent_as_its_difference_to_an_older_one_arrives_whole() {
    let setup = Setup::new(&["ubuntu:64M"]).await;
    let registry = setup.registry();
    let disk_of = |vmid: u32| {
        let config = setup.sim.config("pve1", vmid).unwrap();
        let volid = config
            .lines()
            .find_map(|line| line.strip_prefix("scsi0: "))
            .and_then(|value| value.split(',').next())
            .unwrap()
            .to_owned();
        std::path::PathBuf::from(setup.sim.ok("pve1", "pvesm", &["path", &volid]).trim())
    };
    // The template holds 8 MiB of data, as an installed system would.
    let filled = std::process::Command::new("qemu-io")
        .args(["-f", "qcow2", "-c", "write -P 0x33 0 8M"])
        .arg(disk_of(9000))
        .output()
        .unwrap();
    assert!(filled.status.success(), "{filled:?}");
    let whole = class_base_9100(&setup).await;
    // The teacher's change: a clone of 9100 with 64 KiB written, made into base 9101.
    setup.clone_many(240..241).await;
    let overlay = disk_of(240);
    let written = std::process::Command::new("qemu-io")
        .args(["-f", "qcow2", "-c", "write -P 0x61 8M 64k"])
        .arg(&overlay)
        .output()
        .unwrap();
    assert!(written.status.success(), "{written:?}");
    let make = MakeBase {
        source_vmid: 240,
        base_vmid: 9101,
        name: "class-base-v2".into(),
        storage: Some("shared".into()),
    };
    registry.call("pve1", &make).await.unwrap();
    let export = registry
        .call(
            "pve1",
            &BaseExport {
                base_vmid: 9101,
                diff_against: Some(9100),
                from_vm: false,
            },
        )
        .await
        .unwrap();
    assert_eq!(export.disks[0].diff_of.as_deref(), Some("scsi0"));
    assert!(
        export.disks[0].bytes * 4 < whole.disks[0].bytes.max(1 << 20),
        "{} bytes of difference against a {}-byte image",
        export.disks[0].bytes,
        whole.disks[0].bytes
    );
    ship_difference(registry, (9101, false, 9100), 9201, export.disks[0].bytes).await;
    let mut request = import(9201, &export.config, export.disks[0].bytes);
    request.diff_of = vec![Some("scsi0".into())];
    let refused = registry.call("pve1", &request).await.unwrap_err();
    assert!(
        refused.to_string().contains("without a reference"),
        "{refused}"
    );
    request.reference = Some(9100);
    registry.call("pve1", &request).await.unwrap();
    let image = |vmid: u32, storage: &str| {
        let out = setup.sim.ok(
            "pve1",
            "pvesm",
            &[
                "path",
                &format!("{storage}:{vmid}/base-{vmid}-disk-0.qcow2"),
            ],
        );
        std::path::PathBuf::from(out.trim())
    };
    let (sent, received) = (image(9101, "shared"), image(9201, "local"));
    let compared = std::process::Command::new("qemu-img")
        .args(["compare", "-U", "-f", "qcow2", "-F", "qcow2"])
        .args([&sent, &received])
        .output()
        .unwrap();
    assert!(compared.status.success(), "{compared:?}");
    let info = std::process::Command::new("qemu-img")
        .args(["info", "-U", "--output=json"])
        .arg(&received)
        .output()
        .unwrap();
    let info: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    assert!(info.get("backing-filename").is_none(), "{info}");
    let staged: Vec<_> = std::fs::read_dir(sent.parent().unwrap())
        .unwrap()
        .flatten()
        .filter(|entry| entry.file_name().to_string_lossy().starts_with(".diff-"))
        .collect();
    assert!(staged.is_empty(), "the difference is gone once read");

    // The teacher VM itself, stopped, sent as its overlay on the base it was cloned from
    // (while its node would make 9101 from it): the copy is the same image as 9101. A running
    // VM is refused, and so is a reference its disk is no overlay on.
    let mut from_vm = BaseExport {
        base_vmid: 240,
        diff_against: Some(9100),
        from_vm: true,
    };
    let elsewhere = registry.call("pve1", &from_vm).await.unwrap_err();
    assert!(
        elsewhere
            .to_string()
            .contains("not an overlay on base 9100"),
        "{elsewhere}"
    );
    from_vm.diff_against = Some(9000);
    registry
        .call(
            "pve1",
            &VmPower {
                vmid: 240,
                action: PowerAction::Start,
            },
        )
        .await
        .unwrap();
    let running = registry.call("pve1", &from_vm).await.unwrap_err();
    assert!(running.to_string().contains("running"), "{running}");
    registry
        .call(
            "pve1",
            &VmPower {
                vmid: 240,
                action: PowerAction::Stop,
            },
        )
        .await
        .unwrap();
    let export = registry.call("pve1", &from_vm).await.unwrap();
    assert_eq!(export.disks[0].diff_of.as_deref(), Some("scsi0"));
    assert_eq!(
        export.disks[0].bytes,
        std::fs::metadata(&overlay).unwrap().len(),
        "the overlay as it is"
    );
    ship_difference(registry, (240, true, 9000), 9202, export.disks[0].bytes).await;
    let mut request = import(9202, &export.config, export.disks[0].bytes);
    request.diff_of = vec![Some("scsi0".into())];
    request.reference = Some(9000);
    registry.call("pve1", &request).await.unwrap();
    let compared = std::process::Command::new("qemu-img")
        .args(["compare", "-U", "-f", "qcow2", "-F", "qcow2"])
        .args([&sent, &image(9202, "local")])
        .output()
        .unwrap();
    assert!(compared.status.success(), "{compared:?}");
    let template = setup.sim.config("pve1", 9202).unwrap();
    assert!(template.contains("template: 1"), "{template}");
}

/// Sends the staged difference of `source` (a base, or a VM when `.1`) against the base
/// `.2` to the received base `target`, chunk by chunk.
async fn ship_difference(
    registry: &proxlab_hub::agents::AgentRegistry,
    source: (u32, bool, u32),
    target: u32,
    bytes: u64,
) {
    let mut offset = 0;
    while offset < bytes {
        let read = BaseRead {
            base_vmid: source.0,
            disk: 0,
            offset,
            diff_against: Some(source.2),
            from_vm: source.1,
        };
        let chunk = registry.call("pve1", &read).await.unwrap();
        let write = BaseWrite {
            base_vmid: target,
            storage: "local".into(),
            disk: 0,
            offset,
            chunk: chunk.clone(),
        };
        registry.call("pve1", &write).await.unwrap();
        offset += u64::from(chunk.len);
    }
}

#[tokio::test]
async fn a_received_image_with_a_backing_file_is_refused() {
    let setup = Setup::new(&["ubuntu:64M"]).await;
    let dir = tempfile::tempdir().unwrap();
    let hostile = dir.path().join("hostile.qcow2");
    let made = std::process::Command::new("qemu-img")
        .args([
            "create",
            "-q",
            "-f",
            "qcow2",
            "-F",
            "raw",
            "-b",
            "/etc/hostname",
        ])
        .arg(&hostile)
        .output()
        .unwrap();
    assert!(made.status.success(), "{made:?}");
    let bytes = std::fs::read(&hostile).unwrap();
    let size = send_image(&setup, 9300, &bytes).await.unwrap();
    let config = setup.sim.config("pve1", 9000).unwrap();
    let err = setup
        .registry()
        .call("pve1", &import(9300, &config, size))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("has a backing file"), "{err}");
    assert!(setup.sim.config("pve1", 9300).is_none());
    // A copy that never finished: destroying its VMID removes what was staged.
    send_image(&setup, 9301, &bytes).await.unwrap();
    let staged = setup.sim.root.join("nodes/pve1/var/lib/vz/images/9301");
    assert!(staged.exists());
    let destroy = VmDestroy {
        vmid: 9301,
        allow_template: true,
        identity: None,
    };
    let missing = setup.registry().call("pve1", &destroy).await.unwrap_err();
    assert!(missing.to_string().contains("does not exist"), "{missing}");
    assert!(!staged.exists(), "the staged copy is gone");
}

/// Makes an image with `qemu-img create` and returns its bytes.
fn hostile_image(dir: &std::path::Path, format: &str, options: &[&str]) -> Vec<u8> {
    let path = dir.join(format!("hostile.{format}"));
    let made = std::process::Command::new("qemu-img")
        .args(["create", "-q", "-f", format])
        .args(options)
        .arg(&path)
        .arg("1M")
        .output()
        .unwrap();
    assert!(made.status.success(), "{made:?}");
    std::fs::read(&path).unwrap()
}

#[tokio::test]
async fn a_received_image_that_names_another_file_or_is_not_qcow2_is_refused() {
    let setup = Setup::new(&["ubuntu:64M"]).await;
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("host-file.raw");
    std::fs::write(&target, vec![7u8; 1 << 20]).unwrap();
    let data_file = format!("data_file={},data_file_raw=on", target.display());
    let config = setup.sim.config("pve1", 9000).unwrap();
    for (vmid, image, expected) in [
        (
            9310,
            hostile_image(dir.path(), "qcow2", &["-o", &data_file]),
            "has an external data file",
        ),
        (9311, hostile_image(dir.path(), "raw", &[]), "qcow2"),
        (9312, hostile_image(dir.path(), "vmdk", &[]), "qcow2"),
    ] {
        let size = send_image(&setup, vmid, &image).await.unwrap();
        let err = setup
            .registry()
            .call("pve1", &import(vmid, &config, size))
            .await
            .unwrap_err();
        assert!(err.to_string().contains(expected), "{vmid}: {err}");
        assert!(setup.sim.config("pve1", vmid).is_none());
        let staged = setup
            .sim
            .root
            .join(format!("nodes/pve1/var/lib/vz/images/{vmid}"));
        assert_eq!(
            std::fs::read_dir(&staged).map_or(0, |files| files.count()),
            0,
            "nothing of {vmid} is left"
        );
    }
}

#[tokio::test]
async fn a_received_base_config_that_reaches_the_host_is_refused() {
    let setup = Setup::new(&["ubuntu:64M"]).await;
    let registry = setup.registry();
    let export = class_base_9100(&setup).await;
    let staged = String::from_utf8(
        setup
            .sim
            .run(
                "pve1",
                "pvesm",
                &["path", "shared:9100/base-9100-disk-0.qcow2"],
            )
            .stdout,
    )
    .unwrap();
    let image = std::fs::read(staged.trim()).unwrap();
    for (n, line) in [
        "args: -drive file=/dev/sda,if=virtio",
        "hookscript: local:snippets/own.pl",
        "hostpci0: 0000:01:00.0",
        "serial1: /dev/ttyS0",
        "parallel0: /dev/parport0",
        "usb0: host=1d6b:0002",
        "virtiofs0: dirid=etc",
        "sata1: /dev/sdb",
        "ide3: cdrom,media=cdrom",
        "protection: 1",
        "cores: 100000",
    ]
    .into_iter()
    .enumerate()
    {
        let vmid = 9320 + n as u32;
        let key = line.split(':').next().unwrap();
        let config = format!("{}{line}\n", export.config);
        let size = send_image(&setup, vmid, &image).await.unwrap();
        let err = registry
            .call("pve1", &import(vmid, &config, size))
            .await
            .unwrap_err();
        let err = err.to_string();
        assert!(
            err.contains("refused") && err.contains(&format!("'{key}'")),
            "{line}: {err}"
        );
        assert!(setup.sim.config("pve1", vmid).is_none(), "{line}");
    }
    // The same base without them is taken.
    let size = send_image(&setup, 9319, &image).await.unwrap();
    registry
        .call("pve1", &import(9319, &export.config, size))
        .await
        .unwrap();
}

#[tokio::test]
async fn fifty_clones_at_once_each_a_valid_chain() {
    let setup = Setup::new(&["ubuntu:64M"]).await;
    let mut seen = Vec::new();
    let request = CloneMany {
        base_vmid: 9000,
        vms: (300..350)
            .map(|vmid| CloneTarget {
                vmid,
                name: format!("student-{vmid}"),
            })
            .collect(),
        concurrency: 8,
        steps: None,
        hardware: Default::default(),
    };
    let reply = setup
        .registry()
        .call_with(
            "pve1",
            &request,
            "op-fifty",
            Duration::from_secs(120),
            |outcome| seen.push(outcome.vmid),
        )
        .await
        .unwrap();
    assert_eq!(reply.created, (300..350).collect::<Vec<_>>());
    assert!(reply.failed.is_empty());
    assert_eq!(seen.len(), 50, "each VM reported as it completed");
    let mut macs = HashSet::new();
    for vmid in 300..350 {
        let config = setup.sim.config("pve1", vmid).unwrap();
        let canonical = String::from_utf8(
            setup
                .sim
                .run(
                    "pve1",
                    "canon",
                    &[&format!(
                        "{}/etc/pve/nodes/pve1/qemu-server/{vmid}.conf",
                        setup.sim.root.display()
                    )],
                )
                .stdout,
        )
        .unwrap();
        assert_eq!(canonical, config, "written in Proxmox's canonical form");
        assert!(config.contains(&format!("name: student-{vmid}\n")));
        let mac = config
            .lines()
            .find(|l| l.starts_with("net0:"))
            .unwrap()
            .to_owned();
        assert!(macs.insert(mac));
        assert_eq!(
            chain_len(
                &setup.sim,
                &format!("local:9000/base-9000-disk-0.qcow2/{vmid}/vm-{vmid}-disk-0.qcow2")
            ),
            2
        );
    }
    // Proxmox's own tools see the clones.
    let list = setup.sim.ok("pve1", "qm", &["list"]);
    assert_eq!(list.lines().count(), 52, "header, template and 50 clones");
}

#[tokio::test]
async fn failing_clones_leave_nothing_behind_and_retries_create_nothing_twice() {
    let setup = Setup::new(&["ubuntu:64M"]).await;
    setup
        .sim
        .ok("pve1", "fault", &["--qemu-img-fail", "images/402/"]);
    setup
        .sim
        .ok("pve1", "fault", &["--qemu-img-fail", "images/405/"]);
    let request = CloneMany {
        base_vmid: 9000,
        vms: (400..408)
            .map(|vmid| CloneTarget {
                vmid,
                name: format!("s{vmid}"),
            })
            .collect(),
        concurrency: 4,
        steps: None,
        hardware: Default::default(),
    };
    let registry = setup.registry();
    let first = registry
        .call_with(
            "pve1",
            &request,
            "op-batch",
            Duration::from_secs(60),
            |_| {},
        )
        .await
        .unwrap();
    assert_eq!(first.created, [400, 401, 403, 404, 406, 407]);
    let failed: Vec<u32> = first.failed.iter().map(|f| f.vmid).collect();
    assert_eq!(failed, [402, 405]);
    assert!(
        first.failed[0]
            .error
            .as_deref()
            .unwrap()
            .contains("injected fault")
    );
    for vmid in [402, 405] {
        assert!(setup.sim.config("pve1", vmid).is_none());
        assert!(
            !setup
                .sim
                .root
                .join(format!("nodes/pve1/var/lib/vz/images/{vmid}"))
                .read_dir()
                .is_ok_and(|mut d| d.next().is_some())
        );
    }
    let files_before = count_images(&setup.sim);
    // The same operation id again: the same answer, nothing new.
    let again = registry
        .call_with(
            "pve1",
            &request,
            "op-batch",
            Duration::from_secs(60),
            |_| {},
        )
        .await
        .unwrap();
    assert_eq!(again, first);
    assert_eq!(count_images(&setup.sim), files_before);
    // A new operation for VMs that exist already (a retry after an agent restart) succeeds
    // for them without making anything twice, and now also makes the missing two.
    setup.sim.ok("pve1", "fault", &["--qemu-img-fail", "off"]);
    let retry = registry
        .call_with(
            "pve1",
            &request,
            "op-batch-2",
            Duration::from_secs(60),
            |_| {},
        )
        .await
        .unwrap();
    assert_eq!(retry.created, (400..408).collect::<Vec<_>>());
    assert_eq!(count_images(&setup.sim), files_before + 2);
    // A VMID taken by another VM is refused.
    setup.sim.ok("pve1", "qm", &["create", "410"]);
    let taken = CloneMany {
        base_vmid: 9000,
        vms: vec![CloneTarget {
            vmid: 410,
            name: "x".into(),
        }],
        concurrency: 1,
        steps: None,
        hardware: Default::default(),
    };
    let reply = registry.call("pve1", &taken).await.unwrap();
    assert!(
        reply.failed[0]
            .error
            .as_deref()
            .unwrap()
            .contains("VM 410 already exists"),
        "{reply:?}"
    );
}

fn count_images(sim: &SimCluster) -> usize {
    let images = sim.root.join("nodes/pve1/var/lib/vz/images");
    std::fs::read_dir(images)
        .unwrap()
        .flatten()
        .map(|d| std::fs::read_dir(d.path()).map_or(0, |f| f.count()))
        .sum()
}

#[tokio::test]
async fn reset_returns_a_clone_to_its_base_keeping_identity_and_power() {
    let setup = Setup::new(&["ubuntu:64M"]).await;
    setup.clone_many(500..501).await;
    let registry = setup.registry();
    registry
        .call(
            "pve1",
            &VmPower {
                vmid: 500,
                action: PowerAction::Start,
            },
        )
        .await
        .unwrap();
    let path = String::from_utf8(
        setup
            .sim
            .run(
                "pve1",
                "pvesm",
                &[
                    "path",
                    "local:9000/base-9000-disk-0.qcow2/500/vm-500-disk-0.qcow2",
                ],
            )
            .stdout,
    )
    .unwrap();
    let write = std::process::Command::new("qemu-io")
        .args(["-f", "qcow2", "-c", "write -P 0x5a 0 64k", path.trim()])
        .output()
        .unwrap();
    assert!(
        write.status.success(),
        "{}",
        String::from_utf8_lossy(&write.stderr)
    );
    let before = setup.sim.config("pve1", 500).unwrap();
    let reply = registry
        .call(
            "pve1",
            &VmReset {
                vmid: 500,
                stopped: false,
                identity: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(
        reply.status,
        PowerState::Running,
        "the VM was running, so it runs again"
    );
    assert_eq!(
        setup.sim.config("pve1", 500).unwrap(),
        before,
        "same config, same MACs"
    );
    let read = std::process::Command::new("qemu-io")
        .args(["-f", "qcow2", "-c", "read -P 0x5a 0 64k", path.trim()])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&read.stdout).contains("Pattern verification failed"),
        "the student's writes are gone"
    );
    let stopped = registry
        .call(
            "pve1",
            &VmReset {
                vmid: 500,
                stopped: true,
                identity: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(stopped.status, PowerState::Stopped);
    let err = registry
        .call(
            "pve1",
            &VmReset {
                vmid: 9000,
                stopped: true,
                identity: None,
            },
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not a linked clone"), "{err}");
}

#[tokio::test]
async fn ips_from_the_guest_agent_and_the_neighbour_table() {
    let mut setup = Setup::new(&["ubuntu:64M"]).await;
    setup.clone_many(600..602).await;
    // 600 has a guest agent; 601 only shows up in the ARP table.
    setup.sim.ok("pve1", "qm", &["set", "600", "--agent", "1"]);
    setup
        .sim
        .ok("pve1", "script", &["600", "--guest-agent", "on"]);
    setup
        .sim
        .ok("pve1", "script", &["601", "--neighbor-ip", "192.0.2.61"]);
    let registry = setup.registry().clone();
    for vmid in [600, 601] {
        registry
            .call(
                "pve1",
                &VmPower {
                    vmid,
                    action: PowerAction::Start,
                },
            )
            .await
            .unwrap();
    }
    let with_agent = setup
        .vm(600, "IPs from the guest agent", |vm| !vm.ips.is_empty())
        .await;
    assert_eq!(
        with_agent.ips.len(),
        1,
        "loopback and link-local are left out: {:?}",
        with_agent.ips
    );
    assert_eq!(with_agent.ips[0].address, "10.2.88.10");
    assert_eq!(with_agent.ips[0].source, IpSource::GuestAgent);
    assert_eq!(with_agent.ips[0].mac, with_agent.nics[0].mac);
    let neighbour = setup
        .vm(601, "IPs from the ARP table", |vm| !vm.ips.is_empty())
        .await;
    assert_eq!(neighbour.ips[0].address, "192.0.2.61");
    assert_eq!(neighbour.ips[0].source, IpSource::Neighbor);
}

#[tokio::test]
async fn a_reconnected_agent_resends_its_whole_inventory() {
    let mut setup = Setup::new(&["ubuntu:64M"]).await;
    setup.clone_many(700..703).await;
    setup.vm(702, "the clones", |_| true).await;
    setup.hub.restart().await;
    setup.events = setup.hub.hub().registry().subscribe_events();
    let event = setup
        .event("the inventory after reconnecting", |e| {
            matches!(e, Event::Inventory { .. })
        })
        .await;
    let Event::Inventory { inventory } = event else {
        unreachable!()
    };
    let vmids: BTreeMap<u32, usize> = inventory.vms.iter().fold(BTreeMap::new(), |mut m, vm| {
        *m.entry(vm.vmid).or_default() += 1;
        m
    });
    assert_eq!(
        vmids.keys().copied().collect::<Vec<_>>(),
        [700, 701, 702, 9000]
    );
    assert!(vmids.values().all(|n| *n == 1), "no VM twice");
}

#[tokio::test]
async fn block_storage_bases_fall_back_to_qm_clone() {
    let setup = Setup::new(&[]).await;
    let cfg = setup.sim.root.join("etc/pve/storage.cfg");
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text.push_str(
        "\nlvmthin: local-lvm\n\tthinpool data\n\tvgname pve\n\tcontent images,rootdir\n",
    );
    std::fs::write(&cfg, text).unwrap();
    setup.sim.ok(
        "pve1",
        "qm",
        &[
            "create",
            "9001",
            "--name",
            "lvm-tmpl",
            "--scsi0",
            "local-lvm:0.0625",
        ],
    );
    setup.sim.ok("pve1", "qm", &["template", "9001"]);
    let request = CloneMany {
        base_vmid: 9001,
        vms: vec![CloneTarget {
            vmid: 800,
            name: "on-lvm".into(),
        }],
        concurrency: 1,
        steps: None,
        hardware: Default::default(),
    };
    let reply = setup.registry().call("pve1", &request).await.unwrap();
    assert!(
        reply.failed.is_empty() && !reply.created.is_empty(),
        "{reply:?} {}",
        setup.hub.agent_log("pve1")
    );
    assert_eq!(reply.created, [800]);
    let config = setup.sim.config("pve1", 800).unwrap();
    assert!(
        config.contains("name: on-lvm\n")
            && config.contains("scsi0: local-lvm:base-9001-disk-0/vm-800-disk-0"),
        "{config}"
    );
    // The same request again changes nothing.
    let again = setup.registry().call("pve1", &request).await.unwrap();
    assert_eq!(again.created, [800]);
}

#[tokio::test]
async fn node_metrics_arrive_with_per_vm_load() {
    let mut setup = Setup::new(&["ubuntu:64M"]).await;
    setup.clone_many(900..901).await;
    setup
        .registry()
        .call(
            "pve1",
            &VmPower {
                vmid: 900,
                action: PowerAction::Start,
            },
        )
        .await
        .unwrap();
    let event = setup
        .event("node metrics with the running VM", |e| matches!(e, Event::Metrics { metrics } if metrics.vms.iter().any(|vm| vm.vmid == 900)))
        .await;
    let Event::Metrics { metrics } = event else {
        unreachable!()
    };
    assert!(metrics.cpu_count >= 1 && metrics.memory_total_bytes > 0);
    assert!((0.0..=1.0).contains(&metrics.cpu), "{}", metrics.cpu);
    assert_eq!(metrics.storages.len(), 2);
    let load = metrics.vms.iter().find(|vm| vm.vmid == 900).unwrap();
    assert!(load.mem_bytes > 0, "RSS of the VM process");
}
