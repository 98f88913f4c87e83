//! Who is connected to each VM: every console, terminal and tunnel the agent bridges holds a
//! [`Session`] for as long as it is open, and marks when its user last sent something.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::clock::IdleClock;
use super::tracker::Observation;

/// The sessions of one VM.
#[derive(Debug, Clone, Copy, Default)]
struct VmSessions {
    open: u32,
    last_opened: Option<u64>,
    last_closed: Option<u64>,
    last_input: Option<u64>,
}

/// The sessions of every VM of the node.
#[derive(Debug, Default)]
pub struct Sessions {
    clock: Arc<IdleClock>,
    vms: Mutex<HashMap<u32, VmSessions>>,
}

impl Sessions {
    pub fn new(clock: Arc<IdleClock>) -> Self {
        Self {
            clock,
            vms: Mutex::default(),
        }
    }

    /// Records a session opened to `vmid`; it counts as open until the guard is dropped.
    pub fn open(self: &Arc<Self>, vmid: u32) -> Session {
        let now = self.clock.now();
        self.update(vmid, |vm| {
            vm.open += 1;
            vm.last_opened = Some(now);
            vm.last_input = Some(now);
        });
        Session {
            sessions: self.clone(),
            vmid,
        }
    }

    /// Fills in the session part of an observation of `vmid`.
    pub fn observe(&self, vmid: u32, seen: &mut Observation) {
        let vm = self
            .vms
            .lock()
            .expect("not poisoned")
            .get(&vmid)
            .copied()
            .unwrap_or_default();
        seen.open_sessions = vm.open;
        seen.last_opened = vm.last_opened;
        seen.last_closed = vm.last_closed;
        seen.last_input = vm.last_input;
    }

    fn update(&self, vmid: u32, change: impl FnOnce(&mut VmSessions)) {
        change(
            self.vms
                .lock()
                .expect("not poisoned")
                .entry(vmid)
                .or_default(),
        );
    }
}

/// One open session.
#[derive(Debug)]
pub struct Session {
    sessions: Arc<Sessions>,
    vmid: u32,
}

impl Session {
    /// The user sent something (a key, a click, bytes of a tunnel).
    pub fn input(&self) {
        let now = self.sessions.clock.now();
        self.sessions
            .update(self.vmid, |vm| vm.last_input = Some(now));
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let now = self.sessions.clock.now();
        self.sessions.update(self.vmid, |vm| {
            vm.open = vm.open.saturating_sub(1);
            vm.last_closed = Some(now);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_counts_while_open_and_marks_its_times() {
        let clock = Arc::new(IdleClock::default());
        let sessions = Arc::new(Sessions::new(clock.clone()));
        let mut seen = Observation::default();
        let first = sessions.open(7);
        let second = sessions.open(7);
        sessions.observe(7, &mut seen);
        assert_eq!(seen.open_sessions, 2);
        assert!(seen.last_opened.is_some() && seen.last_closed.is_none());
        clock.set_skew(600);
        first.input();
        drop(first);
        sessions.observe(7, &mut seen);
        assert_eq!(seen.open_sessions, 1);
        assert_eq!(seen.last_input, Some(clock.now()));
        assert_eq!(seen.last_closed, Some(clock.now()));
        drop(second);
        sessions.observe(7, &mut seen);
        assert_eq!(seen.open_sessions, 0);
        sessions.observe(8, &mut seen);
        assert_eq!(seen.last_opened, None, "another VM has none");
    }
}
