//! Notices for the people a coming automatic action affects ("this VM stops at 10:00"):
//! sent on the live-update stream as they are made, and kept until their time has passed so
//! a page opened meanwhile shows them too.

use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio::sync::broadcast;

/// What a notice says, to whom.
#[derive(Debug, Clone, Serialize)]
pub struct Notice {
    #[serde(skip)]
    pub user_ids: Vec<i64>,
    pub class_id: i64,
    /// The VMs it is about.
    pub vmids: Vec<u32>,
    pub message: String,
    /// Unix seconds: when what it announces happens (and the notice ends).
    pub at: i64,
}

/// The notices in force, and their announcements.
pub struct Notices {
    sender: broadcast::Sender<Arc<Notice>>,
    active: Mutex<Vec<Arc<Notice>>>,
}

impl Default for Notices {
    fn default() -> Self {
        Self {
            sender: broadcast::channel(64).0,
            active: Mutex::new(Vec::new()),
        }
    }
}

impl Notices {
    /// Announces a notice and keeps it until its time.
    pub fn publish(&self, notice: Notice, now: i64) {
        let notice = Arc::new(notice);
        {
            let mut active = self.active.lock().expect("not poisoned");
            active.retain(|kept| kept.at > now);
            active.push(notice.clone());
        }
        let _ = self.sender.send(notice);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Notice>> {
        self.sender.subscribe()
    }

    /// The notices in force for a user.
    pub fn for_user(&self, user_id: i64, now: i64) -> Vec<Arc<Notice>> {
        self.active
            .lock()
            .expect("not poisoned")
            .iter()
            .filter(|notice| notice.at > now && notice.user_ids.contains(&user_id))
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_notice_reaches_its_users_until_its_time() {
        let notices = Notices::default();
        let mut stream = notices.subscribe();
        let notice = Notice {
            user_ids: vec![7],
            class_id: 1,
            vmids: vec![10002],
            message: "stops at 10:00".into(),
            at: 1_000,
        };
        notices.publish(notice, 400);
        assert_eq!(stream.try_recv().unwrap().vmids, [10002]);
        assert_eq!(notices.for_user(7, 999).len(), 1);
        assert!(notices.for_user(8, 999).is_empty(), "only its users");
        assert!(notices.for_user(7, 1_000).is_empty(), "over at its time");
    }
}
