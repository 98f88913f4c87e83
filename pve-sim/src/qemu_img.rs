//! The real `qemu-img`, run with an argument vector (never a shell), with injected faults.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

pub use proxlab_pve::size::{format_size, parse_size};
use serde::Deserialize;

use crate::script::Faults;
use crate::sim::{Outcome, Sim, fail};

/// The real `qemu-img`: `PVE_SIM_QEMU_IMG`, or the first on `PATH` that is not a
/// simulator wrapper (a symlink to this program).
pub fn program() -> OsString {
    if let Some(explicit) = std::env::var_os("PVE_SIM_QEMU_IMG") {
        return explicit;
    }
    let this = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.canonicalize().ok());
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .map(|dir| dir.join("qemu-img"))
        .find(|candidate| candidate.is_file() && candidate.canonicalize().ok() != this)
        .map_or_else(|| "qemu-img".into(), PathBuf::into_os_string)
}

/// `qemu-img` called through the simulator's `bin/qemu-img`: injected faults first, for any
/// file the arguments name, then the real program with the same arguments.
pub fn wrapper(argv: &[String]) -> Outcome {
    if let Ok(sim) = Sim::from_env() {
        let faults = Faults::load(&sim)?;
        let subcommand = argv.first().map_or("", String::as_str);
        faults.apply_latency(&format!("qemu-img {subcommand}"));
        let cwd = std::env::current_dir().unwrap_or_default();
        for arg in argv.iter().filter(|arg| !arg.starts_with('-')) {
            let path = cwd.join(arg);
            let shown = path.display().to_string();
            if faults.qemu_img_fails_for(&shown) {
                return fail(format!(
                    "qemu-img: {shown}: Could not write: Input/output error (injected fault)"
                ));
            }
        }
    }
    let status = Command::new(program()).args(argv).status()?;
    match status.code() {
        Some(0) => Ok(()),
        code => Err(crate::sim::Failure {
            message: String::new(),
            code: code.unwrap_or(1),
        }),
    }
}

/// Runs `qemu-img` with `args`, in `cwd` if given. `target` is the file it writes, checked
/// against the injected faults first.
fn run(sim: &Sim, args: &[OsString], cwd: Option<&Path>, target: &Path) -> Outcome<String> {
    let faults = Faults::load(sim)?;
    let shown = target.display().to_string();
    if faults.qemu_img_fails_for(&shown) {
        return fail(format!(
            "qemu-img: {shown}: Could not write: Input/output error (injected fault)"
        ));
    }
    let mut command = Command::new(program());
    command.args(args);
    if let Some(dir) = cwd {
        command.current_dir(dir);
    }
    let output = command
        .output()
        .map_err(|err| format!("cannot run qemu-img: {err}"))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return fail(stderr.trim_end().to_owned());
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn os(parts: &[&str]) -> Vec<OsString> {
    parts.iter().map(OsString::from).collect()
}

/// Creates an empty image.
pub fn create(sim: &Sim, path: &Path, format: &str, size_bytes: u64) -> Outcome {
    let mut args = os(&["create", "-f", format]);
    args.push(path.into());
    args.push(size_bytes.to_string().into());
    run(sim, &args, None, path).map(drop)
}

/// Creates a qcow2 overlay named `name` in `dir`, backed by `backing` (relative to `dir`),
/// exactly as Proxmox's dir plugin does.
pub fn create_overlay(
    sim: &Sim,
    dir: &Path,
    name: &str,
    backing: &str,
    backing_format: &str,
) -> Outcome {
    let args = os(&[
        "create",
        "-F",
        backing_format,
        "-b",
        backing,
        "-f",
        "qcow2",
        name,
        "-o",
        "extended_l2=on,cluster_size=128k",
    ]);
    run(sim, &args, Some(dir), &dir.join(name)).map(drop)
}

/// Copies an image into a new file (a full clone or an import).
pub fn convert(
    sim: &Sim,
    source: &Path,
    source_format: &str,
    target: &Path,
    target_format: &str,
) -> Outcome {
    let mut args = os(&["convert", "-p", "-f", source_format, "-O", target_format]);
    args.push(source.into());
    args.push(target.into());
    run(sim, &args, None, target).map(drop)
}

/// Grows an image to `size_bytes`.
pub fn resize(sim: &Sim, path: &Path, format: &str, size_bytes: u64) -> Outcome {
    let mut args = os(&["resize", "-f", format]);
    args.push(path.into());
    args.push(size_bytes.to_string().into());
    run(sim, &args, None, path).map(drop)
}

/// `qemu-img snapshot -c|-a|-d <name> <path>`.
pub fn snapshot(sim: &Sim, op: &str, name: &str, path: &Path) -> Outcome {
    let mut args = os(&["snapshot", op, name]);
    args.push(path.into());
    run(sim, &args, None, path).map(drop)
}

/// What `qemu-img info` says about an image.
#[derive(Debug, Clone, Deserialize)]
pub struct ImageInfo {
    #[serde(rename = "virtual-size")]
    pub virtual_size: u64,
    pub format: String,
    #[serde(rename = "actual-size", default)]
    pub actual_size: u64,
    #[serde(rename = "backing-filename", default)]
    pub backing: Option<String>,
}

pub fn info(path: &Path) -> Outcome<ImageInfo> {
    let output = Command::new(program())
        .args(["info", "-U", "--output=json"])
        .arg(path)
        .output()
        .map_err(|err| format!("cannot run qemu-img: {err}"))?;
    if !output.status.success() {
        return fail(
            String::from_utf8_lossy(&output.stderr)
                .trim_end()
                .to_owned(),
        );
    }
    Ok(serde_json::from_slice(&output.stdout)?)
}

/// `qemu-img info --backing-chain`: every file of the chain, top first.
pub fn backing_chain(path: &Path) -> Outcome<Vec<PathBuf>> {
    let output = Command::new(program())
        .args(["info", "-U", "--backing-chain", "--output=json"])
        .arg(path)
        .output()?;
    if !output.status.success() {
        return fail(
            String::from_utf8_lossy(&output.stderr)
                .trim_end()
                .to_owned(),
        );
    }
    let chain: Vec<serde_json::Value> = serde_json::from_slice(&output.stdout)?;
    Ok(chain
        .iter()
        .filter_map(|image| image["filename"].as_str().map(PathBuf::from))
        .collect())
}
