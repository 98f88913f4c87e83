//! Nodes of two Proxmox clusters on one hub: each node's cluster as its agent reports it,
//! node names that clash between clusters, one VMID in both clusters (two VMs, each under
//! its cluster's key), and placement that keeps a class inside one cluster.

mod common;

use proxlab_hub::vm_key::VmKey;
use std::path::Path;
use std::time::Duration;

use common::lab::{Lab, TEMPLATE};
use common::web::WebClient;
use common::{SimCluster, within};
use proxlab_hub::db::users::Role;
use proxlab_hub::inventory::InventoryChange;
use serde_json::json;
use tokio::sync::broadcast::Receiver;

/// The second cluster's one node: called `pve1` in Proxmox, like the first cluster's.
const B_NODE: &str = "pve1";
/// Its name on the hub.
const B_HUB_NAME: &str = "pve1-lab-b";
/// A VM only the second cluster has.
const B_ONLY_VM: u32 = 700;

/// Waits until the hub stored a report of the second cluster's node about `vmid`.
async fn b_reports(stored: &mut Receiver<InventoryChange>, vmid: u32) {
    within(&format!("{B_HUB_NAME} reports VM {vmid}"), async {
        loop {
            let change = stored.recv().await.unwrap();
            if change.node == B_HUB_NAME && change.vms.iter().any(|vm| vm.vmid == vmid) {
                return;
            }
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clusters_share_a_hub_without_mixing_their_nodes_or_vms() {
    common::init_tracing();
    let lab = Lab::start().await;
    let hub = &lab.hub;
    let db = hub.hub().state.db.clone();
    let b_dir = hub.dir.path().join("cluster-b");
    std::fs::create_dir_all(&b_dir).unwrap();
    // Its template has the first cluster's template's VMID: both started counting at 9000.
    let b = SimCluster::init_cluster(&b_dir, Some("lab-b"), B_NODE, &["other-tpl:64M"], "shared");
    b.ok(
        B_NODE,
        "qm",
        &["create", &B_ONLY_VM.to_string(), "--name", "b-only"],
    );

    // The first cluster's nodes were enrolled as they are: `pve-sim init` names its cluster.
    let pve1 = db.node_by_name("pve1").await.unwrap().unwrap();
    let a = pve1.cluster.clone().expect("pve1 reported its cluster");
    assert_eq!(a.name, "sim");
    assert!(a.ca_fingerprint.starts_with("sha256:"), "{a:?}");
    let pve2 = db.node_by_name("pve2").await.unwrap().unwrap();
    assert_eq!(pve2.cluster.as_ref().map(|c| c.id), Some(a.id));

    // The second cluster's pve1 cannot take the name: the hub says why and what to do.
    let b_config = b.agent_config(&b_dir, B_NODE);
    let token = hub.token(Duration::from_secs(600), None).await;
    let refused = hub
        .enroll_configured(
            B_NODE,
            &token.token,
            &token.ca_pin,
            &b_config,
            &b_dir.join("state"),
        )
        .await;
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        said.contains("of cluster sim is already enrolled")
            && said.contains(&format!("--node-name {B_HUB_NAME}")),
        "{said}"
    );

    // Under a name of its own it enrolls (with the same, unspent token) and connects.
    let enrolled = hub
        .enroll_configured(
            B_HUB_NAME,
            &token.token,
            &token.ca_pin,
            &b_config,
            &hub.state_dir(B_HUB_NAME),
        )
        .await;
    assert!(
        enrolled.status.success(),
        "{}",
        String::from_utf8_lossy(&enrolled.stderr)
    );
    let b_cluster = db
        .node_by_name(B_HUB_NAME)
        .await
        .unwrap()
        .unwrap()
        .cluster
        .expect("the cluster is recorded at enrollment");
    assert_eq!(b_cluster.name, "lab-b");
    assert_ne!(b_cluster.id, a.id);

    let mut stored = hub.hub().state.inventory_changes.subscribe();
    let _b_agent = hub.spawn_agent_with(
        B_HUB_NAME,
        &b_config,
        &[
            ("PVE_SIM_ROOT", &b.root),
            ("PVE_SIM_NODE", Path::new(B_NODE)),
        ],
    );
    b_reports(&mut stored, B_ONLY_VM).await;
    let clusters: Vec<String> = db
        .clusters()
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.name)
        .collect();
    assert_eq!(clusters, ["lab-b", "sim"]);

    // Both clusters' VM 9000 are kept, each under its own cluster.
    let in_a = |vmid| VmKey::new(a.id, vmid);
    let in_b = |vmid| VmKey::new(b_cluster.id, vmid);
    assert_eq!(
        db.vm(in_b(B_ONLY_VM)).await.unwrap().unwrap().node,
        B_HUB_NAME
    );
    assert!(db.vm(in_a(B_ONLY_VM)).await.unwrap().is_none());
    let template = db.vm(in_a(TEMPLATE)).await.unwrap().unwrap();
    assert_eq!(
        (template.node.as_str(), template.name.as_str()),
        ("pve1", "lab-tpl")
    );
    let other = db.vm(in_b(TEMPLATE)).await.unwrap().unwrap();
    assert_eq!(
        (other.node.as_str(), other.name.as_str()),
        (B_HUB_NAME, "other-tpl")
    );

    // The admin's node list and the API show each node's cluster.
    let admin = lab.user("ada", Role::Admin).await;
    let overview = admin.json("/api/v1/nodes").await;
    let node = |name: &str| {
        overview["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|node| node["name"] == name)
            .cloned()
            .unwrap()
    };
    assert_eq!(node("pve2")["cluster"], "sim", "{overview}");
    assert_eq!(node(B_HUB_NAME)["cluster"], "lab-b", "{overview}");
    let admin_browser = WebClient::login(&hub.url(), "ada", "a-long-password").await;

    // A VM's address names its cluster; the VMID alone names a VM only while one cluster
    // has it (the addresses from before clusters keep working), and otherwise says which
    // VMs it could mean.
    let a_template = admin
        .json(&format!("/api/v1/vms/{}-{TEMPLATE}", a.id))
        .await;
    assert_eq!(a_template["name"], "lab-tpl", "{a_template}");
    assert_eq!(a_template["id"], format!("{}-{TEMPLATE}", a.id));
    let b_template = admin
        .json(&format!("/api/v1/vms/{}-{TEMPLATE}", b_cluster.id))
        .await;
    assert_eq!(b_template["name"], "other-tpl", "{b_template}");
    assert_eq!(b_template["cluster"], "lab-b", "{b_template}");
    let ambiguous = admin.get(&format!("/api/v1/vms/{TEMPLATE}")).await;
    assert_eq!(ambiguous.status(), reqwest::StatusCode::CONFLICT);
    let said: serde_json::Value = ambiguous.json().await.unwrap();
    let message = said["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("{}-{TEMPLATE}", a.id))
            && message.contains(&format!("{}-{TEMPLATE}", b_cluster.id)),
        "{said}"
    );
    let only_b = admin.json(&format!("/api/v1/vms/{B_ONLY_VM}")).await;
    assert_eq!(only_b["id"], format!("{}-{B_ONLY_VM}", b_cluster.id));
    let page = admin_browser
        .get(&format!("/vms/{}-{TEMPLATE}", b_cluster.id))
        .await
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("other-tpl") && page.contains(r#"<dd data-field="cluster">lab-b</dd>"#),
        "{page}"
    );

    // A class of the first cluster's template stays in the first cluster, although the
    // second has a storage of the same name (`shared`, but another cluster's).
    let teacher = lab.user("tina", Role::Teacher).await;
    let (class_id, vmids) = lab.deployed_class(&teacher, "Networks", 6).await;
    let detail = teacher.json(&format!("/api/v1/classes/{class_id}")).await;
    for vm in detail["vms"].as_array().unwrap() {
        assert_ne!(vm["node"], B_HUB_NAME, "{detail}");
    }
    assert_eq!(vmids.len(), 7, "{detail}");
    for vmid in vmids {
        assert!(b.config(B_NODE, vmid).is_none(), "VM {vmid} in cluster B");
    }

    // A bare VMID tells people nothing about VMs they may not see. When the second cluster
    // gets a VM with the VMID of a student's VM, the student's bare VMID still names their
    // own VM (and their teacher's bare VMID the VM of her class); a VMID that only names
    // others' VMs (the two templates) is not found for them, while staff, who see
    // templates, are asked which one they mean.
    let seat = detail["vms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|vm| vm["kind"] == "student")
        .map(|vm| vm["vmid"].as_u64().unwrap() as u32)
        .unwrap();
    let student = lab.user("sam", Role::Student).await;
    let assigned = admin
        .api_post_json(
            &format!("/api/v1/vms/{}-{seat}/assign", a.id),
            &json!({"username": "sam"}),
        )
        .await;
    assert!(assigned.status().is_success(), "{}", assigned.status());
    let mut stored = hub.hub().state.inventory_changes.subscribe();
    b.ok(
        B_NODE,
        "qm",
        &["create", &seat.to_string(), "--name", "b-twin"],
    );
    b_reports(&mut stored, seat).await;
    let own = student.json(&format!("/api/v1/vms/{seat}")).await;
    assert_eq!(own["id"], format!("{}-{seat}", a.id), "{own}");
    let others = student.get(&format!("/api/v1/vms/{TEMPLATE}")).await;
    assert_eq!(others.status(), reqwest::StatusCode::NOT_FOUND);
    let said = others.text().await.unwrap();
    assert!(!said.contains(&format!("-{TEMPLATE}")), "{said}");
    let of_her_class = teacher.json(&format!("/api/v1/vms/{seat}")).await;
    assert_eq!(
        of_her_class["id"],
        format!("{}-{seat}", a.id),
        "{of_her_class}"
    );
    let templates = teacher.get(&format!("/api/v1/vms/{TEMPLATE}")).await;
    assert_eq!(templates.status(), reqwest::StatusCode::CONFLICT);
    let twins = admin.get(&format!("/api/v1/vms/{seat}")).await;
    assert_eq!(twins.status(), reqwest::StatusCode::CONFLICT);
    b.ok(B_NODE, "qm", &["destroy", &seat.to_string()]);
    b_reports(&mut stored, seat).await;

    // A class pinned to the second cluster's node gets a copy of the class base there (its
    // `shared` is not the first cluster's), and its VMs are made from that copy.
    let (across, job) = lab
        .create_class(
            &teacher,
            &json!({"name": "Across", "template_vmid": format!("{}-{TEMPLATE}", a.id),
                    "seats": 1, "node": B_HUB_NAME}),
        )
        .await;
    assert_eq!(job["state"], "done", "{job}");
    let detail = teacher.json(&format!("/api/v1/classes/{across}")).await;
    let placed: Vec<(String, String, u32)> = detail["vms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|vm| {
            (
                vm["kind"].as_str().unwrap().to_owned(),
                vm["node"].as_str().unwrap().to_owned(),
                vm["vmid"].as_u64().unwrap() as u32,
            )
        })
        .collect();
    let on_b: Vec<&(String, String, u32)> = placed
        .iter()
        .filter(|(_, node, _)| node == B_HUB_NAME)
        .collect();
    let kinds: Vec<&str> = on_b.iter().map(|(kind, ..)| kind.as_str()).collect();
    assert_eq!(kinds, ["base", "teacher", "student"], "{detail}");
    for (kind, _, vmid) in &on_b {
        let config = b
            .config(B_NODE, *vmid)
            .unwrap_or_else(|| panic!("{kind} {vmid}"));
        if kind != "base" {
            let base = on_b[0].2;
            assert!(config.contains(&format!("base-{base}-disk-0")), "{config}");
        }
    }

    let across_vms: Vec<u32> = on_b[1..].iter().map(|(_, _, vmid)| *vmid).collect();
    lab.inventory(&across_vms, true).await;

    // An admin lists the VMs of one cluster; each VM names its cluster.
    let of_cluster = |listing: &serde_json::Value| -> Vec<(u64, String)> {
        listing["vms"]
            .as_array()
            .unwrap()
            .iter()
            .map(|vm| {
                let cluster = vm["cluster"].as_str().unwrap_or("-").to_owned();
                (vm["vmid"].as_u64().unwrap(), cluster)
            })
            .collect()
    };
    let listed_in_b = of_cluster(&admin.json("/api/v1/vms?cluster=lab-b").await);
    let mut expected_in_b: Vec<(u64, String)> = across_vms
        .iter()
        .map(|vmid| (u64::from(*vmid), "lab-b".to_owned()))
        .collect();
    expected_in_b.insert(0, (u64::from(B_ONLY_VM), "lab-b".to_owned()));
    assert_eq!(listed_in_b, expected_in_b);
    let listed_in_a = of_cluster(&admin.json("/api/v1/vms?cluster=sim").await);
    assert_eq!(listed_in_a.len(), 7, "{listed_in_a:?}");
    assert!(
        listed_in_a.iter().all(|(_, cluster)| cluster == "sim"),
        "{listed_in_a:?}"
    );
    let list_page = admin_browser.get("/vms").await.text().await.unwrap();
    assert!(
        list_page.contains("<select name=\"cluster\">"),
        "{list_page}"
    );

    // When one cluster's VM 9000 goes, the other's stays, and the VMID alone names it again.
    let mut stored = hub.hub().state.inventory_changes.subscribe();
    b.ok(B_NODE, "qm", &["destroy", &TEMPLATE.to_string()]);
    b_reports(&mut stored, TEMPLATE).await;
    assert!(db.vm(in_b(TEMPLATE)).await.unwrap().is_none());
    assert_eq!(
        db.vm(in_a(TEMPLATE)).await.unwrap().unwrap().name,
        "lab-tpl"
    );
    let again = admin.json(&format!("/api/v1/vms/{TEMPLATE}")).await;
    assert_eq!(again["name"], "lab-tpl", "{again}");

    // A class of empty VMs stays in one cluster too (both have a `shared` storage), and so
    // do the VMs added to it later.
    let empty = json!({"name": "Blank", "seats": 4, "memory_mib": 128, "disk_gib": 1,
                       "storage": "shared"});
    let (blank, job) = lab.create_class(&teacher, &empty).await;
    assert_eq!(job["state"], "done", "{job}");
    let added: serde_json::Value = teacher
        .api_post_json(
            &format!("/api/v1/classes/{blank}/capacity"),
            &json!({"add": 2}),
        )
        .await
        .json()
        .await
        .unwrap();
    let job = lab.job_done(&teacher, added["job"].as_u64().unwrap()).await;
    assert_eq!(job["state"], "done", "{job}");
    let detail = teacher.json(&format!("/api/v1/classes/{blank}")).await;
    let vms = detail["vms"].as_array().unwrap();
    assert!(vms.len() >= 6, "{detail}");
    let mut clusters = std::collections::BTreeSet::new();
    for vm in vms {
        let node = db.node_by_name(vm["node"].as_str().unwrap()).await.unwrap();
        clusters.insert(
            node.and_then(|node| node.cluster)
                .map(|cluster| cluster.name),
        );
    }
    assert_eq!(clusters.len(), 1, "{clusters:?}: {detail}");
}
