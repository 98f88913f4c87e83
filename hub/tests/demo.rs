//! The demo command as a person runs it: one process that brings up a simulated two-node
//! cluster (and, asked for, a second cluster), a real agent per node and the hub, and stops
//! cleanly on Ctrl-C.

mod common;

use common::demo::DemoProcess;
use common::web::{EventStream, WebClient};
use reqwest::StatusCode;
use rustix::event::{PollFd, PollFlags};

#[tokio::test]
async fn demo_runs_and_reuses_its_data() {
    let dir = tempfile::tempdir().unwrap();
    // Free ports, chosen once: the second run must come back where the agents look.
    let port = || {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        (
            socket.local_addr().unwrap().to_string(),
            tcp.local_addr().unwrap().to_string(),
        )
    };
    let (quic, http) = port();
    let demo = DemoProcess::start_two_clusters(dir.path(), &http, &quic).await;
    let roles: Vec<(&str, &str)> = demo
        .file
        .users
        .iter()
        .map(|user| (user.username.as_str(), user.role.as_str()))
        .collect();
    assert_eq!(
        roles,
        [
            ("admin", "admin"),
            ("teacher", "teacher"),
            ("alice", "student"),
            ("bob", "student")
        ]
    );
    // With Node.js, the demo signs people in through its own OpenID Connect provider.
    if proxlab_hub::demo::oidc::node_available() {
        assert!(
            demo.file.oidc_issuer.is_some(),
            "demo.json names the provider"
        );
        let visitor = WebClient::anonymous(&demo.file.url);
        let landing = common::oidc::sign_in(&visitor, "/login/oidc/demo", "tina", |url| url).await;
        assert_eq!(landing.status, StatusCode::OK, "{}", landing.body);
        assert!(
            landing.body.contains("tina@school.test"),
            "signed in as tina"
        );
    } else {
        eprintln!(
            "NOTICE: node or npm is not installed; the demo's OpenID Connect provider is not tried"
        );
    }
    let admin = WebClient::with_token(&demo.file.url, &demo.user("admin").api_token);
    let nodes = admin.json("/api/v1/nodes").await;
    let nodes: Vec<(&str, &str, bool)> = nodes["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|node| {
            (
                node["name"].as_str().unwrap(),
                node["cluster"].as_str().unwrap_or("-"),
                node["online"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        nodes,
        [
            ("pve1", "sim", true),
            ("pve1-lab-b", "lab-b", true),
            ("pve2", "sim", true)
        ]
    );
    // The second cluster's VMs are the admin's to see, on its node (once its agent's first
    // inventory is in).
    let mut events = EventStream::open(&admin, "/api/v1/events").await;
    if admin.get("/api/v1/vms/301").await.status() == StatusCode::NOT_FOUND {
        events
            .until(
                "VM 301 in the inventory",
                |_, _| {},
                |name, data| name == "vm" && data["vmid"] == 301,
            )
            .await;
    }
    let web = admin.json("/api/v1/vms/301").await;
    assert_eq!(
        (&web["name"], &web["node"]),
        (&"b-web".into(), &"pve1-lab-b".into()),
        "{web}"
    );
    let templates = admin.json("/api/v1/templates").await;
    assert_eq!(templates["templates"][0]["name"], "debian-12-lab");
    let alice = WebClient::login(&demo.file.url, "alice", demo.password("alice")).await;
    let mine = alice.json("/api/v1/vms").await;
    assert_eq!(mine["vms"].as_array().unwrap().len(), 1);
    assert_eq!(mine["vms"][0]["name"], "lab-alice");
    // The template's disk is a real qcow2 image.
    let disk = dir
        .path()
        .join("pve/mnt/pve/shared/images/9000/base-9000-disk-0.qcow2");
    let info = std::process::Command::new("qemu-img")
        .args(["info", "--output=json"])
        .arg(&disk)
        .output()
        .unwrap();
    assert!(
        info.status.success(),
        "{}",
        String::from_utf8_lossy(&info.stderr)
    );
    let info: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    assert_eq!(info["format"], "qcow2");
    // The teacher's class, with a schedule, quota hours and idle shutdown.
    let teacher = WebClient::with_token(&demo.file.url, &demo.user("teacher").api_token);
    let classes = teacher.json("/api/v1/classes").await;
    let class = &classes["classes"][0];
    assert_eq!(class["name"], "Networks 101", "{classes}");
    let id = class["id"].as_i64().unwrap();
    let schedule = teacher
        .json(&format!("/api/v1/classes/{id}/schedule"))
        .await;
    assert_eq!(schedule["rules"].as_array().unwrap().len(), 1, "{schedule}");
    let quota = teacher.json(&format!("/api/v1/classes/{id}/quota")).await;
    assert_eq!(quota["settings"]["hours"], 10, "{quota}");
    let idle = teacher.json(&format!("/api/v1/classes/{id}/idle")).await;
    assert_eq!(idle["settings"]["disconnected_minutes"], 30, "{idle}");
    let first_password = demo.password("alice").to_owned();
    assert!(demo.stop().await, "the demo stops cleanly on Ctrl-C");

    // A second run reuses the cluster, the accounts and the enrollments.
    let again = DemoProcess::start_two_clusters(dir.path(), &http, &quic).await;
    assert_eq!(again.password("alice"), first_password);
    let alice = WebClient::anonymous(&again.file.url);
    assert_eq!(
        alice.try_login("alice", &first_password).await.status(),
        StatusCode::SEE_OTHER
    );
    let teacher = WebClient::with_token(&again.file.url, &again.user("teacher").api_token);
    let classes = teacher.json("/api/v1/classes").await;
    assert_eq!(classes["classes"].as_array().unwrap().len(), 1, "made once");
    assert!(again.stop().await);
}

#[tokio::test]
async fn live_updates_reach_only_those_who_may_see_the_vm() {
    let dir = tempfile::tempdir().unwrap();
    let demo = DemoProcess::start(dir.path()).await;
    let alice = WebClient::with_token(&demo.file.url, &demo.user("alice").api_token);
    let bob = WebClient::with_token(&demo.file.url, &demo.user("bob").api_token);
    let admin = WebClient::with_token(&demo.file.url, &demo.user("admin").api_token);
    let mut alice_events = EventStream::open(&alice, "/api/v1/events").await;
    let mut bob_events = EventStream::open(&bob, "/api/v1/events").await;
    let mut admin_events = EventStream::open(&admin, "/api/v1/events").await;

    // Alice's VM starts on the node itself, outside proxlab.
    let output = demo.sim("pve1", &["qm", "start", "102"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let running = |name: &str, data: &serde_json::Value, vmid: u64| {
        name == "vm" && data["vmid"] == vmid && data["status"] == "running"
    };
    let vm = alice_events
        .until(
            "alice's VM running",
            |_, _| {},
            |name, data| running(name, data, 102),
        )
        .await;
    assert_eq!(vm["name"], "lab-alice");
    assert_eq!(vm["actions"], serde_json::json!(["shutdown", "stop"]));
    admin_events
        .until(
            "the admin sees it too",
            |_, _| {},
            |name, data| running(name, data, 102),
        )
        .await;
    // Then bob's. Events on a stream keep their order, so anything about alice's VM would
    // have reached bob before his own.
    let output = demo.sim("pve2", &["qm", "start", "201"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut seen_by_bob = Vec::new();
    bob_events
        .until(
            "bob's VM running",
            |name, data| seen_by_bob.push((name.to_owned(), data["vmid"].clone())),
            |name, data| running(name, data, 201),
        )
        .await;
    assert!(
        seen_by_bob
            .iter()
            .all(|(name, vmid)| name == "node" || *vmid == 201),
        "bob saw {seen_by_bob:?}"
    );
    assert!(
        seen_by_bob.iter().all(|(name, _)| name != "node"),
        "node events are for admins"
    );
    // Actions through the API answer with the VM's new state.
    let stopped: serde_json::Value = alice
        .api_post("/api/v1/vms/102/stop")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(stopped["status"], "stopped");
    assert_eq!(stopped["actions"], serde_json::json!(["start"]));
    assert!(demo.stop().await);
}

#[tokio::test]
async fn a_killed_demo_takes_its_agents_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut demo = DemoProcess::start(dir.path()).await;
    let agents = demo.agent_pids();
    assert_eq!(agents.len(), 2, "{agents:?}");
    // A pidfd turns readable when its process ends: opened before the kill, it cannot miss it.
    let ends: Vec<_> = agents
        .into_iter()
        .map(|pid| rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).unwrap())
        .collect();
    // SIGKILL: the demo gets no chance to stop them itself.
    demo.child.kill().await.unwrap();
    let all_ended = tokio::task::spawn_blocking(move || {
        let limit = rustix::event::Timespec {
            tv_sec: 30,
            tv_nsec: 0,
        };
        ends.iter().all(|end| {
            let mut ready = [PollFd::new(end, PollFlags::IN)];
            rustix::event::poll(&mut ready, Some(&limit)).unwrap() == 1
        })
    })
    .await
    .unwrap();
    assert!(all_ended, "an agent outlived the demo");
}
