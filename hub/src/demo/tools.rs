//! Finding the demo's helper programs: `proxlab-agent` and `pve-sim`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// The programs the demo runs.
#[derive(Debug, Clone)]
pub(super) struct Tools {
    pub(super) agent: PathBuf,
    pub(super) sim: PathBuf,
}

const AGENT: &str = "proxlab-agent";
const SIM: &str = "pve-sim";

impl Tools {
    /// Next to this executable (a cargo build or an install), else on `PATH`. Started by
    /// `cargo run`, the demo builds missing ones with the same profile first.
    pub(super) fn locate() -> Result<Self> {
        let exe = std::env::current_exe().context("finding this program")?;
        let dir = exe.parent().context("this program has no directory")?;
        if !(dir.join(AGENT).exists() && dir.join(SIM).exists())
            && let Ok(cargo) = std::env::var("CARGO")
        {
            build_with_cargo(&cargo, dir)?;
        }
        Ok(Self {
            agent: find(dir, AGENT)?,
            sim: find(dir, SIM)?,
        })
    }
}

fn build_with_cargo(cargo: &str, dir: &Path) -> Result<()> {
    eprintln!("Building {AGENT} and {SIM} for the demo (once)...");
    let mut command = std::process::Command::new(cargo);
    command.args(["build", "-p", AGENT, "-p", SIM]);
    if dir.ends_with("release") {
        command.arg("--release");
    }
    let status = command.status().context("running cargo build")?;
    if !status.success() {
        bail!("building {AGENT} and {SIM} failed");
    }
    Ok(())
}

fn find(dir: &Path, name: &str) -> Result<PathBuf> {
    let beside = dir.join(name);
    if beside.exists() {
        return Ok(beside);
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|entry| entry.join(name))
        .find(|candidate| candidate.exists())
        .with_context(|| {
            format!(
                "{name} is neither next to this program nor on PATH; build it with \
                 `cargo build --release -p {name}`"
            )
        })
}
