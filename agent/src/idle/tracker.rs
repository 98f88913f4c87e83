//! One VM's idle timers: given the VM's policy and what the agent saw of it at a moment, says
//! whether to warn, withdraw a warning, or shut the VM down. Pure: time comes in as an
//! argument (Unix seconds), so tests walk it through hours in microseconds.

use proxlab_protocol::idle::{IdlePolicy, IdleReason};

/// What the agent saw of a VM at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Observation {
    pub running: bool,
    /// CPU use as a share of the VM's own vCPUs, in percent.
    pub cpu_percent: f64,
    /// Sessions (console, terminal, tunnel) open now.
    pub open_sessions: u32,
    /// When a session was last opened.
    pub last_opened: Option<u64>,
    /// When a session last ended.
    pub last_closed: Option<u64>,
    /// When a session last carried input from its user.
    pub last_input: Option<u64>,
}

/// What to do about a VM now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Nothing new.
    Nothing,
    /// Tell its users it stops at `stop_at` (a new warning, or one whose time moved).
    Warn { reason: IdleReason, stop_at: u64 },
    /// The warning in force no longer holds.
    Clear,
    /// Shut it down now; `idle_secs` is the policy's time.
    ShutDown { reason: IdleReason, idle_secs: u32 },
}

/// The timers of one VM.
#[derive(Debug, Clone, Default)]
pub struct Tracker {
    /// When the VM was first seen running in its current run.
    running_since: Option<u64>,
    /// Whether a session was open at some point of the current run.
    connected: bool,
    /// When the guest last used more CPU than the idle threshold.
    last_busy: Option<u64>,
    /// When someone last said "I'm still here".
    still_here: Option<u64>,
    /// The warning in force: its reason and time.
    warned: Option<(IdleReason, u64)>,
    /// A shutdown was asked for in this run; nothing more is decided until the VM stops.
    stopping: bool,
}

impl Tracker {
    /// Restarts every timer from `now`; says whether a warning was in force.
    pub fn still_here(&mut self, now: u64) -> bool {
        self.still_here = Some(now);
        self.warned.is_some()
    }

    /// Whether a warning is in force, and its reason and time.
    pub fn warning(&self) -> Option<(IdleReason, u64)> {
        self.warned
    }

    /// The shutdown asked for has ended (done or failed): the timers run again for a VM that
    /// still runs, from `now`.
    pub fn shutdown_ended(&mut self, now: u64) {
        self.stopping = false;
        self.still_here = Some(now);
    }

    /// Folds in one observation and decides.
    pub fn observe(&mut self, now: u64, policy: &IdlePolicy, seen: &Observation) -> Decision {
        if !seen.running {
            let had_warning = self.warned.is_some();
            *self = Self {
                still_here: self.still_here,
                ..Self::default()
            };
            return if had_warning {
                Decision::Clear
            } else {
                Decision::Nothing
            };
        }
        let since = *self.running_since.get_or_insert(now);
        if seen.open_sessions > 0 || seen.last_opened.is_some_and(|at| at >= since) {
            self.connected = true;
        }
        if policy
            .idle_guest
            .is_some_and(|guest| seen.cpu_percent >= f64::from(guest.cpu_percent))
        {
            self.last_busy = Some(now);
        }
        if self.stopping {
            return Decision::Nothing;
        }
        match self.deadline(policy, seen, since) {
            Some((reason, idle_secs, stop_at)) if now >= stop_at => {
                self.stopping = true;
                self.warned = None;
                Decision::ShutDown { reason, idle_secs }
            }
            Some((reason, _, stop_at))
                if now + u64::from(policy.warn_secs) >= stop_at
                    && self.warned != Some((reason, stop_at)) =>
            {
                self.warned = Some((reason, stop_at));
                Decision::Warn { reason, stop_at }
            }
            Some((_, _, stop_at))
                if self
                    .warned
                    .is_some_and(|_| now + u64::from(policy.warn_secs) < stop_at) =>
            {
                self.warned = None;
                Decision::Clear
            }
            Some(_) => Decision::Nothing,
            None if self.warned.take().is_some() => Decision::Clear,
            None => Decision::Nothing,
        }
    }

    /// The earliest time a policy stops the VM: its reason, the policy's time and the moment.
    fn deadline(
        &self,
        policy: &IdlePolicy,
        seen: &Observation,
        since: u64,
    ) -> Option<(IdleReason, u32, u64)> {
        let reset = |from: u64| self.still_here.map_or(from, |at| from.max(at));
        let mut candidates = Vec::with_capacity(3);
        if seen.open_sessions == 0 {
            if !self.connected
                && let Some(secs) = policy.no_connection_secs
            {
                candidates.push((IdleReason::NoConnection, secs, reset(since)));
            }
            if self.connected
                && let Some(secs) = policy.disconnected_secs
            {
                let from = seen.last_closed.unwrap_or(since).max(since);
                candidates.push((IdleReason::Disconnected, secs, reset(from)));
            }
        }
        if let Some(guest) = policy.idle_guest {
            let from = [self.last_busy, seen.last_input, seen.last_opened]
                .into_iter()
                .flatten()
                .fold(since, u64::max);
            candidates.push((IdleReason::IdleGuest, guest.secs, reset(from)));
        }
        candidates
            .into_iter()
            .map(|(reason, secs, from)| (reason, secs, from + u64::from(secs)))
            .min_by_key(|(_, _, at)| *at)
    }
}

#[cfg(test)]
mod tests {
    use proxlab_protocol::idle::IdleGuest;

    use super::*;

    const MIN: u64 = 60;

    fn policy() -> IdlePolicy {
        IdlePolicy {
            no_connection_secs: None,
            disconnected_secs: None,
            idle_guest: None,
            warn_secs: 5 * MIN as u32,
            shutdown_timeout_secs: 60,
            hard_stop: true,
            guest_message: false,
        }
    }

    fn running() -> Observation {
        Observation {
            running: true,
            cpu_percent: 0.0,
            ..Observation::default()
        }
    }

    /// Observes once a minute from `from` to `to` (inclusive) and returns what was decided
    /// at which minute, skipping the minutes with nothing new.
    fn walk(
        tracker: &mut Tracker,
        policy: &IdlePolicy,
        from: u64,
        to: u64,
        seen: impl Fn(u64) -> Observation,
    ) -> Vec<(u64, Decision)> {
        (from..=to)
            .map(|minute| {
                (
                    minute,
                    tracker.observe(minute * MIN, policy, &seen(minute * MIN)),
                )
            })
            .filter(|(_, decision)| *decision != Decision::Nothing)
            .collect()
    }

    #[test]
    fn no_connection_after_start_warns_then_shuts_down() {
        let policy = IdlePolicy {
            no_connection_secs: Some(15 * MIN as u32),
            ..policy()
        };
        let mut tracker = Tracker::default();
        let decisions = walk(&mut tracker, &policy, 100, 130, |_| running());
        assert_eq!(
            decisions,
            [
                (
                    110,
                    Decision::Warn {
                        reason: IdleReason::NoConnection,
                        stop_at: 115 * MIN
                    }
                ),
                (
                    115,
                    Decision::ShutDown {
                        reason: IdleReason::NoConnection,
                        idle_secs: 900
                    }
                ),
            ]
        );
    }

    #[test]
    fn a_session_opened_after_start_turns_off_no_connection_and_starts_disconnected() {
        let policy = IdlePolicy {
            no_connection_secs: Some(15 * MIN as u32),
            disconnected_secs: Some(10 * MIN as u32),
            ..policy()
        };
        let mut tracker = Tracker::default();
        // Started at minute 0; a console is open from minute 5 to minute 40.
        let seen = |at: u64| Observation {
            open_sessions: u32::from((5 * MIN..40 * MIN).contains(&at)),
            last_opened: (at >= 5 * MIN).then_some(5 * MIN),
            last_closed: (at >= 40 * MIN).then_some(40 * MIN),
            ..running()
        };
        let decisions = walk(&mut tracker, &policy, 0, 60, seen);
        assert_eq!(
            decisions,
            [
                (
                    45,
                    Decision::Warn {
                        reason: IdleReason::Disconnected,
                        stop_at: 50 * MIN
                    }
                ),
                (
                    50,
                    Decision::ShutDown {
                        reason: IdleReason::Disconnected,
                        idle_secs: 600
                    }
                ),
            ]
        );
    }

    #[test]
    fn still_here_withdraws_the_warning_and_restarts_the_timer() {
        let policy = IdlePolicy {
            disconnected_secs: Some(10 * MIN as u32),
            ..policy()
        };
        let mut tracker = Tracker::default();
        let seen = |_| Observation {
            last_opened: Some(0),
            last_closed: Some(MIN),
            ..running()
        };
        let before = walk(&mut tracker, &policy, 0, 7, seen);
        assert_eq!(
            before,
            [(
                6,
                Decision::Warn {
                    reason: IdleReason::Disconnected,
                    stop_at: 11 * MIN
                }
            )]
        );
        assert!(tracker.still_here(7 * MIN + 30), "a warning was in force");
        let after = walk(&mut tracker, &policy, 8, 20, seen);
        assert_eq!(
            after,
            [
                (8, Decision::Clear),
                (
                    13,
                    Decision::Warn {
                        reason: IdleReason::Disconnected,
                        stop_at: 17 * MIN + 30
                    }
                ),
                (
                    18,
                    Decision::ShutDown {
                        reason: IdleReason::Disconnected,
                        idle_secs: 600
                    }
                ),
            ]
        );
    }

    #[test]
    fn an_idle_guest_stops_after_its_minutes_below_the_threshold_and_busy_time_moves_it() {
        let policy = IdlePolicy {
            idle_guest: Some(IdleGuest {
                secs: 30 * MIN as u32,
                cpu_percent: 5,
            }),
            ..policy()
        };
        let mut tracker = Tracker::default();
        // Busy (40 %) until minute 10, then 2 %; typing in a console at minute 20.
        let seen = |at: u64| Observation {
            cpu_percent: if at <= 10 * MIN { 40.0 } else { 2.0 },
            open_sessions: 1,
            last_opened: Some(0),
            last_input: Some(if at >= 20 * MIN { 20 * MIN } else { 0 }),
            ..running()
        };
        let decisions = walk(&mut tracker, &policy, 0, 60, seen);
        assert_eq!(
            decisions,
            [
                (
                    45,
                    Decision::Warn {
                        reason: IdleReason::IdleGuest,
                        stop_at: 50 * MIN
                    }
                ),
                (
                    50,
                    Decision::ShutDown {
                        reason: IdleReason::IdleGuest,
                        idle_secs: 1800
                    }
                ),
            ]
        );
    }

    #[test]
    fn activity_during_a_warning_withdraws_it() {
        let policy = IdlePolicy {
            idle_guest: Some(IdleGuest {
                secs: 10 * MIN as u32,
                cpu_percent: 5,
            }),
            ..policy()
        };
        let mut tracker = Tracker::default();
        let seen = |at: u64| Observation {
            cpu_percent: if at == 7 * MIN { 90.0 } else { 0.0 },
            ..running()
        };
        let decisions = walk(&mut tracker, &policy, 0, 9, seen);
        assert_eq!(
            decisions,
            [
                (
                    5,
                    Decision::Warn {
                        reason: IdleReason::IdleGuest,
                        stop_at: 10 * MIN
                    }
                ),
                (7, Decision::Clear),
            ]
        );
    }

    #[test]
    fn the_earliest_policy_wins_and_a_stop_resets_everything() {
        let policy = IdlePolicy {
            no_connection_secs: Some(20 * MIN as u32),
            idle_guest: Some(IdleGuest {
                secs: 10 * MIN as u32,
                cpu_percent: 5,
            }),
            warn_secs: 0,
            ..policy()
        };
        let mut tracker = Tracker::default();
        let decisions = walk(&mut tracker, &policy, 0, 12, |_| running());
        assert_eq!(
            decisions,
            [(
                10,
                Decision::ShutDown {
                    reason: IdleReason::IdleGuest,
                    idle_secs: 600
                }
            )]
        );
        // Nothing more while the shutdown runs; once stopped and started again, it starts over.
        assert_eq!(
            tracker.observe(13 * MIN, &policy, &running()),
            Decision::Nothing
        );
        assert_eq!(
            tracker.observe(14 * MIN, &policy, &Observation::default()),
            Decision::Nothing
        );
        let again = walk(&mut tracker, &policy, 15, 25, |_| running());
        assert_eq!(
            again,
            [(
                25,
                Decision::ShutDown {
                    reason: IdleReason::IdleGuest,
                    idle_secs: 600
                }
            )]
        );
    }

    #[test]
    fn a_vm_that_stops_while_warned_clears_its_warning() {
        let policy = IdlePolicy {
            no_connection_secs: Some(10 * MIN as u32),
            ..policy()
        };
        let mut tracker = Tracker::default();
        walk(&mut tracker, &policy, 0, 6, |_| running());
        assert!(tracker.warning().is_some());
        assert_eq!(
            tracker.observe(7 * MIN, &policy, &Observation::default()),
            Decision::Clear
        );
    }

    #[test]
    fn a_failed_shutdown_starts_the_timers_again() {
        let policy = IdlePolicy {
            no_connection_secs: Some(10 * MIN as u32),
            warn_secs: 0,
            ..policy()
        };
        let mut tracker = Tracker::default();
        let first = walk(&mut tracker, &policy, 0, 10, |_| running());
        assert_eq!(first.len(), 1);
        tracker.shutdown_ended(11 * MIN);
        let again = walk(&mut tracker, &policy, 11, 21, |_| running());
        assert_eq!(
            again,
            [(
                21,
                Decision::ShutDown {
                    reason: IdleReason::NoConnection,
                    idle_secs: 600
                }
            )]
        );
    }
}
