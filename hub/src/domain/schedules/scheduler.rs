//! The scheduler: acts on every class's schedule when its occurrences come, and warns the
//! students before a scheduled stop.
//!
//! Each occurrence acts once: the hub that inserts its row in `schedule_firings` first does
//! it (any number of hub processes may share a PostgreSQL database); a claim whose process
//! died before finishing is taken over after [`LEASE_SECS`]. Occurrences missed while no hub
//! ran are looked at when one starts (up to [`CATCH_UP_SECS`] back, never before the rule
//! existed) and acted on only while they still mean something (see
//! [`calendar::Rule::still_meaningful`]); the others are recorded as skipped, with why.
//!
//! Time comes in as an argument ([`run_due`]), so tests drive the scheduler with a clock of
//! their own; the loop ([`run`]) passes the real one.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use proxlab_protocol::inventory::PowerState;

use crate::HubState;
use crate::db::DbError;
use crate::db::schedules::{FiringKey, ScheduleRow};
use crate::domain::access::VmAction;
use crate::domain::classes::{ClassError, tasks};
use crate::domain::notices::Notice;
use crate::domain::schedules::rule_of;
use crate::vm_key::VmKey;

use super::calendar::{Action, Occurrence, Rule};

/// How long a claim holds before another hub may take the occurrence over.
pub const LEASE_SECS: i64 = 300;

/// How far back a starting hub looks for occurrences it missed.
pub const CATCH_UP_SECS: i64 = 7 * 86_400;

/// How soon a start or stop that failed (a node offline, say) is tried again, for as long
/// as it still means something.
pub const RETRY_SECS: i64 = 30;

/// How long a starting hub waits for its nodes to report before its first pass, so that
/// an occurrence missed while no hub ran reaches the VMs instead of failing on nodes that
/// have not reconnected yet (and being tried again [`RETRY_SECS`] later).
pub const STARTUP_GRACE: Duration = Duration::from_secs(20);

/// The longest the loop sleeps without looking (rules may be changed by another hub).
const LONGEST_SLEEP: Duration = Duration::from_secs(30);

/// Who acts, in the audit log and the class's task log.
pub const ACTOR: &str = "class schedule";

/// What one pass did with one occurrence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fired {
    pub rule_id: i64,
    pub due_at: i64,
    /// `start`, `stop` or `warn`.
    pub action: &'static str,
    /// `done`, `skipped` or `failed`.
    pub outcome: &'static str,
    pub detail: String,
}

/// The environment variable naming a file whose number of seconds moves the scheduler's
/// clock (tests only: it lets a real hub process reach next Monday 08:00 in a second).
pub const CLOCK_SKEW_FILE_ENV: &str = "PROXLAB_HUB_CLOCK_SKEW_FILE";

/// The scheduler's clock, moved by the file [`CLOCK_SKEW_FILE_ENV`] names, if any.
pub fn clock_from_env() -> proxlab_clock::SkewedClock {
    proxlab_clock::SkewedClock::from_env(CLOCK_SKEW_FILE_ENV)
}

/// The time the scheduler goes by.
pub fn now(state: &HubState) -> Timestamp {
    state.schedule_clock.refresh();
    Timestamp::from_millisecond(state.schedule_clock.now_millis())
        .unwrap_or_else(|_| Timestamp::now())
}

/// This process's name in claims.
pub fn claimer_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .unwrap_or_else(|_| "hub".into());
    format!(
        "{host}:{}:{:08x}",
        std::process::id(),
        rand::random::<u32>()
    )
}

/// Acts on every occurrence due at `now` that no hub has acted on, and sends the warnings
/// due; returns what it did.
pub async fn run_due(state: &HubState, now: Timestamp) -> Result<Vec<Fired>, DbError> {
    let rows = state.db.all_schedules().await?;
    act_on(state, &rows, now).await
}

/// [`run_due`] over rules already read.
async fn act_on(
    state: &HubState,
    rows: &[ScheduleRow],
    now: Timestamp,
) -> Result<Vec<Fired>, DbError> {
    let now_secs = now.as_second();
    let done: HashSet<(i64, i64, String)> = state
        .db
        .firings_since(now_secs - CATCH_UP_SECS)
        .await?
        .into_iter()
        .filter(|firing| firing.done_at.is_some())
        .map(|firing| (firing.schedule_id, firing.due_at, firing.action))
        .collect();
    let lead = state.config.schedules.warn_before.as_secs() as i64;
    let mut work = Vec::new();
    for row in rows {
        let rule = match rule_of(row) {
            Ok(rule) => rule,
            Err(reason) => {
                tracing::warn!(rule = row.id, %reason, "a schedule rule cannot be read");
                continue;
            }
        };
        let since =
            Timestamp::from_second(row.created_at.max(now_secs - CATCH_UP_SECS)).unwrap_or(now);
        let until = Timestamp::from_second(now_secs + 1 + lead).unwrap_or(now);
        for occurrence in rule.occurrences(since, until) {
            let action = if occurrence.at <= now {
                occurrence.action.as_str()
            } else if occurrence.action == Action::Stop {
                "warn"
            } else {
                continue;
            };
            let key = (row.id, occurrence.at.as_second(), action.to_owned());
            if !done.contains(&key) {
                work.push((row, rule.clone(), occurrence, action));
            }
        }
    }
    let claimer = &state.scheduler_name;
    let runs = work.into_iter().map(|(row, rule, occurrence, action)| async move {
        let key = FiringKey {
            schedule_id: row.id,
            due_at: occurrence.at.as_second(),
            action,
        };
        match state
            .db
            .claim_firing(key, claimer, now_secs, now_secs - LEASE_SECS)
            .await
        {
            Ok(true) => {}
            Ok(false) => return None,
            Err(err) => {
                tracing::warn!(%err, rule = row.id, "cannot claim a schedule occurrence");
                return None;
            }
        }
        let (outcome, detail, task) = act(state, row, &rule, &occurrence, action, now).await;
        let recorded = if outcome == "failed" && action != "warn" {
            // Tried again by a later pass (of any hub), until it is done or means nothing.
            let retry_at = now_secs + RETRY_SECS;
            state
                .db
                .retry_firing_later(key, &detail, task, retry_at, LEASE_SECS)
                .await
        } else {
            state
                .db
                .finish_firing(key, outcome, &detail, task, now_secs)
                .await
        };
        if let Err(err) = recorded {
            tracing::warn!(%err, rule = row.id, "cannot record a schedule occurrence");
        }
        tracing::info!(class = row.class_id, rule = row.id, action, outcome, %detail, "schedule");
        Some(Fired {
            rule_id: row.id,
            due_at: key.due_at,
            action,
            outcome,
            detail,
        })
    });
    let fired = futures_util::future::join_all(runs).await;
    Ok(fired.into_iter().flatten().collect())
}

/// Does what an occurrence asks: `(outcome, detail, task id)`.
async fn act(
    state: &HubState,
    row: &ScheduleRow,
    rule: &Rule,
    occurrence: &Occurrence,
    action: &'static str,
    now: Timestamp,
) -> (&'static str, String, Option<i64>) {
    if action == "warn" {
        return match warn(state, row, rule, occurrence, now).await {
            Ok(0) => ("done", "no running VM to warn about".into(), None),
            Ok(count) => (
                "done",
                format!("warned the users of {count} running VMs"),
                None,
            ),
            Err(err) => ("failed", err.to_string(), None),
        };
    }
    if !rule.still_meaningful(occurrence, now) {
        let why = match occurrence.action {
            Action::Start => "its window had ended before a hub could act on it",
            Action::Stop => "the schedule had started the VMs again before a hub could act on it",
        };
        return ("skipped", why.into(), None);
    }
    let task = match occurrence.action {
        Action::Start => tasks::run_automatic(state, row.class_id, VmAction::Start, ACTOR).await,
        Action::Stop => stop_with_reason(state, row, rule, occurrence, now).await,
    };
    match task {
        Ok(None) => ("done", "no VM needed it".into(), None),
        Ok(Some(task)) => match state.db.class_task(row.class_id, task).await {
            Ok(report) if report.failed == 0 => {
                ("done", format!("{} VMs", report.total), Some(task))
            }
            Ok(report) => (
                "failed",
                format!(
                    "{} of {} VMs failed (see the task)",
                    report.failed, report.total
                ),
                Some(task),
            ),
            Err(err) => ("done", format!("task {task} ({err})"), Some(task)),
        },
        Err(err) => ("failed", err.to_string(), None),
    }
}

/// Stops the class's running student VMs, each tile saying that the schedule did it and at
/// what time. Returns the task's id, or `None` when no VM was running.
async fn stop_with_reason(
    state: &HubState,
    row: &ScheduleRow,
    rule: &Rule,
    occurrence: &Occurrence,
    now: Timestamp,
) -> Result<Option<i64>, ClassError> {
    let local = occurrence.at.to_zoned(rule.time_zone.clone());
    let reason = format!(
        "Stopped by the class schedule at {} ({})",
        local.strftime("%a %H:%M"),
        row.time_zone
    );
    let stops: Vec<(VmKey, String)> = tasks::student_vms(state, row.class_id)
        .await?
        .into_iter()
        .filter(|vm| vm.status != PowerState::Stopped)
        .map(|vm| (vm.key, reason.clone()))
        .collect();
    if stops.is_empty() {
        return Ok(None);
    }
    tasks::stop_with_reasons(state, row.class_id, &stops, ACTOR, now.as_second())
        .await
        .map(Some)
}

/// Tells the users of the class's running student VMs that they stop at the occurrence's
/// time; returns how many VMs that was.
async fn warn(
    state: &HubState,
    row: &ScheduleRow,
    rule: &Rule,
    occurrence: &Occurrence,
    now: Timestamp,
) -> Result<usize, ClassError> {
    let running: HashSet<VmKey> = tasks::student_vms(state, row.class_id)
        .await?
        .into_iter()
        .filter(|vm| vm.status != PowerState::Stopped)
        .map(|vm| vm.key)
        .collect();
    let (vmids, user_ids): (Vec<VmKey>, Vec<i64>) = state
        .db
        .class_assignees(row.class_id)
        .await?
        .into_iter()
        .filter(|(vmid, _)| running.contains(vmid))
        .unzip();
    if vmids.is_empty() {
        return Ok(0);
    }
    let minutes = ((occurrence.at.as_second() - now.as_second()).max(0) as u64).div_ceil(60);
    let local = occurrence.at.to_zoned(rule.time_zone.clone());
    let message = format!(
        "The class schedule stops this VM at {} ({}), in {minutes} min. Save your work.",
        local.strftime("%H:%M"),
        row.time_zone
    );
    let count = vmids.len();
    state.notices.publish(
        Notice {
            key: format!("schedule:{}:{}", row.class_id, occurrence.at.as_second()),
            user_ids,
            class_id: row.class_id,
            vmids,
            message,
            at: occurrence.at.as_second(),
            still_here: None,
            withdrawn: false,
        },
        now.as_second(),
    );
    Ok(count)
}

/// When the loop should look next: the soonest occurrence or warning after `now`, at most
/// [`LONGEST_SLEEP`] away.
fn next_look(rows: &[ScheduleRow], now: Timestamp, lead: i64) -> Duration {
    let horizon = Timestamp::from_second(now.as_second() + LONGEST_SLEEP.as_secs() as i64 + lead)
        .unwrap_or(now);
    let after = Timestamp::from_second(now.as_second() + 1).unwrap_or(now);
    let soonest = rows
        .iter()
        .filter_map(|row| rule_of(row).ok())
        .flat_map(|rule| rule.occurrences(after, horizon))
        .map(|occurrence| match occurrence.action {
            Action::Start => occurrence.at.as_second(),
            Action::Stop => (occurrence.at.as_second() - lead).max(after.as_second()),
        })
        .min();
    match soonest {
        // To the millisecond, so the loop wakes as the occurrence's second begins.
        Some(at) => {
            let longest = LONGEST_SLEEP.as_millis() as i64;
            Duration::from_millis((at * 1000 - now.as_millisecond()).clamp(0, longest) as u64)
        }
        None => LONGEST_SLEEP,
    }
}

/// Waits until every enrolled node has sent its inventory to this hub (so the power states
/// the first pass goes by are the nodes' own), or [`STARTUP_GRACE`] has passed.
async fn nodes_reported(state: &HubState) {
    let mut changes = state.inventory_changes.subscribe();
    let mut waiting: HashSet<String> = match state.db.list_nodes().await {
        Ok(nodes) => nodes
            .into_iter()
            .filter(|node| node.revoked_at.is_none())
            .map(|node| node.name)
            .collect(),
        Err(_) => return,
    };
    let reported = async {
        while !waiting.is_empty() {
            match changes.recv().await {
                Ok(change) => {
                    waiting.remove(&change.node);
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    };
    if tokio::time::timeout(STARTUP_GRACE, reported).await.is_err() {
        tracing::info!(
            "the scheduler starts without word from some nodes; what it cannot do there is tried again later"
        );
    }
}

/// The scheduler's loop, until the hub stops.
pub async fn run(state: Arc<HubState>) {
    let mut stopping = state.stopping.clone();
    tokio::select! {
        () = nodes_reported(&state) => {}
        _ = stopping.wait_for(|stop| *stop) => return,
    }
    loop {
        let lead = state.config.schedules.warn_before.as_secs() as i64;
        let sleep = match state.db.all_schedules().await {
            Ok(rows) => {
                if let Err(err) = act_on(&state, &rows, now(&state)).await {
                    tracing::warn!(%err, "the scheduler cannot read its records");
                }
                next_look(&rows, now(&state), lead)
            }
            Err(err) => {
                tracing::warn!(%err, "the scheduler cannot read the schedules");
                LONGEST_SLEEP
            }
        };
        tokio::select! {
            () = tokio::time::sleep(sleep) => {}
            () = state.schedules_changed.notified() => {}
            _ = stopping.wait_for(|stop| *stop) => return,
        }
    }
}
