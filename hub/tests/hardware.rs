//! A class's hardware change end to end: a real hub, two real agents, a two-node pve-sim
//! cluster with the template on node-local storage, real `qemu-img` on the disks.

mod common;

use std::path::Path;

use common::disks::files_named;
use common::lab::{Lab, TEMPLATE};
use common::web::{WebClient, join_class};
use proxlab_hub::db::users::Role;
use proxlab_pve::config::{SectionKind, VmConfig};
use reqwest::StatusCode;
use serde_json::{Value, json};

fn virtual_size(image: &Path) -> u64 {
    let out = std::process::Command::new("qemu-img")
        .args(["info", "-U", "--output=json"])
        .arg(image)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let info: Value = serde_json::from_slice(&out.stdout).unwrap();
    info["virtual-size"].as_u64().unwrap()
}

/// The one `scsi0` image of a class VM (`vm-N-disk-0`) or base (`base-N-disk-0`).
fn scsi0_image(root: &Path, vmid: u32) -> std::path::PathBuf {
    let images: Vec<_> = ["vm", "base"]
        .iter()
        .flat_map(|kind| files_named(root, &format!("{kind}-{vmid}-disk-0.qcow2")))
        .collect();
    assert_eq!(images.len(), 1, "VM {vmid}: {images:?}");
    images[0].clone()
}

/// Every base, the teacher VM and the students get the change; the running student gets
/// cores, memory and network at its next start (and its tile says so) but its disk at once;
/// a re-image after the change keeps the grown disk; shrinking and strangers are refused.
#[tokio::test]
async fn a_hardware_change_reaches_every_base_and_vm_and_waits_for_running_ones() {
    let lab = Lab::start_on("local").await;
    let root = lab.sim.root.clone();
    let teacher = lab.user("tina", Role::Teacher).await;
    let (id, job) = lab
        .create_class(
            &teacher,
            &json!({"name": "Kit", "template_vmid": TEMPLATE, "seats": 2}),
        )
        .await;
    assert_eq!(job["state"], "done", "{job}");
    let alice = lab.user("alice", Role::Student).await;
    let a = join_class(&teacher, &alice, id).await["vmid"]
        .as_u64()
        .unwrap() as u32;
    let detail = teacher.json(&format!("/api/v1/classes/{id}")).await;
    let vms: Vec<(u32, String)> = detail["vms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|vm| {
            (
                vm["vmid"].as_u64().unwrap() as u32,
                vm["kind"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        vms.iter().filter(|(_, kind)| kind == "base").count(),
        2,
        "a base on each node: {vms:?}"
    );
    lab.inventory(&vms.iter().map(|vm| vm.0).collect::<Vec<_>>(), true)
        .await;
    lab.start_and_see_it_run(&alice, a).await;

    let before = teacher
        .json(&format!("/api/v1/classes/{id}/hardware"))
        .await;
    let disk_gib = before["disks"][0]["size_gib"].as_u64().unwrap();
    assert_eq!(before["disks"][0]["slot"], "scsi0", "{before}");
    let cores = if before["cores"] == 2 { 1 } else { 2 };
    let grown_gib = disk_gib + 1;

    // A stranger and an empty change are refused before anything runs.
    let stranger = alice
        .api_post_json(
            &format!("/api/v1/classes/{id}/hardware"),
            &json!({"cores": cores}),
        )
        .await;
    assert_eq!(stranger.status(), StatusCode::NOT_FOUND);
    let same = teacher
        .api_post_json(
            &format!("/api/v1/classes/{id}/hardware"),
            &json!({"cores": before["cores"]}),
        )
        .await;
    assert_eq!(same.status(), StatusCode::BAD_REQUEST);

    let change = json!({
        "cores": cores,
        "memory_mib": 768,
        "disks": [{"slot": "scsi0", "size_gib": grown_gib}],
        "bridge": "vmbr1",
        "vlan": 30,
        "add_serial": true,
    });
    let job = lab
        .finished_job(&teacher, &format!("/api/v1/classes/{id}/hardware"), &change)
        .await;
    assert_eq!(job["state"], "done", "{job}");
    let message = job["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("on {} VMs", vms.len()))
            && message.contains(&format!("next start: {a}.")),
        "{message}"
    );
    let db = &lab.hub.hub().state.db;
    let task = db
        .class_tasks(id, 10)
        .await
        .unwrap()
        .into_iter()
        .find(|task| task.action == "change hardware")
        .expect("the change is a task of the class");
    assert_eq!((task.total, task.failed), (vms.len() as i64, 0), "{task:?}");

    for (vmid, kind) in &vms {
        let text = std::fs::read_to_string(lab.config_path(&lab.node_of(*vmid), *vmid)).unwrap();
        let config = VmConfig::parse(&text);
        // What the VM has after its next start: its pending values, else its current ones.
        let pending = config.section(&SectionKind::Pending);
        let now = |key: &str| {
            pending
                .and_then(|section| section.get(key))
                .or_else(|| config.main().get(key))
        };
        if *vmid == a {
            assert_eq!(
                config.pending_keys(),
                ["cores", "memory", "serial0"],
                "the running VM's change waits, but for the hot-plugged NIC: {text}"
            );
        } else {
            assert!(pending.is_none(), "{kind} {vmid}: {text}");
        }
        assert_eq!(
            now("cores"),
            Some(cores.to_string().as_str()),
            "{kind} {vmid}: {text}"
        );
        assert_eq!(now("memory"), Some("768"), "{kind} {vmid}: {text}");
        assert!(
            now("net0").is_some_and(|nic| nic.contains("bridge=vmbr1") && nic.contains("tag=30")),
            "{kind} {vmid}: {text}"
        );
        assert_eq!(now("serial0"), Some("socket"), "{kind} {vmid}: {text}");
        assert_eq!(
            virtual_size(&scsi0_image(&root, *vmid)),
            grown_gib << 30,
            "{kind} {vmid}: disks grow at once"
        );
    }

    // Disks never shrink (once the hub has heard of the grown ones).
    for (base, _) in vms.iter().filter(|(_, kind)| kind == "base") {
        lab.vm_until(*base, "its disk grew", |vm| {
            vm.disks.first().map(|disk| disk.size_bytes) == Some(grown_gib << 30)
        })
        .await;
    }
    let shrink = teacher
        .api_post_json(
            &format!("/api/v1/classes/{id}/hardware"),
            &json!({"disks": [{"slot": "scsi0", "size_gib": disk_gib}]}),
        )
        .await;
    assert_eq!(shrink.status(), StatusCode::BAD_REQUEST);
    let refusal = shrink.text().await.unwrap();
    assert!(refusal.contains("only grow"), "{refusal}");

    // The running VM's tile says what waits, until it starts again.
    let waiting = lab
        .vm_until(a, "its change waits", |vm| !vm.pending.is_empty())
        .await;
    assert!(waiting.pending.contains(&"cores".to_owned()), "{waiting:?}");
    let signed_in = WebClient::login(&lab.hub.url(), "alice", "a-long-password").await;
    let home = signed_in.get("/vms").await.text().await.unwrap();
    assert!(
        home.contains("take effect when it is next shut down and started"),
        "{home}"
    );
    let page = WebClient::login(&lab.hub.url(), "tina", "a-long-password").await;
    let class_page = page
        .get(&format!("/classes/{id}"))
        .await
        .text()
        .await
        .unwrap();
    assert!(
        class_page.contains("1 VM still waits for a restart"),
        "{class_page}"
    );
    let stop = alice.api_post(&format!("/api/v1/vms/{a}/stop")).await;
    assert_eq!(stop.status(), StatusCode::OK);
    lab.start_and_see_it_run(&alice, a).await;
    let started = lab
        .vm_until(a, "its change is applied", |vm| vm.pending.is_empty())
        .await;
    assert_eq!(started.cores, cores);
    assert_eq!(started.memory_mib, 768);
    let after = teacher
        .json(&format!("/api/v1/classes/{id}/hardware"))
        .await;
    assert_eq!(after["cores"], cores, "{after}");
    assert_eq!(after["disks"][0]["size_gib"], grown_gib, "{after}");
    assert_eq!(
        (after["bridge"].as_str(), after["vlan"].as_u64()),
        (Some("vmbr1"), Some(30))
    );

    // The class page's form: prefilled with what the class has, so what differs changes.
    let shown = page
        .get(&format!("/classes/{id}"))
        .await
        .text()
        .await
        .unwrap();
    assert!(
        shown.contains(&format!(
            r#"name="disk_scsi0" type="number" min="{grown_gib}""#
        )),
        "{shown}"
    );
    let cores_text = cores.to_string();
    let grown_text = grown_gib.to_string();
    let form = |memory: &'static str| {
        vec![
            ("cores", cores_text.clone()),
            ("memory_mib", memory.to_owned()),
            ("disk_scsi0", grown_text.clone()),
            ("bridge", "vmbr1".to_owned()),
            ("vlan", "30".to_owned()),
        ]
    };
    let post = |fields: Vec<(&'static str, String)>| {
        let page = &page;
        async move {
            let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let posted = page
                .post_form(&format!("/classes/{id}/hardware"), &fields)
                .await;
            assert_eq!(posted.status(), StatusCode::SEE_OTHER);
            page.get(&format!("/classes/{id}"))
                .await
                .text()
                .await
                .unwrap()
        }
    };
    let said = post(form("lots")).await;
    assert!(said.contains("Memory in MiB is a whole number"), "{said}");
    let said = post(form("768")).await;
    assert!(said.contains("nothing to change"), "{said}");
    let said = post(form("1024")).await;
    assert!(
        said.contains("Changing the hardware of the class"),
        "{said}"
    );
    let newest = teacher.json(&format!("/api/v1/classes/{id}")).await["jobs"][0]["id"]
        .as_u64()
        .unwrap();
    let job = lab.job_done(&teacher, newest).await;
    assert_eq!(job["state"], "done", "{job}");
    assert!(
        job["message"]
            .as_str()
            .unwrap()
            .contains("1024 MiB of memory"),
        "{job}"
    );

    // A re-image (a publish) keeps the grown disk: the bases grew with it.
    let publish = json!({"note": "after the change", "rollout": "now", "warn_minutes": 0});
    let job = lab
        .finished_job(
            &teacher,
            &format!("/api/v1/classes/{id}/versions"),
            &publish,
        )
        .await;
    assert_eq!(job["state"], "done", "{job}");
    assert_eq!(virtual_size(&scsi0_image(&root, a)), grown_gib << 30);
    let text = std::fs::read_to_string(lab.config_path(&lab.node_of(a), a)).unwrap();
    let config = VmConfig::parse(&text);
    assert_eq!(
        config.main().get("cores"),
        Some(cores.to_string().as_str()),
        "{text}"
    );
    assert!(
        config
            .main()
            .get("scsi0")
            .unwrap()
            .contains(&format!("size={grown_gib}G")),
        "{text}"
    );
}
