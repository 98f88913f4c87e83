//! Readings of the hub process and its database: CPU time, resident memory and bytes written
//! from `/proc`, the database's size and write volume from the backend itself.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};

/// One reading of a process's counters.
#[derive(Debug, Clone, Copy)]
pub struct ProcessReading {
    /// User plus system CPU time.
    pub cpu: Duration,
    pub rss_bytes: u64,
    /// Bytes the process caused to be written to storage.
    pub write_bytes: u64,
}

/// The kernel's clock tick, which `/proc/<pid>/stat` counts CPU time in.
fn clock_ticks_per_second() -> u64 {
    rustix::param::clock_ticks_per_second()
}

/// Reads `/proc/<pid>/{stat,status,io}`.
pub fn read_process(pid: u32) -> Result<ProcessReading> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // The command name is in parentheses and may hold spaces: count fields after it.
    let after_name = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .context("a /proc stat line")?;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // Fields 14 and 15 of the line (utime, stime) are the 12th and 13th after the name.
    let ticks: u64 = fields
        .get(11..13)
        .context("utime and stime")?
        .iter()
        .map(|field| field.parse::<u64>().unwrap_or(0))
        .sum();
    let cpu = Duration::from_secs_f64(ticks as f64 / clock_ticks_per_second() as f64);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss_kib = field_value(&status, "VmRSS:").unwrap_or(0);
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap_or_default();
    let write_bytes = field_value(&io, "write_bytes:").unwrap_or(0);
    Ok(ProcessReading {
        cpu,
        rss_bytes: rss_kib * 1024,
        write_bytes,
    })
}

/// CPU time of every process named `name` on this machine (a local PostgreSQL server's
/// backends, say), summed.
pub fn cpu_of_processes_named(name: &str) -> Duration {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Duration::ZERO;
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|comm| comm.trim_end() == name)
        })
        .filter_map(|pid| read_process(pid).ok())
        .map(|reading| reading.cpu)
        .sum()
}

/// The number after `key` on its line (`VmRSS:   1234 kB`).
fn field_value(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix(key))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|number| number.parse().ok())
}

/// A database's size and how much it has written so far.
#[derive(Debug, Clone, Copy)]
pub struct DbReading {
    pub size_bytes: u64,
    /// For PostgreSQL, the server's WAL bytes; for SQLite, `None` (the hub process's own
    /// write count covers it).
    pub wal_bytes: Option<u64>,
}

/// Reads the database's size: SQLite's files in the data directory, or PostgreSQL's own
/// figures.
pub async fn read_db(database_url: &str, data_dir: &Path) -> Result<DbReading> {
    if database_url.starts_with("sqlite:") {
        let size_bytes = std::fs::read_dir(data_dir)?
            .flatten()
            .filter(|entry| entry.file_name().to_string_lossy().contains(".db"))
            .filter_map(|entry| entry.metadata().ok())
            .map(|meta| meta.len())
            .sum();
        return Ok(DbReading {
            size_bytes,
            wal_bytes: None,
        });
    }
    use sqlx::Connection;
    sqlx::any::install_default_drivers();
    let mut connection = sqlx::AnyConnection::connect(database_url).await?;
    let (size,): (i64,) = sqlx::query_as("SELECT pg_database_size(current_database())::BIGINT")
        .fetch_one(&mut connection)
        .await?;
    let (wal,): (i64,) = sqlx::query_as("SELECT wal_bytes::BIGINT FROM pg_stat_wal")
        .fetch_one(&mut connection)
        .await?;
    connection.close().await?;
    Ok(DbReading {
        size_bytes: size as u64,
        wal_bytes: Some(wal as u64),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_its_own_process() {
        let reading = read_process(std::process::id()).unwrap();
        assert!(reading.rss_bytes > 0);
    }

    #[test]
    fn finds_a_field_value() {
        let status = "Name:\tx\nVmRSS:\t  2048 kB\nThreads:\t3\n";
        assert_eq!(field_value(status, "VmRSS:"), Some(2048));
        assert_eq!(field_value(status, "VmSwap:"), None);
    }
}
