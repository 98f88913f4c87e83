//! The demo's simulated Proxmox cluster and its agents.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use anyhow::{Context, Result, bail};

use super::tools::Tools;

/// A node of a demo cluster: its name on the hub and its name in Proxmox.
#[derive(Debug, Clone, Copy)]
pub struct DemoNode {
    pub hub: &'static str,
    pub pve: &'static str,
}

/// The first cluster's nodes.
pub const DEMO_NODES: [DemoNode; 2] = [
    DemoNode {
        hub: "pve1",
        pve: "pve1",
    },
    DemoNode {
        hub: "pve2",
        pve: "pve2",
    },
];

/// The second cluster (`demo --clusters 2`).
pub const SECOND_CLUSTER: &str = "lab-b";
/// Its one node, called `pve1` in Proxmox like the first cluster's: the hub knows it by a
/// name of its own.
pub const SECOND_NODES: [DemoNode; 1] = [DemoNode {
    hub: "pve1-lab-b",
    pve: "pve1",
}];
/// The second cluster's VMs, numbered apart from the first cluster's.
const SECOND_VMS: [(u32, &str); 2] = [(301, "b-web"), (302, "b-db")];

/// The template `pve-sim init` creates (on shared storage, so every node can clone it).
pub(super) const TEMPLATE_VM: u32 = 9000;
pub(super) const TEACHER_VM: u32 = 101;
pub(super) const ALICE_VM: u32 = 102;
pub(super) const BOB_VM: u32 = 201;
/// An unassigned VM that only the admin sees.
const SERVER_VM: u32 = 202;

/// One simulated cluster of the demo, its agents' configs and logs.
pub(super) struct DemoCluster {
    dir: PathBuf,
    root: PathBuf,
    pub(super) nodes: &'static [DemoNode],
}

/// An agent process; stopped with SIGTERM, like systemd does.
pub(super) struct RunningAgent {
    child: tokio::process::Child,
}

impl RunningAgent {
    pub(super) async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            // `kill` by name, so no unsafe signal call is needed here.
            let _ = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .output();
        }
        let stopped =
            tokio::time::timeout(std::time::Duration::from_secs(5), self.child.wait()).await;
        if stopped.is_err() {
            let _ = self.child.kill().await;
        }
    }
}

fn check(output: &Output, what: &str) -> Result<String> {
    if !output.status.success() {
        bail!(
            "{what} failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

impl DemoCluster {
    /// Creates the first cluster on the first run; later runs reuse it.
    pub(super) fn prepare(dir: &Path, tools: &Tools, qemu: bool) -> Result<Self> {
        Self::prepare_one(dir, "pve", &DEMO_NODES, |cluster| {
            cluster.create(tools, qemu)
        })
    }

    /// Creates the second cluster on the first run that asks for it; later runs reuse it.
    pub(super) fn prepare_second(dir: &Path, tools: &Tools, qemu: bool) -> Result<Self> {
        Self::prepare_one(dir, "pve-lab-b", &SECOND_NODES, |cluster| {
            cluster.create_second(tools, qemu)
        })
    }

    fn prepare_one(
        dir: &Path,
        root: &str,
        nodes: &'static [DemoNode],
        create: impl FnOnce(&Self) -> Result<()>,
    ) -> Result<Self> {
        let cluster = Self {
            dir: dir.to_owned(),
            root: dir.join(root),
            nodes,
        };
        std::fs::create_dir_all(dir.join("agents"))?;
        std::fs::create_dir_all(dir.join("logs"))?;
        if !cluster.root.join("etc/pve").exists() {
            create(&cluster)?;
        }
        for node in nodes {
            cluster.write_agent_config(*node)?;
        }
        Ok(cluster)
    }

    /// Gives alice's VM `address` (where the demo's sshd listens) in the node's neighbour
    /// table, instead of its guest agent's made-up addresses.
    pub(super) fn give_alice_address(&self, tools: &Tools, address: &str) -> Result<()> {
        let vmid = ALICE_VM.to_string();
        self.sim(
            tools,
            "pve2",
            &[
                "script",
                &vmid,
                "--guest-agent",
                "off",
                "--neighbor-ip",
                address,
            ],
        )?;
        Ok(())
    }

    pub(super) fn dir(&self) -> &Path {
        &self.dir
    }

    pub(super) fn root(&self) -> PathBuf {
        self.root.clone()
    }

    fn sim(&self, tools: &Tools, node: &str, args: &[&str]) -> Result<String> {
        let output = Command::new(&tools.sim)
            .args(args)
            .env("PVE_SIM_ROOT", self.root())
            .env("PVE_SIM_NODE", node)
            .output()
            .with_context(|| format!("running {}", tools.sim.display()))?;
        check(&output, &format!("pve-sim {}", args.join(" ")))
    }

    fn create(&self, tools: &Tools, qemu: bool) -> Result<()> {
        eprintln!("Creating a simulated two-node Proxmox cluster...");
        let root = self.root();
        let root_text = root.to_str().context("the demo path is not UTF-8")?;
        let nodes = DEMO_NODES.map(|node| node.pve).join(",");
        self.sim(
            tools,
            DEMO_NODES[0].pve,
            &[
                "init",
                "--root",
                root_text,
                "--nodes",
                &nodes,
                "--template",
                "debian-12-lab:2G",
                "--template-storage",
                "shared",
                "--iso",
                "debian-12-netinst.iso:4M",
                "--qemu",
                if qemu { "on" } else { "off" },
            ],
        )?;
        let template = TEMPLATE_VM.to_string();
        // The guest agent reports the VMs' addresses, and a serial port gives the terminal
        // console a line to talk to; clones inherit both.
        self.sim(
            tools,
            "pve1",
            &[
                "qm",
                "set",
                &template,
                "--agent",
                "1",
                "--serial0",
                "socket",
            ],
        )?;
        for (vmid, name) in [(TEACHER_VM, "lab-teacher"), (ALICE_VM, "lab-alice")] {
            self.sim(
                tools,
                "pve1",
                &["qm", "clone", &template, &vmid.to_string(), "--name", name],
            )?;
        }
        for (vmid, name) in [(BOB_VM, "lab-bob"), (SERVER_VM, "web-server")] {
            self.sim(
                tools,
                "pve2",
                &[
                    "qm",
                    "create",
                    &vmid.to_string(),
                    "--name",
                    name,
                    "--memory",
                    "1024",
                    "--cores",
                    "2",
                    "--net0",
                    "virtio,bridge=vmbr0",
                    "--scsi0",
                    "local:4",
                    "--agent",
                    "1",
                    "--serial0",
                    "socket",
                ],
            )?;
        }
        for vmid in [TEACHER_VM, ALICE_VM, BOB_VM, SERVER_VM] {
            self.sim(
                tools,
                "pve1",
                &["script", &vmid.to_string(), "--guest-agent", "on"],
            )?;
        }
        self.sim(tools, "pve1", &["qm", "start", &TEACHER_VM.to_string()])?;
        self.sim(tools, "pve2", &["qm", "start", &SERVER_VM.to_string()])?;
        Ok(())
    }

    /// The second cluster: one node, a few VMs without a class, one of them running.
    fn create_second(&self, tools: &Tools, qemu: bool) -> Result<()> {
        eprintln!("Creating a second simulated Proxmox cluster ({SECOND_CLUSTER})...");
        let root = self.root();
        let root_text = root.to_str().context("the demo path is not UTF-8")?;
        let node = SECOND_NODES[0].pve;
        self.sim(
            tools,
            node,
            &[
                "init",
                "--root",
                root_text,
                "--nodes",
                node,
                "--cluster",
                SECOND_CLUSTER,
                "--qemu",
                if qemu { "on" } else { "off" },
            ],
        )?;
        for (vmid, name) in SECOND_VMS {
            let vmid = vmid.to_string();
            self.sim(
                tools,
                node,
                &[
                    "qm",
                    "create",
                    &vmid,
                    "--name",
                    name,
                    "--memory",
                    "1024",
                    "--cores",
                    "1",
                    "--net0",
                    "virtio,bridge=vmbr0",
                    "--scsi0",
                    "local:2",
                ],
            )?;
        }
        self.sim(tools, node, &["qm", "start", &SECOND_VMS[0].0.to_string()])?;
        Ok(())
    }

    fn agent_config_path(&self, node: &str) -> PathBuf {
        self.dir.join("agents").join(format!("{node}.toml"))
    }

    fn state_dir(&self, node: &str) -> PathBuf {
        self.dir.join("agents").join(node)
    }

    pub(super) fn agent_log(&self, node: &str) -> PathBuf {
        self.dir.join("logs").join(format!("agent-{node}.log"))
    }

    /// The agent config that points the real driver at this node of the simulator.
    fn write_agent_config(&self, node: DemoNode) -> Result<()> {
        let root = self.root();
        let path = |relative: &str| toml::Value::String(root.join(relative).display().to_string());
        let mut pve = toml::Table::new();
        pve.insert("node".into(), toml::Value::String(node.pve.into()));
        for (key, relative) in [
            ("qm", "bin/qm"),
            ("pvesh", "bin/pvesh"),
            ("pvesm", "bin/pvesm"),
            ("qemu_img", "bin/qemu-img"),
            ("etc_pve", "etc/pve"),
            ("run_dir", "var/run/qemu-server"),
            ("lock_dir", "var/lock/qemu-server"),
            ("arp_table", "proc/net/arp"),
        ] {
            pve.insert(key.into(), path(relative));
        }
        let mut env = toml::Table::new();
        env.insert(
            "PVE_SIM_ROOT".into(),
            toml::Value::String(root.display().to_string()),
        );
        env.insert("PVE_SIM_NODE".into(), toml::Value::String(node.pve.into()));
        pve.insert("env".into(), toml::Value::Table(env));
        let mut config = toml::Table::new();
        config.insert("pve".into(), toml::Value::Table(pve));
        // The demo's VMs are simulated: their services (the demo's sshd) run on this machine.
        let mut tunnels = toml::Table::new();
        tunnels.insert("allow_node_addresses".into(), toml::Value::Boolean(true));
        config.insert("tunnels".into(), toml::Value::Table(tunnels));
        std::fs::write(self.agent_config_path(node.hub), toml::to_string(&config)?)?;
        Ok(())
    }

    pub(super) fn enrolled(&self, node: &str) -> bool {
        self.state_dir(node).join("node.crt").exists()
    }

    fn agent_command(&self, tools: &Tools, node: &str) -> Command {
        let mut command = Command::new(&tools.agent);
        command
            .arg("--state-dir")
            .arg(self.state_dir(node))
            .arg("--config")
            .arg(self.agent_config_path(node))
            .env_remove("PROXLAB_STATE_DIR");
        command
    }

    pub(super) fn enroll(
        &self,
        tools: &Tools,
        node: &str,
        hub: &str,
        token: &str,
        pin: &str,
    ) -> Result<()> {
        let output = self
            .agent_command(tools, node)
            .args([
                "enroll",
                "--hub",
                hub,
                "--token",
                token,
                "--ca-pin",
                pin,
                "--node-name",
                node,
            ])
            .output()
            .context("running proxlab-agent enroll")?;
        check(&output, &format!("enrolling {node}")).map(drop)
    }

    pub(super) fn spawn_agent(&self, tools: &Tools, node: &str) -> Result<RunningAgent> {
        let log = std::fs::File::create(self.agent_log(node))?;
        let child = tokio::process::Command::from(self.agent_command(tools, node))
            .arg("run")
            .env("PROXLAB_LOG", "info")
            // The agent ends with the demo, even when the demo is killed
            // (proxlab_agent::parent::EXIT_WITH_PARENT_ENV).
            .env(
                "PROXLAB_AGENT_EXIT_WITH_PARENT",
                std::process::id().to_string(),
            )
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .context("starting proxlab-agent run")?;
        Ok(RunningAgent { child })
    }

    /// Stops the simulated VMs still running: the simulated nodes power off with the demo.
    pub(super) fn stop_vms(&self) {
        let Ok(entries) = std::fs::read_dir(self.root().join("var/run/qemu-server")) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|ext| ext == "pid")
                && let Ok(pid) = std::fs::read_to_string(&path)
            {
                let _ = Command::new("kill").args(["-TERM", pid.trim()]).output();
            }
        }
    }
}
