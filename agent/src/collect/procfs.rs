//! What `/proc` says about a VM's QEMU process.

use std::path::Path;

/// The pid in a pid file, if that process lives (and is not a zombie).
pub fn live_pid(pid_file: &Path) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(pid_file)
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(") ")?;
    (!rest.starts_with('Z')).then_some(pid)
}

/// Clock ticks of CPU time the process has used (user + system).
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(") ")?;
    let fields: Vec<&str> = rest.split(' ').collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// Resident memory in bytes.
pub fn rss_bytes(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status.lines().find_map(|line| {
                line.strip_prefix("VmRSS:")?
                    .trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
        })
        .map_or(0, |kib| kib * 1024)
}

/// Ticks per second of `/proc` CPU times (USER_HZ, 100 on Linux).
pub const TICKS_PER_SEC: f64 = 100.0;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("1.pid");
        std::fs::write(&pid_file, format!("{}\n", std::process::id())).unwrap();
        assert_eq!(live_pid(&pid_file), Some(std::process::id()));
        assert!(rss_bytes(std::process::id()) > 0);
        assert!(cpu_ticks(std::process::id()).is_some());
        std::fs::write(&pid_file, "999999999\n").unwrap();
        assert_eq!(live_pid(&pid_file), None);
    }
}
