//! Plugins end to end: an admin uploads the example plugins, the hub pushes them to two real
//! agents, a class runs them through real clones on pve-sim — names, VLAN tags, and the
//! guest-agent calls after a VM's first start. Needs the plugins built (`plugins/build`;
//! CI does), and skips with a notice without them.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use common::lab::{Lab, TEMPLATE};
use common::{SimCluster, within};
use proxlab_hub::db::users::Role;
use reqwest::StatusCode;
use serde_json::{Value, json};

fn dist() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/dist");
    if dir.join("name-by-student/plugin.wasm").exists() {
        Some(dir)
    } else {
        eprintln!(
            "NOTICE: the plugins are not built ({} is missing); run plugins/build. Skipping.",
            dir.display()
        );
        None
    }
}

fn upload_body(dist: &Path, name: &str, manifest: Option<&str>) -> Value {
    let wasm = std::fs::read(dist.join(name).join("plugin.wasm")).unwrap();
    let manifest = match manifest {
        Some(text) => text.to_owned(),
        None => std::fs::read_to_string(dist.join(name).join("plugin.toml")).unwrap(),
    };
    json!({"manifest": manifest, "wasm": BASE64.encode(wasm)})
}

/// Uploads an example as an admin: both nodes install it, withholding nothing.
async fn upload_to_every_node(admin: &common::web::WebClient, dist: &Path, name: &str) {
    let response = admin
        .api_post_json("/api/v1/plugins", &upload_body(dist, name, None))
        .await;
    assert_eq!(response.status(), StatusCode::CREATED, "{name}");
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body["nodes"],
        json!([{"node": "pve1", "error": null}, {"node": "pve2", "error": null}]),
        "{name}: {body}"
    );
}

/// Reads a VM's config on whichever node has it.
fn config_of(sim: &SimCluster, vmid: u32) -> String {
    ["pve1", "pve2"]
        .iter()
        .find_map(|node| sim.config(node, vmid))
        .unwrap_or_else(|| panic!("VM {vmid} has no config"))
}

fn node_of(sim: &SimCluster, vmid: u32) -> &'static str {
    ["pve1", "pve2"]
        .into_iter()
        .find(|node| sim.config(node, vmid).is_some())
        .unwrap()
}

#[tokio::test]
async fn a_failing_plugin_fails_its_vms_with_its_message_and_the_agents_carry_on() {
    let Some(dist) = dist() else { return };
    let lab = Lab::start().await;
    let (hub, sim) = (&lab.hub, &lab.sim);
    let admin = lab.user("ada", Role::Admin).await;
    let teacher = lab.user("tina", Role::Teacher).await;
    let uploaded = admin
        .api_post_json("/api/v1/plugins", &upload_body(&dist, "hostile", None))
        .await;
    assert_eq!(uploaded.status(), StatusCode::CREATED);
    // The hostile fixture traps in classes named "trap".
    let (class_id, job) = lab
        .create_class(
            &teacher,
            &json!({"name": "trap", "template_vmid": TEMPLATE, "seats": 1, "plugins": ["hostile"]}),
        )
        .await;
    assert!(
        job["message"]
            .as_str()
            .unwrap_or_default()
            .contains("failed"),
        "{job}"
    );
    let detail = teacher.json(&format!("/api/v1/classes/{class_id}")).await;
    for vm in detail["vms"].as_array().unwrap() {
        if vm["kind"] == "base" {
            continue;
        }
        let error = vm["error"].as_str().unwrap_or_default();
        assert!(
            error.contains("plugin hostile: panicked: the plugin gave up (at "),
            "{vm}"
        );
        let vmid = vm["vmid"].as_u64().unwrap() as u32;
        assert!(sim.config("pve1", vmid).is_none() && sim.config("pve2", vmid).is_none());
    }
    // Its `validate` finds an error in classes named "invalid": their VMs fail with it.
    let (invalid, _) = lab
        .create_class(
            &teacher,
            &json!({"name": "invalid", "template_vmid": TEMPLATE, "seats": 1,
                    "plugins": ["hostile"]}),
        )
        .await;
    let detail = teacher.json(&format!("/api/v1/classes/{invalid}")).await;
    for vm in detail["vms"].as_array().unwrap() {
        if vm["kind"] != "base" {
            let error = vm["error"].as_str().unwrap_or_default();
            assert_eq!(
                error, "plugin hostile: no VLAN is left for this class",
                "{vm}"
            );
        }
    }
    // The same agents deploy the next class, with the same plugin, when it behaves.
    let uploaded = admin
        .api_post_json(
            "/api/v1/plugins",
            &upload_body(&dist, "set-guest-password", None),
        )
        .await;
    assert_eq!(uploaded.status(), StatusCode::CREATED);
    let (class_id, job) = lab
        .create_class(
            &teacher,
            &json!({"name": "calm", "template_vmid": TEMPLATE, "seats": 1,
               "plugins": ["hostile", "set-guest-password"]}),
        )
        .await;
    assert_eq!(job["message"], "2 VMs ready", "{job}");
    // An after-start step that fails shows on the class page.
    let student = lab.user("sam", Role::Student).await;
    let joined = common::web::join_class(&teacher, &student, class_id).await;
    let vmid = joined["vmid"].as_u64().expect("a VM") as u32;
    let node = node_of(sim, vmid);
    let id = vmid.to_string();
    sim.ok(node, "qm", &["set", &id, "--agent", "1"]);
    sim.ok(
        node,
        "script",
        &[&id, "--guest-agent", "on", "--exec", "chpasswd=1:"],
    );
    lab.inventory(&[vmid], true).await;
    let mut changes = hub.hub().state.jobs.subscribe();
    let started = student.api_post(&format!("/api/v1/vms/{vmid}/start")).await;
    assert_eq!(started.status(), StatusCode::OK);
    let shown = within("the failed step on the class page", async {
        loop {
            let detail = teacher.json(&format!("/api/v1/classes/{class_id}")).await;
            let vm = detail["vms"]
                .as_array()
                .unwrap()
                .iter()
                .find(|vm| vm["vmid"] == vmid)
                .cloned()
                .unwrap();
            if !vm["error"].as_str().unwrap_or_default().is_empty() {
                return vm;
            }
            let _ = changes.recv().await;
        }
    })
    .await;
    assert_eq!(
        shown["error"], "after-start: plugin set-guest-password: chpasswd exited with 1",
        "{shown}"
    );
    assert_eq!(shown["state"], "ready");
    sim.ok(node, "qm", &["stop", &id]);
}

#[tokio::test]
async fn uploaded_plugins_name_tag_and_set_up_class_vms() {
    let Some(dist) = dist() else { return };
    let lab = Lab::start().await;
    let (hub, sim) = (&lab.hub, &lab.sim);
    let db = hub.hub().state.db.clone();
    let admin = lab.user("ada", Role::Admin).await;
    let teacher = lab.user("tina", Role::Teacher).await;
    let student = lab.user("sam", Role::Student).await;

    // Only admins upload; every online agent installs what it is sent.
    let refused = teacher
        .api_post_json(
            "/api/v1/plugins",
            &upload_body(&dist, "name-by-student", None),
        )
        .await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    for name in ["name-by-student", "vlan-per-class", "set-guest-password"] {
        upload_to_every_node(&admin, &dist, name).await;
    }
    // The agents check what the hub only parsed: a manifest that lies is refused there.
    let lying =
        "id = \"liar\"\nversion = \"1\"\napi = \"0.1.0\"\nhooks = [\"name\", \"validate\"]\n";
    let body: Value = admin
        .api_post_json(
            "/api/v1/plugins",
            &upload_body(&dist, "name-by-student", Some(lying)),
        )
        .await
        .json()
        .await
        .unwrap();
    let error = body["nodes"][0]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("does not export proxlab:plugin/validate@0.1.0"),
        "{body}"
    );
    assert_eq!(
        admin.api_delete("/api/v1/plugins/liar").await.status(),
        StatusCode::OK
    );
    // A capability the node's operator does not grant is reported back, with why.
    let body: Value = admin
        .api_post_json("/api/v1/plugins", &upload_body(&dist, "hostile", None))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        body["nodes"][0]["withheld"],
        json!(["guest-exec: there is no grant of guest-exec to it"]),
        "{body}"
    );
    assert_eq!(
        admin.api_delete("/api/v1/plugins/hostile").await.status(),
        StatusCode::OK
    );
    let garbage = admin
        .api_post_json(
            "/api/v1/plugins",
            &json!({"manifest": lying, "wasm": BASE64.encode(b"not wasm")}),
        )
        .await;
    assert_eq!(garbage.status(), StatusCode::BAD_REQUEST);
    // One plugin for every class, two chosen by the class.
    let scoped = admin
        .api_post_json(
            "/api/v1/plugins/vlan-per-class/scope",
            &json!({"all_classes": true}),
        )
        .await;
    assert_eq!(scoped.status(), StatusCode::OK);
    let listed = admin.json("/api/v1/plugins").await;
    assert_eq!(listed.as_array().unwrap().len(), 3, "{listed}");

    let (class_id, job) = lab
        .create_class(
            &teacher,
            &json!({"name": "Net Lab", "template_vmid": TEMPLATE, "seats": 2,
               "plugins": ["name-by-student", "set-guest-password"]}),
        )
        .await;
    assert_eq!(job["state"], "done", "{job}");
    let detail = teacher.json(&format!("/api/v1/classes/{class_id}")).await;
    let vms: Vec<(u32, String)> = detail["vms"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|vm| vm["kind"] != "base")
        .map(|vm| {
            (
                vm["vmid"].as_u64().unwrap() as u32,
                vm["kind"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let tag = 100 + class_id;
    for (vmid, kind) in &vms {
        let config = config_of(sim, *vmid);
        let expected_name = if kind == "teacher" {
            "net-lab-teacher"
        } else {
            "net-lab-seat"
        };
        assert!(
            config.contains(&format!("name: {expected_name}")),
            "{config}"
        );
        assert!(config.contains(&format!(",tag={tag}\n")), "{config}");
        assert!(config.contains(&format!("tags: vlan-{tag}\n")), "{config}");
    }
    // A class that lists a plugin that does not exist is refused.
    let unknown = teacher
        .api_put_json(
            &format!("/api/v1/classes/{class_id}/plugins"),
            &json!({"plugins": ["nope"]}),
        )
        .await;
    assert_eq!(unknown.status(), StatusCode::BAD_REQUEST);

    // A student joins: the VM is renamed after them, and its first start sets their password
    // through the guest agent, once.
    let joined = common::web::join_class(&teacher, &student, class_id).await;
    let vmid = joined["vmid"].as_u64().expect("a VM") as u32;
    let node = node_of(sim, vmid);
    let mut changes = hub.hub().state.inventory_changes.subscribe();
    within("the rename", async {
        while db
            .vm(common::key_of(&db, vmid).await)
            .await
            .unwrap()
            .is_none_or(|vm| vm.name != "net-lab-sam")
        {
            let _ = changes.recv().await;
        }
    })
    .await;
    assert!(config_of(sim, vmid).contains("name: net-lab-sam\n"));
    sim.ok(node, "qm", &["set", &vmid.to_string(), "--agent", "1"]);
    sim.ok(node, "script", &[&vmid.to_string(), "--guest-agent", "on"]);
    let started = student.api_post(&format!("/api/v1/vms/{vmid}/start")).await;
    assert_eq!(started.status(), StatusCode::OK);
    // The simulator records guest commands in a file; nothing announces them, so poll it.
    let script = within("the after-start steps", async {
        loop {
            let script: Value =
                serde_json::from_str(&sim.ok(node, "script", &[&vmid.to_string()])).unwrap();
            if script["exec_log"]
                .as_array()
                .is_some_and(|log| log.len() >= 2)
            {
                return script;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert_eq!(
        script["exec_log"],
        json!([["chpasswd"], ["passwd", "--expire", "student"]])
    );
    assert_eq!(
        script["exec_input"],
        json!([format!("student:sam-{class_id}\n"), ""])
    );
    sim.ok(node, "qm", &["stop", &vmid.to_string()]);
}

/// Polls a VM's config until `done` holds: a config change through `qm set` on the node
/// announces nothing the test could await.
async fn config_until(
    sim: &SimCluster,
    vmid: u32,
    what: &str,
    done: impl Fn(&str) -> bool,
) -> String {
    within(what, async {
        loop {
            let config = config_of(sim, vmid);
            if done(&config) {
                return config;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
}

#[tokio::test]
async fn plugins_0_2_get_settings_and_facts_and_speak_to_the_vms_users() {
    let Some(dist) = dist() else { return };
    let lab = Lab::start().await;
    let (hub, sim) = (&lab.hub, &lab.sim);
    let db = hub.hub().state.db.clone();
    let admin = lab.user("ada", Role::Admin).await;
    let teacher = lab.user("tina", Role::Teacher).await;
    let student = lab.user("sam", Role::Student).await;
    for name in ["describe-student", "per-class-sizing", "first-login"] {
        upload_to_every_node(&admin, &dist, name).await;
    }

    // Site settings: checked against the manifest.
    let saved = admin
        .api_put_json(
            "/api/v1/plugins/describe-student/settings",
            &json!({"contact": "Room 12"}),
        )
        .await;
    assert_eq!(saved.status(), StatusCode::OK);
    let fields: Value = saved.json().await.unwrap();
    assert_eq!(fields[0]["name"], "contact");
    assert_eq!(fields[0]["value"], "Room 12");
    for (plugin, body) in [
        ("describe-student", json!({"nope": "x"})),
        ("per-class-sizing", json!({"cores": "many"})),
    ] {
        let refused = admin
            .api_put_json(&format!("/api/v1/plugins/{plugin}/settings"), &body)
            .await;
        assert_eq!(refused.status(), StatusCode::BAD_REQUEST, "{plugin} {body}");
    }
    let refused = teacher
        .api_put_json(
            "/api/v1/plugins/describe-student/settings",
            &json!({"contact": "me"}),
        )
        .await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    // The admin page's form shows them; the form saves them too.
    let page = admin.get("/admin/plugins").await.text().await.unwrap();
    assert!(page.contains("Settings of describe-student"), "{page}");
    assert!(page.contains("value=\"Room 12\""), "{page}");
    let saved = admin
        .post_form(
            "/admin/plugins/first-login/settings",
            &[("user", "pupil"), ("motd", "")],
        )
        .await;
    assert!(saved.status().is_redirection() || saved.status().is_success());
    let fields = admin.json("/api/v1/plugins/first-login/settings").await;
    assert_eq!(fields[1]["value"], "pupil", "{fields}");
    let saved = admin
        .post_form(
            "/admin/plugins/first-login/settings",
            &[("user", "student")],
        )
        .await;
    assert!(saved.status().is_redirection() || saved.status().is_success());
    // A size the plugin ignores, with a warning the teacher sees on the class page.
    let saved = admin
        .api_put_json(
            "/api/v1/plugins/per-class-sizing/settings",
            &json!({"cores": -1}),
        )
        .await;
    assert_eq!(saved.status(), StatusCode::OK);

    let (class_id, job) = lab
        .create_class(
            &teacher,
            &json!({"name": "Net Lab", "template_vmid": TEMPLATE, "seats": 1,
               "plugins": ["describe-student", "per-class-sizing", "first-login"]}),
        )
        .await;
    assert_eq!(job["state"], "done", "{job}");
    // The class's own settings: only those the plugin lets classes set, by its teachers.
    let path = format!("/api/v1/classes/{class_id}/plugins/per-class-sizing/settings");
    let fields = teacher.json(&path).await;
    let names: Vec<&str> = fields
        .as_array()
        .unwrap()
        .iter()
        .map(|field| field["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["cores", "memory_mib"], "{fields}");
    assert_eq!(fields[0]["inherited"], "-1", "{fields}");
    let refused = teacher
        .api_put_json(&path, &json!({"max_memory_mib": 1}))
        .await;
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    // A class someone may not see is not found.
    let refused = student.api_put_json(&path, &json!({"cores": 2})).await;
    assert_eq!(refused.status(), StatusCode::NOT_FOUND);
    let saved = teacher
        .api_put_json(&path, &json!({"memory_mib": 1024}))
        .await;
    assert_eq!(saved.status(), StatusCode::OK);

    let detail = teacher.json(&format!("/api/v1/classes/{class_id}")).await;
    let vmid = detail["vms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|vm| vm["kind"] == "student")
        .and_then(|vm| vm["vmid"].as_u64())
        .unwrap() as u32;
    let config = config_of(sim, vmid);
    assert!(config.contains("#Not given to a student yet"), "{config}");
    assert!(
        config.contains("#Help%3A Room 12") || config.contains("#Help: Room 12"),
        "{config}"
    );
    // The validate warning reached the class page, not only the agent's log.
    let page = teacher
        .get(&format!("/classes/{class_id}"))
        .await
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("a negative size is ignored"),
        "the class page shows findings"
    );
    assert!(page.contains("Settings of per-class-sizing for this class"));

    // The student joins: the description follows, through `assigned` and `qm set`.
    let joined = common::web::join_class(&teacher, &student, class_id).await;
    assert_eq!(joined["vmid"].as_u64(), Some(u64::from(vmid)));
    config_until(sim, vmid, "the assigned description", |config| {
        config.contains("Student: sam (sam)") || config.contains("Student%3A sam (sam)")
    })
    .await;

    // Its first start: a password of its own, shown to the student once, never to others.
    let node = node_of(sim, vmid);
    sim.ok(node, "qm", &["set", &vmid.to_string(), "--agent", "1"]);
    sim.ok(node, "script", &[&vmid.to_string(), "--guest-agent", "on"]);
    let key = common::key_of(&db, vmid).await;
    // A new VM reaches the inventory with its node's next report.
    let mut changes = hub.hub().state.inventory_changes.subscribe();
    within("the VM in the inventory", async {
        while db.vm(key).await.unwrap().is_none() {
            let _ = changes.recv().await;
        }
    })
    .await;
    let started = student.api_post(&format!("/api/v1/vms/{vmid}/start")).await;
    let status = started.status();
    assert_eq!(status, StatusCode::OK, "{}", started.text().await.unwrap());
    within("the after-start notice", async {
        let mut changes = hub.hub().state.jobs.subscribe();
        while !db
            .vm_plugin_notes(key)
            .await
            .unwrap()
            .iter()
            .any(|note| note.severity == "notice")
        {
            let _ = changes.recv().await;
        }
    })
    .await;
    let script: Value =
        serde_json::from_str(&sim.ok(node, "script", &[&vmid.to_string()])).unwrap();
    let input = script["exec_input"][0].as_str().unwrap();
    let password = input
        .strip_prefix("student:")
        .and_then(|rest| rest.strip_suffix('\n'))
        .expect("chpasswd got user:password");
    assert_eq!(password.len(), 12, "{input}");
    assert!(
        script["files_written"]["/etc/motd"]
            .as_str()
            .is_some_and(|motd| motd.contains("Welcome to Net Lab, sam.")),
        "{script}"
    );
    let teachers_view = teacher
        .get(&format!("/vms/{vmid}"))
        .await
        .text()
        .await
        .unwrap();
    assert!(
        teachers_view.contains("Sign in as student"),
        "notes reach the VM page"
    );
    assert!(
        !teachers_view.contains(password),
        "the teacher never sees the secret"
    );
    let first = student
        .get(&format!("/vms/{vmid}"))
        .await
        .text()
        .await
        .unwrap();
    assert!(first.contains(password), "the student sees it once");
    let again = student
        .get(&format!("/vms/{vmid}"))
        .await
        .text()
        .await
        .unwrap();
    assert!(!again.contains(password), "and only once");
    sim.ok(node, "qm", &["stop", &vmid.to_string()]);

    // The student leaves the class: before the VM is made fresh, `unassigned` puts the
    // description back.
    let removed = teacher
        .api_delete(&format!("/api/v1/classes/{class_id}/students/sam"))
        .await;
    assert_eq!(removed.status(), StatusCode::OK);
    config_until(sim, vmid, "the unassigned description", |config| {
        config.contains("Not given to a student yet") && !config.contains("sam (sam)")
    })
    .await;
}
