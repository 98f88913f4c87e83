//! `proxlab-hub demo` as a real process: the hub, an agent process per node and pve-sim
//! clusters.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use proxlab_hub::demo::DemoFile;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// A running demo; stopped with SIGTERM by [`DemoProcess::stop`], killed if dropped.
pub struct DemoProcess {
    pub child: Child,
    pub file: DemoFile,
    pub dir: PathBuf,
}

impl DemoProcess {
    /// Starts the demo in `dir` on ephemeral ports and waits for its banner.
    pub async fn start(dir: &Path) -> Self {
        Self::start_on(dir, "127.0.0.1:0", "127.0.0.1:0").await
    }

    /// Starts the demo on given addresses (a second run must reuse the QUIC address its
    /// agents enrolled with).
    pub async fn start_on(dir: &Path, http_addr: &str, quic_addr: &str) -> Self {
        Self::launch(dir, &["--http-addr", http_addr, "--quic-addr", quic_addr]).await
    }

    /// Starts the demo with a second Proxmox cluster (`--clusters 2`) on given addresses.
    pub async fn start_two_clusters(dir: &Path, http_addr: &str, quic_addr: &str) -> Self {
        let args = [
            "--http-addr",
            http_addr,
            "--quic-addr",
            quic_addr,
            "--clusters",
            "2",
        ];
        Self::launch(dir, &args).await
    }

    /// Starts the demo with its portal on HTTPS (a self-signed certificate).
    pub async fn start_tls(dir: &Path) -> Self {
        let ports = ["--http-addr", "127.0.0.1:0", "--quic-addr", "127.0.0.1:0"];
        Self::launch(dir, &[&ports[..], &["--tls"]].concat()).await
    }

    /// Starts the demo with real QEMU processes as its VMs.
    pub async fn start_qemu(dir: &Path) -> Self {
        let ports = ["--http-addr", "127.0.0.1:0", "--quic-addr", "127.0.0.1:0"];
        Self::launch(dir, &[&ports[..], &["--qemu"]].concat()).await
    }

    /// Starts the demo with its SSH server for alice's VM (the other demos of a test run do
    /// without, as only one can have port 22).
    pub async fn start_ssh(dir: &Path) -> Self {
        let ports = ["--http-addr", "127.0.0.1:0", "--quic-addr", "127.0.0.1:0"];
        Self::launch_with(dir, &ports, true).await
    }

    async fn launch(dir: &Path, args: &[&str]) -> Self {
        Self::launch_with(dir, args, false).await
    }

    async fn launch_with(dir: &Path, args: &[&str], ssh: bool) -> Self {
        // The demo runs the agent and simulator found next to the hub binary.
        super::agent_bin();
        super::sim_bin();
        let ssh_flag: &[&str] = if ssh { &[] } else { &["--no-ssh"] };
        let mut child = Command::new(env!("CARGO_BIN_EXE_proxlab-hub"))
            .arg("demo")
            .args(args)
            .args(ssh_flag)
            .arg("--data-dir")
            .arg(dir)
            .env("PROXLAB_LOG", "warn")
            .env_remove("PROXLAB_DATABASE_URL")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("starting proxlab-hub demo");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        super::within("the demo banner", async {
            while let Some(line) = lines.next_line().await.unwrap() {
                if line.starts_with("proxlab demo is running") {
                    return;
                }
            }
            panic!("the demo exited before it was running");
        })
        .await;
        // Keep draining stdout so the demo never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let text = std::fs::read_to_string(dir.join("demo.json")).expect("demo.json");
        let file: DemoFile = serde_json::from_str(&text).expect("demo.json parses");
        Self {
            child,
            file,
            dir: dir.to_owned(),
        }
    }

    pub fn password(&self, username: &str) -> &str {
        &self.user(username).password
    }

    pub fn user(&self, username: &str) -> &proxlab_hub::demo::DemoUser {
        self.file
            .users
            .iter()
            .find(|user| user.username == username)
            .unwrap_or_else(|| panic!("no demo user {username}"))
    }

    /// Runs a simulator tool against the demo's cluster, as an outside actor would.
    pub fn sim(&self, node: &str, args: &[&str]) -> std::process::Output {
        std::process::Command::new(super::sim_bin())
            .args(args)
            .env("PVE_SIM_ROOT", self.dir.join("pve"))
            .env("PVE_SIM_NODE", node)
            .output()
            .unwrap()
    }

    /// The agent processes serving this demo (`proxlab-agent ... run` with a state directory
    /// inside it), found in `/proc`.
    pub fn agent_pids(&self) -> Vec<rustix::process::Pid> {
        let agents = self.dir.join("agents");
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|entry| {
                let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
                let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
                let args: Vec<&[u8]> = cmdline.split(|byte| *byte == 0).collect();
                let is_agent = args.first()?.ends_with(b"proxlab-agent");
                let ours = args
                    .iter()
                    .any(|arg| arg.starts_with(agents.as_os_str().as_encoded_bytes()));
                (is_agent && ours && args.contains(&&b"run"[..]))
                    .then(|| rustix::process::Pid::from_raw(pid))?
            })
            .collect()
    }

    /// Ctrl-C, as a person would stop it; returns whether it exited cleanly.
    pub async fn stop(mut self) -> bool {
        let pid = self.child.id().expect("the demo is running");
        std::process::Command::new("kill")
            .args(["-INT", &pid.to_string()])
            .status()
            .unwrap();
        super::within("the demo to stop", self.child.wait())
            .await
            .unwrap()
            .success()
    }
}

/// A failing test shows what the demo's agents logged; a demo killed without its Ctrl-C
/// leaves no VM processes behind.
impl Drop for DemoProcess {
    fn drop(&mut self) {
        if std::thread::panicking() {
            super::print_agent_logs(&self.dir.join("logs"));
        }
        // Every simulated cluster: `pve`, and `pve-lab-b` with `--clusters 2`.
        for cluster in ["pve", "pve-lab-b"] {
            super::kill_sim_vms(&self.dir.join(cluster));
        }
    }
}
