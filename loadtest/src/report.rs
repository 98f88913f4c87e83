//! The figures a run produces, printed as a table, and the scratch PostgreSQL database a run
//! on PostgreSQL uses.

use std::fmt;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::browsers::StreamCounters;
use crate::fleet::FleetCounters;
use crate::measure::{DbReading, ProcessReading};

/// A database made for one run on a PostgreSQL server, dropped at the end.
pub struct ScratchDb {
    pub url: String,
    server: String,
    name: String,
}

async fn connect(url: &str) -> Result<sqlx::AnyConnection> {
    use sqlx::Connection;
    sqlx::any::install_default_drivers();
    sqlx::AnyConnection::connect(url)
        .await
        .with_context(|| "connecting to the PostgreSQL server".to_string())
}

impl ScratchDb {
    pub async fn create(server: &str) -> Result<Self> {
        let name = format!("proxlab_load_{}", hex::encode(rand::random::<[u8; 4]>()));
        let mut admin = connect(server).await?;
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await?;
        let (base, _) = server
            .rsplit_once('/')
            .context("the server URL names a database (postgres://host/postgres)")?;
        Ok(Self {
            url: format!("{base}/{name}"),
            server: server.to_owned(),
            name,
        })
    }

    pub async fn drop_database(self) -> Result<()> {
        let mut admin = connect(&self.server).await?;
        sqlx::query(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        ))
        .execute(&mut admin)
        .await?;
        Ok(())
    }
}

/// The `p`th percentile (0 to 100) of `samples`, by nearest rank.
pub fn percentile(samples: &mut [Duration], p: f64) -> Option<Duration> {
    if samples.is_empty() {
        return None;
    }
    samples.sort_unstable();
    let rank = ((p / 100.0) * samples.len() as f64).ceil() as usize;
    Some(samples[rank.clamp(1, samples.len()) - 1])
}

fn ms(value: Option<Duration>) -> String {
    value.map_or("-".into(), |value| {
        format!("{:.1} ms", value.as_secs_f64() * 1000.0)
    })
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// Everything a run measured.
#[derive(Default)]
pub struct Report {
    rows: Vec<(String, String)>,
    notes: Vec<String>,
}

impl Report {
    pub fn new(agents: usize, vms: usize, streams: usize, postgres: bool) -> Self {
        let mut report = Self::default();
        report.row(
            "setup",
            format!(
                "{agents} agents x {vms} VMs = {} VMs, {streams} live-update streams, {}",
                agents * vms,
                if postgres { "PostgreSQL" } else { "SQLite" }
            ),
        );
        report
    }

    fn row(&mut self, what: &str, value: String) {
        self.rows.push((what.to_owned(), value));
    }

    pub fn enrollment(&mut self, elapsed: Duration, enrolled: usize, errors: &[String]) {
        self.row(
            "enrollment, all at once",
            format!(
                "{enrolled} enrolled in {:.1} s, {} errors",
                elapsed.as_secs_f64(),
                errors.len()
            ),
        );
        self.notes.extend(
            errors
                .iter()
                .take(5)
                .map(|err| format!("enrollment: {err}")),
        );
    }

    pub fn connect(&mut self, elapsed: Duration) {
        self.row(
            "connect + first inventory",
            format!(
                "all connected and recorded in {:.1} s",
                elapsed.as_secs_f64()
            ),
        );
    }

    #[allow(clippy::too_many_arguments)]
    pub fn steady(
        &mut self,
        window: Duration,
        before: &ProcessReading,
        after: &ProcessReading,
        postgres_cpu: Option<Duration>,
        db_before: &DbReading,
        db_after: &DbReading,
        events: usize,
        mut sse: Vec<Duration>,
        mut api: Vec<Duration>,
        api_errors: usize,
        streams: &StreamCounters,
    ) {
        let secs = window.as_secs_f64();
        let cpu = (after.cpu.saturating_sub(before.cpu)).as_secs_f64() / secs;
        self.row(
            "agent events",
            format!("{:.0} per second", events as f64 / secs),
        );
        self.row("hub CPU, steady", format!("{cpu:.2} cores"));
        if let Some(postgres_cpu) = postgres_cpu {
            self.row(
                "PostgreSQL CPU, steady",
                format!(
                    "{:.2} cores (every local postgres process)",
                    postgres_cpu.as_secs_f64() / secs
                ),
            );
        }
        self.row("hub RSS, steady", mib(after.rss_bytes));
        let count = sse.len();
        self.row(
            "event to stream p50 / p99",
            format!(
                "{} / {} ({count} deliveries)",
                ms(percentile(&mut sse, 50.0)),
                ms(percentile(&mut sse, 99.0))
            ),
        );
        self.row(
            "streams",
            format!(
                "{} events, {} resyncs, {} reopened",
                streams.events.load(Ordering::Relaxed),
                streams.resyncs.load(Ordering::Relaxed),
                streams.failures.load(Ordering::Relaxed)
            ),
        );
        let count = api.len();
        self.row(
            "GET /api/v1/vms p50 / p99",
            format!(
                "{} / {} ({count} requests, {api_errors} errors)",
                ms(percentile(&mut api, 50.0)),
                ms(percentile(&mut api, 99.0))
            ),
        );
        self.row("database size", mib(db_after.size_bytes));
        let written = match (db_before.wal_bytes, db_after.wal_bytes) {
            (Some(before), Some(after)) => after.saturating_sub(before),
            _ => after.write_bytes.saturating_sub(before.write_bytes),
        };
        self.row(
            "database writes",
            format!("{}/s", mib((written as f64 / secs) as u64)),
        );
    }

    pub fn restart(&mut self, elapsed: Duration, failed_dials: usize, hub: ProcessReading) {
        self.row(
            "hub restart: all back",
            format!(
                "{:.1} s after it started, {failed_dials} dials refused meanwhile (most while it was stopping), RSS after {}",
                elapsed.as_secs_f64(),
                mib(hub.rss_bytes)
            ),
        );
    }

    pub fn fleet(&mut self, counters: &FleetCounters) {
        self.row(
            "sessions",
            format!(
                "{} sessions, {} dropped, {} resyncs asked by the hub",
                counters.sessions.load(Ordering::Relaxed),
                counters.dropped_sessions.load(Ordering::Relaxed),
                counters.resyncs_asked.load(Ordering::Relaxed)
            ),
        );
        let reasons = counters
            .drop_reasons
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for (reason, count) in reasons.iter().take(5) {
            self.notes.push(format!("session ended {count}x: {reason}"));
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let width = self
            .rows
            .iter()
            .map(|(what, _)| what.len())
            .max()
            .unwrap_or(0);
        for (what, value) in &self.rows {
            writeln!(f, "{what:<width$}  {value}")?;
        }
        for note in &self.notes {
            writeln!(f, "note: {note}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        let mut samples: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(
            percentile(&mut samples, 50.0),
            Some(Duration::from_millis(50))
        );
        assert_eq!(
            percentile(&mut samples, 99.0),
            Some(Duration::from_millis(99))
        );
        assert_eq!(percentile(&mut [], 50.0), None);
    }
}
