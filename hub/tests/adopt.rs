//! Adopting VMs that exist on the nodes into a class, end to end: a real hub, real agents,
//! pve-sim nodes with VMs made outside proxlab (a linked clone and a full clone of the
//! template). Nothing on the nodes changes at import (every file is hashed before and after),
//! the linked clone can be reset to the template and the full clone cannot, and deleting the
//! class leaves them all on their node.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::disks::{files_named, holds_pattern as holds, write_pattern as write};
use common::lab::{Lab, TEMPLATE};
use common::web::WebClient;
use proxlab_hub::db::users::Role;
use reqwest::StatusCode;
use serde_json::{Value, json};

/// Every file under the simulated cluster with a digest of its content, but for the
/// runtime directory (pid files and sockets of running VMs).
fn hash_tree(root: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut hashes = BTreeMap::new();
    let mut dirs = vec![root.to_owned()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            let name = path.strip_prefix(root).unwrap().display().to_string();
            if name.starts_with("var/run") || name.starts_with("var/lock") {
                continue;
            }
            if path.is_dir() {
                dirs.push(path);
            } else if let Ok(bytes) = std::fs::read(&path) {
                let digest = ring::digest::digest(&ring::digest::SHA256, &bytes);
                hashes.insert(name, digest.as_ref().to_vec());
            }
        }
    }
    hashes
}

fn vm_of(detail: &Value, vmid: u32) -> Value {
    detail["vms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|vm| vm["vmid"] == vmid)
        .cloned()
        .unwrap_or_else(|| panic!("VM {vmid} is not in the class: {detail}"))
}

#[tokio::test]
async fn vms_made_outside_proxlab_are_adopted_without_a_change_on_the_nodes() {
    let lab = Lab::start_on("local").await;
    let root = lab.sim.root.clone();
    let admin = lab.user("ada", Role::Admin).await;
    let teacher = lab.user("tina", Role::Teacher).await;
    let alice = lab.user("alice", Role::Student).await;
    let tpl = TEMPLATE.to_string();
    lab.sim
        .ok("pve1", "qm", &["clone", &tpl, "201", "--name", "old-s01"]);
    lab.sim.ok(
        "pve1",
        "qm",
        &["clone", &tpl, "202", "--name", "old-s02", "--full", "1"],
    );
    lab.inventory(&[201, 202], true).await;
    let page = WebClient::login(&lab.hub.url(), "ada", "a-long-password").await;
    let form = page.get("/admin/adopt").await.text().await.unwrap();
    assert!(form.contains("linked clone of 9000"), "{form}");
    assert!(
        form.contains(&format!(r#"name="student_{}""#, lab.key(202))),
        "{form}"
    );

    let request = json!({
        "name": "Networks (adopted)", "owner": "tina", "template_vmid": TEMPLATE,
        "vmids": [201], "range": [202, 202], "students": {"201": "alice"},
    });
    let refused = teacher
        .api_post_json("/api/v1/classes/adopt", &request)
        .await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let before = hash_tree(&root);
    let adopted = admin.api_post_json("/api/v1/classes/adopt", &request).await;
    assert_eq!(adopted.status(), StatusCode::CREATED);
    let class_id = adopted.json::<Value>().await.unwrap()["class_id"]
        .as_i64()
        .unwrap();
    assert_eq!(hash_tree(&root), before, "nothing on the nodes changed");
    let again = admin.api_post_json("/api/v1/classes/adopt", &request).await;
    assert_eq!(again.status(), StatusCode::CONFLICT);

    let detail = teacher.json(&format!("/api/v1/classes/{class_id}")).await;
    assert_eq!(vm_of(&detail, TEMPLATE)["kind"], "base");
    assert_eq!(vm_of(&detail, 201)["version"], 1, "a linked clone of v1");
    assert!(vm_of(&detail, 202)["version"].is_null(), "{detail}");
    assert_eq!(detail["class"]["current_version"], 1);

    // alice has her VM, and may reset it: its disk goes back to the template's.
    let mine = alice.json("/api/v1/vms/201").await;
    assert_eq!(mine["assignee"], "alice");
    assert!(
        mine["actions"]
            .as_array()
            .unwrap()
            .contains(&json!("reset")),
        "{mine}"
    );
    let overlay = files_named(&root, "vm-201-disk-0");
    assert_eq!(overlay.len(), 1, "{overlay:?}");
    write(&overlay[0], 0x5a, "1M");
    let reset = alice.api_post("/api/v1/vms/201/reset").await;
    assert_eq!(reset.status(), StatusCode::OK);
    assert!(!holds(&overlay[0], 0x5a, "1M"), "reset to the template");
    // The full clone is started and stopped, never reset.
    let plain = teacher.json("/api/v1/vms/202").await;
    assert!(
        !plain["actions"]
            .as_array()
            .unwrap()
            .contains(&json!("reset")),
        "{plain}"
    );
    let reset = teacher.api_post("/api/v1/vms/202/reset").await;
    assert_eq!(reset.status(), StatusCode::CONFLICT);
    let tina = WebClient::login(&lab.hub.url(), "tina", "a-long-password").await;
    let class_page = tina
        .get(&format!("/classes/{class_id}"))
        .await
        .text()
        .await
        .unwrap();
    assert!(
        class_page.contains("not a linked clone of the template: start and stop only"),
        "the page says what an adopted VM can do: {class_page}"
    );
    lab.start_and_see_it_run(&teacher, 202).await;
    let stopped = teacher.api_post("/api/v1/vms/202/stop").await;
    assert_eq!(stopped.status(), StatusCode::OK);

    // Deleting the class gives the VMs back: all three stay on their node.
    let job = lab.delete_class(&teacher, class_id).await;
    assert_eq!(job["state"], "done", "{job}");
    for vmid in [TEMPLATE, 201, 202] {
        assert!(
            lab.config_path("pve1", vmid).exists(),
            "VM {vmid} stays on its node"
        );
    }
    let free = admin.json("/api/v1/vms/201").await;
    assert!(free["assignee"].is_null(), "{free}");

    // Given back, they can be adopted again, here through the page's form.
    let posted = page
        .post_form(
            "/admin/adopt",
            &[
                ("name", "Networks again"),
                ("owner", "tina"),
                ("template_vmid", "9000"),
                ("vmid", "201"),
                ("vmid", "202"),
                ("student_202", "alice"),
                ("student_201", ""),
            ],
        )
        .await;
    assert_eq!(posted.status(), StatusCode::SEE_OTHER);
    let location = posted.headers()["location"].to_str().unwrap().to_owned();
    assert!(location.starts_with("/classes/"), "{location}");
    assert_eq!(alice.json("/api/v1/vms/202").await["assignee"], "alice");
    let bad = page
        .post_form(
            "/admin/adopt",
            &[("name", "x"), ("owner", "tina"), ("template_vmid", "nine")],
        )
        .await;
    assert_eq!(bad.headers()["location"], "/admin/adopt");
}
