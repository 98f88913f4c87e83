//! The time proxlab's policies (the hub's class schedules, the agent's idle timers) are
//! judged by: the system clock plus a skew, so a test can let a real process live through
//! an hour, or reach next Monday 08:00, in a second.
//!
//! The skew is read from a file (a whole number of seconds) that an environment variable
//! names; each program names its own variable and reads the file again before each use
//! ([`SkewedClock::refresh`]). Without the variable the skew is zero and the file is never
//! looked at. Only policy timing uses this clock: never certificates, sessions or logs.

use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Unix seconds, with an adjustable skew.
#[derive(Debug, Default)]
pub struct SkewedClock {
    skew_secs: AtomicI64,
    skew_file: Option<PathBuf>,
}

impl SkewedClock {
    /// The clock, with the skew file that the environment variable `var` names, if any.
    pub fn from_env(var: &str) -> Self {
        Self::with_skew_file(std::env::var_os(var).map(PathBuf::from))
    }

    /// The clock, with its skew read from `skew_file` (if any).
    pub fn with_skew_file(skew_file: Option<PathBuf>) -> Self {
        let clock = Self {
            skew_secs: AtomicI64::new(0),
            skew_file,
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

    /// Now, in Unix milliseconds.
    pub fn now_millis(&self) -> i64 {
        let system = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| {
                i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)
            });
        system.saturating_add(self.skew_secs.load(Ordering::Relaxed).saturating_mul(1000))
    }

    /// Now, in Unix seconds.
    pub fn now(&self) -> i64 {
        self.now_millis().div_euclid(1000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_skew_file_moves_the_clock() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("skew");
        let clock = SkewedClock::with_skew_file(Some(path.clone()));
        let before = clock.now();
        std::fs::write(&path, "3600\n").unwrap();
        clock.refresh();
        assert!(clock.now() >= before + 3600);
        std::fs::write(&path, "garbage").unwrap();
        clock.refresh();
        assert!(clock.now() >= before + 3600, "a bad file keeps the skew");
        std::fs::write(&path, "-7200").unwrap();
        clock.refresh();
        let behind = clock.now();
        assert!(
            behind < before - 7000 && behind >= before - 7201,
            "{behind} {before}"
        );
    }

    #[test]
    fn without_a_file_it_is_the_system_clock() {
        let clock = SkewedClock::with_skew_file(None);
        let system = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        assert!((clock.now() - system).abs() <= 1);
    }
}
