//! Jittered exponential backoff between connection attempts.

use std::time::Duration;

use rand::Rng;

/// Delays of 1 s, 2 s, 4 s ... up to 60 s, each jittered down by up to half so that many
/// agents do not reconnect in step after a hub restart. A session that stayed up for
/// [`Backoff::STABLE_AFTER`] resets the sequence.
#[derive(Debug, Clone, Default)]
pub struct Backoff {
    attempt: u32,
}

impl Backoff {
    pub const MIN: Duration = Duration::from_secs(1);
    pub const MAX: Duration = Duration::from_secs(60);
    pub const STABLE_AFTER: Duration = Duration::from_secs(30);

    /// The un-jittered delay for the next attempt.
    fn ceiling(&self) -> Duration {
        let factor = 1u32 << self.attempt.min(16);
        (Self::MIN * factor).min(Self::MAX)
    }

    /// The delay before the next attempt; each call advances the sequence.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        let jittered = ceiling.mul_f64(rand::rng().random_range(0.5..=1.0));
        jittered.max(Self::MIN)
    }

    /// Records how long a session lasted; a stable one resets the sequence.
    pub fn session_ended(&mut self, lasted: Duration) {
        if lasted >= Self::STABLE_AFTER {
            self.attempt = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_to_the_cap_within_jitter_bounds() {
        let mut backoff = Backoff::default();
        let mut ceilings = Vec::new();
        for _ in 0..10 {
            let ceiling = backoff.ceiling();
            let delay = backoff.next_delay();
            assert!(delay <= ceiling, "{delay:?} > {ceiling:?}");
            assert!(
                delay >= (ceiling / 2).max(Backoff::MIN),
                "{delay:?} too short"
            );
            ceilings.push(ceiling.as_secs());
        }
        assert_eq!(ceilings, [1, 2, 4, 8, 16, 32, 60, 60, 60, 60]);
    }

    #[test]
    fn a_stable_session_resets_and_a_short_one_does_not() {
        let mut backoff = Backoff::default();
        for _ in 0..5 {
            backoff.next_delay();
        }
        backoff.session_ended(Duration::from_secs(3));
        assert_eq!(backoff.ceiling(), Duration::from_secs(32));
        backoff.session_ended(Backoff::STABLE_AFTER);
        assert_eq!(backoff.ceiling(), Backoff::MIN);
    }
}
