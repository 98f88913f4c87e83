//! Finding the `pve-sim` binary for the agent's tests and benchmarks.

use std::path::PathBuf;
use std::process::Command;

/// `pve-sim` from this build's profile (or the other one), built if it is missing.
pub(crate) fn sim_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("the test's path");
    let profile_dir = exe.ancestors().nth(2).expect("target/<profile>");
    let target = profile_dir.parent().expect("the target directory");
    let own = profile_dir.join("pve-sim");
    if own.exists() {
        return own;
    }
    for profile in ["debug", "release"] {
        let candidate = target.join(profile).join("pve-sim");
        if candidate.exists() {
            return candidate;
        }
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "-p", "pve-sim"])
        .status()
        .expect("cargo");
    assert!(status.success(), "building pve-sim failed");
    target.join("debug").join("pve-sim")
}
