//! Ends running time when a student's hours are used up: a warning first (at the hub's
//! `[schedules] warn_before`), then a shutdown by the same path a teacher's takes, recorded
//! under the actor `quota`, and the VM's tile says why.

use std::sync::Arc;
use std::time::Duration;

use super::{duration_text, left_of, schedule_time_is_free, used_secs};
use crate::HubState;
use crate::db::DbError;
use crate::db::inventory::VmFilter;
use crate::db::now_unix;
use crate::domain::access::VmAction;
use crate::domain::audit::Actor;
use crate::domain::notices::Notice;
use crate::domain::vms::power_vm;

/// The actor quota shutdowns are recorded under.
pub const ACTOR: &str = "quota";

/// How often running VMs are checked against their users' hours.
pub const CHECK_EVERY: Duration = Duration::from_secs(15);

/// What a pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Pass {
    pub warned: Vec<u32>,
    pub stopped: Vec<u32>,
}

/// Checks every running student VM of every class with a quota at `now` (Unix seconds).
pub async fn run_due(state: &HubState, now: i64) -> Result<Pass, DbError> {
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
        for (vmid, user_id) in state.db.class_assignees(quota.class_id).await? {
            let Some(vm) = running.iter().find(|vm| vm.vmid == vmid) else {
                continue;
            };
            let left = left_of(&quota, &used, &added, user_id);
            let key = notice_key(vmid);
            if left.left_secs <= 0 {
                state.notices.withdraw(&key);
                let reason = format!(
                    "Stopped: the {} h quota was used up",
                    left.total_secs / 3600
                );
                match power_vm(state, Actor::Automatic(ACTOR), vm, VmAction::Shutdown, None).await {
                    Ok(_) => {
                        state.db.set_stop_reason(vmid, &reason, now).await?;
                        pass.stopped.push(vmid);
                    }
                    Err(err) => tracing::warn!(%err, vmid, "quota: cannot shut the VM down"),
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
    }
    Ok(pass)
}

/// The key of a VM's quota warning among the notices.
pub fn notice_key(vmid: u32) -> String {
    format!("quota:{vmid}")
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
