//! The `pve-sim` binary for the agent's tests and benchmarks.

use std::path::{Path, PathBuf};
use std::process::Command;

/// `pve-sim`, built for this test's profile if it is missing.
pub(crate) fn sim_binary() -> PathBuf {
    proxlab_testkit::workspace_bin("pve-sim")
}

/// Lays out a simulated one-node cluster (`pve1`) in `root` holding the template `spec`
/// (`name:size`, as `pve-sim init --template` takes it).
#[allow(dead_code)] // not every test that includes this module makes a cluster
pub(crate) fn init_node(root: &Path, spec: &str) {
    let init = Command::new(sim_binary())
        .args(["init", "--root"])
        .arg(root)
        .args(["--nodes", "pve1", "--template", spec])
        .output()
        .unwrap();
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
}

/// Runs `pve-sim ARGS` on node `pve1` of the cluster in `root`; fails the test if it fails.
#[allow(dead_code)] // not every test that includes this module runs commands
pub(crate) fn run(root: &Path, args: &[&str]) {
    output(root, args);
}

/// Runs `pve-sim ARGS` as [`run`] does, and returns what it printed.
#[allow(dead_code)] // not every test that includes this module reads answers
pub(crate) fn output(root: &Path, args: &[&str]) -> String {
    let output = Command::new(sim_binary())
        .args(args)
        .env("PVE_SIM_ROOT", root)
        .env("PVE_SIM_NODE", "pve1")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// The file of VM `vmid`'s `scsi0` disk on node `pve1`, as `pvesm path` names it.
#[allow(dead_code)] // not every test that includes this module reads disks
pub(crate) fn scsi0_path(root: &Path, vmid: u32) -> PathBuf {
    let config_file = root.join(format!("etc/pve/nodes/pve1/qemu-server/{vmid}.conf"));
    let text = std::fs::read_to_string(&config_file).unwrap();
    let config = proxlab_pve::config::VmConfig::parse(&text);
    let volid = config
        .main()
        .get("scsi0")
        .and_then(|value| value.split(',').next())
        .unwrap_or_else(|| panic!("VM {vmid} has no scsi0:\n{text}"))
        .to_owned();
    PathBuf::from(output(root, &["pvesm", "path", &volid]).trim())
}
