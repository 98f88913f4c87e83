//! Template versions end to end: a real hub, two real agents, a two-node pve-sim cluster
//! with the template on node-local storage (so every version's base is copied to the other
//! node), real `qemu-img` and `qemu-io` on the disks.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use common::crash::CrashLab;
use common::disks::{backing_chain, files_named, holds_pattern as holds, write_pattern as write};
use common::lab::{Lab, TEMPLATE};
use common::web::{EventStream, WebClient, join_class};
use proxlab_hub::db::users::Role;
use reqwest::StatusCode;
use serde_json::{Value, json};

/// A class VM's one overlay.
fn overlay_of(root: &Path, vmid: u32) -> PathBuf {
    let disks = files_named(root, &format!("vm-{vmid}-"));
    assert_eq!(disks.len(), 1, "VM {vmid}: {disks:?}");
    disks[0].clone()
}

/// The teacher's change in each version: a byte per version at 1 MiB.
const TEACHER_AT: &str = "1M";
/// What students write: at 2 MiB.
const STUDENT_AT: &str = "2M";
const STUDENT_BYTE: u8 = 0x5a;

struct Class<'a> {
    lab: &'a Lab,
    teacher: &'a WebClient,
    id: i64,
}

impl Class<'_> {
    async fn detail(&self) -> Value {
        self.teacher
            .json(&format!("/api/v1/classes/{}", self.id))
            .await
    }

    async fn vms(&self, kind: &str) -> Vec<(u32, String, Option<i64>)> {
        self.detail().await["vms"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|vm| vm["kind"] == kind)
            .map(|vm| {
                (
                    vm["vmid"].as_u64().unwrap() as u32,
                    vm["node"].as_str().unwrap().to_owned(),
                    vm["version"].as_i64(),
                )
            })
            .collect()
    }

    /// The base of `version` on `node`.
    async fn base(&self, version: i64, node: &str) -> u32 {
        self.vms("base")
            .await
            .into_iter()
            .find(|(_, on, v)| on == node && *v == Some(version))
            .unwrap_or_else(|| panic!("no base of v{version} on {node}"))
            .0
    }

    async fn bases_of(&self, version: i64) -> Vec<u32> {
        self.vms("base")
            .await
            .into_iter()
            .filter(|(_, _, v)| *v == Some(version))
            .map(|(vmid, _, _)| vmid)
            .collect()
    }

    /// Asserts that VM `vmid` is on `version`: the hub says so, and its overlay sits right
    /// on that version's base of its own node.
    async fn assert_on(&self, vmid: u32, version: i64) {
        let vms = [self.vms("teacher").await, self.vms("student").await].concat();
        let (_, node, recorded) = vms.iter().find(|(v, _, _)| *v == vmid).unwrap();
        assert_eq!(*recorded, Some(version), "VM {vmid} as the hub has it");
        let base = self.base(version, node).await;
        let chain = backing_chain(&overlay_of(&self.lab.sim.root, vmid));
        assert_eq!(chain.len(), 2, "VM {vmid}: {chain:?}");
        assert!(
            chain[1].ends_with(&format!("/{base}/base-{base}-disk-0.qcow2")),
            "VM {vmid} on {node} should be on base {base} (v{version}): {chain:?}"
        );
    }

    /// Asserts that version `version`'s bases on both nodes hold the same disk.
    async fn assert_bases_alike(&self, version: i64) {
        let images: Vec<PathBuf> = self
            .bases_of(version)
            .await
            .iter()
            .map(|base| {
                let found = files_named(&self.lab.sim.root, &format!("base-{base}-disk-0.qcow2"));
                assert_eq!(found.len(), 1, "{found:?}");
                found[0].clone()
            })
            .collect();
        assert_eq!(images.len(), 2);
        let compared = std::process::Command::new("qemu-img")
            .args(["compare", "-U", "-f", "qcow2", "-F", "qcow2"])
            .args(&images)
            .output()
            .unwrap();
        assert!(compared.status.success(), "v{version}: {compared:?}");
        let chains: Vec<Vec<String>> = images.iter().map(|image| backing_chain(image)).collect();
        assert!(
            chains.iter().all(|chain| chain.len() == 1),
            "plain images: {chains:?}"
        );
    }

    async fn publish(&self, rollout: &str, note: &str) -> Value {
        let job = self
            .lab
            .finished_job(
                self.teacher,
                &format!("/api/v1/classes/{}/versions", self.id),
                &json!({"note": note, "rollout": rollout, "warn_minutes": 0}),
            )
            .await;
        assert_eq!(job["state"], "done", "{job}");
        job
    }

    async fn roll_back(&self, version: i64, rollout: &str) -> Value {
        let job = self
            .lab
            .finished_job(
                self.teacher,
                &format!("/api/v1/classes/{}/versions/{version}/rollback", self.id),
                &json!({"rollout": rollout, "warn_minutes": 0}),
            )
            .await;
        assert_eq!(job["state"], "done", "{job}");
        job
    }

    fn status(&self, vmid: u32) -> String {
        let node = self.lab.node_of(vmid);
        let out = self
            .lab
            .sim
            .run(&node, "qm", &["status", &vmid.to_string()]);
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

/// A term of a class: publish with each of the three rollouts, then roll back. Each time,
/// every disk chain ends in the right version's base on its own node, the students' work is
/// kept exactly where promised, the teacher VM comes back as it was, and old bases go
/// exactly when nothing uses them any more.
#[tokio::test]
async fn a_term_of_publishes_and_a_rollback_on_two_nodes() {
    let lab = Lab::start_on("local").await;
    let root = lab.sim.root.clone();
    let teacher = lab.user("tina", Role::Teacher).await;
    let (id, job) = lab
        .create_class(
            &teacher,
            &json!({"name": "Term", "template_vmid": TEMPLATE, "seats": 3}),
        )
        .await;
    assert_eq!(job["state"], "done", "{job}");
    let class = Class {
        lab: &lab,
        teacher: &teacher,
        id,
    };
    let alice = lab.user("alice", Role::Student).await;
    let bob = lab.user("bob", Role::Student).await;
    let a = join_class(&teacher, &alice, id).await["vmid"]
        .as_u64()
        .unwrap() as u32;
    let b = join_class(&teacher, &bob, id).await["vmid"]
        .as_u64()
        .unwrap() as u32;
    let students: Vec<u32> = class.vms("student").await.iter().map(|vm| vm.0).collect();
    let free = *students
        .iter()
        .find(|vmid| **vmid != a && **vmid != b)
        .unwrap();
    let (tvm, _, _) = class.vms("teacher").await[0].clone();
    let nodes: BTreeSet<String> = students.iter().map(|vmid| lab.node_of(*vmid)).collect();
    assert_eq!(nodes.len(), 2, "the students are spread over both nodes");
    let v1_bases = class.bases_of(1).await;
    assert_eq!(v1_bases.len(), 2);
    for vmid in [tvm, a, b, free] {
        class.assert_on(vmid, 1).await;
    }

    // v2, re-made now: the teacher VM runs while it is published, alice's VM runs too.
    write(&overlay_of(&root, tvm), 0x02, TEACHER_AT);
    lab.inventory(&[tvm, a, b, free], true).await;
    lab.start_and_see_it_run(&teacher, tvm).await;
    lab.start_and_see_it_run(&alice, a).await;
    for vmid in [a, b] {
        write(&overlay_of(&root, vmid), STUDENT_BYTE, STUDENT_AT);
    }
    let job = class.publish("now", "lab 2 tools").await;
    let message = job["message"].as_str().unwrap();
    assert!(
        message.starts_with("Version 2 published. Its base went to pve"),
        "{message}"
    );
    assert!(
        message.contains("KiB of changes. 3 VMs re-made"),
        "only the teacher's changes travel to the other node: {message}"
    );
    class.assert_bases_alike(2).await;
    let db = &lab.hub.hub().state.db;
    let tasks = db.class_tasks(id, 10).await.unwrap();
    let task = tasks
        .iter()
        .find(|task| task.action == "re-make from version 2")
        .expect("the re-images are a task of the class");
    assert_eq!((task.total, task.failed), (3, 0), "{task:?}");
    let results = db.task_results(task.id).await.unwrap();
    assert!(
        results.len() == 3 && results.iter().all(|result| result.ok),
        "{results:?}"
    );
    assert_eq!(class.detail().await["class"]["current_version"], 2);
    assert_eq!(class.bases_of(2).await.len(), 2, "a v2 base on each node");
    for vmid in [tvm, a, b, free] {
        class.assert_on(vmid, 2).await;
        let disk = overlay_of(&root, vmid);
        assert!(
            holds(&disk, 0x02, TEACHER_AT),
            "VM {vmid} has the teacher's v2 change"
        );
        assert!(
            !holds(&disk, STUDENT_BYTE, STUDENT_AT),
            "VM {vmid}: student work is gone"
        );
    }
    assert_eq!(
        class.status(tvm),
        "status: running",
        "the teacher VM runs again"
    );
    assert_eq!(
        class.status(a),
        "status: stopped",
        "a re-made VM is left stopped"
    );
    let tile = alice.json(&format!("/api/v1/vms/{a}")).await;
    assert_eq!(
        tile["stop_reason"],
        "Stopped to be re-made from version 2 of the class"
    );
    assert!(tile.get("newer_version").is_none(), "{tile}");
    for base in &v1_bases {
        assert!(
            !files_named(&root, &format!("base-{base}-")).is_empty(),
            "v1 is kept"
        );
    }

    // Keep one version from now on; v3 moves VMs on their next reset.
    let kept = teacher
        .api_post_json(
            &format!("/api/v1/classes/{id}/versions/keep"),
            &json!({"keep": 1}),
        )
        .await;
    assert_eq!(kept.status(), StatusCode::OK);
    write(&overlay_of(&root, tvm), 0x03, TEACHER_AT);
    for vmid in [a, b] {
        write(&overlay_of(&root, vmid), STUDENT_BYTE, STUDENT_AT);
    }
    let job = class.publish("next-reset", "lab 3").await;
    class.assert_bases_alike(3).await;
    let staged = files_named(&root, ".diff-");
    assert!(
        staged.is_empty(),
        "differences are removed once sent: {staged:?}"
    );
    let message = job["message"].as_str().unwrap();
    assert!(
        message.contains("1 VM re-made") && message.contains("2 more move when they are reset"),
        "the free VM moves at once (the teacher VM with the publish): {message}"
    );
    assert!(
        message.contains("Removed 2 bases of versions no VM uses (v1)"),
        "{message}"
    );
    for base in &v1_bases {
        assert!(
            files_named(&root, &format!("base-{base}-")).is_empty(),
            "v1's base {base} is gone"
        );
        for node in ["pve1", "pve2"] {
            assert!(!lab.config_path(node, *base).exists());
        }
    }
    class.assert_on(free, 3).await;
    class.assert_on(tvm, 3).await;
    for vmid in [a, b] {
        class.assert_on(vmid, 2).await;
        assert!(
            holds(&overlay_of(&root, vmid), STUDENT_BYTE, STUDENT_AT),
            "kept until reset"
        );
    }
    let tile = alice.json(&format!("/api/v1/vms/{a}")).await;
    assert_eq!(tile["newer_version"], 3, "{tile}");
    let signed_in = WebClient::login(&lab.hub.url(), "alice", "a-long-password").await;
    let home = signed_in.get("/vms").await.text().await.unwrap();
    assert!(home.contains("Version 3 of the class is out"), "{home}");
    let reset = alice.api_post(&format!("/api/v1/vms/{a}/reset")).await;
    assert_eq!(reset.status(), StatusCode::OK);
    class.assert_on(a, 3).await;
    assert!(holds(&overlay_of(&root, a), 0x03, TEACHER_AT));
    assert!(!holds(&overlay_of(&root, a), STUDENT_BYTE, STUDENT_AT));
    class.assert_on(b, 2).await;

    // v4 for new students only: bob's reset keeps him on v2; when he leaves, his VM is
    // re-made on v4 for the next student.
    write(&overlay_of(&root, tvm), 0x04, TEACHER_AT);
    let job = class.publish("new-students", "lab 4").await;
    let message = job["message"].as_str().unwrap();
    assert!(message.contains("stay on their version"), "{message}");
    assert!(
        class.bases_of(2).await.len() == 2 && class.bases_of(3).await.len() == 2,
        "v2 and v3 stay while VMs are on them: {}",
        class.detail().await
    );
    write(&overlay_of(&root, b), STUDENT_BYTE, STUDENT_AT);
    let tile = bob.json(&format!("/api/v1/vms/{b}")).await;
    assert!(tile.get("newer_version").is_none(), "{tile}");
    let reset = bob.api_post(&format!("/api/v1/vms/{b}/reset")).await;
    assert_eq!(reset.status(), StatusCode::OK);
    class.assert_on(b, 2).await;
    assert!(
        !holds(&overlay_of(&root, b), STUDENT_BYTE, STUDENT_AT),
        "reset to v2"
    );
    let left = teacher
        .api_delete(&format!("/api/v1/classes/{id}/students/bob"))
        .await;
    assert_eq!(left.status(), StatusCode::OK, "{:?}", left.text().await);
    let recycled = within_class_vm_version(&class, b, 4).await;
    assert!(recycled, "bob's VM is re-made on v4 for its next student");
    class.assert_on(b, 4).await;
    assert!(holds(&overlay_of(&root, b), 0x04, TEACHER_AT));

    // Roll back to v3, re-making everything now: every VM ends on v3, and v2, which no VM
    // uses any more, goes (v4 stays: it is the newest).
    let job = class.roll_back(3, "now").await;
    let message = job["message"].as_str().unwrap();
    assert!(message.starts_with("Version 3 is current."), "{message}");
    assert_eq!(class.detail().await["class"]["current_version"], 3);
    for vmid in [tvm, a, b, free] {
        class.assert_on(vmid, 3).await;
        assert!(holds(&overlay_of(&root, vmid), 0x03, TEACHER_AT));
    }
    assert!(class.bases_of(2).await.is_empty(), "{message}");
    let versions = teacher
        .json(&format!("/api/v1/classes/{id}/versions"))
        .await;
    let states: Vec<(i64, String)> = versions
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["number"].as_i64().unwrap(),
                v["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        states,
        [(4, "ready"), (3, "ready"), (2, "removed"), (1, "removed")]
            .map(|(n, s)| (n, s.to_owned()))
            .to_vec()
    );
    // A student cannot publish, nor see the versions.
    let denied = alice
        .api_post_json(
            &format!("/api/v1/classes/{id}/versions"),
            &json!({"rollout": "now"}),
        )
        .await;
    assert_eq!(denied.status(), StatusCode::NOT_FOUND);
    let job = lab.delete_class(&teacher, id).await;
    assert_eq!(job["state"], "done", "{job}");
    assert!(
        files_named(&root, "base-")
            .iter()
            .all(|file| file.to_string_lossy().contains(&format!("/{TEMPLATE}/"))),
        "only the template's own base is left: {:?}",
        files_named(&root, "base-")
    );
}

/// Waits until the hub records VM `vmid` on `version` (a job in the background).
async fn within_class_vm_version(class: &Class<'_>, vmid: u32, version: i64) -> bool {
    let mut changes = class.lab.hub.hub().state.jobs.subscribe();
    common::within("the VM's new version", async {
        loop {
            let vms = class.vms("student").await;
            if vms
                .iter()
                .any(|(v, _, recorded)| *v == vmid && *recorded == Some(version))
            {
                return true;
            }
            let _ = changes.recv().await;
        }
    })
    .await
}

/// Starts publishing the class's teacher VM as a new version, re-making every VM now.
async fn start_publish(lab: &CrashLab, class_id: i64) -> u64 {
    let started = lab
        .teacher
        .api_post_json(
            &format!("/api/v1/classes/{class_id}/versions"),
            &json!({"note": "crash", "rollout": "now", "warn_minutes": 0}),
        )
        .await;
    assert_eq!(started.status(), StatusCode::ACCEPTED);
    let started: Value = started.json().await.unwrap();
    started["job"].as_u64().unwrap()
}

/// Waits for a publish of version 2 that was cut short, and asserts it ended as one that
/// was not: all `students` re-made, every VM of the class on the one v2 base, and nothing
/// made twice or left behind (no stray VM, base image or temporary file).
async fn assert_published_once(lab: &CrashLab, class_id: i64, job: u64, students: usize) {
    let job = lab.job_end(job).await;
    assert_eq!(job["state"], "done", "{job}");
    let message = job["message"].as_str().unwrap();
    assert!(
        message.starts_with(&format!("Version 2 published. {students} VMs re-made")),
        "{message}"
    );
    let root = &lab.sim.root;
    let detail = lab
        .teacher
        .json(&format!("/api/v1/classes/{class_id}"))
        .await;
    let vms = detail["vms"].as_array().unwrap();
    let vmid = |vm: &Value| vm["vmid"].as_u64().unwrap() as u32;
    let v2: Vec<u32> = vms
        .iter()
        .filter(|vm| vm["kind"] == "base" && vm["version"] == 2)
        .map(vmid)
        .collect();
    assert_eq!(v2.len(), 1, "one v2 base on shared storage: {detail}");
    for vm in vms.iter().filter(|vm| vm["kind"] != "base") {
        assert_eq!(vm["version"], 2, "{detail}");
        let chain = backing_chain(&overlay_of(root, vmid(vm)));
        assert!(
            chain.len() == 2 && chain[1].ends_with(&format!("base-{}-disk-0.qcow2", v2[0])),
            "VM {}: {chain:?}",
            vmid(vm)
        );
    }
    let mut configs = Vec::new();
    for node in ["pve1", "pve2"] {
        let dir = root.join(format!("etc/pve/nodes/{node}/qemu-server"));
        for entry in std::fs::read_dir(dir).unwrap() {
            let name = entry.unwrap().file_name().to_string_lossy().into_owned();
            configs.push(name.trim_end_matches(".conf").parse::<u32>().unwrap());
        }
    }
    configs.sort_unstable();
    let mut expected: Vec<u32> = vms.iter().map(vmid).chain([TEMPLATE]).collect();
    expected.sort_unstable();
    assert_eq!(configs, expected, "no orphaned and no duplicated VMs");
    let bases = files_named(root, "base-");
    assert_eq!(bases.len(), 3, "the template's, v1's and v2's: {bases:?}");
    let half_made = files_named(root, ".reimage-");
    assert!(
        half_made.is_empty(),
        "nothing half-made is left: {half_made:?}"
    );
}

/// The hub is SIGKILLed while the new version's base is being made (each image copy takes
/// 3 s); the restarted hub resumes the publish, which ends as if nothing had happened.
#[tokio::test]
async fn a_publish_survives_the_hub_being_killed_while_its_base_is_made() {
    let mut lab = CrashLab::start().await;
    let (class_id, students) = lab.deployed_class("Crash publish", 4).await;
    for node in ["pve1", "pve2"] {
        lab.sim
            .ok(node, "fault", &["--latency", "qemu-img convert=3000"]);
    }
    let mut events = EventStream::open(&lab.teacher, "/api/v1/events").await;
    let job = start_publish(&lab, class_id).await;
    events
        .until(
            "the publish under way",
            |_, _| {},
            |name, data| {
                name == "class"
                    && data["stage"]
                        .as_str()
                        .is_some_and(|stage| stage.contains("making its base"))
            },
        )
        .await;
    let detail = lab
        .teacher
        .json(&format!("/api/v1/classes/{class_id}"))
        .await;
    assert!(
        detail["vms"]
            .as_array()
            .unwrap()
            .iter()
            .any(|vm| vm["kind"] == "base" && vm["version"] == 2 && vm["state"] == "planned"),
        "the kill lands before the base is made: {detail}"
    );
    lab.kill_hub().await;
    lab.start_hub().await;
    assert_published_once(&lab, class_id, job, students.len()).await;
}

/// An agent is SIGKILLed while it re-makes its node's VMs (each new overlay takes 1.5 s);
/// started again, it finishes them, and nothing is re-made twice or left half-made.
#[tokio::test]
async fn a_publish_survives_an_agent_being_killed_while_it_re_makes_vms() {
    let mut lab = CrashLab::start().await;
    let (class_id, students) = lab.deployed_class("Crash rollout", 6).await;
    let node_of = |vmid: u32| {
        ["pve1", "pve2"]
            .into_iter()
            .find(|node| {
                lab.sim
                    .root
                    .join(format!("etc/pve/nodes/{node}/qemu-server/{vmid}.conf"))
                    .exists()
            })
            .unwrap()
    };
    let victim = node_of(students[0]);
    let job = publish_until_the_rollout_runs(&lab, class_id, students.len()).await;
    let mut agent = lab.agents.remove(victim).unwrap();
    agent.kill().await.unwrap();
    lab.spawn_agent(victim);
    assert_published_once(&lab, class_id, job, students.len()).await;
}

/// Starts a publish whose re-images each take 1.5 s, and returns its job once the teacher VM
/// is on the new version (the last step of making it) and the students' re-images have
/// started (their task is in the log) but not ended.
async fn publish_until_the_rollout_runs(lab: &CrashLab, class_id: i64, students: usize) -> u64 {
    for node in ["pve1", "pve2"] {
        lab.sim
            .ok(node, "fault", &["--latency", "qemu-img create=1500"]);
    }
    let mut events = EventStream::open(&lab.teacher, "/api/v1/events").await;
    let job = start_publish(lab, class_id).await;
    let detail_path = format!("/api/v1/classes/{class_id}");
    loop {
        events
            .until("class progress", |_, _| {}, |name, _| name == "class")
            .await;
        let detail = lab.teacher.json(&detail_path).await;
        let on_v2 = |kind: &str| {
            detail["vms"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|vm| vm["kind"] == kind && vm["version"] == 2)
                .count()
        };
        let rolling_out = lab
            .db()
            .await
            .class_tasks(class_id, 10)
            .await
            .unwrap()
            .iter()
            .any(|task| task.action == "re-make from version 2");
        if on_v2("teacher") == 1 && rolling_out {
            assert!(on_v2("student") < students, "mid-rollout: {detail}");
            return job;
        }
    }
}

/// The hub is SIGKILLed while the students' VMs are being re-made; the restarted hub
/// finishes the rollout, and the class's task log ends the cut-short task with what it did.
#[tokio::test]
async fn a_publish_survives_the_hub_being_killed_while_vms_are_re_made() {
    let mut lab = CrashLab::start().await;
    let (class_id, students) = lab.deployed_class("Crash rollout hub", 6).await;
    let job = publish_until_the_rollout_runs(&lab, class_id, students.len()).await;
    lab.kill_hub().await;
    lab.start_hub().await;
    assert_published_once(&lab, class_id, job, students.len()).await;
    let db = lab.db().await;
    let tasks = db.class_tasks(class_id, 10).await.unwrap();
    let re_makes: Vec<_> = tasks
        .iter()
        .filter(|task| task.action == "re-make from version 2")
        .collect();
    assert_eq!(
        re_makes.len(),
        2,
        "the cut-short task and the rest: {tasks:?}"
    );
    assert!(
        re_makes.iter().all(|task| task.finished_at.is_some()),
        "no task is left running: {re_makes:?}"
    );
    let done: i64 = re_makes.iter().map(|task| task.total - task.failed).sum();
    assert!(
        done >= students.len() as i64,
        "every student VM is in a task as re-made: {re_makes:?}"
    );
}

/// The class page's forms: publish, roll back and keep, with their errors said on the page,
/// CSRF checked, and nothing for anyone who does not own the class.
#[tokio::test]
async fn the_class_page_publishes_rolls_back_and_keeps_versions() {
    let lab = Lab::start().await;
    let teacher = lab.user("tina", Role::Teacher).await;
    let (id, _) = lab.deployed_class(&teacher, "Forms", 1).await;
    let page = WebClient::login(&lab.hub.url(), "tina", "a-long-password").await;
    let class_page = format!("/classes/{id}");
    let shown = page.get(&class_page).await.text().await.unwrap();
    assert!(shown.contains("Template versions"), "{shown}");
    assert!(
        shown.contains("New VMs are made from version 1."),
        "{shown}"
    );
    let newest_job = || async {
        teacher.json(&format!("/api/v1/classes/{id}")).await["jobs"][0]["id"]
            .as_u64()
            .unwrap()
    };

    // Bad choices are said on the page, and change nothing.
    for (fields, said) in [
        (
            vec![("rollout", "sideways")],
            "Choose how the class&#x27;s VMs move to the version",
        ),
        (
            vec![("rollout", "now"), ("warn_minutes", "9999")],
            "Warn running VMs for 0 to 240 minutes",
        ),
        (
            vec![("rollout", "now"), ("note", "two\nlines")],
            "The note is one line of at most 500 characters",
        ),
    ] {
        let posted = page
            .post_form(&format!("/classes/{id}/publish"), &fields)
            .await;
        assert_eq!(posted.status(), StatusCode::SEE_OTHER);
        let shown = page.get(&class_page).await.text().await.unwrap();
        assert!(shown.contains(said), "{said}: {shown}");
    }
    assert!(
        teacher
            .json(&format!("/api/v1/classes/{id}/versions"))
            .await[1]
            .is_null()
    );
    let forged = page
        .post_form_without_csrf(&format!("/classes/{id}/publish"), &[("rollout", "now")])
        .await;
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);

    let posted = page
        .post_form(
            &format!("/classes/{id}/publish"),
            &[
                ("note", "lab 2 tools"),
                ("rollout", "next-reset"),
                ("warn_minutes", "0"),
            ],
        )
        .await;
    assert_eq!(posted.status(), StatusCode::SEE_OTHER);
    let job = lab.job_done(&teacher, newest_job().await).await;
    assert_eq!(job["state"], "done", "{job}");
    let shown = page.get(&class_page).await.text().await.unwrap();
    assert!(
        shown.contains("New VMs are made from version 2."),
        "{shown}"
    );
    assert!(shown.contains("lab 2 tools"), "{shown}");
    assert!(shown.contains("rolled out next-reset"), "{shown}");

    let posted = page
        .post_form(
            &format!("/classes/{id}/versions/1/rollback"),
            &[("rollout", "now"), ("warn_minutes", "0")],
        )
        .await;
    assert_eq!(posted.status(), StatusCode::SEE_OTHER);
    let job = lab.job_done(&teacher, newest_job().await).await;
    assert_eq!(job["state"], "done", "{job}");
    assert_eq!(
        teacher.json(&format!("/api/v1/classes/{id}")).await["class"]["current_version"],
        1
    );

    let posted = page
        .post_form(&format!("/classes/{id}/versions/keep"), &[("keep", "0")])
        .await;
    assert_eq!(posted.status(), StatusCode::SEE_OTHER);
    let shown = page.get(&class_page).await.text().await.unwrap();
    assert!(shown.contains("Keep 1 to 20 versions"), "{shown}");
    page.post_form(&format!("/classes/{id}/versions/keep"), &[("keep", "2")])
        .await;
    assert_eq!(
        teacher.json(&format!("/api/v1/classes/{id}")).await["class"]["keep_versions"],
        2
    );

    // Someone else's class is no page at all.
    lab.user("otto", Role::Teacher).await;
    let other = WebClient::login(&lab.hub.url(), "otto", "a-long-password").await;
    let posted = other
        .post_form(&format!("/classes/{id}/publish"), &[("rollout", "now")])
        .await;
    assert_eq!(posted.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        teacher
            .json(&format!("/api/v1/classes/{id}/versions"))
            .await[0]["number"],
        2,
        "nothing new was published"
    );
}
