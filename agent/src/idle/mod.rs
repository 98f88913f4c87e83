//! Idle shutdown, enforced on the node: the hub gives the agent a policy per VM
//! ([`IdlePolicies`]), and the agent judges each VM every few seconds by what it sees itself
//! (power state, CPU use, the sessions it bridges), so the policies hold while the hub is
//! away. It warns first, then asks the guest to shut down, then (if allowed) powers it off,
//! and reports each step as an event; the shutdowns it did are kept on disk and reported
//! again after every reconnect until they are a week old.

pub mod clock;
pub mod guest_message;
pub mod sessions;
pub mod tracker;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use proxlab_protocol::Event;
use proxlab_protocol::idle::{
    IdleOutcome, IdlePolicies, IdlePolicy, IdleReason, IdleStop, VmIdlePolicy,
};
use proxlab_protocol::inventory::{PowerState, VmInfo};
use proxlab_protocol::vm_ops::PowerAction;
use tokio::task::JoinHandle;

use crate::collect::Collector;
use crate::pve::node::Node;
use crate::pve::ops;
use clock::IdleClock;
use sessions::Sessions;
use tracker::{Decision, Observation, Tracker};

/// How often every VM with a policy is judged.
pub const PASS_INTERVAL: Duration = Duration::from_secs(2);
/// Reported shutdowns are sent again after each reconnect for this long…
const STOPS_KEPT_SECS: u64 = 7 * 24 * 3600;
/// …and at most this many of them.
const STOPS_KEPT: usize = 200;

/// The policies, each VM's timers, and the shutdowns not yet forgotten.
#[derive(Debug, Default)]
struct State {
    policies: BTreeMap<u32, IdlePolicy>,
    trackers: HashMap<u32, Tracker>,
    stops: Vec<IdleStop>,
}

/// Where the policies and reported shutdowns are kept between agent runs.
#[derive(Debug, Clone)]
struct Files {
    policies: PathBuf,
    stops: PathBuf,
}

/// The node's idle-shutdown enforcer.
pub struct IdleEnforcer {
    clock: Arc<IdleClock>,
    sessions: Arc<Sessions>,
    node: Arc<Node>,
    collector: Arc<Collector>,
    files: Option<Files>,
    state: Mutex<State>,
}

impl IdleEnforcer {
    /// An enforcer that keeps its policies and reports in `state_dir` (and reads those an
    /// earlier run left there), or only in memory without one.
    pub fn new(
        node: Arc<Node>,
        collector: Arc<Collector>,
        clock: Arc<IdleClock>,
        state_dir: Option<&Path>,
    ) -> Self {
        let files = state_dir.map(|dir| Files {
            policies: dir.join("idle-policies.json"),
            stops: dir.join("idle-stops.json"),
        });
        let mut state = State::default();
        if let Some(files) = &files {
            if let Some(saved) = read_json::<IdlePolicies>(&files.policies) {
                state.policies = by_vmid(saved);
            }
            state.stops = read_json(&files.stops).unwrap_or_default();
        }
        Self {
            sessions: Arc::new(Sessions::new(clock.clone())),
            clock,
            node,
            collector,
            files,
            state: Mutex::new(state),
        }
    }

    /// The session registry the console and tunnel bridges report to.
    pub fn sessions(&self) -> &Arc<Sessions> {
        &self.sessions
    }

    /// Replaces every policy and keeps them on disk.
    pub fn set_policies(&self, policies: IdlePolicies) -> std::io::Result<()> {
        if let Some(files) = &self.files {
            write_json(&files.policies, &policies)?;
        }
        let mut state = self.state.lock().expect("not poisoned");
        state.policies = by_vmid(policies);
        let kept: Vec<u32> = state.policies.keys().copied().collect();
        state.trackers.retain(|vmid, _| kept.contains(vmid));
        Ok(())
    }

    /// "I'm still here" for `vmid`: restarts its timers. Says whether a warning was in force,
    /// and withdraws it.
    pub fn still_here(&self, vmid: u32) -> bool {
        let now = self.clock.now();
        let was_warned = self
            .state
            .lock()
            .expect("not poisoned")
            .trackers
            .entry(vmid)
            .or_default()
            .still_here(now);
        if was_warned {
            self.collector.report(Event::IdleCleared { vmid });
        }
        was_warned
    }

    /// What a new connection to the hub is told first: the warnings in force and the
    /// shutdowns of the last week.
    pub fn replay(&self) -> Vec<Event> {
        let now = self.clock.now();
        let state = self.state.lock().expect("not poisoned");
        let warnings = state.trackers.iter().filter_map(|(vmid, tracker)| {
            tracker
                .warning()
                .map(|(reason, stop_at)| Event::IdleWarning {
                    vmid: *vmid,
                    reason,
                    stop_at_unix: stop_at,
                    secs_left: secs_until(now, stop_at),
                })
        });
        let stops = state
            .stops
            .iter()
            .map(|stop| Event::IdleStopped { stop: stop.clone() });
        warnings.chain(stops).collect()
    }

    /// Judges every VM with a policy now.
    pub fn pass(self: &Arc<Self>) {
        self.clock.refresh();
        let now = self.clock.now();
        let mut shutdowns = Vec::new();
        let mut events = Vec::new();
        let mut guest_messages = Vec::new();
        {
            let mut guard = self.state.lock().expect("not poisoned");
            let State {
                policies, trackers, ..
            } = &mut *guard;
            for (vmid, policy) in policies.iter() {
                let seen = self.observe(*vmid);
                let tracker = trackers.entry(*vmid).or_default();
                match tracker.observe(now, policy, &seen) {
                    Decision::Nothing => {}
                    Decision::Warn { reason, stop_at } => {
                        tracing::info!(vmid, reason = reason.as_str(), stop_at, "idle: warning");
                        let secs_left = secs_until(now, stop_at);
                        events.push(Event::IdleWarning {
                            vmid: *vmid,
                            reason,
                            stop_at_unix: stop_at,
                            secs_left,
                        });
                        if policy.guest_message {
                            guest_messages.push((*vmid, reason, secs_left));
                        }
                    }
                    Decision::Clear => events.push(Event::IdleCleared { vmid: *vmid }),
                    Decision::ShutDown { reason, idle_secs } => {
                        shutdowns.push((*vmid, policy.clone(), reason, idle_secs));
                    }
                }
            }
        }
        for event in events {
            self.collector.report(event);
        }
        for (vmid, reason, secs_left) in guest_messages {
            let node = self.node.clone();
            tokio::spawn(async move {
                guest_message::tell(&node, vmid, reason, secs_left).await;
            });
        }
        for (vmid, policy, reason, idle_secs) in shutdowns {
            let enforcer = self.clone();
            tokio::spawn(async move {
                enforcer
                    .shut_down(vmid, &policy, reason, idle_secs, now)
                    .await;
            });
        }
    }

    /// Judges every VM every [`PASS_INTERVAL`], for as long as the agent runs.
    pub fn spawn(self: Arc<Self>) -> JoinHandle<()> {
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(PASS_INTERVAL);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                self.pass();
            }
        })
    }

    /// What the agent sees of a VM now.
    fn observe(&self, vmid: u32) -> Observation {
        let mut seen = self
            .collector
            .vm(vmid)
            .map(|vm| Observation {
                running: vm.status == PowerState::Running,
                cpu_percent: cpu_percent(&vm),
                ..Observation::default()
            })
            .unwrap_or_default();
        self.sessions.observe(vmid, &mut seen);
        seen
    }

    /// Asks the guest to shut down; powers it off if it ignores that and the policy allows.
    async fn shut_down(
        &self,
        vmid: u32,
        policy: &IdlePolicy,
        reason: IdleReason,
        idle_secs: u32,
        at_unix: u64,
    ) {
        tracing::info!(
            vmid,
            reason = reason.as_str(),
            idle_secs,
            "idle: shutting down"
        );
        let acpi = PowerAction::Shutdown {
            timeout_secs: policy.shutdown_timeout_secs,
            force_stop: false,
        };
        let outcome = match ops::power(&self.node, vmid, acpi).await {
            Ok(_) => IdleOutcome::ShutDown,
            Err(ignored) if policy.hard_stop => {
                tracing::info!(vmid, %ignored, "idle: the guest did not shut down; powering off");
                match ops::power(&self.node, vmid, PowerAction::Stop).await {
                    Ok(_) => IdleOutcome::PoweredOff,
                    Err(err) => IdleOutcome::Failed {
                        message: err.to_string(),
                    },
                }
            }
            Err(err) => IdleOutcome::Failed {
                message: err.to_string(),
            },
        };
        if let IdleOutcome::Failed { message } = &outcome {
            tracing::warn!(vmid, %message, "idle: the shutdown failed");
        }
        let stop = IdleStop {
            id: format!("{}-{vmid}-{at_unix}", self.node.name),
            vmid,
            reason,
            idle_secs,
            at_unix,
            outcome,
        };
        self.remember(stop.clone());
        self.collector.report(Event::IdleStopped { stop });
        let now = self.clock.now();
        if let Some(tracker) = self
            .state
            .lock()
            .expect("not poisoned")
            .trackers
            .get_mut(&vmid)
        {
            tracker.shutdown_ended(now);
        }
    }

    /// Keeps a shutdown to report again after reconnects, on disk when there is a state dir.
    fn remember(&self, stop: IdleStop) {
        let now = self.clock.now();
        let stops = {
            let mut state = self.state.lock().expect("not poisoned");
            state.stops.push(stop);
            state
                .stops
                .retain(|kept| kept.at_unix + STOPS_KEPT_SECS > now);
            let excess = state.stops.len().saturating_sub(STOPS_KEPT);
            state.stops.drain(..excess);
            state.stops.clone()
        };
        if let Some(files) = &self.files
            && let Err(err) = write_json(&files.stops, &stops)
        {
            tracing::warn!(%err, "idle: cannot keep the shutdown report on disk");
        }
    }
}

/// Seconds from `now` to `then` (zero once it has passed).
fn secs_until(now: u64, then: u64) -> u32 {
    u32::try_from(then.saturating_sub(now)).unwrap_or(u32::MAX)
}

/// A VM's CPU use as a share of its own vCPUs, in percent.
fn cpu_percent(vm: &VmInfo) -> f64 {
    let vcpus = (vm.cores * vm.sockets.max(1)).max(1);
    vm.cpu * 100.0 / f64::from(vcpus)
}

fn by_vmid(policies: IdlePolicies) -> BTreeMap<u32, IdlePolicy> {
    policies
        .vms
        .into_iter()
        .map(|VmIdlePolicy { vmid, policy }| (vmid, policy))
        .collect()
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Option<T> {
    let text = std::fs::read_to_string(path).ok()?;
    match serde_json::from_str(&text) {
        Ok(value) => Some(value),
        Err(err) => {
            tracing::warn!(path = %path.display(), %err, "idle: ignoring an unreadable file");
            None
        }
    }
}

/// Replaces `path` atomically.
fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> std::io::Result<()> {
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec(value)?)?;
    std::fs::rename(&tmp, path)
}
