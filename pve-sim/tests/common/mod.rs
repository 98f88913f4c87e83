//! A simulated cluster in a temporary directory, driven only through its command line.

#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// What a command printed and how it ended.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    fn from(output: Output) -> Self {
        let Output {
            status,
            stdout,
            stderr,
        } = output;
        Self {
            code: status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
        }
    }

    /// Asserts success and returns stdout.
    pub fn ok(self) -> String {
        assert_eq!(self.code, 0, "command failed: {}", self.stderr);
        self.stdout
    }

    /// Asserts failure with `message` on stderr and a non-zero status.
    pub fn fails_with(self, message: &str) {
        assert_ne!(self.code, 0, "expected failure, got: {}", self.stdout);
        assert!(
            self.stderr.contains(message),
            "expected {message:?} in stderr: {}",
            self.stderr
        );
    }
}

pub struct Cluster {
    pub dir: tempfile::TempDir,
}

impl Cluster {
    pub fn new(nodes: &str, templates: &[&str]) -> Self {
        let mut args = vec!["--nodes", nodes];
        for template in templates {
            args.extend(["--template", template]);
        }
        let (run, cluster) = Self::try_init(&args);
        assert_eq!(run.code, 0, "{}", run.stderr);
        cluster
    }

    /// Runs `pve-sim init --root <new dir> ARGS`: how it went, and the cluster's directory.
    pub fn try_init(args: &[&str]) -> (Run, Self) {
        let dir = tempfile::tempdir().unwrap();
        let output = Command::new(env!("CARGO_BIN_EXE_pve-sim"))
            .args(["init", "--root"])
            .arg(dir.path().join("root"))
            .args(args)
            .output()
            .unwrap();
        (Run::from(output), Self { dir })
    }

    /// A file of the cluster file system (`etc/pve`).
    pub fn etc_pve(&self, file: &str) -> String {
        std::fs::read_to_string(self.root().join("etc/pve").join(file)).unwrap()
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    /// A tool (`qm`, `pvesh`, `pvesm`) on a node, called through its symlink.
    pub fn tool(&self, node: &str, tool: &str) -> Command {
        let mut command = Command::new(self.root().join("bin").join(tool));
        command
            .env("PVE_SIM_ROOT", self.root())
            .env("PVE_SIM_NODE", node)
            .env_remove("PVE_SIM_FAKE_TIME")
            .env_remove("LC_PVE_TICKET");
        command
    }

    pub fn run(&self, node: &str, tool: &str, args: &[&str]) -> Run {
        Run::from(self.tool(node, tool).args(args).output().unwrap())
    }

    pub fn qm(&self, node: &str, args: &[&str]) -> Run {
        self.run(node, "qm", args)
    }

    pub fn sim(&self, node: &str, args: &[&str]) -> Run {
        let mut command = Command::new(env!("CARGO_BIN_EXE_pve-sim"));
        command
            .env("PVE_SIM_ROOT", self.root())
            .env("PVE_SIM_NODE", node)
            .args(args);
        Run::from(command.output().unwrap())
    }

    pub fn config(&self, node: &str, vmid: u32) -> String {
        std::fs::read_to_string(
            self.root()
                .join(format!("etc/pve/nodes/{node}/qemu-server/{vmid}.conf")),
        )
        .unwrap()
    }

    pub fn disk(&self, node: &str, volname: &str) -> PathBuf {
        self.root()
            .join(format!("nodes/{node}/var/lib/vz/images"))
            .join(volname)
    }

    pub fn path(&self, node: &str, volid: &str) -> PathBuf {
        PathBuf::from(self.run(node, "pvesm", &["path", volid]).ok().trim())
    }
}

impl Drop for Cluster {
    /// Stops every simulated VM process left running.
    fn drop(&mut self) {
        let run_dir = self.root().join("var/run/qemu-server");
        let Ok(entries) = std::fs::read_dir(&run_dir) else {
            return;
        };
        for entry in entries.flatten() {
            if entry.path().extension().is_some_and(|ext| ext == "pid")
                && let Some(pid) = std::fs::read_to_string(entry.path())
                    .ok()
                    .and_then(|p| p.trim().parse().ok())
                && let Some(pid) = rustix::process::Pid::from_raw(pid)
            {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
        }
    }
}

/// `qemu-io` on an image (real QEMU tooling, to write and check guest data).
pub fn qemu_io(image: &Path, command: &str) -> Run {
    Run::from(
        Command::new("qemu-io")
            .args(["-f", "qcow2", "-c", command])
            .arg(image)
            .stdin(Stdio::null())
            .output()
            .unwrap(),
    )
}

/// `qemu-img info --backing-chain --output=json`, as parsed JSON.
pub fn backing_chain(image: &Path) -> Vec<serde_json::Value> {
    let output = Command::new("qemu-img")
        .args(["info", "-U", "--backing-chain", "--output=json"])
        .arg(image)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}
