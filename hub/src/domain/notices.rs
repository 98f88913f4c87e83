//! Notices for the people a coming automatic action affects ("this VM stops at 10:00"):
//! sent on the live-update stream as they are made, and kept until their time has passed so
//! a page opened meanwhile shows them too. A notice has a key: a newer notice with the same
//! key replaces it, and a withdrawal (someone came back to an idle VM) takes it down.

use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio::sync::broadcast;

/// What a notice says, to whom.
#[derive(Debug, Clone, Serialize)]
pub struct Notice {
    /// What it is about: `schedule:<class>:<time>`, `idle:<cluster>-<vmid>`.
    pub key: String,
    #[serde(skip)]
    pub user_ids: Vec<i64>,
    pub class_id: i64,
    /// The VMs it is about (`CLUSTER-VMID`, as in URLs).
    pub vmids: Vec<crate::vm_key::VmKey>,
    pub message: String,
    /// Unix seconds: when what it announces happens (and the notice ends).
    pub at: i64,
    /// The VM whose idle timers an "I'm still here" button restarts, on notices that have one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub still_here: Option<crate::vm_key::VmKey>,
    /// Set on the announcement that takes the notice of this key down.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub withdrawn: bool,
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
    /// Announces a notice and keeps it until its time, in place of one with the same key.
    /// One that says what the notice in force says already (a check repeated every few
    /// seconds) only moves its time, without a new announcement.
    pub fn publish(&self, notice: Notice, now: i64) {
        let notice = Arc::new(notice);
        let news = {
            let mut active = self.active.lock().expect("not poisoned");
            let news = !active
                .iter()
                .any(|kept| kept.at > now && same_news(kept, &notice));
            active.retain(|kept| kept.at > now && kept.key != notice.key);
            active.push(notice.clone());
            news
        };
        if news {
            let _ = self.sender.send(notice);
        }
    }

    /// Takes down the notice with this key, if one is in force, and tells its users.
    pub fn withdraw(&self, key: &str) {
        let withdrawn = {
            let mut active = self.active.lock().expect("not poisoned");
            let position = active.iter().position(|kept| kept.key == key);
            position.map(|index| active.remove(index))
        };
        if let Some(notice) = withdrawn {
            let _ = self.sender.send(Arc::new(Notice {
                withdrawn: true,
                ..(*notice).clone()
            }));
        }
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

/// Whether two notices tell the same people the same thing (their times may differ by the
/// seconds between two checks).
fn same_news(kept: &Notice, new: &Notice) -> bool {
    kept.key == new.key
        && kept.message == new.message
        && kept.user_ids == new.user_ids
        && kept.vmids == new.vmids
        && kept.still_here == new.still_here
        && (kept.at - new.at).abs() < 60
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notice(key: &str, at: i64) -> Notice {
        Notice {
            key: key.into(),
            user_ids: vec![7],
            class_id: 1,
            vmids: vec![crate::vm_key::VmKey::new(1, 10002)],
            message: "stops at 10:00".into(),
            at,
            still_here: None,
            withdrawn: false,
        }
    }

    #[test]
    fn a_notice_reaches_its_users_until_its_time() {
        let notices = Notices::default();
        let mut stream = notices.subscribe();
        notices.publish(notice("schedule:1:1000", 1_000), 400);
        assert_eq!(
            stream.try_recv().unwrap().vmids,
            [crate::vm_key::VmKey::new(1, 10002)]
        );
        assert_eq!(notices.for_user(7, 999).len(), 1);
        assert!(notices.for_user(8, 999).is_empty(), "only its users");
        assert!(notices.for_user(7, 1_000).is_empty(), "over at its time");
    }

    #[test]
    fn a_newer_notice_replaces_its_key_and_a_withdrawal_takes_it_down() {
        let notices = Notices::default();
        notices.publish(notice("idle:10002", 1_000), 400);
        notices.publish(notice("idle:10002", 1_300), 500);
        let kept = notices.for_user(7, 600);
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].at, 1_300);
        let mut stream = notices.subscribe();
        notices.withdraw("idle:10002");
        let told = stream.try_recv().unwrap();
        assert!(told.withdrawn && told.key == "idle:10002");
        assert!(notices.for_user(7, 600).is_empty());
        notices.withdraw("idle:10002");
        assert!(stream.try_recv().is_err(), "nothing to withdraw twice");
    }

    #[test]
    fn the_same_notice_again_is_not_announced_again() {
        let notices = Notices::default();
        let mut stream = notices.subscribe();
        notices.publish(notice("quota:10002", 1_000), 400);
        notices.publish(notice("quota:10002", 1_002), 415);
        assert_eq!(stream.try_recv().unwrap().at, 1_000);
        assert!(stream.try_recv().is_err(), "unchanged: not announced");
        assert_eq!(notices.for_user(7, 500)[0].at, 1_002, "its time moved");
        let changed = Notice {
            message: "stops at 10:05".into(),
            ..notice("quota:10002", 1_300)
        };
        notices.publish(changed, 430);
        assert_eq!(stream.try_recv().unwrap().message, "stops at 10:05");
        // After a withdrawal the same words are news again.
        notices.withdraw("quota:10002");
        assert!(stream.try_recv().unwrap().withdrawn);
        notices.publish(notice("quota:10002", 1_300), 440);
        assert!(!stream.try_recv().unwrap().withdrawn);
    }
}
