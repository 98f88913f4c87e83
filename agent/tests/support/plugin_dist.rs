//! Where `plugins/build` puts the built plugins, for the tests that run them.

use std::path::{Path, PathBuf};

/// `plugins/dist`, if the plugins are built (`probe` is one of them); otherwise `None`, with
/// a notice that the test skips.
pub(crate) fn dist(probe: &str) -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/dist");
    if dir.join(probe).join("plugin.wasm").exists() {
        Some(dir)
    } else {
        eprintln!(
            "NOTICE: the plugins are not built ({} is missing); run plugins/build. Skipping.",
            dir.join(probe).display()
        );
        None
    }
}
