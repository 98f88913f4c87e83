//! Class schedules: rules that start and stop a class's student VMs at local times in the
//! class's time zone. Teachers (and admins) add and remove rules; the [`scheduler`] acts on
//! them, once per occurrence whatever the number of hub processes, and warns the students
//! before a scheduled stop.

pub mod calendar;
pub mod scheduler;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::HubState;
use crate::db::now_unix;
use crate::db::schedules::{FiringRow, ScheduleRow};
use crate::domain::audit::{self, Outcome};
use crate::domain::classes::{ClassError, owned_class};
use crate::domain::viewer::Viewer;

use calendar::{Repeat, Rule, Weekdays, parse_date, parse_time, parse_time_zone};

/// Rules a class may have.
pub const MAX_RULES_PER_CLASS: usize = 50;

/// How many upcoming occurrences a class's schedule shows.
const UPCOMING_SHOWN: usize = 10;

/// How many past occurrences a class's schedule shows.
const HISTORY_SHOWN: i64 = 20;

/// How far ahead the upcoming occurrences are looked for.
const UPCOMING_DAYS: i64 = 62;

/// A rule as a teacher writes it (the API's body, the page's form).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewRule {
    /// `once` or `weekly`.
    pub repeat: String,
    /// The day of a one-time rule, or the first day of a weekly one (`YYYY-MM-DD`).
    pub date: String,
    /// The last day of a weekly rule, if it ends.
    #[serde(default)]
    pub until: Option<String>,
    /// Weekly rules: `mon` … `sun`.
    #[serde(default)]
    pub weekdays: Vec<String>,
    /// `HH:MM`, local to the time zone.
    #[serde(default)]
    pub start: Option<String>,
    #[serde(default)]
    pub stop: Option<String>,
    /// An IANA time zone; the hub's default when left out.
    #[serde(default)]
    pub time_zone: Option<String>,
    #[serde(default)]
    pub note: Option<String>,
}

/// A stored rule, as pages and the API show it.
#[derive(Debug, Clone, Serialize)]
pub struct RuleView {
    pub id: i64,
    pub repeat: String,
    pub date: String,
    pub until: Option<String>,
    pub weekdays: Vec<&'static str>,
    pub start: Option<String>,
    pub stop: Option<String>,
    pub time_zone: String,
    pub note: String,
    /// The rule in words, such as "Every Mon, Wed: start 08:00, stop 10:00".
    pub summary: String,
    pub created_by: String,
    pub created_at: i64,
}

/// An occurrence to come.
#[derive(Debug, Clone, Serialize)]
pub struct Upcoming {
    pub rule_id: i64,
    /// Unix seconds.
    pub at: i64,
    /// `start` or `stop`.
    pub action: &'static str,
    /// Local to the rule's time zone, such as "Mon 7 Dec 08:00 (Europe/Berlin)".
    pub local: String,
    /// The local time of day alone, such as "08:00".
    pub time: String,
}

/// A class's schedule: its rules, what comes next and what happened.
#[derive(Debug, Clone, Serialize)]
pub struct ClassSchedule {
    pub default_time_zone: String,
    /// Today's date in the default time zone (`YYYY-MM-DD`), for forms.
    pub today: String,
    pub rules: Vec<RuleView>,
    pub upcoming: Vec<Upcoming>,
    /// The next seven days (in the default time zone), each with its occurrences.
    pub week: Vec<WeekDay>,
    pub history: Vec<HistoryLine>,
}

/// Something the schedule did, with its time written out.
#[derive(Debug, Clone, Serialize)]
pub struct HistoryLine {
    #[serde(flatten)]
    pub firing: FiringRow,
    /// `due_at` as an RFC 3339 time (UTC).
    pub due: String,
}

/// A day of the week view.
#[derive(Debug, Clone, Serialize)]
pub struct WeekDay {
    /// Such as "Mon 7 Dec".
    pub label: String,
    pub events: Vec<Upcoming>,
}

/// A stored rule with its meaning; a row that no longer parses (a time zone the system
/// dropped) is an error naming it.
pub fn rule_of(row: &ScheduleRow) -> Result<Rule, String> {
    let start_date = parse_date(&row.start_date)?;
    let repeat = match row.repeat.as_str() {
        "once" => Repeat::Once { date: start_date },
        "weekly" => Repeat::Weekly {
            days: Weekdays(u8::try_from(row.weekdays).unwrap_or(0)),
            from: start_date,
            until: row.end_date.as_deref().map(parse_date).transpose()?,
        },
        other => return Err(format!("unknown repeat '{other}'")),
    };
    Ok(Rule {
        repeat,
        start: row.start_time.as_deref().map(parse_time).transpose()?,
        stop: row.stop_time.as_deref().map(parse_time).transpose()?,
        time_zone: parse_time_zone(&row.time_zone)?,
    })
}

/// Turns what a teacher wrote into a row to store, or says what is wrong with it.
fn row_of(
    input: &NewRule,
    class_id: i64,
    default_zone: &str,
    viewer: &Viewer,
) -> Result<ScheduleRow, String> {
    // The form leaves out what is blank; what the API is given must be what it says.
    let time_zone = input
        .time_zone
        .clone()
        .unwrap_or_else(|| default_zone.to_owned());
    let (start, stop, until) = (input.start.clone(), input.stop.clone(), input.until.clone());
    let weekdays = match input.repeat.as_str() {
        "once" => {
            if until.is_some() || !input.weekdays.is_empty() {
                return Err("a one-time rule has no weekdays and no end date".into());
            }
            0
        }
        "weekly" => i64::from(Weekdays::from_names(input.weekdays.iter().map(String::as_str))?.0),
        other => return Err(format!("repeat must be 'once' or 'weekly', not '{other}'")),
    };
    let note = input.note.as_deref().unwrap_or("");
    if note.chars().count() > 200 {
        return Err("the note is longer than 200 characters".into());
    }
    let note = note.trim().to_owned();
    let row = ScheduleRow {
        id: 0,
        class_id,
        repeat: input.repeat.clone(),
        start_date: input.date.clone(),
        end_date: until,
        weekdays,
        start_time: start
            .map(|time| parse_time(&time))
            .transpose()?
            .map(|time| time.strftime("%H:%M").to_string()),
        stop_time: stop
            .map(|time| parse_time(&time))
            .transpose()?
            .map(|time| time.strftime("%H:%M").to_string()),
        time_zone,
        note,
        created_by: viewer.username.clone(),
        created_at: now_unix(),
    };
    rule_of(&row)?.validate()?;
    Ok(row)
}

/// A rule in words.
fn summary(row: &ScheduleRow) -> String {
    let days = match row.repeat.as_str() {
        "weekly" => {
            let names: Vec<String> = Weekdays(u8::try_from(row.weekdays).unwrap_or(0))
                .names()
                .iter()
                .map(|name| capitalised(name))
                .collect();
            let until = row
                .end_date
                .as_deref()
                .map(|until| format!(" until {until}"))
                .unwrap_or_default();
            format!("Every {} from {}{until}", names.join(", "), row.start_date)
        }
        _ => format!("On {}", row.start_date),
    };
    let mut parts = Vec::new();
    if let Some(start) = &row.start_time {
        parts.push(format!("start {start}"));
    }
    if let Some(stop) = &row.stop_time {
        let overnight = row.start_time.as_ref().is_some_and(|start| stop <= start);
        parts.push(format!(
            "stop {stop}{}",
            if overnight { " the next day" } else { "" }
        ));
    }
    format!("{days}: {} ({})", parts.join(", "), row.time_zone)
}

fn capitalised(name: &str) -> String {
    let mut chars = name.chars();
    chars
        .next()
        .map(|first| first.to_ascii_uppercase().to_string() + chars.as_str())
        .unwrap_or_default()
}

fn view_of(row: &ScheduleRow) -> RuleView {
    RuleView {
        id: row.id,
        repeat: row.repeat.clone(),
        date: row.start_date.clone(),
        until: row.end_date.clone(),
        weekdays: Weekdays(u8::try_from(row.weekdays).unwrap_or(0)).names(),
        start: row.start_time.clone(),
        stop: row.stop_time.clone(),
        time_zone: row.time_zone.clone(),
        note: row.note.clone(),
        summary: summary(row),
        created_by: row.created_by.clone(),
        created_at: row.created_at,
    }
}

/// The next occurrences of a class's rules after `now`, soonest first
/// (up to `until`, or [`UPCOMING_DAYS`] ahead).
pub fn upcoming(
    rows: &[ScheduleRow],
    now: Timestamp,
    count: usize,
    until: Option<Timestamp>,
) -> Vec<Upcoming> {
    let until = until.unwrap_or_else(|| {
        Timestamp::from_second(now.as_second() + UPCOMING_DAYS * 86_400).unwrap_or(now)
    });
    let mut found: Vec<Upcoming> = Vec::new();
    for row in rows {
        let Ok(rule) = rule_of(row) else { continue };
        for occurrence in rule.occurrences(now, until) {
            let local = occurrence.at.to_zoned(rule.time_zone.clone());
            found.push(Upcoming {
                rule_id: row.id,
                at: occurrence.at.as_second(),
                action: occurrence.action.as_str(),
                local: format!("{} ({})", local.strftime("%a %-d %b %H:%M"), row.time_zone),
                time: local.strftime("%H:%M").to_string(),
            });
        }
    }
    found.sort_by_key(|upcoming| (upcoming.at, upcoming.rule_id));
    found.truncate(count);
    found
}

/// The seven days from `now`'s day on, in `zone`, with the occurrences of each.
pub fn week(rows: &[ScheduleRow], now: Timestamp, zone: &str) -> Vec<WeekDay> {
    let zone = parse_time_zone(zone).unwrap_or(jiff::tz::TimeZone::UTC);
    let today = now.to_zoned(zone.clone()).date();
    let starts: Vec<Timestamp> = (0..8)
        .filter_map(|offset| today.checked_add(jiff::Span::new().days(offset)).ok())
        .filter_map(|day| day.to_zoned(zone.clone()).ok())
        .map(|midnight| midnight.timestamp())
        .collect();
    let events = starts
        .first()
        .zip(starts.last())
        .map(|(first, last)| upcoming(rows, *first, usize::MAX, Some(*last)))
        .unwrap_or_default();
    starts
        .windows(2)
        .map(|day| WeekDay {
            label: day[0]
                .to_zoned(zone.clone())
                .strftime("%a %-d %b")
                .to_string(),
            events: events
                .iter()
                .filter(|event| event.at >= day[0].as_second() && event.at < day[1].as_second())
                .cloned()
                .collect(),
        })
        .collect()
}

/// The next scheduled stop within a day of each of these classes, as "10:00 (Zone)".
pub async fn next_stops(
    state: &HubState,
    class_ids: &[i64],
    now: Timestamp,
) -> Result<std::collections::HashMap<i64, String>, crate::db::DbError> {
    let mut stops = std::collections::HashMap::new();
    if class_ids.is_empty() {
        return Ok(stops);
    }
    let rows = state.db.all_schedules().await?;
    let day_later = Timestamp::from_second(now.as_second() + 86_400).unwrap_or(now);
    for class_id in class_ids {
        let rules: Vec<ScheduleRow> = rows
            .iter()
            .filter(|row| row.class_id == *class_id)
            .cloned()
            .collect();
        if let Some(stop) = upcoming(&rules, now, usize::MAX, Some(day_later))
            .into_iter()
            .find(|event| event.action == "stop")
        {
            let zone = rules
                .iter()
                .find(|row| row.id == stop.rule_id)
                .map(|row| row.time_zone.clone())
                .unwrap_or_default();
            stops.insert(*class_id, format!("{} ({zone})", stop.time));
        }
    }
    Ok(stops)
}

/// A class's schedule, for its owners and admins.
pub async fn class_schedule(
    state: &HubState,
    viewer: &Viewer,
    class_id: i64,
) -> Result<ClassSchedule, ClassError> {
    owned_class(state, viewer, class_id).await?;
    let rows = state.db.class_schedules(class_id).await?;
    let now = scheduler::now(state);
    let zone = &state.config.schedules.time_zone;
    Ok(ClassSchedule {
        default_time_zone: zone.clone(),
        today: now
            .to_zoned(parse_time_zone(zone).unwrap_or(jiff::tz::TimeZone::UTC))
            .date()
            .to_string(),
        rules: rows.iter().map(view_of).collect(),
        upcoming: upcoming(&rows, now, UPCOMING_SHOWN, None),
        week: week(&rows, now, zone),
        history: state
            .db
            .class_firings(class_id, HISTORY_SHOWN)
            .await?
            .into_iter()
            .map(|firing| HistoryLine {
                due: crate::domain::tokens::format_time(firing.due_at),
                firing,
            })
            .collect(),
    })
}

/// Adds a rule to a class the viewer owns.
pub async fn add_rule(
    state: &HubState,
    viewer: &Viewer,
    class_id: i64,
    input: &NewRule,
) -> Result<RuleView, ClassError> {
    owned_class(state, viewer, class_id).await?;
    let target = format!("class:{class_id}");
    let row = match row_of(input, class_id, &state.config.schedules.time_zone, viewer) {
        Ok(row) => row,
        Err(reason) => {
            audit::record(
                &state.db,
                viewer,
                "class.schedule.add",
                &target,
                Outcome::Failed,
                &reason,
            )
            .await;
            return Err(ClassError::Invalid(reason));
        }
    };
    if state.db.class_schedules(class_id).await?.len() >= MAX_RULES_PER_CLASS {
        return Err(ClassError::Conflict(format!(
            "a class has at most {MAX_RULES_PER_CLASS} schedule rules"
        )));
    }
    let id = state.db.insert_schedule(&row).await?;
    let row = ScheduleRow { id, ..row };
    audit::record(
        &state.db,
        viewer,
        "class.schedule.add",
        &target,
        Outcome::Ok,
        &summary(&row),
    )
    .await;
    state.schedules_changed.notify_waiters();
    Ok(view_of(&row))
}

/// Removes a rule of a class the viewer owns.
pub async fn remove_rule(
    state: &HubState,
    viewer: &Viewer,
    class_id: i64,
    rule_id: i64,
) -> Result<(), ClassError> {
    owned_class(state, viewer, class_id).await?;
    if !state.db.delete_schedule(class_id, rule_id).await? {
        return Err(ClassError::NotFound);
    }
    let target = format!("class:{class_id}");
    let detail = format!("rule {rule_id}");
    audit::record(
        &state.db,
        viewer,
        "class.schedule.remove",
        &target,
        Outcome::Ok,
        &detail,
    )
    .await;
    state.schedules_changed.notify_waiters();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::users::Role;

    fn teacher() -> Viewer {
        Viewer {
            id: 1,
            username: "tina".into(),
            role: Role::Teacher,
        }
    }

    fn weekly(days: &[&str], start: Option<&str>, stop: Option<&str>) -> NewRule {
        NewRule {
            repeat: "weekly".into(),
            date: "2026-12-07".into(),
            weekdays: days.iter().map(|day| day.to_string()).collect(),
            start: start.map(str::to_owned),
            stop: stop.map(str::to_owned),
            ..NewRule::default()
        }
    }

    #[test]
    fn rules_are_checked_and_described() {
        let row = row_of(
            &weekly(&["mon", "wed"], Some("8:00"), Some("10:00")),
            1,
            "Europe/Berlin",
            &teacher(),
        )
        .unwrap();
        assert_eq!(
            (row.start_time.as_deref(), row.weekdays),
            (Some("08:00"), 0b101)
        );
        assert_eq!(
            summary(&row),
            "Every Mon, Wed from 2026-12-07: start 08:00, stop 10:00 (Europe/Berlin)"
        );
        let overnight = row_of(
            &weekly(&["fri"], Some("22:00"), Some("02:00")),
            1,
            "UTC",
            &teacher(),
        )
        .unwrap();
        assert!(
            summary(&overnight).contains("stop 02:00 the next day"),
            "{}",
            summary(&overnight)
        );
        for (bad, says) in [
            (weekly(&[], Some("08:00"), None), "weekday"),
            (weekly(&["mon"], None, None), "start time, a stop time"),
            (weekly(&["mon"], Some("24:00"), None), "24:00"),
            (
                NewRule {
                    time_zone: Some("Nowhere/Land".into()),
                    ..weekly(&["mon"], Some("08:00"), None)
                },
                "Nowhere/Land",
            ),
            (
                NewRule {
                    repeat: "daily".into(),
                    ..weekly(&["mon"], Some("08:00"), None)
                },
                "daily",
            ),
            (
                NewRule {
                    until: Some("2026-01-01".into()),
                    ..weekly(&["mon"], Some("08:00"), None)
                },
                "end before",
            ),
            (
                NewRule {
                    repeat: "once".into(),
                    ..weekly(&["mon"], Some("08:00"), None)
                },
                "no weekdays",
            ),
        ] {
            let error = row_of(&bad, 1, "UTC", &teacher()).unwrap_err();
            assert!(error.contains(says), "{error} should say {says}");
        }
    }

    #[test]
    fn upcoming_occurrences_come_from_every_rule_in_order() {
        let mut first = row_of(
            &weekly(&["mon"], Some("08:00"), Some("10:00")),
            1,
            "UTC",
            &teacher(),
        )
        .unwrap();
        first.id = 1;
        let mut second = row_of(
            &weekly(&["mon"], Some("09:00"), None),
            1,
            "Europe/Berlin",
            &teacher(),
        )
        .unwrap();
        second.id = 2;
        let now = "2026-12-07T00:00:00Z".parse().unwrap();
        let next = upcoming(&[first.clone(), second.clone()], now, 3, None);
        let seen: Vec<(i64, &str, &str)> = next
            .iter()
            .map(|up| (up.rule_id, up.action, up.local.as_str()))
            .collect();
        assert_eq!(
            seen,
            [
                (1, "start", "Mon 7 Dec 08:00 (UTC)"),
                (2, "start", "Mon 7 Dec 09:00 (Europe/Berlin)"),
                (1, "stop", "Mon 7 Dec 10:00 (UTC)"),
            ]
        );
        // The week view: seven days, Monday with all three, the next Monday beyond it.
        let days = week(&[first, second], now, "UTC");
        let labels: Vec<&str> = days.iter().map(|day| day.label.as_str()).collect();
        assert_eq!(
            labels,
            [
                "Mon 7 Dec",
                "Tue 8 Dec",
                "Wed 9 Dec",
                "Thu 10 Dec",
                "Fri 11 Dec",
                "Sat 12 Dec",
                "Sun 13 Dec"
            ]
        );
        let counts: Vec<usize> = days.iter().map(|day| day.events.len()).collect();
        assert_eq!(counts, [3, 0, 0, 0, 0, 0, 0]);
    }
}
