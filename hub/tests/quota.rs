//! Quota hours end to end: a real hub (its quota checks driven here), two real agents, a
//! two-node pve-sim cluster. Running time comes from the uptime the agents report; the test
//! makes a VM look as if it had booted long ago by moving its pid file's time back, as a VM
//! started while the hub was away would look.

mod common;

use std::time::{Duration, SystemTime};

use common::lab::Lab;
use common::web::{EventStream, join_class};
use common::within;
use proxlab_hub::db::now_unix;
use proxlab_hub::db::users::Role;
use proxlab_hub::domain::quota::enforcer;
use proxlab_protocol::inventory::PowerState;
use reqwest::StatusCode;
use serde_json::{Value, json};

/// Makes the node report `vmid` as booted `minutes` ago, and waits until the hub has
/// metered it so.
async fn booted_ago(lab: &Lab, vmid: u32, minutes: u64) {
    let pid_file = lab.sim.root.join(format!("var/run/qemu-server/{vmid}.pid"));
    let boot = SystemTime::now() - Duration::from_secs(minutes * 60);
    std::fs::File::options()
        .write(true)
        .open(&pid_file)
        .unwrap()
        .set_modified(boot)
        .unwrap();
    let state = &lab.hub.hub().state;
    let mut changes = state.inventory_changes.subscribe();
    let wanted = now_unix() - i64::try_from(minutes * 60).unwrap();
    within("the node's report of the early boot metered", async {
        loop {
            let open = state.db.open_runs().await.unwrap();
            if open
                .iter()
                .any(|run| run.vm.vmid == vmid && (run.boot_at - wanted).abs() <= 5)
            {
                return;
            }
            let _ = changes.recv().await;
        }
    })
    .await;
}

#[tokio::test]
async fn hours_are_counted_warned_enforced_refused_and_extended() {
    let lab = Lab::start_configured("shared", |config| {
        config.schedules.run_scheduler = false;
    })
    .await;
    let state = &lab.hub.hub().state;
    let teacher = lab.user("tina", Role::Teacher).await;
    let alice = lab.user("alice", Role::Student).await;
    let bob = lab.user("bob", Role::Student).await;
    let (class_id, vmids) = lab.deployed_class(&teacher, "Quota", 2).await;
    join_class(&teacher, &alice, class_id).await;
    join_class(&teacher, &bob, class_id).await;
    let quota: Value = teacher
        .api_put_json(
            &format!("/api/v1/classes/{class_id}/quota"),
            &json!({"hours": 1}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(quota["settings"]["hours"], 1, "{quota}");
    assert_eq!(quota["students"].as_array().unwrap().len(), 2, "{quota}");
    let bad = teacher
        .api_put_json(
            &format!("/api/v1/classes/{class_id}/quota"),
            &json!({"hours": 0}),
        )
        .await;
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    let denied = alice
        .api_put_json(
            &format!("/api/v1/classes/{class_id}/quota"),
            &json!({"hours": 99}),
        )
        .await;
    assert_eq!(denied.status(), StatusCode::NOT_FOUND);

    let mine: Value = alice.json("/api/v1/vms").await;
    let vmid = mine["vms"][0]["vmid"].as_u64().unwrap() as u32;
    assert!(vmids.contains(&vmid));
    lab.start_and_see_it_run(&alice, vmid).await;

    // As if it had been running for 55 minutes: 5 left, so alice is warned.
    booted_ago(&lab, vmid, 55).await;
    let mut stream = EventStream::open(&alice, "/api/v1/events").await;
    let pass = enforcer::run_due(state, now_unix()).await.unwrap();
    assert_eq!(pass.warned, [lab.key(vmid)]);
    assert!(pass.stopping.is_empty());
    let warning = stream
        .until("the quota warning", |_, _| {}, |name, _| name == "notice")
        .await;
    let message = warning["message"].as_str().unwrap();
    assert!(
        message.contains("Your hours for this class run out in"),
        "{message}"
    );
    let page = alice
        .get(&format!("/vms/{vmid}"))
        .await
        .text()
        .await
        .unwrap();
    assert!(page.contains("Hours left"), "the tile shows the hours");

    // At 61 minutes it is shut down, says why, and a start is refused.
    booted_ago(&lab, vmid, 61).await;
    // The guest takes a moment to shut down.
    let node = lab.node_of(vmid);
    lab.sim
        .ok(&node, "fault", &["--latency", "qm shutdown=1500"]);
    let pass = enforcer::run_due(state, now_unix()).await.unwrap();
    assert_eq!(pass.stopping, [lab.key(vmid)]);
    // A check while the shutdown is under way does not begin another.
    let again = enforcer::run_due(state, now_unix()).await.unwrap();
    assert!(again.stopping.is_empty(), "{again:?}");
    let stopped = stream
        .until(
            "the VM shut down for its quota",
            |_, _| {},
            |name, data| name == "vm" && data["vmid"] == vmid && data["status"] == "stopped",
        )
        .await;
    assert_eq!(stopped["stop_reason"], "Stopped: the 1 h quota was used up");
    lab.sim.ok(&node, "fault", &["--latency", "qm shutdown=0"]);
    let vm = state.db.vm(lab.key(vmid)).await.unwrap().unwrap();
    assert_eq!(vm.status, PowerState::Stopped);
    assert_eq!(
        vm.stop_reason.as_deref(),
        Some("Stopped: the 1 h quota was used up")
    );
    let refused = alice.api_post(&format!("/api/v1/vms/{vmid}/start")).await;
    assert_eq!(refused.status(), StatusCode::CONFLICT);
    let body: Value = refused.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("1 h of this class are used up"),
        "{body}"
    );

    // The teacher sees it, adds an hour for alice, and she may start again.
    let quota: Value = teacher
        .json(&format!("/api/v1/classes/{class_id}/quota"))
        .await;
    let row = |quota: &Value, name: &str| {
        quota["students"]
            .as_array()
            .unwrap()
            .iter()
            .find(|student| student["username"] == name)
            .cloned()
            .unwrap()
    };
    let alices = row(&quota, "alice");
    assert!(alices["used_hours"].as_f64().unwrap() >= 1.0, "{alices}");
    assert_eq!(alices["left_hours"], 0.0, "{alices}");
    assert_eq!(row(&quota, "bob")["used_hours"], 0.0);
    let added: Value = teacher
        .api_post_json(
            &format!("/api/v1/classes/{class_id}/quota/hours"),
            &json!({"hours": 1, "username": "alice"}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(row(&added, "alice")["total_hours"], 2, "{added}");
    assert_eq!(row(&added, "bob")["total_hours"], 1, "{added}");
    let unknown = teacher
        .api_post_json(
            &format!("/api/v1/classes/{class_id}/quota/hours"),
            &json!({"hours": 1, "username": "mallory"}),
        )
        .await;
    assert_eq!(unknown.status(), StatusCode::BAD_REQUEST);
    let started = alice.api_post(&format!("/api/v1/vms/{vmid}/start")).await;
    assert_eq!(started.status(), StatusCode::OK);

    let audit = lab.audit_by("quota").await;
    assert!(
        audit.iter().any(|entry| entry.action == "vm.shutdown"),
        "{audit:?}"
    );

    // The usage report: alice's hour, bob's none, as JSON, CSV and a page with a chart.
    let report: Value = teacher
        .json(&format!("/api/v1/classes/{class_id}/usage?days=7"))
        .await;
    let usage_of = |name: &str| {
        report["students"]
            .as_array()
            .unwrap()
            .iter()
            .find(|student| student["username"] == name)
            .cloned()
            .unwrap()
    };
    assert!(
        usage_of("alice")["hours_run"].as_f64().unwrap() >= 1.0,
        "{report}"
    );
    assert_eq!(usage_of("alice")["hours_added"], 1, "{report}");
    assert_eq!(usage_of("bob")["hours_run"], 0.0, "{report}");
    assert_eq!(report["daily"].as_array().unwrap().len(), 7, "{report}");
    let too_long = teacher
        .get(&format!("/api/v1/classes/{class_id}/usage?days=9999"))
        .await;
    assert_eq!(too_long.status(), StatusCode::BAD_REQUEST);
    let csv = teacher.get(&format!("/classes/{class_id}/usage.csv")).await;
    assert_eq!(csv.headers()["content-type"], "text/csv; charset=utf-8");
    let csv = csv.text().await.unwrap();
    let mut lines = csv.lines();
    assert_eq!(
        lines.next(),
        Some("student,vmid,hours_run,hours_counted,hours_added,sessions,idle_stops")
    );
    assert!(
        csv.lines()
            .any(|line| line.starts_with(&format!("alice,{vmid},"))),
        "{csv}"
    );
    let page = teacher
        .get(&format!("/classes/{class_id}/usage"))
        .await
        .text()
        .await
        .unwrap();
    assert!(page.contains("<svg class=\"chart\""), "a chart: {page}");
    assert_eq!(
        alice
            .get(&format!("/classes/{class_id}/usage"))
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
    let root = lab.user("root", Role::Admin).await;
    let site: Value = root.json("/api/v1/usage?months=2").await;
    assert_eq!(site["months"].as_array().unwrap().len(), 2, "{site}");
    assert!(
        site["by_class"]
            .as_array()
            .unwrap()
            .iter()
            .any(|line| line["name"] == "Quota" && line["total"].as_f64().unwrap() >= 1.0),
        "{site}"
    );
    let by_node = root
        .get("/admin/usage.csv?by=node")
        .await
        .text()
        .await
        .unwrap();
    assert!(by_node.starts_with("node,"), "{by_node}");
    assert!(by_node.contains("\r\npve"), "{by_node}");
    assert_eq!(root.get("/admin/usage").await.status(), StatusCode::OK);
    assert_eq!(
        teacher.get("/api/v1/usage").await.status(),
        StatusCode::FORBIDDEN
    );
}
