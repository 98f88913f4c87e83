//! Login throttling: too many failed logins for one account, or from one client address,
//! within a window make further attempts wait until the oldest failure leaves the window.
//!
//! The counts live in memory: one hub process serves a site, and a restart forgetting them
//! costs an attacker a restart's worth of guesses, not more. Both keys are checked before the
//! password is, so a correct guess during a lockout is refused like any other.
//!
//! [`RateLimit`] caps actions that are harmless one at a time, such as creating an account
//! through an invite link.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Limits on failed logins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottleLimits {
    pub window: Duration,
    pub per_account: usize,
    pub per_address: usize,
}

impl Default for ThrottleLimits {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(15 * 60),
            per_account: 5,
            per_address: 20,
        }
    }
}

/// Past this many tracked keys, stale ones are swept on the next failure.
const SWEEP_ABOVE: usize = 10_000;

#[derive(Debug, Default)]
struct Failures {
    by_account: HashMap<String, VecDeque<Instant>>,
    by_address: HashMap<IpAddr, VecDeque<Instant>>,
}

/// Failed-login bookkeeping shared by all requests.
#[derive(Debug, Default)]
pub struct LoginThrottle {
    limits: ThrottleLimits,
    failures: Mutex<Failures>,
}

impl LoginThrottle {
    pub fn new(limits: ThrottleLimits) -> Self {
        Self {
            limits,
            failures: Mutex::default(),
        }
    }

    /// `Err(wait)` if this account or address must wait before trying again.
    pub fn check(&self, account: &str, address: IpAddr, now: Instant) -> Result<(), Duration> {
        let mut failures = self.failures.lock().expect("throttle lock");
        let window = self.limits.window;
        let account_wait = failures
            .by_account
            .get_mut(account)
            .and_then(|times| wait_for(times, self.limits.per_account, window, now));
        let address_wait = failures
            .by_address
            .get_mut(&address)
            .and_then(|times| wait_for(times, self.limits.per_address, window, now));
        match account_wait.max(address_wait) {
            Some(wait) => Err(wait),
            None => Ok(()),
        }
    }

    pub fn record_failure(&self, account: &str, address: IpAddr, now: Instant) {
        let mut failures = self.failures.lock().expect("throttle lock");
        if failures.by_account.len() + failures.by_address.len() > SWEEP_ABOVE {
            let window = self.limits.window;
            let fresh = |times: &mut VecDeque<Instant>| {
                times
                    .back()
                    .is_some_and(|last| now.duration_since(*last) < window)
            };
            failures.by_account.retain(|_, times| fresh(times));
            failures.by_address.retain(|_, times| fresh(times));
        }
        failures
            .by_account
            .entry(account.to_owned())
            .or_default()
            .push_back(now);
        failures
            .by_address
            .entry(address)
            .or_default()
            .push_back(now);
    }

    /// A successful login clears the account's failures (not the address's: one person's
    /// success must not reset a guesser sharing their address).
    pub fn record_success(&self, account: &str) {
        self.failures
            .lock()
            .expect("throttle lock")
            .by_account
            .remove(account);
    }
}

/// At most `limit` events per key within `window`: for actions that are fine now and then
/// and harmful in bulk, such as creating accounts through an invite link.
#[derive(Debug)]
pub struct RateLimit {
    limit: usize,
    window: Duration,
    events: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl RateLimit {
    pub fn new(limit: usize, window: Duration) -> Self {
        Self {
            limit,
            window,
            events: Mutex::default(),
        }
    }

    /// Counts an event for every key, or, if any key is at its limit, counts nothing and
    /// says how long to wait.
    pub fn take(&self, keys: &[&str], now: Instant) -> Result<(), Duration> {
        let mut events = self.events.lock().expect("rate limit lock");
        if events.len() > SWEEP_ABOVE {
            let window = self.window;
            events.retain(|_, times| {
                times
                    .back()
                    .is_some_and(|last| now.duration_since(*last) < window)
            });
        }
        let wait = keys
            .iter()
            .filter_map(|key| {
                events
                    .get_mut(*key)
                    .and_then(|times| wait_for(times, self.limit, self.window, now))
            })
            .max();
        if let Some(wait) = wait {
            return Err(wait);
        }
        for key in keys {
            events.entry((*key).to_owned()).or_default().push_back(now);
        }
        Ok(())
    }
}

/// Drops failures older than the window; if `limit` remain, how long until the oldest
/// leaves it.
fn wait_for(
    times: &mut VecDeque<Instant>,
    limit: usize,
    window: Duration,
    now: Instant,
) -> Option<Duration> {
    while times
        .front()
        .is_some_and(|first| now.duration_since(*first) >= window)
    {
        times.pop_front();
    }
    if times.len() < limit {
        return None;
    }
    let oldest_relevant = times[times.len() - limit];
    Some(window.saturating_sub(now.duration_since(oldest_relevant)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limits_count_every_key_and_refuse_without_counting() {
        let limit = RateLimit::new(2, Duration::from_secs(60));
        let start = Instant::now();
        limit.take(&["invite", "10.0.0.1"], start).unwrap();
        limit.take(&["invite", "10.0.0.2"], start).unwrap();
        let wait = limit.take(&["invite", "10.0.0.3"], start).unwrap_err();
        assert_eq!(wait, Duration::from_secs(60));
        // The refused attempt counted for nobody: 10.0.0.3 may still act elsewhere.
        limit.take(&["other", "10.0.0.3"], start).unwrap();
        limit
            .take(&["invite", "10.0.0.4"], start + Duration::from_secs(61))
            .unwrap();
    }

    fn limits() -> ThrottleLimits {
        ThrottleLimits {
            window: Duration::from_secs(60),
            per_account: 3,
            per_address: 5,
        }
    }

    #[test]
    fn account_locks_after_its_limit_and_unlocks_when_the_window_passes() {
        let throttle = LoginThrottle::new(limits());
        let addr: IpAddr = "192.0.2.1".parse().unwrap();
        let start = Instant::now();
        for i in 0..3 {
            assert!(throttle.check("alice", addr, start).is_ok(), "attempt {i}");
            throttle.record_failure("alice", addr, start + Duration::from_secs(i));
        }
        let now = start + Duration::from_secs(10);
        let wait = throttle.check("alice", addr, now).unwrap_err();
        assert_eq!(wait, Duration::from_secs(50));
        // Another account from another address is unaffected.
        assert!(
            throttle
                .check("bob", "192.0.2.2".parse().unwrap(), now)
                .is_ok()
        );
        assert!(
            throttle
                .check("alice", addr, start + Duration::from_secs(61))
                .is_ok()
        );
    }

    #[test]
    fn address_locks_across_accounts() {
        let throttle = LoginThrottle::new(limits());
        let addr: IpAddr = "2001:db8::1".parse().unwrap();
        let now = Instant::now();
        for name in ["a", "b", "c", "d", "e"] {
            throttle.record_failure(name, addr, now);
        }
        assert!(throttle.check("fresh", addr, now).is_err());
        assert!(
            throttle
                .check("fresh", "2001:db8::2".parse().unwrap(), now)
                .is_ok()
        );
    }

    #[test]
    fn success_clears_the_account_but_not_the_address() {
        let throttle = LoginThrottle::new(limits());
        let addr: IpAddr = "192.0.2.9".parse().unwrap();
        let now = Instant::now();
        for _ in 0..3 {
            throttle.record_failure("carol", addr, now);
        }
        throttle.record_success("carol");
        assert!(throttle.check("carol", addr, now).is_ok());
        for _ in 0..2 {
            throttle.record_failure("dave", addr, now);
        }
        assert!(
            throttle.check("erin", addr, now).is_err(),
            "5 from one address"
        );
    }
}
