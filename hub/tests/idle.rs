//! Idle shutdown end to end: a real hub, two real agents (whose idle clocks the test moves
//! ahead through a skew file), a two-node pve-sim cluster.

mod common;

use common::lab::Lab;
use common::web::{EventStream, join_class};
use common::within;
use proxlab_hub::db::users::Role;
use proxlab_protocol::inventory::PowerState;
use reqwest::StatusCode;
use serde_json::{Value, json};

#[tokio::test]
async fn an_unused_vm_is_warned_then_shut_down_and_still_here_restarts_its_timer() {
    let lab = Lab::start().await;
    let teacher = lab.user("tina", Role::Teacher).await;
    let alice = lab.user("alice", Role::Student).await;
    let bob = lab.user("bob", Role::Student).await;
    let (class_id, vmids) = lab.deployed_class(&teacher, "Idle", 1).await;
    join_class(&teacher, &alice, class_id).await;
    let vmid = vmids[1];

    // Bad settings are refused with the reason; students may not touch them.
    let bad = teacher
        .api_put_json(
            &format!("/api/v1/classes/{class_id}/idle"),
            &json!({"no_connection_minutes": 10, "warn_minutes": 10}),
        )
        .await;
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    let body: Value = bad.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("sooner than the shortest"),
        "{body}"
    );
    let denied = alice
        .api_put_json(
            &format!("/api/v1/classes/{class_id}/idle"),
            &json!({"no_connection_minutes": 15}),
        )
        .await;
    assert!(
        matches!(
            denied.status(),
            StatusCode::FORBIDDEN | StatusCode::NOT_FOUND
        ),
        "{}",
        denied.status()
    );

    // The VM has the QEMU guest agent, so the warning shows inside it too.
    let node = lab.node_of(vmid);
    let id = vmid.to_string();
    lab.sim.ok(&node, "qm", &["set", &id, "--agent", "1"]);
    lab.sim.ok(&node, "script", &[&id, "--guest-agent", "on"]);
    lab.start_and_see_it_run(&alice, vmid).await;
    // Nobody connects within 15 minutes of the start: warned 5 minutes ahead, then shut down.
    let saved: Value = teacher
        .api_put_json(
            &format!("/api/v1/classes/{class_id}/idle"),
            &json!({"no_connection_minutes": 15, "warn_minutes": 5, "shutdown_minutes": 1,
                    "guest_message": true}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(saved["settings"]["no_connection_minutes"], 15, "{saved}");
    assert!(
        saved["summary"]
            .as_str()
            .unwrap()
            .starts_with("no connection 15 min; warn 5 min ahead (in the guest too)"),
        "{saved}"
    );

    let mut stream = EventStream::open(&alice, "/api/v1/events").await;
    lab.hub.skew_agent_clocks(10 * 60 + 5);
    let warning = stream
        .until("the idle warning", |_, _| {}, |name, _| name == "notice")
        .await;
    assert_eq!(
        warning["still_here"],
        lab.key(vmid).to_string(),
        "{warning}"
    );
    assert_eq!(warning["key"], format!("idle:{}", lab.key(vmid)));
    let message = warning["message"].as_str().unwrap();
    assert!(
        message.contains("nobody has connected to it since it started"),
        "{message}"
    );
    let told = within("the message in the guest", async {
        loop {
            let script: Value = serde_json::from_str(&lab.sim.ok(&node, "script", &[&id])).unwrap();
            if let Some(first) = script["exec_log"].get(0) {
                return first.clone();
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    })
    .await;
    assert_eq!(told[0], "wall", "{told}");
    assert!(
        told[1].as_str().unwrap().contains("shuts down in 5 min"),
        "{told}"
    );

    // Another student may not say they are still there for alice's VM.
    let foreign = bob
        .api_post(&format!("/api/v1/vms/{vmid}/still-here"))
        .await;
    assert_eq!(foreign.status(), StatusCode::NOT_FOUND);
    // Alice is: the warning goes, and the timer starts again.
    let here: Value = alice
        .api_post(&format!("/api/v1/vms/{vmid}/still-here"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(here["was_warned"], true, "{here}");
    let withdrawn = stream
        .until(
            "the warning withdrawn",
            |_, _| {},
            |name, data| name == "notice" && data["withdrawn"] == true,
        )
        .await;
    assert_eq!(withdrawn["key"], format!("idle:{}", lab.key(vmid)));
    assert_eq!(
        lab.hub
            .hub()
            .state
            .db
            .vm(lab.key(vmid))
            .await
            .unwrap()
            .unwrap()
            .status,
        PowerState::Running,
        "still running after the warning was answered"
    );

    // Nobody comes back: 15 minutes after "still here" it is shut down, and says why.
    lab.hub.skew_agent_clocks(10 * 60 + 5 + 16 * 60);
    let stopped = stream
        .until(
            "the VM stopped by the policy",
            |_, _| {},
            |name, data| name == "vm" && data["vmid"] == vmid && data["stop_reason"].is_string(),
        )
        .await;
    assert_eq!(
        stopped["stop_reason"],
        "Stopped: nobody connected within 15 min of its start"
    );
    assert_eq!(stopped["status"], "stopped");
    let audit = lab.audit_by("idle shutdown").await;
    assert_eq!(audit.len(), 1, "one shutdown, recorded once: {audit:?}");
    assert_eq!(audit[0].action, "vm.shutdown");
    assert_eq!(audit[0].target, lab.key(vmid).audit_target());
    let idle: Value = teacher
        .json(&format!("/api/v1/classes/{class_id}/idle"))
        .await;
    assert_eq!(idle["stops"][0]["vmid"], vmid, "{idle}");
    assert_eq!(idle["stops"][0]["outcome"], "shut-down", "{idle}");

    // Starting it again forgets why it stopped.
    let started: Value = alice
        .api_post(&format!("/api/v1/vms/{vmid}/start"))
        .await
        .json()
        .await
        .unwrap();
    assert!(started.get("stop_reason").is_none(), "{started}");
}
