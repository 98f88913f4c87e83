//! Ends running time when a student's hours are used up: a warning first (at the hub's
//! `[schedules] warn_before`), then a shutdown (a power-off if the guest ignores it), as one
//! class task per class and pass under the actor `quota`, and the VM's tile says why.
//!
//! The shutdowns run beside the checks: a guest that takes minutes to shut down holds up
//! neither the next check nor the other classes, and a VM whose shutdown is under way is not
//! asked again.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{duration_text, left_of, schedule_time_is_free, used_secs};
use crate::HubState;
use crate::db::DbError;
use crate::db::inventory::VmFilter;
use crate::db::now_unix;
use crate::domain::classes::tasks;
use crate::domain::notices::Notice;
use crate::vm_key::VmKey;

/// The actor quota shutdowns are recorded under.
pub const ACTOR: &str = "quota";

/// How often running VMs are checked against their users' hours.
pub const CHECK_EVERY: Duration = Duration::from_secs(15);

/// What a pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Pass {
    pub warned: Vec<VmKey>,
    /// The VMs whose shutdown it began.
    pub stopping: Vec<VmKey>,
}

/// The VMs whose quota shutdown is under way.
#[derive(Debug, Default)]
pub struct Stopping(Mutex<HashSet<VmKey>>);

impl Stopping {
    /// Marks a VM's shutdown as begun; `false` if it already was.
    fn begin(&self, vmid: VmKey) -> bool {
        self.0.lock().expect("not poisoned").insert(vmid)
    }

    fn end(&self, vmids: &[VmKey]) {
        let mut stopping = self.0.lock().expect("not poisoned");
        for vmid in vmids {
            stopping.remove(vmid);
        }
    }
}

/// Checks every running student VM of every class with a quota at `now` (Unix seconds),
/// and begins the shutdowns due.
pub async fn run_due(state: &Arc<HubState>, now: i64) -> Result<Pass, DbError> {
    let mut pass = Pass::default();
    let lead = i64::try_from(state.config.schedules.warn_before.as_secs()).unwrap_or(600);
    for quota in state.db.all_quotas().await? {
        let filter = VmFilter {
            class_id: Some(quota.class_id),
            status: Some("running".into()),
            ..VmFilter::default()
        };
        let running = state.db.find_vms(&filter).await?;
        if running.is_empty() || schedule_time_is_free(state, &quota, now).await? {
            continue;
        }
        let used = used_secs(state, &quota, now).await?;
        let added = state.db.quota_extras(quota.class_id).await?;
        let mut out_of_hours = Vec::new();
        for (vmid, user_id) in state.db.class_assignees(quota.class_id).await? {
            if !running.iter().any(|vm| vm.key == vmid) {
                continue;
            }
            let left = left_of(&quota, &used, &added, user_id);
            let key = notice_key(vmid);
            if left.left_secs <= 0 {
                state.notices.withdraw(&key);
                if state.quota_stopping.begin(vmid) {
                    let reason = format!(
                        "Stopped: the {} h quota was used up",
                        left.total_secs / 3600
                    );
                    out_of_hours.push((vmid, reason));
                }
            } else if left.left_secs <= lead {
                state.notices.publish(
                    Notice {
                        key,
                        user_ids: vec![user_id],
                        class_id: quota.class_id,
                        vmids: vec![vmid],
                        message: format!(
                            "Your hours for this class run out in {}: the VM shuts down then. \
                             Save your work; your teacher can add hours.",
                            duration_text(left.left_secs.max(60))
                        ),
                        at: now + left.left_secs,
                        still_here: None,
                        withdrawn: false,
                    },
                    now,
                );
                pass.warned.push(vmid);
            }
        }
        if !out_of_hours.is_empty() {
            pass.stopping
                .extend(out_of_hours.iter().map(|(vmid, _)| *vmid));
            tokio::spawn(shut_down(state.clone(), quota.class_id, out_of_hours, now));
        }
    }
    Ok(pass)
}

/// Shuts a class's VMs down as one task, each tile saying why.
async fn shut_down(state: Arc<HubState>, class_id: i64, stops: Vec<(VmKey, String)>, now: i64) {
    match tasks::stop_with_reasons(&state, class_id, &stops, ACTOR, now).await {
        Ok(task) => tracing::info!(class_id, task, vms = stops.len(), "quota: shut down"),
        Err(err) => tracing::warn!(%err, class_id, "quota: cannot shut the VMs down"),
    }
    let vmids: Vec<VmKey> = stops.iter().map(|(vmid, _)| *vmid).collect();
    state.quota_stopping.end(&vmids);
}

/// The key of a VM's quota warning among the notices.
pub fn notice_key(vm: VmKey) -> String {
    format!("quota:{vm}")
}

/// Checks every [`CHECK_EVERY`] for as long as the hub runs.
pub async fn run(state: Arc<HubState>) {
    let mut ticker = tokio::time::interval(CHECK_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        if let Err(err) = run_due(&state, now_unix()).await {
            tracing::error!(%err, "quota: a check failed");
        }
    }
}
