//! Usage reports: per class and student (hours run, hours counted against the quota,
//! sessions, idle shutdowns, hours added), with hours per day as a chart and CSV; and for
//! admins the whole site by class and by node, per month.

pub mod chart;
pub mod csv;

use std::collections::{BTreeMap, HashMap};

use jiff::Timestamp;
use jiff::civil::Date;
use jiff::tz::TimeZone;
use serde::Serialize;

use crate::HubState;
use crate::db::DbError;
use crate::db::now_unix;
use crate::domain::classes::{ClassError, owned_class};
use crate::domain::schedules::calendar::parse_time_zone;
use crate::domain::viewer::Viewer;

/// Days a class report's chart covers unless asked otherwise, and at most.
pub const DEFAULT_DAYS: u32 = 30;
pub const MAX_DAYS: u32 = 366;
/// Months a site report covers unless asked otherwise, and at most.
pub const DEFAULT_MONTHS: u32 = 6;
pub const MAX_MONTHS: u32 = 36;

/// One student's usage of a class.
#[derive(Debug, Clone, Serialize)]
pub struct StudentUsage {
    pub username: String,
    /// Their VM's key (`CLUSTER-VMID`), and its VMID.
    pub vm: Option<crate::vm_key::VmKey>,
    pub vmid: Option<u32>,
    /// All running time of their VM, in hours.
    pub hours_run: f64,
    /// What counts against the quota (outside scheduled windows unless they count), if the
    /// class has a quota.
    pub hours_counted: Option<f64>,
    pub hours_added: i64,
    /// Screens, terminals, SSH sessions and forwarded ports they opened to the class's VMs.
    pub sessions: i64,
    pub idle_stops: i64,
}

/// A day's running hours, summed over the class.
#[derive(Debug, Clone, Serialize)]
pub struct DayHours {
    pub date: String,
    pub hours: f64,
}

/// A class's usage report.
#[derive(Debug, Clone, Serialize)]
pub struct ClassUsage {
    pub class_id: i64,
    pub class_name: String,
    pub time_zone: String,
    pub students: Vec<StudentUsage>,
    /// The last `days` days, oldest first.
    pub daily: Vec<DayHours>,
    pub total_hours: f64,
}

impl ClassUsage {
    /// `daily` as an SVG bar chart.
    pub fn chart(&self) -> String {
        chart::bars(
            &format!(
                "Hours run per day, last {} days ({})",
                self.daily.len(),
                self.time_zone
            ),
            "h",
            &self
                .daily
                .iter()
                .map(|day| chart::Bar {
                    label: day.date.get(5..).unwrap_or(&day.date).to_owned(),
                    value: day.hours,
                })
                .collect::<Vec<_>>(),
        )
    }
}

/// A class's usage, the chart covering the last `days` days.
pub async fn class_usage(
    state: &HubState,
    viewer: &Viewer,
    class_id: i64,
    days: u32,
) -> Result<ClassUsage, ClassError> {
    let class = owned_class(state, viewer, class_id).await?;
    let days = days.clamp(1, MAX_DAYS);
    let zone_name = state.config.schedules.time_zone.clone();
    let zone = parse_time_zone(&zone_name).unwrap_or(TimeZone::UTC);
    let now = now_unix();
    let runs = state.db.class_runs(class_id).await?;
    let counted = match state.db.class_quota(class_id).await? {
        Some(quota) => Some(crate::domain::quota::used_secs(state, &quota, now).await?),
        None => None,
    };
    let added = state.db.quota_extras(class_id).await?;
    let sessions = state.db.class_session_counts(class_id).await?;
    let idle_stops = state.db.class_idle_stop_counts(class_id).await?;
    let mut run_secs: HashMap<i64, i64> = HashMap::new();
    for row in &runs {
        if let Some(user_id) = row.user_id {
            *run_secs.entry(user_id).or_default() += row.run.seconds();
        }
    }
    let students = state
        .db
        .roster(class_id)
        .await?
        .into_iter()
        .map(|(user_id, username, vm)| StudentUsage {
            username,
            vm,
            vmid: vm.map(|vm| vm.vmid),
            hours_run: hours(run_secs.get(&user_id).copied().unwrap_or(0)),
            hours_counted: counted
                .as_ref()
                .map(|used| hours(used.get(&user_id).copied().unwrap_or(0))),
            hours_added: added.get(&user_id).copied().unwrap_or(0),
            sessions: sessions.get(&user_id).copied().unwrap_or(0),
            idle_stops: vm.and_then(|vm| idle_stops.get(&vm).copied()).unwrap_or(0),
        })
        .collect();
    let intervals: Vec<(i64, i64)> = runs
        .iter()
        .map(|row| (row.run.boot_at, row.run.boot_at + row.run.seconds()))
        .collect();
    let buckets = day_starts(&zone, now, days);
    let secs = spread(&intervals, &buckets, now);
    let daily: Vec<DayHours> = buckets
        .iter()
        .zip(&secs)
        .map(|((date, _), secs)| DayHours {
            date: date.to_string(),
            hours: hours(*secs),
        })
        .collect();
    Ok(ClassUsage {
        class_id,
        class_name: class.name,
        time_zone: zone_name,
        total_hours: hours(intervals.iter().map(|(from, to)| to - from).sum()),
        students,
        daily,
    })
}

/// Hours run per month, for one class or node.
#[derive(Debug, Clone, Serialize)]
pub struct UsageLine {
    pub name: String,
    /// One figure per month of [`SiteUsage::months`].
    pub hours: Vec<f64>,
    pub total: f64,
}

/// The site's usage by class and by node, per month.
#[derive(Debug, Clone, Serialize)]
pub struct SiteUsage {
    /// `YYYY-MM`, oldest first.
    pub months: Vec<String>,
    pub by_class: Vec<UsageLine>,
    pub by_node: Vec<UsageLine>,
    pub time_zone: String,
}

/// The last `months` months of the whole site (admins; the caller checks).
pub async fn site_usage(state: &HubState, months: u32) -> Result<SiteUsage, DbError> {
    let months = months.clamp(1, MAX_MONTHS);
    let zone_name = state.config.schedules.time_zone.clone();
    let zone = parse_time_zone(&zone_name).unwrap_or(TimeZone::UTC);
    let now = now_unix();
    let buckets = month_starts(&zone, now, months);
    let from = buckets.first().map_or(now, |(_, start)| *start);
    let runs = state.db.site_runs(from, now).await?;
    let names: HashMap<i64, String> = state
        .db
        .list_classes(None)
        .await?
        .into_iter()
        .map(|class| (class.id, class.name))
        .collect();
    let mut by_class: BTreeMap<String, Vec<(i64, i64)>> = BTreeMap::new();
    let mut by_node: BTreeMap<String, Vec<(i64, i64)>> = BTreeMap::new();
    for run in &runs {
        let class = match run.class_id {
            Some(id) => names
                .get(&id)
                .cloned()
                .unwrap_or_else(|| format!("class {id} (deleted)")),
            None => "outside any class".into(),
        };
        by_class
            .entry(class)
            .or_default()
            .push((run.boot_at, run.end_at));
        by_node
            .entry(run.node.clone())
            .or_default()
            .push((run.boot_at, run.end_at));
    }
    let lines = |groups: BTreeMap<String, Vec<(i64, i64)>>| -> Vec<UsageLine> {
        groups
            .into_iter()
            .map(|(name, intervals)| {
                let secs = spread(&intervals, &buckets, now);
                UsageLine {
                    name,
                    total: hours(secs.iter().sum()),
                    hours: secs.into_iter().map(hours).collect(),
                }
            })
            .collect()
    };
    Ok(SiteUsage {
        months: buckets
            .iter()
            .map(|(date, _)| date.strftime("%Y-%m").to_string())
            .collect(),
        by_class: lines(by_class),
        by_node: lines(by_node),
        time_zone: zone_name,
    })
}

/// The starts of the last `days` local days, today last.
fn day_starts(zone: &TimeZone, now: i64, days: u32) -> Vec<(Date, i64)> {
    let today = Timestamp::from_second(now)
        .unwrap_or(Timestamp::UNIX_EPOCH)
        .to_zoned(zone.clone())
        .date();
    (0..i64::from(days))
        .rev()
        .filter_map(|back| today.checked_sub(jiff::Span::new().days(back)).ok())
        .filter_map(|date| start_of(zone, date).map(|start| (date, start)))
        .collect()
}

/// The starts of the last `months` local months, this month last.
fn month_starts(zone: &TimeZone, now: i64, months: u32) -> Vec<(Date, i64)> {
    let first = Timestamp::from_second(now)
        .unwrap_or(Timestamp::UNIX_EPOCH)
        .to_zoned(zone.clone())
        .date()
        .first_of_month();
    (0..i64::from(months))
        .rev()
        .filter_map(|back| first.checked_sub(jiff::Span::new().months(back)).ok())
        .filter_map(|date| start_of(zone, date).map(|start| (date, start)))
        .collect()
}

fn start_of(zone: &TimeZone, date: Date) -> Option<i64> {
    date.to_zoned(zone.clone())
        .ok()
        .map(|zoned| zoned.timestamp().as_second())
}

/// Seconds of `intervals` inside each bucket (a bucket runs from its start to the next
/// one's, the last to `now`).
fn spread(intervals: &[(i64, i64)], buckets: &[(Date, i64)], now: i64) -> Vec<i64> {
    buckets
        .iter()
        .enumerate()
        .map(|(index, (_, start))| {
            let end = buckets.get(index + 1).map_or(now, |(_, next)| *next);
            intervals
                .iter()
                .map(|(from, to)| ((*to).min(end) - (*from).max(*start)).max(0))
                .sum()
        })
        .collect()
}

fn hours(secs: i64) -> f64 {
    (secs as f64 / 36.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn running_time_is_spread_over_the_local_days_it_fell_in() {
        let zone = parse_time_zone("Europe/Berlin").unwrap();
        // 2026-12-03 12:00 Berlin time.
        let now = "2026-12-03T11:00:00Z"
            .parse::<Timestamp>()
            .unwrap()
            .as_second();
        let days = day_starts(&zone, now, 3);
        let dates: Vec<String> = days.iter().map(|(date, _)| date.to_string()).collect();
        assert_eq!(dates, ["2026-12-01", "2026-12-02", "2026-12-03"]);
        // 22:00 to 02:00 Berlin time over the night of the 1st: two hours each day.
        let from = "2026-12-01T21:00:00Z"
            .parse::<Timestamp>()
            .unwrap()
            .as_second();
        let secs = spread(&[(from, from + 4 * 3600)], &days, now);
        assert_eq!(secs, [7200, 7200, 0]);
        // Today's bucket ends now.
        let today = spread(&[(now - 600, now + 600)], &days, now);
        assert_eq!(today, [0, 0, 600]);
    }

    #[test]
    fn months_begin_on_the_first_local_day() {
        let zone = parse_time_zone("UTC").unwrap();
        let now = "2026-03-15T00:00:00Z"
            .parse::<Timestamp>()
            .unwrap()
            .as_second();
        let months: Vec<String> = month_starts(&zone, now, 3)
            .iter()
            .map(|(date, _)| date.to_string())
            .collect();
        assert_eq!(months, ["2026-01-01", "2026-02-01", "2026-03-01"]);
    }
}
