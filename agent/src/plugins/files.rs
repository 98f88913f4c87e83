//! Plugins on disk: a directory with `plugin.toml` and `plugin.wasm` (or a `.wasm` file with
//! its manifest beside it), and the drop-in directory operators fill.

use std::path::{Path, PathBuf};

use super::host::{Plugin, PluginError, PluginHost};
use super::manifest::Manifest;

/// The largest component the agent loads: what the hub accepts.
pub const MAX_WASM_BYTES: u64 = proxlab_protocol::plugins::MAX_WASM_BYTES as u64;

/// Where a plugin's files are: `path` is its directory or its `.wasm`; the manifest is
/// `manifest` or `plugin.toml` beside the component.
pub fn locate(path: &Path, manifest: Option<&Path>) -> (PathBuf, PathBuf) {
    let wasm = if path.is_dir() {
        path.join("plugin.wasm")
    } else {
        path.to_owned()
    };
    let manifest = manifest
        .map(Path::to_owned)
        .unwrap_or_else(|| wasm.parent().unwrap_or(Path::new(".")).join("plugin.toml"));
    (wasm, manifest)
}

fn read_error(path: &Path, err: &std::io::Error) -> PluginError {
    PluginError {
        plugin: path.display().to_string(),
        message: format!("cannot read it: {err}"),
    }
}

/// Reads and checks a manifest.
pub fn read_manifest(path: &Path) -> Result<Manifest, PluginError> {
    let text = std::fs::read_to_string(path).map_err(|err| read_error(path, &err))?;
    Manifest::parse(&text).map_err(|message| PluginError {
        plugin: path.display().to_string(),
        message,
    })
}

/// Reads and loads one plugin.
pub fn load(host: &PluginHost, wasm: &Path, manifest: &Path) -> Result<Plugin, PluginError> {
    let manifest = read_manifest(manifest)?;
    let size = std::fs::metadata(wasm)
        .map_err(|err| read_error(wasm, &err))?
        .len();
    if size > MAX_WASM_BYTES {
        return Err(PluginError {
            plugin: manifest.id,
            message: format!("the component is {size} bytes; the limit is {MAX_WASM_BYTES}"),
        });
    }
    let bytes = std::fs::read(wasm).map_err(|err| read_error(wasm, &err))?;
    host.load(manifest, &bytes)
}

/// Loads every plugin in `dir` (one subdirectory each), in name order. A plugin that does
/// not load is reported and left out; the others still load.
pub fn load_dir(host: &PluginHost, dir: &Path) -> (Vec<Plugin>, Vec<PluginError>) {
    let mut entries: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .flatten()
            .map(|entry| entry.path())
            .filter(|path| path.is_dir())
            .collect(),
        Err(_) => return (Vec::new(), Vec::new()),
    };
    entries.sort();
    let mut plugins = Vec::new();
    let mut errors = Vec::new();
    for entry in entries {
        let (wasm, manifest) = locate(&entry, None);
        match load(host, &wasm, &manifest) {
            Ok(plugin)
                if plugins
                    .iter()
                    .any(|p: &Plugin| p.manifest.id == plugin.manifest.id) =>
            {
                errors.push(PluginError {
                    plugin: plugin.manifest.id,
                    message: format!(
                        "a plugin with this id is loaded already ({})",
                        entry.display()
                    ),
                });
            }
            Ok(plugin) => plugins.push(plugin),
            Err(err) => errors.push(err),
        }
    }
    (plugins, errors)
}
