//! A lab for class tests: a real hub, two real agents, and a two-node pve-sim cluster whose
//! template (9000) is on shared storage or on pve1's own.

use std::collections::HashSet;

use proxlab_hub::db::users::Role;
use proxlab_hub::domain::accounts::create_user;
use proxlab_hub::domain::audit::Actor;
use proxlab_hub::domain::auth::issue_api_token;
use proxlab_hub::domain::viewer::Viewer;
use proxlab_hub::vm_key::VmKey;
use serde_json::Value;

use super::web::WebClient;
use super::{SimCluster, TestHub, within};

/// The template every lab has.
pub const TEMPLATE: u32 = 9000;

/// Fields drop in this order: the simulated VMs (whose pid files are in the hub's temporary
/// directory) and the agents go before the hub and its directory.
pub struct Lab {
    /// The cluster of the lab's two nodes: its VMs' keys are under it.
    pub cluster: i64,
    pub sim: SimCluster,
    _agents: Vec<tokio::process::Child>,
    pub hub: TestHub,
}

impl Lab {
    pub async fn start() -> Self {
        Self::start_on("shared").await
    }

    /// A lab whose template's disk is on `storage` of pve1.
    pub async fn start_on(storage: &str) -> Self {
        Self::start_configured(storage, |_| {}).await
    }

    /// A lab whose hub has settings of the test's own.
    pub async fn start_configured(
        storage: &str,
        configure: impl FnOnce(&mut proxlab_hub::config::HubConfig),
    ) -> Self {
        let hub = TestHub::start_configured(None, configure).await;
        let sim = SimCluster::init_on(hub.dir.path(), "pve1,pve2", &["lab-tpl:1G"], storage);
        let mut changes = hub.hub().state.inventory_changes.subscribe();
        let agents = vec![
            hub.sim_agent(&sim, "pve1").await,
            hub.sim_agent(&sim, "pve2").await,
        ];
        let db = hub.hub().state.db.clone();
        let cluster = super::vm_key(&db, "pve1", TEMPLATE).await.cluster;
        within("the template in the inventory", async {
            while db
                .vm(VmKey::new(cluster, TEMPLATE))
                .await
                .unwrap()
                .is_none()
            {
                let _ = changes.recv().await;
            }
        })
        .await;
        Self {
            cluster,
            hub,
            sim,
            _agents: agents,
        }
    }

    /// The key of the lab's VM `vmid`.
    #[allow(dead_code)] // not every test binary that includes this module names VMs so
    pub fn key(&self, vmid: u32) -> VmKey {
        VmKey::new(self.cluster, vmid)
    }

    /// Kills the agents, as a node crash would.
    pub fn kill_agents(&mut self) {
        for agent in &mut self._agents {
            let _ = agent.start_kill();
        }
    }

    /// Starts the agents again (after [`Lab::kill_agents`]) and waits until both are online.
    pub async fn restart_agents(&mut self) {
        for agent in &mut self._agents {
            let _ = agent.wait().await;
        }
        self._agents = vec![
            self.hub.start_sim_agent(&self.sim, "pve1").await,
            self.hub.start_sim_agent(&self.sim, "pve2").await,
        ];
    }

    /// A user with an API client.
    pub async fn user(&self, name: &str, role: Role) -> WebClient {
        let db = &self.hub.hub().state.db;
        create_user(db, name, role, Some("a-long-password"))
            .await
            .unwrap();
        let row = db.user_by_name(name).await.unwrap().unwrap();
        let token = issue_api_token(db, &Viewer::from(&row), "test", Actor::Operator)
            .await
            .unwrap();
        WebClient::with_token(&self.hub.url(), &token)
    }

    /// Starts a VM and waits until its node's own inventory shows it running (not only the
    /// answer to the start), so the node's idle timers have seen it start.
    #[allow(dead_code)] // not every test binary that includes this module starts VMs so
    pub async fn start_and_see_it_run(&self, client: &WebClient, vmid: u32) {
        let mut changes = self.hub.hub().state.inventory_changes.subscribe();
        let answer = client.api_post(&format!("/api/v1/vms/{vmid}/start")).await;
        assert_eq!(answer.status(), reqwest::StatusCode::OK);
        within("the node reports the VM running", async {
            loop {
                let change = changes.recv().await.unwrap();
                if change.vms.contains(&self.key(vmid)) {
                    return;
                }
            }
        })
        .await;
    }

    /// The newest audit entries of an actor (a username, or `quota`, `idle shutdown`…).
    #[allow(dead_code)] // not every test binary that includes this module reads the log
    pub async fn audit_by(&self, actor: &str) -> Vec<proxlab_hub::db::audit::AuditRow> {
        let filter = proxlab_hub::db::audit::AuditFilter {
            actor: Some(actor.into()),
            limit: 50,
            ..Default::default()
        };
        self.hub.hub().state.db.find_audit(&filter).await.unwrap()
    }

    /// Waits until a job has ended and returns it.
    pub async fn job_done(&self, client: &WebClient, job: u64) -> Value {
        let mut changes = self.hub.hub().state.jobs.subscribe();
        within(&format!("job {job}"), async {
            loop {
                let state = client.json(&format!("/api/v1/jobs/{job}")).await;
                if state["state"] == "done" || state["state"] == "failed" {
                    return state;
                }
                let _ = changes.recv().await;
            }
        })
        .await
    }

    /// Posts `body` to `path` as `client`, expects the job it starts (`202 {"job": N}`) and
    /// returns the job once it ended.
    pub async fn finished_job(&self, client: &WebClient, path: &str, body: &Value) -> Value {
        let started = client.api_post_json(path, body).await;
        assert_eq!(started.status(), reqwest::StatusCode::ACCEPTED, "{path}");
        let started: Value = started.json().await.unwrap();
        self.job_done(client, started["job"].as_u64().unwrap())
            .await
    }

    /// Waits until the hub's inventory holds (or, with `present` false, no longer holds)
    /// all of `vmids`.
    pub async fn inventory(&self, vmids: &[u32], present: bool) {
        let db = self.hub.hub().state.db.clone();
        let mut changes = self.hub.hub().state.inventory_changes.subscribe();
        within("the inventory to follow", async {
            loop {
                let stored: HashSet<u32> = db
                    .list_vms()
                    .await
                    .unwrap()
                    .iter()
                    .map(|vm| vm.vmid)
                    .collect();
                if vmids.iter().all(|vmid| stored.contains(vmid) == present) {
                    return;
                }
                let _ = changes.recv().await;
            }
        })
        .await;
    }

    /// Waits until the hub's inventory record of `vmid` satisfies `wanted`, and returns it.
    pub async fn vm_until(
        &self,
        vmid: u32,
        what: &str,
        wanted: impl Fn(&proxlab_hub::db::inventory::VmRow) -> bool,
    ) -> proxlab_hub::db::inventory::VmRow {
        let db = self.hub.hub().state.db.clone();
        let mut changes = self.hub.hub().state.inventory_changes.subscribe();
        within(&format!("VM {vmid}: {what}"), async {
            loop {
                if let Some(vm) = db.vm(self.key(vmid)).await.unwrap()
                    && wanted(&vm)
                {
                    return vm;
                }
                let _ = changes.recv().await;
            }
        })
        .await
    }

    /// The node a VM's config is on.
    pub fn node_of(&self, vmid: u32) -> String {
        ["pve1", "pve2"]
            .into_iter()
            .find(|node| self.config_path(node, vmid).exists())
            .unwrap_or_else(|| panic!("VM {vmid} is on no node"))
            .to_owned()
    }

    /// Gives a VM `address` in its node's neighbour table, starts it as `client` and waits
    /// until the hub knows the address: the VM then "answers" where this machine's test
    /// servers listen.
    pub async fn run_at_address(&self, client: &WebClient, vmid: u32, address: &str) {
        let node = self.node_of(vmid);
        self.sim.ok(
            &node,
            "script",
            &[&vmid.to_string(), "--neighbor-ip", address],
        );
        let started = client.api_post(&format!("/api/v1/vms/{vmid}/start")).await;
        assert_eq!(started.status(), reqwest::StatusCode::OK);
        let db = self.hub.hub().state.db.clone();
        let mut changes = self.hub.hub().state.inventory_changes.subscribe();
        within("the VM's address in the inventory", async {
            while !db
                .vm(self.key(vmid))
                .await
                .unwrap()
                .is_some_and(|vm| vm.ips.iter().any(|ip| ip.address == address))
            {
                let _ = changes.recv().await;
            }
        })
        .await;
    }

    pub fn config_path(&self, node: &str, vmid: u32) -> std::path::PathBuf {
        self.sim
            .root
            .join(format!("etc/pve/nodes/{node}/qemu-server/{vmid}.conf"))
    }

    /// Creates a class as `teacher` and waits for its deployment to end: the class id and
    /// the finished job.
    pub async fn create_class(&self, teacher: &WebClient, request: &Value) -> (i64, Value) {
        let created: Value = teacher
            .api_post_json("/api/v1/classes", request)
            .await
            .json()
            .await
            .unwrap();
        let class_id = created["class"]["id"]
            .as_i64()
            .unwrap_or_else(|| panic!("{created}"));
        let job = self
            .job_done(teacher, created["job"].as_u64().unwrap())
            .await;
        (class_id, job)
    }

    /// A class of `seats` from the template, deployed, with every VM but the base in the
    /// hub's inventory: its id and those VMIDs.
    pub async fn deployed_class(
        &self,
        teacher: &WebClient,
        name: &str,
        seats: u32,
    ) -> (i64, Vec<u32>) {
        let template = self.key(TEMPLATE).to_string();
        let request = serde_json::json!({"name": name, "template_vmid": template, "seats": seats});
        let (class_id, job) = self.create_class(teacher, &request).await;
        assert_eq!(job["state"], "done", "{job}");
        let detail = teacher.json(&format!("/api/v1/classes/{class_id}")).await;
        let vmids: Vec<u32> = detail["vms"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|vm| vm["kind"] != "base")
            .map(|vm| vm["vmid"].as_u64().unwrap() as u32)
            .collect();
        self.inventory(&vmids, true).await;
        (class_id, vmids)
    }

    /// Deletes a class as `teacher` and waits for the job to end.
    pub async fn delete_class(&self, teacher: &WebClient, class_id: i64) -> Value {
        let deleting: Value = teacher
            .api_delete(&format!("/api/v1/classes/{class_id}"))
            .await
            .json()
            .await
            .unwrap();
        self.job_done(teacher, deleting["job"].as_u64().unwrap())
            .await
    }
}
