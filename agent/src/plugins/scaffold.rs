//! `proxlab-agent plugin new NAME`: a plugin project of its own, anywhere, with the SDK this
//! agent runs (and the contract's WIT) inside it, so that only a Rust toolchain is needed.

use std::path::Path;

use anyhow::{Context, Result, bail};

/// The project's files: where each goes, and its text (`{{id}}` and `{{crate}}` filled in).
const PROJECT: &[(&str, &str)] = &[
    (
        "Cargo.toml",
        include_str!("../../plugin-template/Cargo.toml.in"),
    ),
    (
        "plugin.toml",
        include_str!("../../plugin-template/plugin.toml.in"),
    ),
    (
        "src/lib.rs",
        include_str!("../../plugin-template/src/lib.rs.in"),
    ),
    (
        "facts.json",
        include_str!("../../plugin-template/facts.json.in"),
    ),
    (
        "cases/assigned.json",
        include_str!("../../plugin-template/cases/assigned.json.in"),
    ),
    (
        "build.sh",
        include_str!("../../plugin-template/build.sh.in"),
    ),
    (
        ".gitignore",
        include_str!("../../plugin-template/gitignore.in"),
    ),
    (
        "proxlab-plugin-sdk/Cargo.toml",
        include_str!("../../../plugins/sdk/Cargo.toml"),
    ),
    (
        "proxlab-plugin-sdk/src/lib.rs",
        include_str!("../../../plugins/sdk/src/lib.rs"),
    ),
    (
        "proxlab-plugin-sdk/wit/v0.1/plugin.wit",
        include_str!("../../../plugins/sdk/wit/v0.1/plugin.wit"),
    ),
    (
        "proxlab-plugin-sdk/wit/v0.2/plugin.wit",
        include_str!("../../../plugins/sdk/wit/v0.2/plugin.wit"),
    ),
];

/// Creates the project for plugin `id` in `dir`, which must not exist yet.
pub fn create(dir: &Path, id: &str) -> Result<()> {
    let manifest = format!("id = \"{id}\"\nversion = \"1\"\napi = \"0.2.0\"\nhooks = [\"name\"]\n");
    super::manifest::Manifest::parse(&manifest)
        .map_err(anyhow::Error::msg)
        .context("the name is the plugin's id")?;
    if dir.exists() {
        bail!("{} exists already", dir.display());
    }
    let crate_name = id.replace('-', "_");
    for (path, text) in PROJECT {
        let target = dir.join(path);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        let text = text.replace("{{id}}", id).replace("{{crate}}", &crate_name);
        std::fs::write(&target, text).with_context(|| format!("writing {}", target.display()))?;
    }
    let script = dir.join("build.sh");
    let mut mode = std::fs::metadata(&script)?.permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut mode, 0o755);
    std::fs::set_permissions(&script, mode)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_project_is_whole_and_names_its_plugin() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("lab-notes");
        create(&dir, "lab-notes").unwrap();
        let manifest = std::fs::read_to_string(dir.join("plugin.toml")).unwrap();
        super::super::manifest::Manifest::parse(&manifest).unwrap();
        assert!(manifest.contains("id = \"lab-notes\""));
        let build = std::fs::read_to_string(dir.join("build.sh")).unwrap();
        assert!(build.contains("release/lab_notes.wasm"), "{build}");
        assert!(dir.join("proxlab-plugin-sdk/wit/v0.2/plugin.wit").exists());
        let sdk = std::fs::read_to_string(dir.join("proxlab-plugin-sdk/Cargo.toml")).unwrap();
        assert!(
            !sdk.contains(".workspace"),
            "the SDK must stand alone: {sdk}"
        );
        assert!(
            create(&dir, "lab-notes")
                .unwrap_err()
                .to_string()
                .contains("exists")
        );
        let err = create(&root.path().join("x"), "Bad Name").unwrap_err();
        assert!(format!("{err:#}").contains("plugin id"), "{err:#}");
    }
}
