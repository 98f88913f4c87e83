//! Classes end to end: a real hub, two real agents, a two-node pve-sim cluster with the
//! template on shared storage.

mod common;

use std::collections::{BTreeSet, HashSet};
use std::path::Path;

use common::crash::CrashLab;
use common::disks::{backing_chain, files_named, holds_pattern, write_pattern};
use common::lab::{Lab, TEMPLATE};

use proxlab_hub::db::users::Role;
use reqwest::StatusCode;
use serde_json::{Value, json};

fn disk_paths(root: &Path, vmid: u32) -> Vec<std::path::PathBuf> {
    files_named(root, &format!("vm-{vmid}-"))
}

/// A class VM's overlay disk.
fn overlay_of(root: &Path, vmid: u32) -> std::path::PathBuf {
    let disks = disk_paths(root, vmid);
    assert_eq!(disks.len(), 1, "{disks:?}");
    disks[0].clone()
}

/// A student's work: 64 KiB of this byte at the start of the disk.
const MARKER: u8 = 0x5a;

/// Writes the marker into a disk, as a student's work would.
fn write_marker(disk: &Path) {
    write_pattern(disk, MARKER, "0");
}

fn has_marker(disk: &Path) -> bool {
    holds_pattern(disk, MARKER, "0")
}

#[tokio::test]
async fn a_class_of_thirty_from_creation_to_deletion() {
    let lab = Lab::start().await;
    let teacher = lab.user("tina", Role::Teacher).await;
    let created: Value = teacher
        .client
        .post(format!("{}/api/v1/classes", lab.hub.url()))
        .bearer_auth(teacher.bearer.as_ref().unwrap())
        .json(
            &json!({"name": "Networks 101", "template_vmid": TEMPLATE, "seats": 30,
                       "cores": 1, "memory_mib": 1024}),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let class_id = created["class"]["id"].as_i64().expect("class created");
    let job = lab
        .job_done(&teacher, created["job"].as_u64().unwrap())
        .await;
    assert_eq!(job["state"], "done", "{job}");
    assert_eq!(job["message"], "31 VMs ready");

    let detail = teacher.json(&format!("/api/v1/classes/{class_id}")).await;
    let vms = detail["vms"].as_array().unwrap();
    assert_eq!(vms.len(), 32, "base, teacher VM and 30 students");
    assert!(vms.iter().all(|vm| vm["state"] == "ready"), "{detail}");
    let base = vms.iter().find(|vm| vm["kind"] == "base").unwrap()["vmid"]
        .as_u64()
        .unwrap() as u32;
    lab.inventory(&[base], true).await;
    let templates = teacher.json("/api/v1/templates").await;
    let listed: Vec<u64> = templates["templates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|template| template["vmid"].as_u64().unwrap())
        .collect();
    assert!(
        listed.contains(&u64::from(TEMPLATE)) && !listed.contains(&u64::from(base)),
        "the class base is proxlab's, not a template to choose: {listed:?}"
    );
    let clones: Vec<(u32, String)> = vms
        .iter()
        .filter(|vm| vm["kind"] != "base")
        .map(|vm| {
            (
                vm["vmid"].as_u64().unwrap() as u32,
                vm["node"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let nodes: BTreeSet<&str> = clones.iter().map(|(_, node)| node.as_str()).collect();
    assert_eq!(
        nodes,
        BTreeSet::from(["pve1", "pve2"]),
        "spread over both nodes"
    );

    // Every clone: a Proxmox-canonical config, a qcow2 chain to the base, its own MAC and uuid.
    let (mut macs, mut uuids) = (HashSet::new(), HashSet::new());
    for (vmid, node) in &clones {
        let path = lab.config_path(node, *vmid);
        let text = std::fs::read_to_string(&path).unwrap();
        let canonical = lab.sim.ok(node, "canon", &[path.to_str().unwrap()]);
        assert_eq!(text, canonical, "VM {vmid} is not canonical");
        assert!(
            text.contains("\ncores: 1\n") && text.contains("\nmemory: 1024\n"),
            "the class's hardware: {text}"
        );
        let net0 = text.lines().find(|l| l.starts_with("net0:")).unwrap();
        let mac = net0.split(['=', ',']).nth(1).unwrap().to_owned();
        assert!(macs.insert(mac.clone()), "MAC {mac} twice");
        let uuid = text
            .lines()
            .find(|l| l.starts_with("smbios1:"))
            .unwrap()
            .to_owned();
        assert!(uuids.insert(uuid.clone()), "{uuid}");
        let disks = disk_paths(&lab.sim.root, *vmid);
        assert_eq!(disks.len(), 1, "VM {vmid}: {disks:?}");
        let chain = backing_chain(&disks[0]);
        let backing = chain.get(1).map(String::as_str).unwrap_or_default();
        assert!(
            backing.contains(&format!("base-{base}-disk-0")),
            "VM {vmid} backs onto {backing}"
        );
    }
    let clone_ids: Vec<u32> = clones.iter().map(|(vmid, _)| *vmid).collect();
    lab.inventory(&clone_ids, true).await;

    // An invite, and thirty students joining at once.
    let invite: Value = teacher
        .api_post(&format!("/api/v1/classes/{class_id}/invite"))
        .await
        .json()
        .await
        .unwrap();
    let token = invite["token"].as_str().unwrap().to_owned();
    // Its owners can see the link again at any time.
    let again = teacher.json(&format!("/api/v1/classes/{class_id}")).await;
    assert_eq!(again["invite_path"], format!("/join/{token}"));
    let mut students = Vec::new();
    for n in 0..30 {
        students.push(lab.user(&format!("student{n:02}"), Role::Student).await);
    }
    let joins = students.iter().map(|student| {
        let path = format!("/api/v1/join/{token}");
        async move { student.api_post(&path).await.json::<Value>().await.unwrap() }
    });
    let joined: Vec<Value> = futures_util::future::join_all(joins).await;
    let given: HashSet<u64> = joined
        .iter()
        .map(|j| j["vmid"].as_u64().expect("a VM each"))
        .collect();
    assert_eq!(given.len(), 30, "no VM given twice");

    // Each student sees exactly their own VM.
    for (student, joined) in students.iter().zip(&joined) {
        let mine = student.json("/api/v1/vms").await;
        let ids: Vec<&Value> = mine["vms"]
            .as_array()
            .unwrap()
            .iter()
            .map(|vm| &vm["vmid"])
            .collect();
        assert_eq!(ids, [&joined["vmid"]]);
    }
    let other = joined[1]["vmid"].as_u64().unwrap();
    assert_eq!(
        students[0]
            .get(&format!("/api/v1/vms/{other}"))
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
    // The teacher sees every VM of the class.
    assert_eq!(teacher.json("/api/v1/vms?limit=1000").await["total"], 31);

    // Other teachers and students do not reach the class; an admin does.
    let tom = lab.user("tom", Role::Teacher).await;
    let root = lab.user("root", Role::Admin).await;
    let class_path = format!("/api/v1/classes/{class_id}");
    assert_eq!(tom.get(&class_path).await.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        students[0].get(&class_path).await.status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(root.get(&class_path).await.status(), StatusCode::OK);
    assert_eq!(
        tom.api_post(&format!("/api/v1/classes/{class_id}/invite"))
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
    assert!(
        tom.json("/api/v1/vms").await["vms"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    let listed = students[0].json("/api/v1/classes").await;
    assert_eq!(
        listed["classes"][0]["name"], "Networks 101",
        "students list their classes"
    );
    // The old invite stops working when the teacher makes a new one.
    let late = lab.user("late", Role::Student).await;
    teacher
        .api_post(&format!("/api/v1/classes/{class_id}/invite"))
        .await;
    assert_eq!(
        late.api_post(&format!("/api/v1/join/{token}"))
            .await
            .status(),
        StatusCode::BAD_REQUEST
    );

    // Co-owners get full rights, and lose them when removed.
    let owners = format!("/api/v1/classes/{class_id}/owners");
    let added = teacher
        .api_post_json(&owners, &json!({"username": "tom"}))
        .await;
    assert_eq!(added.status(), StatusCode::OK);
    assert_eq!(tom.get(&class_path).await.status(), StatusCode::OK);
    assert_eq!(tom.json("/api/v1/vms?limit=1000").await["total"], 31);
    let refused = teacher
        .api_post_json(&owners, &json!({"username": "student01"}))
        .await;
    assert_eq!(
        refused.status(),
        StatusCode::BAD_REQUEST,
        "students cannot own classes"
    );
    teacher.api_delete(&format!("{owners}/tom")).await;
    assert_eq!(tom.get(&class_path).await.status(), StatusCode::NOT_FOUND);
    let last = teacher.api_delete(&format!("{owners}/tina")).await;
    assert_eq!(last.status(), StatusCode::CONFLICT, "the last owner stays");

    // A removed student's VM goes to the next student; VMs can be reassigned directly.
    let freed = joined[29]["vmid"].as_u64().unwrap();
    let waiting = lab.user("waiting", Role::Student).await;
    let new_token = teacher
        .api_post(&format!("/api/v1/classes/{class_id}/invite"))
        .await
        .json::<Value>()
        .await
        .unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let queued: Value = waiting
        .api_post(&format!("/api/v1/join/{new_token}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(queued["waitlisted"], true, "{queued}");
    // What student29 wrote never reaches the next student: the VM is reset first.
    let disk = overlay_of(&lab.sim.root, freed as u32);
    write_marker(&disk);
    let removed: Value = teacher
        .api_delete(&format!("/api/v1/classes/{class_id}/students/student29"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(removed["ok"], true, "{removed}");
    let job = lab
        .job_done(&teacher, removed["job"].as_u64().expect("a recycle job"))
        .await;
    assert_eq!(job["state"], "done", "{job}");
    let theirs = waiting.json("/api/v1/vms").await;
    assert_eq!(
        theirs["vms"][0]["vmid"], freed,
        "the waitlist got the freed VM"
    );
    assert!(!has_marker(&disk), "the next student gets a fresh disk");
    assert!(
        students[29].json("/api/v1/vms").await["vms"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    // A reassignment resets the disk too, unless the teacher keeps it.
    write_marker(&disk);
    let moved = teacher
        .api_post_json(
            &format!("/api/v1/vms/{freed}/assign"),
            &json!({"username": "late"}),
        )
        .await;
    assert_eq!(moved.status(), StatusCode::OK);
    assert_eq!(late.json("/api/v1/vms").await["vms"][0]["vmid"], freed);
    assert!(!has_marker(&disk), "reassigned with a fresh disk");
    write_marker(&disk);
    let kept = teacher
        .api_post_json(
            &format!("/api/v1/vms/{freed}/assign"),
            &json!({"username": "waiting", "keep_disk": true}),
        )
        .await;
    assert_eq!(kept.status(), StatusCode::OK);
    assert!(has_marker(&disk), "the teacher chose to keep the disk");
    let back = teacher
        .api_post_json(
            &format!("/api/v1/vms/{freed}/assign"),
            &json!({"username": "late", "keep_disk": true}),
        )
        .await;
    assert_eq!(back.status(), StatusCode::OK);
    assert!(
        waiting.json("/api/v1/vms").await["vms"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        students[1]
            .api_post_json(
                &format!("/api/v1/vms/{freed}/assign"),
                &json!({"username": "student01"})
            )
            .await
            .status(),
        StatusCode::NOT_FOUND,
        "students assign nothing"
    );

    // Capacity taken away: those VMs are destroyed with their disks.
    let shrink: Value = teacher
        .api_post_json(
            &format!("/api/v1/classes/{class_id}/remove-vms"),
            &json!({"vmids": [freed]}),
        )
        .await
        .json()
        .await
        .unwrap();
    let job = lab
        .job_done(&teacher, shrink["job"].as_u64().expect("a job"))
        .await;
    assert_eq!(job["message"], "1 VM removed", "{job}");
    assert!(disk_paths(&lab.sim.root, freed as u32).is_empty());
    assert!(
        late.json("/api/v1/vms").await["vms"]
            .as_array()
            .unwrap()
            .is_empty()
    );

    // Start, reset, stop.
    let vmid = joined[0]["vmid"].as_u64().unwrap();
    let started: Value = students[0]
        .api_post(&format!("/api/v1/vms/{vmid}/start"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(started["status"], "running", "{started}");
    assert!(
        started["actions"]
            .as_array()
            .unwrap()
            .contains(&json!("reset"))
    );
    let reset = students[0]
        .api_post(&format!("/api/v1/vms/{vmid}/reset"))
        .await;
    assert_eq!(
        reset.status(),
        StatusCode::OK,
        "{}",
        reset.text().await.unwrap()
    );
    let stopped: Value = students[0]
        .api_post(&format!("/api/v1/vms/{vmid}/stop"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(stopped["status"], "stopped", "{stopped}");
    // Another student cannot reset it.
    assert_eq!(
        students[1]
            .api_post(&format!("/api/v1/vms/{vmid}/reset"))
            .await
            .status(),
        StatusCode::NOT_FOUND
    );

    // Deleting the class leaves nothing behind.
    let deleting = teacher
        .client
        .delete(format!("{}/api/v1/classes/{class_id}", lab.hub.url()))
        .bearer_auth(teacher.bearer.as_ref().unwrap())
        .send()
        .await
        .unwrap();
    let deleting: Value = deleting.json().await.unwrap();
    let job = lab
        .job_done(&teacher, deleting["job"].as_u64().unwrap())
        .await;
    assert_eq!(job["state"], "done", "{job}");
    let mut all: Vec<u32> = clone_ids
        .iter()
        .copied()
        .filter(|vmid| u64::from(*vmid) != freed)
        .collect();
    all.push(base);
    for vmid in &all {
        for node in ["pve1", "pve2"] {
            assert!(
                !lab.config_path(node, *vmid).exists(),
                "VM {vmid} config left on {node}"
            );
        }
        assert!(
            disk_paths(&lab.sim.root, *vmid).is_empty(),
            "VM {vmid} disks left"
        );
    }
    assert!(!disk_paths(&lab.sim.root, base).iter().any(|p| p.exists()));
    let db = &lab.hub.hub().state.db;
    assert!(db.class(class_id).await.unwrap().is_none());
    assert!(db.class_vms(class_id).await.unwrap().is_empty());
    lab.inventory(&all, false).await;
    assert_eq!(
        teacher
            .get(&format!("/api/v1/classes/{class_id}"))
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
    assert!(
        students[0].json("/api/v1/vms").await["vms"]
            .as_array()
            .unwrap()
            .is_empty()
    );
}

impl CrashLab {
    /// Creates a class and waits until part of it is deployed. Returns the class and job ids.
    async fn class_partly_deployed(&self, seats: u32) -> (i64, u64) {
        // Slow clones down so a kill lands in the middle of the deployment.
        self.sim
            .ok("pve1", "fault", &["--latency", "qemu-img create=150"]);
        let mut events = common::web::EventStream::open(&self.teacher, "/api/v1/events").await;
        let created: Value = self
            .teacher
            .client
            .post(format!("http://{}/api/v1/classes", self.http))
            .bearer_auth(self.teacher.bearer.as_ref().unwrap())
            .json(&json!({"name": "Crash course", "template_vmid": TEMPLATE, "seats": seats}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let class_id = created["class"]["id"]
            .as_i64()
            .unwrap_or_else(|| panic!("{created}"));
        let partial = events
            .until(
                "some VMs deployed",
                |_, _| {},
                |name, data| name == "class" && data["ready"].as_u64().unwrap_or(0) >= 3,
            )
            .await;
        assert!(
            partial["ready"].as_u64().unwrap() <= u64::from(seats),
            "the kill lands mid-deployment: {partial}"
        );
        (class_id, created["job"].as_u64().unwrap())
    }

    /// Exactly the class's VMs and the template exist, each once, each clone with one disk.
    async fn assert_nothing_orphaned_or_duplicated(&self, class_id: i64, expected_vms: usize) {
        let detail = self
            .teacher
            .json(&format!("/api/v1/classes/{class_id}"))
            .await;
        let vms = detail["vms"].as_array().unwrap();
        assert_eq!(vms.len(), expected_vms);
        let mut configs = Vec::new();
        for node in ["pve1", "pve2"] {
            let dir = self
                .sim
                .root
                .join(format!("etc/pve/nodes/{node}/qemu-server"));
            for entry in std::fs::read_dir(dir).unwrap() {
                let name = entry.unwrap().file_name().to_string_lossy().into_owned();
                configs.push(name.trim_end_matches(".conf").parse::<u32>().unwrap());
            }
        }
        configs.sort_unstable();
        let mut expected: Vec<u32> = vms
            .iter()
            .map(|vm| vm["vmid"].as_u64().unwrap() as u32)
            .chain([TEMPLATE])
            .collect();
        expected.sort_unstable();
        assert_eq!(configs, expected, "no orphaned and no duplicated VMs");
        for vm in vms.iter().filter(|vm| vm["kind"] != "base") {
            let vmid = vm["vmid"].as_u64().unwrap() as u32;
            assert_eq!(disk_paths(&self.sim.root, vmid).len(), 1, "VM {vmid}");
        }
    }
}

#[tokio::test]
async fn a_deployment_survives_the_hub_being_killed() {
    let mut lab = CrashLab::start().await;
    let (class_id, job) = lab.class_partly_deployed(24).await;
    lab.kill_hub().await;
    lab.start_hub().await;
    let job = lab.job_end(job).await;
    assert_eq!(job["message"], "25 VMs ready", "{job}");
    lab.assert_nothing_orphaned_or_duplicated(class_id, 26)
        .await;
}

#[tokio::test]
async fn a_deployment_survives_an_agent_being_killed() {
    let mut lab = CrashLab::start().await;
    let (class_id, job) = lab.class_partly_deployed(24).await;
    let mut agent = lab.agents.remove("pve1").unwrap();
    agent.kill().await.unwrap();
    lab.spawn_agent("pve1");
    let job = lab.job_end(job).await;
    assert_eq!(job["message"], "25 VMs ready", "{job}");
    lab.assert_nothing_orphaned_or_duplicated(class_id, 26)
        .await;
}

#[tokio::test]
async fn a_vm_that_keeps_failing_is_retried_then_reported_while_the_rest_deploy() {
    let lab = Lab::start().await;
    let teacher = lab.user("tina", Role::Teacher).await;
    // VMIDs are handed out from 10000 up: the base, the teacher's VM, then the students.
    // Every write into VM 10004's image directory fails, on every try.
    lab.sim.ok("pve1", "fault", &["--qemu-img-fail", "/10004/"]);
    let (class_id, job) = lab
        .create_class(
            &teacher,
            &json!({"name": "Flaky", "template_vmid": TEMPLATE, "seats": 6}),
        )
        .await;
    assert_eq!(job["state"], "done", "the others complete: {job}");
    let message = job["message"].as_str().unwrap();
    assert!(
        message.starts_with("6 of 7 VMs ready; failed after 3 tries: VM 10004:"),
        "{message}"
    );
    assert!(message.contains("injected fault"), "{message}");
    let detail = teacher.json(&format!("/api/v1/classes/{class_id}")).await;
    let failed: Vec<&Value> = detail["vms"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|vm| vm["state"] == "failed")
        .collect();
    assert_eq!(failed.len(), 1, "{detail}");
    assert_eq!(
        (failed[0]["vmid"].as_u64(), failed[0]["attempts"].as_u64()),
        (Some(10004), Some(3))
    );
    // Nothing half-made is left of it, and it is never given to a student.
    for node in ["pve1", "pve2"] {
        assert!(!lab.config_path(node, 10004).exists());
    }
    assert!(disk_paths(&lab.sim.root, 10004).is_empty());
}

#[tokio::test]
async fn a_class_without_a_template_gets_empty_vms() {
    let lab = Lab::start().await;
    let teacher = lab.user("tina", Role::Teacher).await;
    let student = lab.user("sam", Role::Student).await;
    let (class_id, job) = lab
        .create_class(
            &teacher,
            &json!({"name": "Install fest", "seats": 3, "memory_mib": 1024, "disk_gib": 8,
                    "storage": "local", "bridge": "vmbr1"}),
        )
        .await;
    assert_eq!(job["message"], "4 VMs ready", "{job}");
    let detail = teacher.json(&format!("/api/v1/classes/{class_id}")).await;
    let vms = detail["vms"].as_array().unwrap();
    assert_eq!(
        vms.len(),
        4,
        "no base: the teacher's VM and three students'"
    );
    let nodes: BTreeSet<&str> = vms.iter().map(|vm| vm["node"].as_str().unwrap()).collect();
    assert_eq!(nodes.len(), 2, "node-local storage on both nodes: spread");
    for vm in vms {
        let (vmid, node) = (
            vm["vmid"].as_u64().unwrap() as u32,
            vm["node"].as_str().unwrap(),
        );
        let text = std::fs::read_to_string(lab.config_path(node, vmid)).unwrap();
        for expected in [
            "cores: 2\n",
            "memory: 1024\n",
            "bridge=vmbr1",
            "size=8G",
            "scsi0: local:",
        ] {
            assert!(
                text.contains(expected),
                "VM {vmid} lacks {expected:?}: {text}"
            );
        }
        assert!(!text.contains("template"), "{text}");
    }
    let joined = common::web::join_class(&teacher, &student, class_id).await;
    let vmid = joined["vmid"].as_u64().expect("a VM");
    lab.inventory(&[vmid as u32], true).await;
    let shown = student.json(&format!("/api/v1/vms/{vmid}")).await;
    assert_eq!(
        shown["actions"],
        json!(["start"]),
        "no reset offered: {shown}"
    );
    let reset = student.api_post(&format!("/api/v1/vms/{vmid}/reset")).await;
    assert_eq!(reset.status(), StatusCode::CONFLICT, "nothing to reset to");
    let job = lab.delete_class(&teacher, class_id).await;
    assert_eq!(job["message"], "4 VMs removed", "{job}");
    for vm in vms {
        let vmid = vm["vmid"].as_u64().unwrap() as u32;
        assert!(
            disk_paths(&lab.sim.root, vmid).is_empty(),
            "VM {vmid} disks left"
        );
    }
}

#[tokio::test]
async fn a_template_on_node_local_storage_gets_a_base_copy_on_every_other_node() {
    let lab = Lab::start_on("local").await;
    let teacher = lab.user("tina", Role::Teacher).await;
    let (class_id, job) = lab
        .create_class(
            &teacher,
            &json!({"name": "Local lab", "template_vmid": TEMPLATE, "seats": 5}),
        )
        .await;
    assert_eq!(job["state"], "done", "{job}");
    let detail = teacher.json(&format!("/api/v1/classes/{class_id}")).await;
    let vms = detail["vms"].as_array().unwrap();
    let of_kind = |kind: &str| -> Vec<(u32, String)> {
        vms.iter()
            .filter(|vm| vm["kind"] == kind)
            .map(|vm| {
                (
                    vm["vmid"].as_u64().unwrap() as u32,
                    vm["node"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    let bases = of_kind("base");
    let nodes: BTreeSet<&str> = bases.iter().map(|(_, node)| node.as_str()).collect();
    assert_eq!(nodes, BTreeSet::from(["pve1", "pve2"]), "{detail}");
    let base_on = |node: &str| bases.iter().find(|(_, n)| n == node).unwrap().0;
    let (first, copy) = (base_on("pve1"), base_on("pve2"));
    // The copy is a template of pve2, on pve2's own storage, with the same content.
    let config = std::fs::read_to_string(lab.config_path("pve2", copy)).unwrap();
    assert!(config.contains("template: 1\n"), "{config}");
    assert!(
        config.contains(&format!("local:{copy}/base-{copy}-disk-0.qcow2")),
        "{config}"
    );
    let images = |vmid: u32| files_named(&lab.sim.root, &format!("base-{vmid}-disk-0.qcow2"));
    let (first_image, copy_image) = (images(first), images(copy));
    assert_eq!((first_image.len(), copy_image.len()), (1, 1));
    for (image, node) in [(&first_image[0], "pve1"), (&copy_image[0], "pve2")] {
        assert!(
            image.starts_with(lab.sim.root.join("nodes").join(node)),
            "{image:?} is not on {node}'s own storage"
        );
    }
    let compared = std::process::Command::new("qemu-img")
        .args(["compare", "-U"])
        .args([&first_image[0], &copy_image[0]])
        .output()
        .unwrap();
    assert!(compared.status.success(), "{compared:?}");
    // Every VM backs onto the base of its own node.
    let clones: Vec<(u32, String)> = [of_kind("teacher"), of_kind("student")].concat();
    assert_eq!(clones.len(), 6);
    for (vmid, node) in &clones {
        let disks = disk_paths(&lab.sim.root, *vmid);
        assert_eq!(disks.len(), 1, "VM {vmid}");
        let chain = backing_chain(&disks[0]);
        let base = base_on(node);
        assert!(
            chain.len() == 2 && chain[1].contains(&format!("base-{base}-disk-0")),
            "VM {vmid} on {node} backs onto {chain:?}"
        );
        assert!(Path::new(&chain[1]).exists());
    }
    assert!(
        clones.iter().any(|(_, node)| node == "pve2"),
        "placement uses the second node"
    );
    // Deleting the class leaves no base, no disk, no staged copy.
    let job = lab.delete_class(&teacher, class_id).await;
    assert_eq!(job["state"], "done", "{job}");
    for vmid in [first, copy] {
        assert!(files_named(&lab.sim.root, &format!("base-{vmid}-")).is_empty());
        for node in ["pve1", "pve2"] {
            assert!(!lab.config_path(node, vmid).exists());
        }
    }
    for (vmid, _) in &clones {
        assert!(disk_paths(&lab.sim.root, *vmid).is_empty());
    }
}

#[tokio::test]
async fn parallel_capacity_changes_take_turns_and_a_class_with_running_vms_deletes() {
    let lab = Lab::start().await;
    let teacher = lab.user("tina", Role::Teacher).await;
    let (class_id, job) = lab
        .create_class(
            &teacher,
            &json!({"name": "Queue", "template_vmid": TEMPLATE, "seats": 1}),
        )
        .await;
    assert_eq!(job["state"], "done", "{job}");
    // Two "add 3" at once: each adds its own three, neither redoes the other's.
    let path = format!("/api/v1/classes/{class_id}/capacity");
    let three = json!({"add": 3});
    let (first, second) = tokio::join!(
        teacher.api_post_json(&path, &three),
        teacher.api_post_json(&path, &three),
    );
    for started in [first, second] {
        let started: Value = started.json().await.unwrap();
        let job = lab
            .job_done(&teacher, started["job"].as_u64().expect("a job"))
            .await;
        assert_eq!(job["state"], "done", "{job}");
        assert!(!job["message"].as_str().unwrap().contains("fail"), "{job}");
    }
    let detail = teacher.json(&format!("/api/v1/classes/{class_id}")).await;
    assert_eq!(detail["class"]["seats"], 7, "{detail}");
    let vms = detail["vms"].as_array().unwrap();
    let students: Vec<u64> = vms
        .iter()
        .filter(|vm| vm["kind"] == "student")
        .map(|vm| vm["vmid"].as_u64().unwrap())
        .collect();
    assert_eq!(students.len(), 7, "{detail}");
    assert!(vms.iter().all(|vm| vm["state"] == "ready"), "{detail}");
    // A running VM does not stop its class from being deleted.
    let running = students[0];
    lab.inventory(&[running as u32], true).await;
    let started: Value = teacher
        .api_post(&format!("/api/v1/vms/{running}/start"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(started["status"], "running", "{started}");
    let job = lab.delete_class(&teacher, class_id).await;
    assert_eq!(job["state"], "done", "{job}");
    for vm in vms {
        let vmid = vm["vmid"].as_u64().unwrap() as u32;
        assert!(
            disk_paths(&lab.sim.root, vmid).is_empty(),
            "VM {vmid} left disks"
        );
    }
}

#[tokio::test]
async fn a_teacher_enrolled_as_a_student_cannot_hand_the_vm_on() {
    let lab = Lab::start().await;
    let tina = lab.user("tina", Role::Teacher).await;
    let tom = lab.user("tom", Role::Teacher).await;
    let (class_id, job) = lab
        .create_class(
            &tina,
            &json!({"name": "Peers", "template_vmid": TEMPLATE, "seats": 1}),
        )
        .await;
    assert_eq!(job["state"], "done", "{job}");
    let joined = common::web::join_class(&tina, &tom, class_id).await;
    let vmid = joined["vmid"].as_u64().expect("tom got the VM");
    lab.inventory(&[vmid as u32], true).await;
    lab.user("mallory", Role::Student).await;
    let refused = tom
        .api_post_json(
            &format!("/api/v1/vms/{vmid}/assign"),
            &json!({"username": "mallory"}),
        )
        .await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let detail = tina.json(&format!("/api/v1/classes/{class_id}")).await;
    let seat = detail["vms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|vm| vm["vmid"].as_u64() == Some(vmid))
        .unwrap()
        .clone();
    assert_eq!(seat["assignee"], "tom", "{seat}");
}

#[tokio::test]
async fn bulk_actions_need_a_choice_and_touch_only_what_was_chosen() {
    let lab = Lab::start().await;
    let teacher = lab.user("tina", Role::Teacher).await;
    let (class_id, vmids) = lab.deployed_class(&teacher, "Bulk", 2).await;
    let status = |vmid: u32| {
        let teacher = &teacher;
        async move {
            teacher.json(&format!("/api/v1/vms/{vmid}")).await["status"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    let start = format!("/classes/{class_id}/bulk/start");
    // Nothing chosen: a question back, and nothing starts.
    let refused = teacher.post_form(&start, &[]).await;
    let flash = refused.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        flash.contains("No%20VM%20was%20selected") || flash.contains("No VM was selected"),
        "{flash}"
    );
    for vmid in &vmids {
        assert_eq!(status(*vmid).await, "stopped");
    }
    // One chosen: that one only.
    let one = vmids[0].to_string();
    teacher.post_form(&start, &[("vmid", &one)]).await;
    assert_eq!(status(vmids[0]).await, "running");
    assert_eq!(status(vmids[1]).await, "stopped");
    // All: the rest start, and the one running already is no failure. The page shown next
    // is the class page with the task's result for every VM, where the VM table is.
    let all = teacher.post_form(&start, &[("all", "1")]).await;
    let location = all.headers()["location"].to_str().unwrap().to_owned();
    assert!(
        location.starts_with(&format!("/classes/{class_id}?task=")) && location.ends_with("#task"),
        "{location}"
    );
    let task_id: i64 = location
        .split("task=")
        .nth(1)
        .unwrap()
        .trim_end_matches("#task")
        .parse()
        .unwrap();
    let task = teacher
        .json(&format!("/api/v1/classes/{class_id}/tasks/{task_id}"))
        .await;
    assert_eq!(
        (task["total"].as_i64(), task["failed"].as_i64()),
        (Some(3), Some(0)),
        "{task}"
    );
    for vmid in &vmids {
        assert_eq!(status(*vmid).await, "running");
    }
    let page = teacher.get(&location).await.text().await.unwrap();
    assert!(page.contains("Start on 3 VMs: all done"), "{page}");
    for vmid in &vmids {
        assert!(
            page.contains(&format!("<a href=\"/vms/{}\">{vmid}</a>", lab.key(*vmid))),
            "{vmid}"
        );
    }
    let stop = format!("/classes/{class_id}/bulk/stop");
    teacher.post_form(&stop, &[("all", "1")]).await;
    for vmid in &vmids {
        assert_eq!(status(*vmid).await, "stopped");
    }
}

#[tokio::test]
async fn a_waitlisted_student_hears_of_the_vm_they_are_given() {
    use common::web::EventStream;
    let lab = Lab::start().await;
    let teacher = lab.user("tina", Role::Teacher).await;
    let first = lab.user("first", Role::Student).await;
    let waiting = lab.user("waiting", Role::Student).await;
    let (class_id, job) = lab
        .create_class(
            &teacher,
            &json!({"name": "Full", "template_vmid": TEMPLATE, "seats": 1}),
        )
        .await;
    assert_eq!(job["state"], "done", "{job}");
    common::web::join_class(&teacher, &first, class_id).await;
    let queued = common::web::join_class(&teacher, &waiting, class_id).await;
    assert_eq!(queued["waitlisted"], true, "{queued}");
    let page = waiting.get("/vms").await.text().await.unwrap();
    assert!(
        page.contains("You are waiting for a VM in <strong>Full</strong>"),
        "{page}"
    );
    let mut stream = EventStream::open(&waiting, "/api/v1/events").await;
    let more = common::web::add_capacity(&teacher, class_id, 1).await;
    let given = stream
        .until(
            "the VM to be given",
            |_, _| {},
            |name, _| name == "assigned",
        )
        .await;
    let vmid = given["vmid"].as_u64().unwrap();
    // Their page, redrawn on that event, shows it (being made, or made).
    let page = waiting.get("/vms").await.text().await.unwrap();
    assert!(page.contains(&format!("data-vmid=\"{vmid}\"")), "{page}");
    assert!(
        page.contains("<dt>Class</dt><dd>Full</dd>"),
        "the tile names its class"
    );
    assert!(!page.contains("You are waiting"), "{page}");
    lab.job_done(&teacher, more).await;
}

#[tokio::test]
async fn rounds_of_bulk_actions_on_a_class_all_succeed_and_are_logged_as_tasks() {
    // Several `qm start`/`qm stop` at once once made pve-sim rename a shared temporary file
    // away under another's feet ("No such file or directory" in one bulk run of three).
    let lab = Lab::start().await;
    let teacher = lab.user("tina", Role::Teacher).await;
    let admin = lab.user("root", Role::Admin).await;
    let (class_id, _) = lab.deployed_class(&teacher, "Rounds", 8).await;
    let rounds = [
        "start", "stop", "start", "shutdown", "start", "reset", "stop",
    ];
    for action in rounds {
        let task: Value = teacher
            .api_post_json(
                &format!("/api/v1/classes/{class_id}/bulk/{action}"),
                &json!({"all": true}),
            )
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(task["total"], 9, "{action}: {task}");
        assert_eq!(task["failed"], 0, "{action}: {task}");
        let results = task["results"].as_array().unwrap();
        assert!(results.iter().all(|r| r["ok"] == true), "{action}: {task}");
    }
    // The class page lists every round in its task log, newest first.
    let page = teacher
        .get(&format!("/classes/{class_id}"))
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(page.matches("9 of 9 done").count(), rounds.len(), "{page}");
    // The audit log shows each round as one line, with its VMs folded in.
    let audit = admin
        .get("/admin/audit?action=vm.")
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(
        audit.matches("9 VMs (task ").count(),
        rounds.len(),
        "{audit}"
    );
    // Neither choice nor both is refused with a reason.
    for body in [json!({}), json!({"all": true, "vmids": [1]}), json!([1])] {
        let refused = teacher
            .api_post_json(&format!("/api/v1/classes/{class_id}/bulk/start"), &body)
            .await;
        assert_eq!(refused.status(), 400, "{body}");
    }
    // Another teacher sees neither the class's tasks nor can run one.
    let other = lab.user("otto", Role::Teacher).await;
    let denied = other
        .api_post_json(
            &format!("/api/v1/classes/{class_id}/bulk/stop"),
            &json!({"all": true}),
        )
        .await;
    assert_eq!(denied.status(), 404);
    let hidden = other
        .get(&format!("/api/v1/classes/{class_id}/tasks/1"))
        .await;
    assert_eq!(hidden.status(), 404);
}
