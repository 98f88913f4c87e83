//! What the workspace's tests and benchmarks share: the one way to find a workspace binary.
//!
//! Cargo builds a package's own binaries for its tests (`CARGO_BIN_EXE_*`), but not another
//! package's. A hub test that runs `proxlab-agent`, or an agent test that runs `pve-sim`,
//! asks for it here. A workspace-wide `cargo test` builds every binary with the tests; a test
//! run on its own builds a missing binary once (in the test's profile), but does not rebuild
//! one that exists: building one package alone resolves features differently from the
//! workspace build and would make the two rebuild each other's dependencies every time.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The path of the workspace binary `name` (a package with a binary of the same name), built
/// first if it is missing.
pub fn workspace_bin(name: &str) -> PathBuf {
    static BUILT: Mutex<Option<HashSet<String>>> = Mutex::new(None);
    let exe = std::env::current_exe().expect("the test's own path");
    // target/<profile>/deps/<test>: the binaries are in target/<profile>.
    let profile_dir = exe
        .ancestors()
        .find(|dir| dir.file_name().is_some_and(|n| n == "deps"))
        .and_then(Path::parent)
        .or_else(|| exe.parent())
        .expect("the target directory");
    let bin = profile_dir.join(name);
    let mut built = BUILT
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if built
        .get_or_insert_with(HashSet::new)
        .insert(name.to_owned())
        && !bin.exists()
    {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut command = std::process::Command::new(cargo);
        command.args(["build", "--quiet", "-p", name, "--bin", name]);
        if profile_dir.ends_with("release") {
            command.arg("--release");
        }
        let status = command
            .status()
            .unwrap_or_else(|err| panic!("running cargo to build {name}: {err}"));
        assert!(status.success(), "building {name} failed");
    }
    assert!(bin.exists(), "{} is missing after the build", bin.display());
    bin
}
