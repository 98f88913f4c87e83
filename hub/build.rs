//! Fetches the pinned browser libraries of `vendor/npm.toml` from the npm registry, checks
//! each tarball against its integrity hash, and unpacks the listed files into
//! `$OUT_DIR/vendor/<name>/`. The crate finds them through `PROXLAB_VENDOR_DIR`, and the files
//! of the packages the hub serves through `$OUT_DIR/vendored_assets.rs`, a table that embeds
//! them (`include_bytes!`), served under `/assets/vendor/<name>/<path>`.
//!
//! `curl` and `tar` run as programs with argument lists (no shell). `PROXLAB_NPM_REGISTRY`
//! points at a mirror of the registry.

use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine as _;
use serde::Deserialize;
use sha2::{Digest, Sha512};

const DEFAULT_REGISTRY: &str = "https://registry.npmjs.org";

#[derive(Deserialize)]
struct Manifest {
    package: Vec<Package>,
}

#[derive(Deserialize)]
struct Package {
    name: String,
    version: String,
    integrity: String,
    #[serde(rename = "use")]
    used_by: Use,
    files: Vec<String>,
}

#[derive(Deserialize, PartialEq)]
#[serde(rename_all = "lowercase")]
enum Use {
    /// Served by the hub: the build cannot go on without it.
    Serve,
    /// Loaded by the browser tests only.
    Test,
}

fn main() {
    println!("cargo:rerun-if-changed=vendor/npm.toml");
    println!("cargo:rerun-if-env-changed=PROXLAB_NPM_REGISTRY");
    let manifest: Manifest = toml::from_str(
        &std::fs::read_to_string("vendor/npm.toml").expect("reading vendor/npm.toml"),
    )
    .expect("vendor/npm.toml is valid");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR")).join("vendor");
    let registry =
        std::env::var("PROXLAB_NPM_REGISTRY").unwrap_or_else(|_| DEFAULT_REGISTRY.to_owned());
    let mut served = Vec::new();
    for package in &manifest.package {
        if let Err(err) = vendor(package, &registry, &out) {
            let what = format!("{}@{}: {err}", package.name, package.version);
            match package.used_by {
                Use::Serve => panic!("cannot vendor {what}"),
                Use::Test => println!("cargo:warning=skipping the test-only library {what}"),
            }
        }
        if package.used_by == Use::Serve {
            let dir = out.join(&package.name);
            collect_files(&dir, &dir, &mut |relative, path| {
                served.push((format!("{}/{relative}", package.name), path.to_path_buf()));
            });
        }
    }
    served.sort();
    write_asset_table(&served);
    println!("cargo:rustc-env=PROXLAB_VENDOR_DIR={}", out.display());
}

/// Calls `found(relative path, path)` for every file under `dir` but the integrity stamp.
fn collect_files(root: &Path, dir: &Path, found: &mut dyn FnMut(&str, &Path)) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .expect("reading a vendored package")
        .flatten()
        .collect();
    entries.sort_by_key(|entry| entry.file_name());
    for entry in entries {
        let path = entry.path();
        if path.is_dir() {
            collect_files(root, &path, found);
        } else if entry.file_name() != ".integrity" {
            let relative = path.strip_prefix(root).expect("under its root");
            found(&relative.to_string_lossy(), &path);
        }
    }
}

/// `$OUT_DIR/vendored_assets.rs`: `(path, content type, bytes)` for every served file.
fn write_asset_table(files: &[(String, PathBuf)]) {
    let mut table = String::from("&[\n");
    for (name, path) in files {
        let content_type = match path.extension().and_then(|ext| ext.to_str()) {
            Some("js" | "mjs") => "text/javascript; charset=utf-8",
            Some("css") => "text/css; charset=utf-8",
            Some("json") => "application/json",
            _ => "text/plain; charset=utf-8",
        };
        table.push_str(&format!(
            "    ({name:?}, {content_type:?}, include_bytes!({:?})),\n",
            path.display().to_string()
        ));
    }
    table.push(']');
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR"));
    std::fs::write(out.join("vendored_assets.rs"), table).expect("writing the asset table");
}

/// Unpacks one package's files into `out/<name>/`, unless an earlier build already did.
fn vendor(package: &Package, registry: &str, out: &Path) -> Result<(), String> {
    let dir = out.join(&package.name);
    let stamp = dir.join(".integrity");
    if std::fs::read_to_string(&stamp).ok().as_deref() == Some(package.integrity.as_str()) {
        return Ok(());
    }
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|err| err.to_string())?;
    let base = package.name.rsplit('/').next().unwrap_or(&package.name);
    let url = format!(
        "{}/{}/-/{base}-{}.tgz",
        registry.trim_end_matches('/'),
        package.name,
        package.version
    );
    let tarball = dir.join("package.tgz");
    run(Command::new("curl")
        .args(["--fail", "--silent", "--show-error", "--location"])
        .args(["--retry", "3", "--max-time", "120", "--output"])
        .arg(&tarball)
        .arg(&url))?;
    let bytes = std::fs::read(&tarball).map_err(|err| err.to_string())?;
    let digest = base64::engine::general_purpose::STANDARD.encode(Sha512::digest(&bytes));
    if package.integrity != format!("sha512-{digest}") {
        return Err(format!(
            "{url} does not match its integrity hash (got sha512-{digest})"
        ));
    }
    let members: Vec<String> = package
        .files
        .iter()
        .map(|file| format!("package/{file}"))
        .collect();
    run(Command::new("tar")
        .arg("-xzf")
        .arg(&tarball)
        .arg("-C")
        .arg(&dir)
        .args(["--strip-components=1", "--no-same-owner", "--"])
        .args(&members))?;
    std::fs::remove_file(&tarball).map_err(|err| err.to_string())?;
    std::fs::write(&stamp, &package.integrity).map_err(|err| err.to_string())
}

fn run(command: &mut Command) -> Result<(), String> {
    let output = command
        .output()
        .map_err(|err| format!("running {:?}: {err}", command.get_program()))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{:?} failed: {}",
            command.get_program(),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}
