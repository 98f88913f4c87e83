//! The test harness: a real hub in-process on 127.0.0.1 with ephemeral ports and a temporary
//! data directory, real `proxlab-agent` processes, and raw QUIC clients for peers that
//! misbehave on purpose.

#![allow(dead_code, unreachable_pub)]

pub mod browser;
pub mod console;
pub mod crash;
pub mod demo;
pub mod disks;
pub mod lab;
pub mod oidc;
pub mod pg;
pub mod slapd;
pub mod sshd;
pub mod web;

use proxlab_hub::vm_key::VmKey;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use proxlab_agent::identity::Identity;
use proxlab_agent::link::connect::{client_endpoint, dial};
use proxlab_agent::link::control::say_hello;
use proxlab_agent::paths::StateDir;
use proxlab_hub::Hub;
use proxlab_hub::config::HubConfig;
use proxlab_hub::domain::tokens::{IssuedToken, create_join_token};
use proxlab_protocol::{Hello, PROTOCOL_VERSION, ProtocolVersion, Welcome};
use tempfile::TempDir;
use tokio::process::{Child, Command};

/// The longest any single wait in these tests may take before the test fails: 60 s, or
/// `PROXLAB_TEST_WAIT_SECS`. Waits end as soon as what they wait for happens; the deadline
/// only turns a hang into a failure, so it is generous for a loaded two-core machine (a
/// class deploy there has taken more than 20 s).
pub static WAIT: std::sync::LazyLock<Duration> = std::sync::LazyLock::new(|| {
    let secs = std::env::var("PROXLAB_TEST_WAIT_SECS")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(60);
    Duration::from_secs(secs)
});

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PROXLAB_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
}

/// Awaits `future`, failing the test after [`WAIT`].
pub async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(*WAIT, future)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// The `proxlab-agent` binary, up to date.
/// The key of VM `vmid` of `node`'s cluster.
#[allow(dead_code)] // not every test binary that includes this module names VMs so
pub async fn vm_key(db: &proxlab_hub::db::Db, node: &str, vmid: u32) -> VmKey {
    let cluster = db
        .node_cluster_id(node)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("{node} is in no cluster"));
    VmKey::new(cluster, vmid)
}

/// The key of VM `vmid` on a hub whose nodes are all in one cluster (or of the one VM the
/// hub has under that number).
#[allow(dead_code)] // not every test binary that includes this module names VMs so
pub async fn key_of(db: &proxlab_hub::db::Db, vmid: u32) -> VmKey {
    use proxlab_hub::db::inventory::VmRefError;
    match db.resolve_vm(proxlab_hub::vm_key::VmRef::Vmid(vmid)).await {
        Ok(key) => key,
        Err(VmRefError::NotFound) => {
            let mut clusters = std::collections::BTreeSet::new();
            for node in db.list_nodes().await.unwrap() {
                clusters.extend(db.node_cluster_id(&node.name).await.unwrap());
            }
            assert_eq!(clusters.len(), 1, "the nodes are in one cluster");
            VmKey::new(clusters.into_iter().next().unwrap(), vmid)
        }
        Err(err) => panic!("{err}"),
    }
}

pub fn agent_bin() -> PathBuf {
    proxlab_testkit::workspace_bin("proxlab-agent")
}

/// The `pve-sim` binary, up to date.
pub fn sim_bin() -> PathBuf {
    proxlab_testkit::workspace_bin("pve-sim")
}

/// A hub under test.
pub struct TestHub {
    pub hub: Option<Hub>,
    pub config: HubConfig,
    pub dir: TempDir,
}

impl TestHub {
    pub async fn start() -> Self {
        Self::start_on(None).await
    }

    /// A hub on the given database (default: SQLite in its data directory).
    pub async fn start_on(database_url: Option<String>) -> Self {
        Self::start_configured(database_url, |_| {}).await
    }

    /// A hub on the given database with settings of the test's own.
    pub async fn start_configured(
        database_url: Option<String>,
        configure: impl FnOnce(&mut HubConfig),
    ) -> Self {
        init_tracing();
        let dir = tempfile::tempdir().unwrap();
        // Agents get an empty config file, so a host's /etc/proxlab/agent.toml cannot leak in.
        std::fs::write(dir.path().join("agent.toml"), "").unwrap();
        let mut config = HubConfig::new(dir.path().join("hub"));
        config.database_url = database_url;
        config.http_addr = "127.0.0.1:0".parse().unwrap();
        config.quic_addr = "127.0.0.1:0".parse().unwrap();
        configure(&mut config);
        let hub = Hub::start(config.clone()).await.expect("hub starts");
        // Pin the ports, so a restart comes back where agents look for it.
        config.http_addr = hub.http_addr();
        config.quic_addr = hub.quic_addr().unwrap();
        Self {
            hub: Some(hub),
            config,
            dir,
        }
    }

    pub fn hub(&self) -> &Hub {
        self.hub.as_ref().expect("hub is running")
    }

    /// The portal's base URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.config.http_addr)
    }

    pub fn address(&self) -> String {
        self.config.quic_addr.to_string()
    }

    pub async fn stop(&mut self) {
        if let Some(hub) = self.hub.take() {
            hub.shutdown().await;
        }
    }

    pub async fn restart(&mut self) {
        self.stop().await;
        self.hub = Some(Hub::start(self.config.clone()).await.expect("hub restarts"));
    }

    pub async fn token(&self, ttl: Duration, node: Option<&str>) -> IssuedToken {
        let state = &self.hub().state;
        create_join_token(
            &state.db,
            &state.ca_pin.to_string(),
            &self.address(),
            ttl,
            node,
        )
        .await
        .unwrap()
    }

    pub fn state_dir(&self, node: &str) -> PathBuf {
        self.dir.path().join(format!("agent-{node}"))
    }

    /// Runs `proxlab-agent enroll` as a process.
    pub async fn enroll_with(&self, node: &str, token: &str, pin: &str) -> std::process::Output {
        let config = self.dir.path().join("agent.toml");
        self.enroll_configured(node, token, pin, &config, &self.state_dir(node))
            .await
    }

    /// Runs `proxlab-agent enroll` as a process with an agent config and a state directory
    /// of the test's own.
    pub async fn enroll_configured(
        &self,
        node: &str,
        token: &str,
        pin: &str,
        config: &Path,
        state_dir: &Path,
    ) -> std::process::Output {
        Command::new(agent_bin())
            .arg("--state-dir")
            .arg(state_dir)
            .args([
                "enroll",
                "--hub",
                &self.address(),
                "--token",
                token,
                "--ca-pin",
                pin,
            ])
            .args(["--node-name", node])
            .env("PROXLAB_AGENT_CONFIG", config)
            .env_remove("PROXLAB_STATE_DIR")
            .output()
            .await
            .expect("running proxlab-agent enroll")
    }

    /// Enrolls `node` with a fresh token, asserting success.
    pub async fn enroll(&self, node: &str) {
        let token = self.token(Duration::from_secs(600), None).await;
        let output = self.enroll_with(node, &token.token, &token.ca_pin).await;
        assert!(
            output.status.success(),
            "enroll {node} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// Starts `proxlab-agent run` for an enrolled node; it is killed when dropped.
    pub fn spawn_agent(&self, node: &str) -> Child {
        self.spawn_agent_with(node, &self.dir.path().join("agent.toml"), &[])
    }

    /// Starts `proxlab-agent run` with a config file and extra environment.
    pub fn spawn_agent_with(&self, node: &str, config: &Path, env: &[(&str, &Path)]) -> Child {
        let log = std::fs::File::create(self.dir.path().join(format!("agent-{node}.log"))).unwrap();
        let mut command = Command::new(agent_bin());
        for (key, value) in env {
            command.env(key, value);
        }
        command
            .arg("--state-dir")
            .arg(self.state_dir(node))
            .arg("run")
            .env("PROXLAB_AGENT_CONFIG", config)
            .env(
                proxlab_agent::idle::clock::SKEW_FILE_ENV,
                self.agent_clock_skew_file(),
            )
            .env("PROXLAB_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("spawning proxlab-agent run")
    }

    /// The file every agent of this hub reads its idle clock's skew from.
    pub fn agent_clock_skew_file(&self) -> PathBuf {
        self.dir.path().join("agent-clock-skew")
    }

    /// Moves every agent's idle clock to `secs` ahead of the real one (from their next pass).
    pub fn skew_agent_clocks(&self, secs: i64) {
        std::fs::write(self.agent_clock_skew_file(), secs.to_string()).unwrap();
    }

    pub fn agent_log(&self, node: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("agent-{node}.log")))
            .unwrap_or_default()
    }

    /// Enrolls an agent for `node` of a simulated cluster, starts it, and waits until it is
    /// online.
    pub async fn sim_agent(&self, sim: &SimCluster, node: &str) -> Child {
        self.enroll(node).await;
        self.start_sim_agent(sim, node).await
    }

    /// Starts the agent of an enrolled node of a simulated cluster again (after it was
    /// killed), and waits until it is online.
    pub async fn start_sim_agent(&self, sim: &SimCluster, node: &str) -> Child {
        let config = sim.agent_config(self.dir.path(), node);
        let child = self.spawn_agent_with(
            node,
            &config,
            &[
                ("PVE_SIM_ROOT", &sim.root),
                ("PVE_SIM_NODE", Path::new(node)),
            ],
        );
        within(
            &format!("{node} online"),
            self.hub().registry().wait_for(node, true),
        )
        .await;
        child
    }

    /// Enrolls and starts an agent, and waits until the hub has it online.
    pub async fn online_agent(&self, node: &str) -> Child {
        self.enroll(node).await;
        let child = self.spawn_agent(node);
        within(
            &format!("{node} online"),
            self.hub().registry().wait_for(node, true),
        )
        .await;
        child
    }

    pub fn identity(&self, node: &str) -> Identity {
        Identity::load(&StateDir::new(self.state_dir(node))).unwrap()
    }
}

/// A failing test shows what its agents logged: a timeout alone rarely says why.
impl Drop for TestHub {
    fn drop(&mut self) {
        if std::thread::panicking() {
            print_agent_logs(self.dir.path());
        }
    }
}

/// Prints the last lines of every `agent-*.log` in `dir`.
pub fn print_agent_logs(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("agent-") && name.ends_with(".log") {
            let log = std::fs::read_to_string(entry.path()).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("--- last lines of {name} ---");
            for line in tail.into_iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}

/// A hand-driven agent connection, for peers that misbehave.
pub struct RawAgent {
    pub endpoint: quinn::Endpoint,
    pub connection: quinn::Connection,
}

impl RawAgent {
    /// Connects with `identity` (no hello yet).
    pub async fn connect(hub: &TestHub, identity: &Identity) -> Result<Self, String> {
        let config =
            proxlab_link::tls::agent_client_config(&identity.ca_pem, &identity.node).unwrap();
        let addr = hub.config.quic_addr;
        let endpoint = client_endpoint(addr).unwrap();
        let connection = dial(&endpoint, addr, config)
            .await
            .map_err(|err| err.to_string())?;
        Ok(Self {
            endpoint,
            connection,
        })
    }

    /// Opens the control stream and exchanges hello/welcome.
    pub async fn hello(
        &self,
        node: &str,
        protocol: ProtocolVersion,
    ) -> Result<(quinn::SendStream, quinn::RecvStream, Welcome), String> {
        let hello = Hello {
            protocol,
            agent_version: "test".into(),
            node_name: node.into(),
            capabilities: vec![],
            cluster: None,
        };
        say_hello(&self.connection, &hello).await
    }

    pub async fn hello_current(
        &self,
        node: &str,
    ) -> (quinn::SendStream, quinn::RecvStream, Welcome) {
        self.hello(node, PROTOCOL_VERSION)
            .await
            .expect("hello accepted")
    }

    /// Waits for the hub to close the connection and returns its close code.
    pub async fn close_code(&self) -> Option<u64> {
        match within("the hub to close the connection", self.connection.closed()).await {
            quinn::ConnectionError::ApplicationClosed(close) => Some(close.error_code.into_inner()),
            other => {
                eprintln!("connection ended without an application close: {other}");
                None
            }
        }
    }
}

/// The ISO image every node's `local` storage holds (`local:iso/<name>`).
pub const LAB_ISO_FILE: &str = "lab-installer.iso";

/// A pve-sim cluster for agents to drive.
pub struct SimCluster {
    pub root: PathBuf,
}

impl SimCluster {
    /// `pve-sim init` in `dir`.
    pub fn init(dir: &Path, nodes: &str, templates: &[&str]) -> Self {
        Self::init_on(dir, nodes, templates, "local")
    }

    /// `pve-sim init` with the templates on `storage` (`shared` reaches every node).
    pub fn init_on(dir: &Path, nodes: &str, templates: &[&str], storage: &str) -> Self {
        Self::init_cluster(dir, None, nodes, templates, storage)
    }

    /// `pve-sim init` of a cluster with a name of its own (`--cluster`).
    pub fn init_cluster(
        dir: &Path,
        cluster: Option<&str>,
        nodes: &str,
        templates: &[&str],
        storage: &str,
    ) -> Self {
        let root = dir.join("pve");
        let mut command = std::process::Command::new(sim_bin());
        command.args(["init", "--root"]).arg(&root).args([
            "--nodes",
            nodes,
            "--template-storage",
            storage,
            "--iso",
            LAB_ISO_FILE,
        ]);
        if let Some(cluster) = cluster {
            command.args(["--cluster", cluster]);
        }
        for template in templates {
            command.args(["--template", template]);
        }
        let output = command.output().unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        Self { root }
    }

    /// Runs a simulator tool (`qm`, `pvesh`, `pvesm`, or a `pve-sim` command) on a node.
    pub fn run(&self, node: &str, tool: &str, args: &[&str]) -> std::process::Output {
        let mut command = if matches!(tool, "qm" | "pvesh" | "pvesm") {
            std::process::Command::new(self.root.join("bin").join(tool))
        } else {
            let mut command = std::process::Command::new(sim_bin());
            command.arg(tool);
            command
        };
        command
            .env("PVE_SIM_ROOT", &self.root)
            .env("PVE_SIM_NODE", node)
            .args(args)
            .output()
            .unwrap()
    }

    pub fn ok(&self, node: &str, tool: &str, args: &[&str]) -> String {
        let output = self.run(node, tool, args);
        assert!(
            output.status.success(),
            "{tool} {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    pub fn config(&self, node: &str, vmid: u32) -> Option<String> {
        std::fs::read_to_string(
            self.root
                .join(format!("etc/pve/nodes/{node}/qemu-server/{vmid}.conf")),
        )
        .ok()
    }

    /// Writes an agent config that points the driver at this cluster's `node`.
    pub fn agent_config(&self, dir: &Path, node: &str) -> PathBuf {
        let path = dir.join(format!("agent-{node}.toml"));
        let root = self.root.display();
        std::fs::write(
            &path,
            format!(
                "[pve]\nnode = \"{node}\"\nqm = \"{root}/bin/qm\"\npvesh = \"{root}/bin/pvesh\"\npvesm = \"{root}/bin/pvesm\"\n\
                 qemu_img = \"{root}/bin/qemu-img\"\netc_pve = \"{root}/etc/pve\"\nrun_dir = \"{root}/var/run/qemu-server\"\n\
                 lock_dir = \"{root}/var/lock/qemu-server\"\narp_table = \"{root}/proc/net/arp\"\n\
                 [plugins]\ndir = \"{dropin}\"\n{grant}\n{tunnels}",
                dropin = dir.join(format!("plugins-{node}")).display(),
                grant = example_plugin_grants(),
                tunnels = TEST_TUNNELS,
            ),
        )
        .unwrap();
        path
    }
}

/// Tunnels in test labs: the simulated VMs' services (a test's `sshd`) run on this machine,
/// on one of the test ports.
const TEST_TUNNELS: &str =
    "[tunnels]\nallow_node_addresses = true\nports = [22, 3389, 47022, 47023, 47024, 47025]\n";

/// The operator's grants for the examples that need one, as the hub installs them: pinned
/// to the built components, with their guest commands and files. Empty when the plugins are
/// not built.
fn example_plugin_grants() -> String {
    let grants = [
        (
            "set-guest-password",
            "capabilities = [\"guest-exec\"]\nguest_commands = [\"chpasswd\", \"passwd --expire *\"]\n",
        ),
        (
            "first-login",
            "capabilities = [\"guest-exec\", \"guest-files\"]\n\
             guest_commands = [\"chpasswd\", \"passwd --expire *\"]\nguest_paths = [\"/etc/motd\"]\n",
        ),
    ];
    let mut out = String::new();
    for (plugin, grant) in grants {
        let wasm = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(format!("../plugins/dist/{plugin}/plugin.wasm"));
        let Ok(bytes) = std::fs::read(wasm) else {
            continue;
        };
        use sha2::Digest;
        let sha256 = hex::encode(sha2::Sha256::digest(&bytes));
        out.push_str(&format!(
            "[plugins.grants.{plugin}]\nsha256 = \"{sha256}\"\n{grant}"
        ));
    }
    out
}

impl Drop for SimCluster {
    /// Stops simulated VM processes left running.
    fn drop(&mut self) {
        kill_sim_vms(&self.root);
    }
}

/// Kills the VM processes (pve-sim's or QEMU) of the simulated cluster at `root`, which
/// outlive the test otherwise.
pub fn kill_sim_vms(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root.join("var/run/qemu-server")) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.path().extension().is_some_and(|ext| ext == "pid")
            && let Ok(text) = std::fs::read_to_string(entry.path())
        {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", text.trim()])
                .output();
        }
    }
}

/// CPU time this process has used (for benchmarks that print what a step costs).
#[allow(dead_code)] // only the benchmarks that include this module use it
pub fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10)
}

/// The first file named `name` below `dir`.
pub fn find_file(dir: &Path, name: &str) -> Option<PathBuf> {
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if let Some(found) = find_file(&path, name) {
                return Some(found);
            }
        } else if path.file_name().is_some_and(|n| n == name) {
            return Some(path);
        }
    }
    None
}
