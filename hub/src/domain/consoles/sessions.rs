//! The consoles open right now: who has which VM's console, since when, how many bytes went
//! each way, and a way to end any of them. The hub's limits on open consoles are kept here.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::kind::SessionKind;
use tokio::sync::{Notify, watch};

use crate::db::now_unix;
use crate::domain::viewer::Viewer;
use crate::vm_key::VmKey;

/// The limits of the `[consoles]` section of the hub config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsoleLimits {
    /// Consoles one user may have open at once.
    pub per_user: usize,
    /// Sessions (consoles, SSH, forwarded connections) one VM may have open at once.
    pub per_vm: usize,
    /// Consoles open at once on this hub.
    pub total: usize,
    /// A console through which nothing passed for this long is closed.
    pub idle: Duration,
}

impl Default for ConsoleLimits {
    fn default() -> Self {
        Self {
            per_user: 4,
            per_vm: 8,
            total: 200,
            idle: Duration::from_secs(30 * 60),
        }
    }
}

/// Why a console session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndReason {
    /// The browser closed it (or went away).
    BrowserClosed,
    /// The VM's side closed: the VM stopped or restarted its display.
    VmSideClosed,
    /// Someone ended it from the consoles page: who.
    EndedBy(String),
    /// The user may no longer use this VM (disabled, reassigned, class deleted).
    AccessLost,
    Idle,
    /// The link to the VM's node broke.
    NodeLost(String),
    HubStopping,
    /// The browser broke the protocol (an oversized frame, say).
    BadInput(String),
    /// The SSH session ended: the shell exited or the VM's SSH server closed it.
    ShellExited,
    /// The session could not start (an SSH login refused, say): the close code and why.
    Refused {
        code: u16,
        message: String,
    },
}

impl EndReason {
    /// The WebSocket close code the browser gets (4000–4999 are the application's own).
    pub fn close_code(&self) -> u16 {
        match self {
            EndReason::BrowserClosed => 1000,
            EndReason::VmSideClosed => 4010,
            EndReason::EndedBy(_) => 4011,
            EndReason::AccessLost => 4012,
            EndReason::Idle => 4013,
            EndReason::HubStopping => 4014,
            EndReason::NodeLost(_) => 4502,
            EndReason::BadInput(_) => 1009,
            EndReason::ShellExited => 4015,
            EndReason::Refused { code, .. } => *code,
        }
    }

    /// What the person at the console is told (a close reason: at most 123 bytes).
    pub fn message(&self) -> String {
        let text = match self {
            EndReason::BrowserClosed => "closed".to_owned(),
            EndReason::VmSideClosed => "the VM stopped or closed its console".to_owned(),
            EndReason::EndedBy(who) => format!("session ended by {who}"),
            EndReason::AccessLost => "you no longer have access to this VM".to_owned(),
            EndReason::Idle => "closed after a long time without activity".to_owned(),
            EndReason::NodeLost(_) => "the link to the VM's node was lost".to_owned(),
            EndReason::HubStopping => "the hub is restarting".to_owned(),
            EndReason::BadInput(what) => what.clone(),
            EndReason::ShellExited => "the SSH session ended".to_owned(),
            EndReason::Refused { message, .. } => message.clone(),
        };
        crate::text::truncate_bytes(&text, 123)
    }
}

/// One open console.
#[derive(Debug)]
pub struct ConsoleSession {
    pub id: u64,
    pub user_id: i64,
    pub username: String,
    pub vm: VmKey,
    pub kind: SessionKind,
    pub started_at: i64,
    /// Bytes from the browser to the VM, and back.
    pub bytes_to_vm: AtomicU64,
    pub bytes_from_vm: AtomicU64,
    /// Unix time of the last byte either way.
    last_activity: AtomicI64,
    end: watch::Sender<Option<EndReason>>,
}

impl ConsoleSession {
    /// Counts bytes that went to the VM.
    pub fn sent_to_vm(&self, bytes: usize) {
        self.bytes_to_vm.fetch_add(bytes as u64, Ordering::Relaxed);
        self.touch();
    }

    /// Counts bytes that came from the VM.
    pub fn received_from_vm(&self, bytes: usize) {
        self.bytes_from_vm
            .fetch_add(bytes as u64, Ordering::Relaxed);
        self.touch();
    }

    fn touch(&self) {
        self.last_activity.store(now_unix(), Ordering::Relaxed);
    }

    /// Seconds since the last byte either way.
    pub fn idle_secs(&self) -> u64 {
        (now_unix() - self.last_activity.load(Ordering::Relaxed)).max(0) as u64
    }

    /// Resolves when someone ends the session, with why.
    pub async fn ended(&self) -> EndReason {
        let mut end = self.end.subscribe();
        loop {
            if let Some(reason) = end.borrow_and_update().clone() {
                return reason;
            }
            if end.changed().await.is_err() {
                return EndReason::HubStopping;
            }
        }
    }

    /// Ends the session; the bridge closes it within a moment.
    pub fn end(&self, reason: EndReason) {
        self.end.send_if_modified(|current| {
            let first = current.is_none();
            if first {
                *current = Some(reason);
            }
            first
        });
    }
}

/// Why a console could not be opened now.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitReached {
    #[error("you have {0} consoles open already; close one first")]
    PerUser(usize),
    #[error("the hub has {0} consoles open, its limit; try again later")]
    Total(usize),
    #[error("this VM has {0} consoles and connections open, its limit; close one first")]
    PerVm(usize),
}

/// The open consoles of this hub.
#[derive(Debug, Default)]
pub struct ConsoleSessions {
    limits: ConsoleLimits,
    open: Arc<OpenSessions>,
    next_id: AtomicU64,
}

/// The sessions, and a signal for each that closes.
#[derive(Debug, Default)]
struct OpenSessions {
    by_id: Mutex<HashMap<u64, Arc<ConsoleSession>>>,
    closed: Notify,
}

/// An open session's place in the registry; dropping it removes the session.
#[derive(Debug)]
pub struct SessionSlot {
    pub session: Arc<ConsoleSession>,
    open: Arc<OpenSessions>,
}

impl Drop for SessionSlot {
    fn drop(&mut self) {
        self.open
            .by_id
            .lock()
            .expect("not poisoned")
            .remove(&self.session.id);
        self.open.closed.notify_waiters();
    }
}

impl ConsoleSessions {
    pub fn new(limits: ConsoleLimits) -> Self {
        Self {
            limits,
            ..Self::default()
        }
    }

    pub fn limits(&self) -> ConsoleLimits {
        self.limits
    }

    /// Registers a new session for `viewer`, within the limits.
    pub fn open(
        &self,
        viewer: &Viewer,
        vm: VmKey,
        kind: SessionKind,
    ) -> Result<SessionSlot, LimitReached> {
        let mut open = self.open.by_id.lock().expect("not poisoned");
        if open.len() >= self.limits.total {
            return Err(LimitReached::Total(open.len()));
        }
        let own = open.values().filter(|s| s.user_id == viewer.id).count();
        if own >= self.limits.per_user {
            return Err(LimitReached::PerUser(own));
        }
        let on_vm = open.values().filter(|s| s.vm == vm).count();
        if on_vm >= self.limits.per_vm {
            return Err(LimitReached::PerVm(on_vm));
        }
        let now = now_unix();
        let session = Arc::new(ConsoleSession {
            id: self.next_id.fetch_add(1, Ordering::Relaxed) + 1,
            user_id: viewer.id,
            username: viewer.username.clone(),
            vm,
            kind,
            started_at: now,
            bytes_to_vm: AtomicU64::new(0),
            bytes_from_vm: AtomicU64::new(0),
            last_activity: AtomicI64::new(now),
            end: watch::Sender::new(None),
        });
        open.insert(session.id, session.clone());
        Ok(SessionSlot {
            session,
            open: self.open.clone(),
        })
    }

    /// Every open session, oldest first.
    pub fn list(&self) -> Vec<Arc<ConsoleSession>> {
        let mut sessions: Vec<_> = self
            .open
            .by_id
            .lock()
            .expect("not poisoned")
            .values()
            .cloned()
            .collect();
        sessions.sort_by_key(|session| session.id);
        sessions
    }

    pub fn get(&self, id: u64) -> Option<Arc<ConsoleSession>> {
        self.open
            .by_id
            .lock()
            .expect("not poisoned")
            .get(&id)
            .cloned()
    }

    /// The VMs with a console open now.
    pub fn vms_in_use(&self) -> BTreeSet<VmKey> {
        self.list().iter().map(|session| session.vm).collect()
    }

    /// Resolves once no session is open.
    pub async fn all_closed(&self) {
        loop {
            let closed = self.open.closed.notified();
            if self.open.by_id.lock().expect("not poisoned").is_empty() {
                return;
            }
            closed.await;
        }
    }

    /// Ends every session (the hub is stopping).
    pub fn end_all(&self, reason: &EndReason) {
        for session in self.list() {
            session.end(reason.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vm(vmid: u32) -> VmKey {
        VmKey::new(1, vmid)
    }
    use crate::db::users::Role;

    fn viewer(id: i64) -> Viewer {
        Viewer {
            id,
            username: format!("user{id}"),
            role: Role::Student,
        }
    }

    #[test]
    fn limits_per_user_and_in_total_hold_and_slots_free_on_drop() {
        let sessions = ConsoleSessions::new(ConsoleLimits {
            per_user: 2,
            total: 4,
            per_vm: 2,
            ..ConsoleLimits::default()
        });
        let a1 = sessions
            .open(&viewer(1), vm(100), SessionKind::Vnc)
            .unwrap();
        let _a2 = sessions
            .open(&viewer(1), vm(101), SessionKind::Serial)
            .unwrap();
        assert_eq!(
            sessions
                .open(&viewer(1), vm(102), SessionKind::Vnc)
                .unwrap_err(),
            LimitReached::PerUser(2)
        );
        let _b1 = sessions
            .open(&viewer(2), vm(100), SessionKind::Ssh)
            .unwrap();
        assert_eq!(
            sessions
                .open(&viewer(3), vm(100), SessionKind::SshForward)
                .unwrap_err(),
            LimitReached::PerVm(2)
        );
        let _c1 = sessions
            .open(&viewer(3), vm(103), SessionKind::Vnc)
            .unwrap();
        assert_eq!(
            sessions
                .open(&viewer(4), vm(104), SessionKind::Vnc)
                .unwrap_err(),
            LimitReached::Total(4)
        );
        assert_eq!(
            sessions.vms_in_use(),
            BTreeSet::from([vm(100), vm(101), vm(103)])
        );
        drop(a1);
        assert!(sessions.open(&viewer(4), vm(104), SessionKind::Vnc).is_ok());
        assert!(
            sessions.vms_in_use().contains(&vm(100)),
            "bob's SSH is still open"
        );
    }

    #[tokio::test]
    async fn the_first_end_reason_wins() {
        let sessions = ConsoleSessions::default();
        let slot = sessions
            .open(&viewer(1), vm(100), SessionKind::Vnc)
            .unwrap();
        slot.session.end(EndReason::EndedBy("ada".into()));
        slot.session.end(EndReason::Idle);
        assert_eq!(slot.session.ended().await, EndReason::EndedBy("ada".into()));
        assert_eq!(EndReason::EndedBy("ada".into()).close_code(), 4011);
    }
}
