//! Running time, metered from what agents report: every report of a running VM carries its
//! uptime, so the moment it booted is known exactly, and that boot is its *run*. A report of
//! the same boot extends the run (whatever happened in between: a hub restart, an agent
//! restart, a lost connection); a new boot closes the old run and opens a new one; a report
//! of the VM stopped closes its run.
//!
//! A run is closed at the moment the stop was seen when reports were coming in all along;
//! after a gap in the reports (the node or the hub away, however short: a full inventory,
//! which agents send on every connection, says so), the stop happened at some unknown moment
//! in the gap, and the run is closed where it was last seen running: time is never counted
//! that the meter cannot vouch for, and never twice.
//!
//! Pure: the caller feeds reports with their time and stores the runs it is given back.

use std::collections::BTreeMap;

use crate::vm_key::VmKey;

/// Reports closer together than this count as a continuous watch of the VM: a stop seen
/// after one ends the run at that moment. (Agents send metrics of running VMs every 10 s.)
pub const CONTINUOUS_SECS: i64 = 30;

/// Two reports whose boot times differ by no more than this are the same boot (uptimes are
/// whole seconds, and a report takes a moment to arrive).
const SAME_BOOT_SECS: i64 = 5;

/// One run of a VM: from its boot to its stop (or to when it was last seen running).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    pub vm: VmKey,
    pub boot_at: i64,
    pub last_seen: i64,
    pub ended_at: Option<i64>,
}

impl Run {
    /// Seconds of running time the meter vouches for.
    pub fn seconds(&self) -> i64 {
        (self.ended_at.unwrap_or(self.last_seen) - self.boot_at).max(0)
    }
}

/// What an agent said about one VM at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    Running {
        uptime_secs: u64,
    },
    /// Stopped, in a change it reported as it happened.
    Stopped,
    /// Stopped, in a full inventory: sent when the agent (re)connects or resyncs, after
    /// reports may have been missed, so when it stopped is unknown.
    StoppedUnseen,
}

/// The open run of each VM.
#[derive(Debug, Default, Clone)]
pub struct Meter {
    open: BTreeMap<VmKey, Run>,
}

impl Meter {
    /// A meter that goes on from the runs stored as open.
    pub fn resume(open: impl IntoIterator<Item = Run>) -> Self {
        Self {
            open: open
                .into_iter()
                .filter(|run| run.ended_at.is_none())
                .map(|run| (run.vm, run))
                .collect(),
        }
    }

    /// Folds in a report of `vm` at `at`; returns the runs that changed (to store).
    pub fn observe(&mut self, vm: VmKey, seen: Seen, at: i64) -> Vec<Run> {
        match seen {
            Seen::Running { uptime_secs } => {
                let boot_at = at - i64::try_from(uptime_secs).unwrap_or(i64::MAX).min(at);
                match self.open.get_mut(&vm) {
                    Some(run) if (run.boot_at - boot_at).abs() <= SAME_BOOT_SECS => {
                        run.last_seen = run.last_seen.max(at);
                        vec![*run]
                    }
                    _ => {
                        let mut changed = Vec::with_capacity(2);
                        if let Some(mut old) = self.open.remove(&vm) {
                            // It stopped (unseen) and booted again: the old run ends where it
                            // was last seen, and never after the new boot.
                            old.ended_at = Some(old.last_seen.min(boot_at).max(old.boot_at));
                            changed.push(old);
                        }
                        let run = Run {
                            vm,
                            boot_at,
                            last_seen: at,
                            ended_at: None,
                        };
                        self.open.insert(vm, run);
                        changed.push(run);
                        changed
                    }
                }
            }
            Seen::Stopped | Seen::StoppedUnseen => match self.open.remove(&vm) {
                Some(mut run) => {
                    let watched = seen == Seen::Stopped && at - run.last_seen <= CONTINUOUS_SECS;
                    run.ended_at = Some(if watched {
                        at.max(run.last_seen)
                    } else {
                        run.last_seen
                    });
                    vec![run]
                }
                None => Vec::new(),
            },
        }
    }

    /// The VMs with an open run.
    pub fn running(&self) -> impl Iterator<Item = VmKey> + '_ {
        self.open.keys().copied()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const VM: VmKey = VmKey::new(1, 7);

    /// Every run the meter stored, by (vmid, boot), its latest version.
    #[derive(Default)]
    struct Store(BTreeMap<(VmKey, i64), Run>);

    impl Store {
        fn keep(&mut self, runs: Vec<Run>) {
            for run in runs {
                self.0.insert((run.vm, run.boot_at), run);
            }
        }

        fn seconds(&self) -> i64 {
            self.0.values().map(Run::seconds).sum()
        }
    }

    #[test]
    fn a_stop_found_in_an_inventory_ends_the_run_where_it_was_last_seen() {
        // Seen running at 1001; the hub is away for two seconds, in which the VM stops; the
        // agent's inventory on reconnecting says it is stopped.
        let mut meter = Meter::default();
        let mut store = Store::default();
        store.keep(meter.observe(VM, Seen::Running { uptime_secs: 1 }, 1001));
        store.keep(meter.observe(VM, Seen::StoppedUnseen, 1003));
        assert_eq!(store.seconds(), 1);
        // The same stop reported as it happened counts to that moment.
        let mut meter = Meter::default();
        let mut store = Store::default();
        store.keep(meter.observe(VM, Seen::Running { uptime_secs: 1 }, 1001));
        store.keep(meter.observe(VM, Seen::Stopped, 1003));
        assert_eq!(store.seconds(), 3);
    }

    #[test]
    fn a_run_counts_from_its_boot_through_a_hub_restart() {
        let mut store = Store::default();
        let mut meter = Meter::default();
        // Booted at 1000, first seen at 1003 (uptime 3), then every 10 s.
        store.keep(meter.observe(VM, Seen::Running { uptime_secs: 3 }, 1003));
        store.keep(meter.observe(VM, Seen::Running { uptime_secs: 13 }, 1013));
        // The hub is away for an hour; a new meter (a restarted hub) resumes the stored runs.
        let mut meter = Meter::resume(store.0.values().copied());
        store.keep(meter.observe(VM, Seen::Running { uptime_secs: 3613 }, 4613));
        assert_eq!(store.0.len(), 1, "the same run");
        store.keep(meter.observe(VM, Seen::Stopped, 4620));
        assert_eq!(store.seconds(), 3620);
    }

    #[test]
    fn a_stop_in_a_gap_ends_the_run_where_it_was_last_seen_and_a_new_boot_starts_exactly() {
        let mut store = Store::default();
        let mut meter = Meter::default();
        store.keep(meter.observe(VM, Seen::Running { uptime_secs: 0 }, 1000));
        store.keep(meter.observe(VM, Seen::Running { uptime_secs: 100 }, 1100));
        // Nothing heard until 5000, when it runs again since 4900: a new boot.
        store.keep(meter.observe(VM, Seen::Running { uptime_secs: 100 }, 5000));
        assert_eq!(store.0.len(), 2);
        assert_eq!(store.seconds(), 100 + 100);
        // Seen stopped long after it was last seen: the run ends where it was last seen.
        store.keep(meter.observe(VM, Seen::Stopped, 9000));
        assert_eq!(store.seconds(), 200);
        // A stop seen without a run is nothing.
        assert!(meter.observe(VM, Seen::Stopped, 9100).is_empty());
    }

    /// One step of a random life: the VM starts or stops, the hub or the agent goes away
    /// or comes back, or time passes.
    #[derive(Debug, Clone, Copy)]
    enum Step {
        Start,
        Stop,
        HubAway,
        HubBack,
        AgentAway,
        AgentBack,
        /// The hub restarts at once (no gap).
        HubRestart,
        Wait(u16),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            Just(Step::Start),
            Just(Step::Stop),
            Just(Step::HubAway),
            Just(Step::HubBack),
            Just(Step::AgentAway),
            Just(Step::AgentBack),
            Just(Step::HubRestart),
            (1u16..3600).prop_map(Step::Wait),
        ]
    }

    /// Runs a life against the meter with reports as the real system makes them: a change
    /// seen within a second, metrics every 10 s and a full inventory on every reconnect,
    /// while both the hub and the agent are up; a restarted hub resumes from the store.
    /// Returns (true running seconds, metered seconds, seconds whose stop fell in a gap).
    fn live(steps: &[Step]) -> (i64, i64, i64) {
        let mut now = 1_000_000i64;
        let (mut running_since, mut hub_up, mut agent_up) = (None::<i64>, true, true);
        let (mut truth, mut unknowable) = (0i64, 0i64);
        let mut last_report = now;
        let mut store = Store::default();
        let mut meter = Meter::default();
        // A change as it happens, or (`inventory`) a full inventory after a (re)connection.
        let report_as = |meter: &mut Meter,
                         store: &mut Store,
                         running: Option<i64>,
                         at: i64,
                         inventory: bool| {
            let seen = match running {
                Some(since) => Seen::Running {
                    uptime_secs: (at - since) as u64,
                },
                None if inventory => Seen::StoppedUnseen,
                None => Seen::Stopped,
            };
            store.keep(meter.observe(VM, seen, at));
        };
        let report = |meter: &mut Meter, store: &mut Store, running: Option<i64>, at: i64| {
            report_as(meter, store, running, at, false)
        };
        let reconnect = |meter: &mut Meter, store: &mut Store, running: Option<i64>, at: i64| {
            report_as(meter, store, running, at, true)
        };
        for step in steps {
            let connected = hub_up && agent_up;
            match *step {
                Step::Start if running_since.is_none() => {
                    running_since = Some(now);
                    if connected {
                        report(&mut meter, &mut store, running_since, now + 1);
                        last_report = now + 1;
                    }
                }
                Step::Stop => {
                    if let Some(since) = running_since.take() {
                        truth += now - since;
                        if connected {
                            report(&mut meter, &mut store, None, now + 1);
                        } else {
                            // The meter cannot know when in the gap it stopped.
                            unknowable += now - last_report.max(since);
                        }
                    }
                }
                Step::HubRestart => {
                    meter = Meter::resume(store.0.values().copied());
                    if connected {
                        reconnect(&mut meter, &mut store, running_since, now);
                        last_report = now;
                    }
                }
                Step::HubAway => hub_up = false,
                Step::AgentAway => agent_up = false,
                Step::HubBack | Step::AgentBack => {
                    if matches!(step, Step::HubBack) && !hub_up {
                        meter = Meter::resume(store.0.values().copied());
                    }
                    if matches!(step, Step::HubBack) {
                        hub_up = true;
                    } else {
                        agent_up = true;
                    }
                    if hub_up && agent_up && !connected {
                        reconnect(&mut meter, &mut store, running_since, now);
                        last_report = now;
                    }
                }
                Step::Wait(secs) => {
                    let until = now + i64::from(secs);
                    if connected && running_since.is_some() {
                        let mut tick = now + 10;
                        while tick <= until {
                            report(&mut meter, &mut store, running_since, tick);
                            last_report = tick;
                            tick += 10;
                        }
                    }
                    now = until;
                }
                Step::Start => {}
            }
        }
        // The end: the VM is stopped and everything is connected once more.
        if let Some(since) = running_since.take() {
            truth += now - since;
            if hub_up && agent_up {
                report(&mut meter, &mut store, None, now + 1);
            } else {
                unknowable += now - last_report.max(since);
                reconnect(&mut meter, &mut store, None, now + 100_000);
            }
        }
        (truth, store.seconds(), unknowable)
    }

    proptest! {
        /// Never more than the VM ran; less only by what fell into gaps with a stop in them,
        /// plus the second a report takes per run.
        #[test]
        fn the_meter_counts_what_ran_never_twice_and_loses_only_unknowable_time(
            steps in prop::collection::vec(step(), 1..60)
        ) {
            let (truth, metered, unknowable) = live(&steps);
            let starts = steps.iter().filter(|s| matches!(s, Step::Start)).count() as i64;
            prop_assert!(metered <= truth + starts, "metered {metered} > true {truth}");
            prop_assert!(
                metered >= truth - unknowable - 10 * starts,
                "metered {metered}, true {truth}, unknowable {unknowable}"
            );
        }

        /// Hub restarts, and gaps in which nothing stops, lose nothing and double nothing:
        /// exact to the second a report takes.
        #[test]
        fn restarts_and_gaps_without_a_stop_lose_nothing(
            steps in prop::collection::vec(
                prop_oneof![
                    Just(Step::Start),
                    Just(Step::Stop),
                    Just(Step::HubRestart),
                    (1u16..3600).prop_map(Step::Wait),
                ],
                1..60,
            )
        ) {
            let (truth, metered, unknowable) = live(&steps);
            prop_assert_eq!(unknowable, 0);
            let starts = steps.iter().filter(|s| matches!(s, Step::Start)).count() as i64;
            prop_assert!((truth - metered).abs() <= starts, "true {truth}, metered {metered}");
        }
    }
}
