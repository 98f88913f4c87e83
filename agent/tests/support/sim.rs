//! Finding the `pve-sim` binary for the agent's tests and benchmarks.

use std::path::PathBuf;

/// `pve-sim`, built for this test's profile and up to date.
pub(crate) fn sim_binary() -> PathBuf {
    proxlab_testkit::workspace_bin("pve-sim")
}
