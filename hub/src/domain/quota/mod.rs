//! Quota hours: each student of a class may run their VM for so many hours (outside the
//! class schedule's windows, as Azure Lab Services counts, unless the class says scheduled
//! time counts too), plus what their teacher adds. Time is metered from what agents report
//! ([`meter`], [`metering`]); [`enforcer`] warns and shuts a VM down when its student's hours
//! are used up, and a student's start is refused at zero.

pub mod enforcer;
pub mod meter;
pub mod metering;

use std::collections::HashMap;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::HubState;
use crate::db::inventory::VmRow;
use crate::db::now_unix;
use crate::db::quota::{QuotaRow, RunRow};
use crate::domain::audit::{self, Outcome};
use crate::domain::classes::{ClassError, check_class_change, owned_class};
use crate::domain::schedules::rule_of;
use crate::domain::viewer::Viewer;

/// The most hours a quota or an addition may have.
pub const MAX_HOURS: u32 = 10_000;

/// A class's quota as teachers set it (the API's body, the page's form). `hours: null`
/// removes the quota.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaSettings {
    /// Required, `null` included: a body that leaves it out is a mistake, not a removal.
    #[serde(deserialize_with = "Option::deserialize")]
    pub hours: Option<u32>,
    /// Whether time inside the class schedule's windows counts too.
    #[serde(default)]
    pub count_scheduled: bool,
}

impl QuotaSettings {
    pub fn validate(&self) -> Result<(), String> {
        match self.hours {
            Some(hours) if hours == 0 || hours > MAX_HOURS => Err(format!(
                "a quota is 1 to {MAX_HOURS} hours (leave it empty for none)"
            )),
            _ => Ok(()),
        }
    }

    fn of(row: Option<&QuotaRow>) -> Self {
        Self {
            hours: row.and_then(|row| u32::try_from(row.hours).ok()),
            count_scheduled: row.is_some_and(|row| row.count_scheduled),
        }
    }
}

/// Hours to add: to one student, or to every student of the class.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddHours {
    pub hours: u32,
    #[serde(default)]
    pub username: Option<String>,
}

/// One student's hours.
#[derive(Debug, Clone, Serialize)]
pub struct StudentHours {
    pub username: String,
    /// Running time counted, in hours (two decimals).
    pub used_hours: f64,
    /// The quota plus what was added.
    pub total_hours: i64,
    pub added_hours: i64,
    pub left_hours: f64,
}

/// A class's quota and its students' hours, for its page and the API.
#[derive(Debug, Clone, Serialize)]
pub struct ClassQuota {
    pub settings: QuotaSettings,
    pub students: Vec<StudentHours>,
}

/// What a VM's user has left of their hours (for the VM's tile).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct HoursLeft {
    pub left_secs: i64,
    pub total_secs: i64,
}

impl HoursLeft {
    /// "3 h 20 min", "45 min", "none".
    pub fn left_text(&self) -> String {
        duration_text(self.left_secs)
    }
}

/// A duration in words, to the minute.
pub fn duration_text(secs: i64) -> String {
    if secs <= 0 {
        return "none".into();
    }
    let minutes = secs / 60;
    match (minutes / 60, minutes % 60) {
        (0, minutes) => format!("{minutes} min"),
        (hours, 0) => format!("{hours} h"),
        (hours, minutes) => format!("{hours} h {minutes} min"),
    }
}

/// A class's quota and hours per student.
pub async fn class_quota(
    state: &HubState,
    viewer: &Viewer,
    class_id: i64,
) -> Result<ClassQuota, ClassError> {
    owned_class(state, viewer, class_id).await?;
    let quota = state.db.class_quota(class_id).await?;
    let settings = QuotaSettings::of(quota.as_ref());
    let mut students = Vec::new();
    if let Some(quota) = &quota {
        let used = used_secs(state, quota, now_unix()).await?;
        let extras = state.db.quota_extras(class_id).await?;
        for (user_id, username, _) in state.db.roster(class_id).await? {
            let added = extras.get(&user_id).copied().unwrap_or(0);
            let total = quota.hours + added;
            let used = used.get(&user_id).copied().unwrap_or(0);
            students.push(StudentHours {
                username,
                used_hours: hours(used),
                total_hours: total,
                added_hours: added,
                left_hours: hours(total * 3600 - used).max(0.0),
            });
        }
    }
    Ok(ClassQuota { settings, students })
}

/// Sets (or removes) a class's quota.
pub async fn set_class_quota(
    state: &HubState,
    viewer: &Viewer,
    class_id: i64,
    settings: &QuotaSettings,
) -> Result<ClassQuota, ClassError> {
    let target = check_class_change(
        state,
        viewer,
        class_id,
        "class.quota.set",
        settings.validate(),
    )
    .await?;
    let row = settings.hours.map(|hours| QuotaRow {
        class_id,
        hours: i64::from(hours),
        count_scheduled: settings.count_scheduled,
        updated_by: viewer.username.clone(),
        updated_at: now_unix(),
    });
    state.db.set_class_quota(class_id, row.as_ref()).await?;
    let detail = match settings.hours {
        Some(hours) if settings.count_scheduled => format!("{hours} h, scheduled time counts"),
        Some(hours) => format!("{hours} h outside the schedule"),
        None => "no quota".into(),
    };
    audit::record(
        &state.db,
        viewer,
        "class.quota.set",
        &target,
        Outcome::Ok,
        &detail,
    )
    .await;
    state.jobs.announce(class_id);
    class_quota(state, viewer, class_id).await
}

/// Adds hours to one student of the class, or to every student.
pub async fn add_hours(
    state: &HubState,
    viewer: &Viewer,
    class_id: i64,
    add: &AddHours,
) -> Result<ClassQuota, ClassError> {
    owned_class(state, viewer, class_id).await?;
    if add.hours == 0 || add.hours > MAX_HOURS {
        return Err(ClassError::Invalid(format!("add 1 to {MAX_HOURS} hours")));
    }
    if state.db.class_quota(class_id).await?.is_none() {
        return Err(ClassError::Conflict(
            "the class has no quota: set one first".into(),
        ));
    }
    let roster = state.db.roster(class_id).await?;
    let user_ids: Vec<i64> = match &add.username {
        Some(name) => {
            let found = roster.iter().find(|(_, username, _)| username == name);
            let Some((user_id, _, _)) = found else {
                return Err(ClassError::Invalid(format!(
                    "{name} is not a student of this class"
                )));
            };
            vec![*user_id]
        }
        None => roster.iter().map(|(user_id, _, _)| *user_id).collect(),
    };
    state
        .db
        .add_quota_hours(
            class_id,
            &user_ids,
            i64::from(add.hours),
            &viewer.username,
            now_unix(),
        )
        .await?;
    let whom = add
        .username
        .clone()
        .unwrap_or_else(|| format!("all {} students", user_ids.len()));
    audit::record(
        &state.db,
        viewer,
        "class.quota.add",
        &format!("class:{class_id}"),
        Outcome::Ok,
        &format!("{} h to {whom}", add.hours),
    )
    .await;
    state.jobs.announce(class_id);
    class_quota(state, viewer, class_id).await
}

/// What the user of a class VM has left, if the class has a quota and the VM a user (and
/// the class schedule does not give free time now).
pub async fn hours_left(
    state: &HubState,
    class_id: Option<i64>,
    vm: crate::vm_key::VmKey,
) -> Result<Option<HoursLeft>, crate::db::DbError> {
    let Some(class_id) = class_id else {
        return Ok(None);
    };
    let Some(quota) = state.db.class_quota(class_id).await? else {
        return Ok(None);
    };
    if schedule_time_is_free(state, &quota, now_unix()).await? {
        return Ok(None);
    }
    let Some(user_id) = state.db.vm_user(vm).await? else {
        return Ok(None);
    };
    let used = used_secs(state, &quota, now_unix()).await?;
    let added = state.db.quota_extras(class_id).await?;
    Ok(Some(left_of(&quota, &used, &added, user_id)))
}

/// A user's hours left, from a class's usage and additions.
fn left_of(
    quota: &QuotaRow,
    used: &HashMap<i64, i64>,
    added: &HashMap<i64, i64>,
    user_id: i64,
) -> HoursLeft {
    let total_secs = (quota.hours + added.get(&user_id).copied().unwrap_or(0)) * 3600;
    HoursLeft {
        left_secs: total_secs - used.get(&user_id).copied().unwrap_or(0),
        total_secs,
    }
}

/// Refuses a student's start of a class VM whose hours are used up.
pub async fn check_start(state: &HubState, viewer: &Viewer, vm: &VmRow) -> Result<(), String> {
    if viewer.is_staff() {
        return Ok(());
    }
    match hours_left(state, vm.class_id, vm.key).await {
        Ok(Some(left)) if left.left_secs <= 0 => Err(format!(
            "your {} h of this class are used up; your teacher can add hours",
            left.total_secs / 3600
        )),
        Ok(_) => Ok(()),
        Err(err) => {
            tracing::warn!(%err, vmid = vm.vmid, "quota: cannot check; allowing the start");
            Ok(())
        }
    }
}

/// Whether `now` is inside one of the class schedule's windows, when that time does not count
/// (then nothing is refused or stopped for the quota).
pub async fn schedule_time_is_free(
    state: &HubState,
    quota: &QuotaRow,
    now: i64,
) -> Result<bool, crate::db::DbError> {
    if quota.count_scheduled {
        return Ok(false);
    }
    let (Ok(from), Ok(to)) = (Timestamp::from_second(now), Timestamp::from_second(now + 1)) else {
        return Ok(false);
    };
    Ok(state
        .db
        .class_schedules(quota.class_id)
        .await?
        .iter()
        .filter_map(|row| rule_of(row).ok())
        .any(|rule| !rule.windows(from, to).is_empty()))
}

/// Running seconds counted per user of a class at `now`.
pub async fn used_secs(
    state: &HubState,
    quota: &QuotaRow,
    now: i64,
) -> Result<HashMap<i64, i64>, crate::db::DbError> {
    let runs = state.db.class_runs(quota.class_id).await?;
    let windows = if quota.count_scheduled {
        Vec::new()
    } else {
        scheduled_windows(state, quota.class_id, &runs, now).await?
    };
    Ok(count(&runs, &windows))
}

/// The class schedule's windows over the time its runs cover.
async fn scheduled_windows(
    state: &HubState,
    class_id: i64,
    runs: &[RunRow],
    now: i64,
) -> Result<Vec<(i64, i64)>, crate::db::DbError> {
    let Some(first) = runs.iter().map(|row| row.run.boot_at).min() else {
        return Ok(Vec::new());
    };
    let (Ok(from), Ok(to)) = (Timestamp::from_second(first), Timestamp::from_second(now)) else {
        return Ok(Vec::new());
    };
    let mut windows: Vec<(i64, i64)> = state
        .db
        .class_schedules(class_id)
        .await?
        .iter()
        .filter_map(|row| rule_of(row).ok())
        .flat_map(|rule| rule.windows(from, to))
        .map(|(start, stop)| (start.as_second(), stop.as_second()))
        .collect();
    windows.sort_unstable();
    Ok(windows)
}

/// Seconds per user: each run's time, less what falls inside the windows (sorted; they may
/// overlap).
fn count(runs: &[RunRow], windows: &[(i64, i64)]) -> HashMap<i64, i64> {
    let mut used = HashMap::new();
    for row in runs {
        let Some(user_id) = row.user_id else { continue };
        let (start, end) = (row.run.boot_at, row.run.boot_at + row.run.seconds());
        let mut covered = 0;
        let mut cursor = start;
        for &(from, to) in windows {
            let (from, to) = (from.max(cursor), to.min(end));
            if from < to {
                covered += to - from;
                cursor = to;
            }
        }
        *used.entry(user_id).or_insert(0) += end - start - covered;
    }
    used
}

fn hours(secs: i64) -> f64 {
    (secs as f64 / 36.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::meter::Run;
    use super::*;

    fn run(user_id: i64, boot_at: i64, ended_at: i64) -> RunRow {
        RunRow {
            run: Run {
                vm: crate::vm_key::VmKey::new(1, 100),
                boot_at,
                last_seen: ended_at,
                ended_at: Some(ended_at),
            },
            class_id: Some(1),
            user_id: Some(user_id),
        }
    }

    #[test]
    fn scheduled_windows_do_not_count_and_overlapping_windows_count_once() {
        let runs = [run(7, 0, 10_000), run(7, 20_000, 21_000), run(8, 0, 100)];
        let windows = [(1_000, 3_000), (2_000, 4_000), (20_500, 30_000)];
        let used = count(&runs, &windows);
        assert_eq!(used[&7], 10_000 - 3_000 + 500);
        assert_eq!(used[&8], 100);
        assert_eq!(count(&runs, &[])[&7], 11_000);
    }

    #[test]
    fn durations_read_as_people_say_them() {
        assert_eq!(duration_text(0), "none");
        assert_eq!(duration_text(45 * 60 + 30), "45 min");
        assert_eq!(duration_text(3 * 3600), "3 h");
        assert_eq!(duration_text(3 * 3600 + 20 * 60), "3 h 20 min");
    }

    #[test]
    fn settings_are_checked() {
        let ok = QuotaSettings {
            hours: Some(10),
            count_scheduled: false,
        };
        assert!(ok.validate().is_ok());
        for hours in [0, MAX_HOURS + 1] {
            let bad = QuotaSettings {
                hours: Some(hours),
                count_scheduled: false,
            };
            assert!(bad.validate().is_err());
        }
        assert!(serde_json::from_str::<QuotaSettings>(r#"{"hours": 5, "extra": 1}"#).is_err());
        assert!(serde_json::from_str::<QuotaSettings>(r#"{"count_scheduled": true}"#).is_err());
        let removal: QuotaSettings = serde_json::from_str(r#"{"hours": null}"#).unwrap();
        assert_eq!(removal.hours, None);
    }
}
