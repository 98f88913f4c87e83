//! The time idle policies are judged by: the system clock, plus a skew that tests set so an
//! agent process lives through an hour of idleness in a second.
//!
//! The skew comes from the file named by `PROXLAB_AGENT_CLOCK_SKEW_FILE` (a number of seconds;
//! read on every policy pass), and is zero without it. It moves nothing but idle timers: not
//! the agent's heartbeats, certificates or logs.

use proxlab_clock::SkewedClock;

/// The environment variable naming the skew file (tests only).
pub const SKEW_FILE_ENV: &str = "PROXLAB_AGENT_CLOCK_SKEW_FILE";

/// Unix seconds, with an adjustable skew.
#[derive(Debug, Default)]
pub struct IdleClock(SkewedClock);

impl IdleClock {
    /// The clock, with the skew file the environment names, if any.
    pub fn from_env() -> Self {
        Self(SkewedClock::from_env(SKEW_FILE_ENV))
    }

    /// Re-reads the skew file (a missing or unreadable file keeps the skew it had).
    pub fn refresh(&self) {
        self.0.refresh();
    }

    pub fn set_skew(&self, secs: i64) {
        self.0.set_skew(secs);
    }

    /// Now, in Unix seconds.
    pub fn now(&self) -> u64 {
        u64::try_from(self.0.now()).unwrap_or(0)
    }
}
