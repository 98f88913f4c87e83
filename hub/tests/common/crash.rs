//! A site of separate processes (a hub, two agents, pve-sim) that tests kill like crashed
//! servers and start again.

use std::path::Path;

use serde_json::Value;

use super::web::{EventStream, WebClient};
use super::{SimCluster, within};
use crate::common::lab::TEMPLATE;

/// A hub as its own process, to be killed like a crashed server.
pub struct HubProcess {
    pub child: tokio::process::Child,
}

impl HubProcess {
    /// Starts `proxlab-hub serve` and waits for the line saying it listens.
    /// Its schedule clock is moved by the seconds written into `clock_skew_file`.
    pub async fn start(data: &Path, http: &str, quic: &str, clock_skew_file: &Path) -> Self {
        use tokio::io::AsyncBufReadExt;
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_proxlab-hub"))
            .arg("--data-dir")
            .arg(data)
            .args(["serve", "--http-addr", http, "--quic-addr", quic])
            .env(
                "PROXLAB_LOG",
                std::env::var("PROXLAB_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .env("PROXLAB_CONFIG", "/dev/null")
            .env("PROXLAB_HUB_CLOCK_SKEW_FILE", clock_skew_file)
            .env_remove("PROXLAB_DATABASE_URL")
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        within("the hub to listen", async {
            while let Some(line) = lines.next_line().await.unwrap() {
                if line.starts_with("proxlab hub listening") {
                    return;
                }
            }
            panic!("the hub exited");
        })
        .await;
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Self { child }
    }

    /// SIGKILL: no shutdown code runs.
    pub async fn kill(mut self) {
        self.child.kill().await.unwrap();
    }
}

pub fn hub_cli(data: &Path, args: &[&str], stdin: Option<&str>) -> String {
    use std::io::Write;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_proxlab-hub"))
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .env("PROXLAB_CONFIG", "/dev/null")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// A port free for both UDP (QUIC) and TCP (HTTP); another test may hold one of the two.
pub fn free_addr() -> String {
    for _ in 0..50 {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let address = socket.local_addr().unwrap();
        if std::net::TcpListener::bind(address).is_ok() {
            return address.to_string();
        }
    }
    panic!("no port free for both UDP and TCP");
}

/// A site of separate processes (hub, two agents, pve-sim) that tests kill and restart.
/// The simulated VMs drop before the directory that holds their pid files.
pub struct CrashLab {
    pub sim: SimCluster,
    pub dir: tempfile::TempDir,
    pub http: String,
    pub quic: String,
    pub hub: Option<HubProcess>,
    pub agents: std::collections::BTreeMap<String, tokio::process::Child>,
    pub teacher: WebClient,
    pub admin: WebClient,
}

impl CrashLab {
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("hub");
        let sim = SimCluster::init_on(dir.path(), "pve1,pve2", &["lab-tpl:1G"], "shared");
        let (http, quic) = (free_addr(), free_addr());
        let hub = HubProcess::start(&data, &http, &quic, &dir.path().join("hub-clock-skew")).await;
        let url = format!("http://{http}");
        let mut tokens = Vec::new();
        for (user, role) in [("tina", "teacher"), ("root", "admin")] {
            hub_cli(
                &data,
                &["user", "add", user, "--role", role, "--password-stdin"],
                Some("a-long-password\n"),
            );
            tokens.push(
                hub_cli(&data, &["user", "token", user], None)
                    .trim()
                    .to_owned(),
            );
        }
        let admin = WebClient::with_token(&url, &tokens[1]);
        let mut admin_events = EventStream::open(&admin, "/api/v1/events").await;
        let admin = WebClient::with_token(&url, &tokens[1]);
        std::fs::create_dir_all(dir.path().join("agents")).unwrap();
        let mut lab = Self {
            sim,
            http,
            quic,
            hub: Some(hub),
            agents: Default::default(),
            teacher: WebClient::with_token(&url, &tokens[0]),
            admin,
            dir,
        };
        for node in ["pve1", "pve2"] {
            lab.enroll(node);
            lab.spawn_agent(node);
        }
        admin_events
            .until(
                "the template in the inventory",
                |_, _| {},
                |name, data| name == "vm" && data["vmid"] == TEMPLATE,
            )
            .await;
        lab
    }

    /// Waits until a job ends, following the class's live progress.
    pub async fn job_end(&self, job: u64) -> Value {
        let dump = print_agent_logs_on_failure(self.dir.path().join("agents"));
        let mut events = EventStream::open(&self.teacher, "/api/v1/events").await;
        let path = format!("/api/v1/jobs/{job}");
        let mut state = self.teacher.json(&path).await;
        while state["state"] == "pending" || state["state"] == "running" {
            events
                .until("class progress", |_, _| {}, |name, _| name == "class")
                .await;
            state = self.teacher.json(&path).await;
        }
        std::mem::forget(dump);
        state
    }

    /// Creates a class of `seats` and waits for its deployment; returns the class and its
    /// student VMs.
    pub async fn deployed_class(&self, name: &str, seats: u32) -> (i64, Vec<u32>) {
        let created: Value = self
            .teacher
            .api_post_json(
                "/api/v1/classes",
                &serde_json::json!({"name": name, "template_vmid": TEMPLATE, "seats": seats}),
            )
            .await
            .json()
            .await
            .unwrap();
        let class_id = created["class"]["id"]
            .as_i64()
            .unwrap_or_else(|| panic!("{created}"));
        let job = self.job_end(created["job"].as_u64().unwrap()).await;
        assert_eq!(job["state"], "done", "{job}");
        let detail = self
            .teacher
            .json(&format!("/api/v1/classes/{class_id}"))
            .await;
        let students = detail["vms"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|vm| vm["kind"] == "student")
            .map(|vm| vm["vmid"].as_u64().unwrap() as u32)
            .collect();
        (class_id, students)
    }

    /// The hub's database, opened beside the hub process (as a second hub would).
    pub async fn db(&self) -> proxlab_hub::db::Db {
        let url = format!("sqlite://{}", self.data().join("hub.db").display());
        proxlab_hub::db::Db::connect(&url).await.unwrap()
    }

    /// SIGKILLs the hub, as a crash would.
    pub async fn kill_hub(&mut self) {
        self.hub.take().expect("the hub runs").kill().await;
    }

    /// Starts the hub again on its addresses and data.
    pub async fn start_hub(&mut self) {
        let skew = self.dir.path().join("hub-clock-skew");
        self.hub = Some(HubProcess::start(&self.data(), &self.http, &self.quic, &skew).await);
    }

    /// Moves the hub's schedule clock so that it reads `at` now.
    pub fn set_hub_clock(&self, at: jiff::Timestamp) {
        let skew = at.as_second() - jiff::Timestamp::now().as_second();
        std::fs::write(self.dir.path().join("hub-clock-skew"), skew.to_string()).unwrap();
    }

    pub fn data(&self) -> std::path::PathBuf {
        self.dir.path().join("hub")
    }

    pub fn agent_paths(&self, node: &str) -> (std::path::PathBuf, std::path::PathBuf) {
        let agents = self.dir.path().join("agents");
        (agents.join(node), self.sim.agent_config(&agents, node))
    }

    pub fn enroll(&self, node: &str) {
        let issued: Value = serde_json::from_str(&hub_cli(
            &self.data(),
            &[
                "token",
                "create",
                "--node",
                node,
                "--hub-address",
                &self.quic,
                "--json",
            ],
            None,
        ))
        .unwrap();
        let (state, config) = self.agent_paths(node);
        let output = std::process::Command::new(super::agent_bin())
            .arg("--state-dir")
            .arg(&state)
            .arg("--config")
            .arg(&config)
            .args(["enroll", "--hub", &self.quic, "--node-name", node])
            .args(["--token", issued["token"].as_str().unwrap()])
            .args(["--ca-pin", issued["ca_pin"].as_str().unwrap()])
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    pub fn spawn_agent(&mut self, node: &str) {
        let (state, config) = self.agent_paths(node);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("agents").join(format!("{node}.log")))
            .unwrap();
        let child = tokio::process::Command::new(super::agent_bin())
            .arg("--state-dir")
            .arg(&state)
            .arg("--config")
            .arg(&config)
            .arg("run")
            .env("PVE_SIM_ROOT", &self.sim.root)
            .env("PVE_SIM_NODE", node)
            .env("PROXLAB_LOG", "info")
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        self.agents.insert(node.to_owned(), child);
    }
}

/// Prints the agents' logs if the test fails while this is alive.
pub struct LogDump(std::path::PathBuf);

pub fn print_agent_logs_on_failure(dir: std::path::PathBuf) -> LogDump {
    LogDump(dir)
}

impl Drop for LogDump {
    fn drop(&mut self) {
        for node in ["pve1", "pve2"] {
            let log =
                std::fs::read_to_string(self.0.join(format!("{node}.log"))).unwrap_or_default();
            eprintln!(
                "--- agent {node} ---\n{}",
                log.lines().rev().take(15).collect::<Vec<_>>().join("\n")
            );
        }
    }
}
