//! The time idle policies are judged by: the system clock, plus a skew that tests set so an
//! agent process lives through an hour of idleness in a second.
//!
//! The skew comes from the file named by `PROXLAB_AGENT_CLOCK_SKEW_FILE` (a number of seconds;
//! read on every policy pass), and is zero without it. It moves nothing but idle timers: not
//! the agent's heartbeats, certificates or logs.

use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// The environment variable naming the skew file (tests only).
pub const SKEW_FILE_ENV: &str = "PROXLAB_AGENT_CLOCK_SKEW_FILE";

/// Unix seconds, with an adjustable skew.
#[derive(Debug, Default)]
pub struct IdleClock {
    skew_secs: AtomicI64,
    skew_file: Option<PathBuf>,
}

impl IdleClock {
    /// The clock, with the skew file the environment names, if any.
    pub fn from_env() -> Self {
        let clock = Self {
            skew_secs: AtomicI64::new(0),
            skew_file: std::env::var_os(SKEW_FILE_ENV).map(PathBuf::from),
        };
        clock.refresh();
        clock
    }

    /// Re-reads the skew file (a missing or unreadable file keeps the skew it had).
    pub fn refresh(&self) {
        let Some(path) = &self.skew_file else { return };
        if let Some(skew) = std::fs::read_to_string(path)
            .ok()
            .and_then(|text| text.trim().parse().ok())
        {
            self.set_skew(skew);
        }
    }

    pub fn set_skew(&self, secs: i64) {
        self.skew_secs.store(secs, Ordering::Relaxed);
    }

    /// Now, in Unix seconds.
    pub fn now(&self) -> u64 {
        let system = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_secs());
        system.saturating_add_signed(self.skew_secs.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_skew_file_moves_the_clock() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("skew");
        let clock = IdleClock {
            skew_secs: AtomicI64::new(0),
            skew_file: Some(path.clone()),
        };
        let before = clock.now();
        std::fs::write(&path, "3600\n").unwrap();
        clock.refresh();
        assert!(clock.now() >= before + 3600);
        std::fs::write(&path, "garbage").unwrap();
        clock.refresh();
        assert!(clock.now() >= before + 3600, "a bad file keeps the skew");
    }
}
