//! Looking at the simulated nodes' disks with the real tools: finding image files, reading a
//! chain with `qemu-img`, and writing and checking patterns with `qemu-io`.

use std::path::{Path, PathBuf};

/// Every file under `root` whose name starts with `prefix`.
pub fn files_named(root: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut dirs = vec![root.to_owned()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path
                .file_name()
                .is_some_and(|name| name.to_string_lossy().starts_with(prefix))
            {
                found.push(path);
            }
        }
    }
    found
}

/// The files of a disk's chain, top first, as `qemu-img info --backing-chain` names them.
pub fn backing_chain(disk: &Path) -> Vec<String> {
    let output = std::process::Command::new("qemu-img")
        .args(["info", "-U", "--backing-chain", "--output=json"])
        .arg(disk)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let chain: Vec<serde_json::Value> = serde_json::from_slice(&output.stdout).unwrap();
    chain
        .iter()
        .map(|image| image["filename"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// Writes 64 KiB of `byte` at `offset` of a qcow2 disk, as work in the VM would.
pub fn write_pattern(disk: &Path, byte: u8, offset: &str) {
    let written = std::process::Command::new("qemu-io")
        .args([
            "-f",
            "qcow2",
            "-c",
            &format!("write -P {byte:#x} {offset} 64k"),
        ])
        .arg(disk)
        .output()
        .unwrap();
    assert!(written.status.success(), "{written:?}");
}

/// Whether the 64 KiB at `offset` of a qcow2 disk hold `byte`.
pub fn holds_pattern(disk: &Path, byte: u8, offset: &str) -> bool {
    let read = std::process::Command::new("qemu-io")
        .args([
            "-f",
            "qcow2",
            "-c",
            &format!("read -P {byte:#x} {offset} 64k"),
        ])
        .arg(disk)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&read.stdout);
    assert!(said.contains("read 65536/65536 bytes"), "{read:?}");
    !said.contains("Pattern verification failed")
}
