//! When a class's schedule acts: its rules in the class's time zone turned into instants,
//! and which of the instants a scheduler that was away should still act on.
//!
//! Local times that a daylight-saving change skips or repeats are resolved as RFC 5545 and
//! most calendars do: a time in a gap moves later by the gap's length (02:30 on the night
//! clocks go forward from 02:00 to 03:00 is 03:30), and a time that happens twice is the
//! first of the two (02:30 on the night clocks go back is 02:30 summer time).

use jiff::civil::{Date, Time, Weekday};
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};

/// How long after its time a start without a stop time is still worth making, when the
/// scheduler was away at that time.
pub const START_ONLY_GRACE_SECS: i64 = 3600;

/// On which days a rule acts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Repeat {
    /// On one day.
    Once { date: Date },
    /// On the chosen weekdays from `from` on, until `until` if given (both included).
    Weekly {
        days: Weekdays,
        from: Date,
        until: Option<Date>,
    },
}

/// A set of weekdays: bit 0 is Monday, bit 6 Sunday.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Weekdays(pub u8);

impl Weekdays {
    pub const NAMES: [&'static str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

    pub fn contains(self, day: Weekday) -> bool {
        self.0 & (1 << day.to_monday_zero_offset()) != 0
    }

    /// From names such as `["mon", "wed"]` (lower case, as written here).
    pub fn from_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<Self, String> {
        let mut bits = 0u8;
        for name in names {
            let index = Self::NAMES
                .iter()
                .position(|known| *known == name)
                .ok_or_else(|| format!("'{name}' is not a weekday (mon … sun)"))?;
            bits |= 1 << index;
        }
        if bits == 0 {
            return Err("a weekly rule needs at least one weekday".into());
        }
        Ok(Self(bits))
    }

    pub fn names(self) -> Vec<&'static str> {
        (0..7)
            .filter(|bit| self.0 & (1 << bit) != 0)
            .map(|bit| Self::NAMES[bit])
            .collect()
    }
}

/// A schedule rule of a class: start and/or stop times on some days, in a time zone. When
/// the stop time is not after the start time, the stop is on the next day (an overnight lab).
#[derive(Debug, Clone)]
pub struct Rule {
    pub repeat: Repeat,
    pub start: Option<Time>,
    pub stop: Option<Time>,
    pub time_zone: TimeZone,
}

/// What an occurrence does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    Start,
    Stop,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Start => "start",
            Action::Stop => "stop",
        }
    }
}

/// One time a rule acts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Occurrence {
    pub at: Timestamp,
    pub action: Action,
    /// The local day of the rule it belongs to (an overnight stop belongs to the day before).
    pub day: Date,
}

impl Rule {
    /// Checks a rule's parts fit together.
    pub fn validate(&self) -> Result<(), String> {
        if self.start.is_none() && self.stop.is_none() {
            return Err("a schedule needs a start time, a stop time or both".into());
        }
        if let Repeat::Weekly {
            from,
            until: Some(until),
            ..
        } = &self.repeat
            && until < from
        {
            return Err("a weekly schedule cannot end before it begins".into());
        }
        Ok(())
    }

    /// Whether the stop falls on the day after the start.
    fn overnight(&self) -> bool {
        matches!((self.start, self.stop), (Some(start), Some(stop)) if stop <= start)
    }

    fn acts_on(&self, day: Date) -> bool {
        match &self.repeat {
            Repeat::Once { date } => *date == day,
            Repeat::Weekly { days, from, until } => {
                day >= *from
                    && until.is_none_or(|until| day <= until)
                    && days.contains(day.weekday())
            }
        }
    }

    /// The instant of a local day and time in the rule's zone (gaps and folds as described
    /// at the top of this module).
    fn instant(&self, day: Date, time: Time) -> Option<Timestamp> {
        self.time_zone
            .to_ambiguous_zoned(day.to_datetime(time))
            .compatible()
            .ok()
            .map(|zoned| zoned.timestamp())
    }

    /// The occurrences of a local day, in order.
    fn occurrences_of(&self, day: Date) -> Vec<Occurrence> {
        let mut found = Vec::new();
        if !self.acts_on(day) {
            return found;
        }
        if let Some(start) = self.start.and_then(|time| self.instant(day, time)) {
            found.push(Occurrence {
                at: start,
                action: Action::Start,
                day,
            });
        }
        let stop_day = if self.overnight() {
            day.tomorrow().ok()
        } else {
            Some(day)
        };
        if let Some(stop) = self
            .stop
            .zip(stop_day)
            .and_then(|(time, stop_day)| self.instant(stop_day, time))
        {
            found.push(Occurrence {
                at: stop,
                action: Action::Stop,
                day,
            });
        }
        found
    }

    /// Every occurrence at or after `from` and before `to`, in time order.
    pub fn occurrences(&self, from: Timestamp, to: Timestamp) -> Vec<Occurrence> {
        let Some(first) = from
            .to_zoned(self.time_zone.clone())
            .date()
            .yesterday()
            .ok()
        else {
            return Vec::new();
        };
        let last = to.to_zoned(self.time_zone.clone()).date();
        let mut found = Vec::new();
        let mut day = first;
        while day <= last {
            found.extend(
                self.occurrences_of(day)
                    .into_iter()
                    .filter(|occurrence| occurrence.at >= from && occurrence.at < to),
            );
            match day.tomorrow() {
                Ok(next) => day = next,
                Err(_) => break,
            }
        }
        found.sort_by_key(|occurrence| (occurrence.at, occurrence.action));
        found
    }

    /// The scheduled windows (from a start to the stop of the same day) that overlap `from`
    /// to `to`, in time order. A rule without both a start and a stop has none.
    pub fn windows(&self, from: Timestamp, to: Timestamp) -> Vec<(Timestamp, Timestamp)> {
        if self.start.is_none() || self.stop.is_none() {
            return Vec::new();
        }
        let widen = |time: Timestamp, days: i64| {
            Timestamp::from_second(time.as_second() + days * 86_400).unwrap_or(time)
        };
        let occurrences = self.occurrences(widen(from, -2), widen(to, 2));
        let mut windows: Vec<(Timestamp, Timestamp)> = occurrences
            .iter()
            .filter(|start| start.action == Action::Start)
            .filter_map(|start| {
                occurrences
                    .iter()
                    .find(|stop| stop.action == Action::Stop && stop.day == start.day)
                    .map(|stop| (start.at, stop.at))
            })
            .filter(|(start, stop)| *start < to && *stop > from)
            .collect();
        windows.sort();
        windows
    }

    /// Whether an occurrence that is due (its time has come, at `now`) should still be acted
    /// on: a start while its window is open (before its stop, or within an hour when it has
    /// none); a stop unless the rule has started the VMs again since.
    pub fn still_meaningful(&self, occurrence: &Occurrence, now: Timestamp) -> bool {
        match occurrence.action {
            Action::Start => {
                let window_end = self
                    .occurrences_of(occurrence.day)
                    .into_iter()
                    .find(|other| other.action == Action::Stop)
                    .map(|stop| stop.at)
                    .unwrap_or_else(|| {
                        occurrence
                            .at
                            .checked_add(START_ONLY_GRACE_SECS.seconds())
                            .unwrap_or(occurrence.at)
                    });
                now < window_end
            }
            Action::Stop => {
                let after = occurrence
                    .at
                    .checked_add(1.second())
                    .unwrap_or(occurrence.at);
                !self
                    .occurrences(after, now.checked_add(1.second()).unwrap_or(now))
                    .iter()
                    .any(|later| later.action == Action::Start)
            }
        }
    }
}

/// A `HH:MM` (or `H:MM`) time of day, exactly: no spaces, signs or seconds.
pub fn parse_time(text: &str) -> Result<Time, String> {
    let bad = || format!("'{text}' is not a time of day (HH:MM)");
    let (hours, minutes) = text.split_once(':').ok_or_else(bad)?;
    let digits = |part: &str, lengths: std::ops::RangeInclusive<usize>| {
        lengths.contains(&part.len()) && part.bytes().all(|byte| byte.is_ascii_digit())
    };
    if !digits(hours, 1..=2) || !digits(minutes, 2..=2) {
        return Err(bad());
    }
    let (hours, minutes): (i8, i8) = (
        hours.parse().map_err(|_| bad())?,
        minutes.parse().map_err(|_| bad())?,
    );
    Time::new(hours, minutes, 0, 0).map_err(|_| bad())
}

/// A `YYYY-MM-DD` date.
pub fn parse_date(text: &str) -> Result<Date, String> {
    text.trim()
        .parse()
        .map_err(|_| format!("'{text}' is not a date (YYYY-MM-DD)"))
}

/// An IANA time zone such as `Europe/Berlin`.
pub fn parse_time_zone(name: &str) -> Result<TimeZone, String> {
    TimeZone::get(name)
        .map_err(|_| format!("'{name}' is not a known time zone (such as Europe/Berlin)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(zone: &str, local: &str) -> Timestamp {
        let datetime: jiff::civil::DateTime = local.parse().unwrap();
        datetime
            .to_zoned(TimeZone::get(zone).unwrap())
            .unwrap()
            .timestamp()
    }

    fn weekly(zone: &str, days: &[&str], start: &str, stop: Option<&str>) -> Rule {
        Rule {
            repeat: Repeat::Weekly {
                days: Weekdays::from_names(days.iter().copied()).unwrap(),
                from: parse_date("2026-01-01").unwrap(),
                until: None,
            },
            start: Some(parse_time(start).unwrap()),
            stop: stop.map(|stop| parse_time(stop).unwrap()),
            time_zone: parse_time_zone(zone).unwrap(),
        }
    }

    fn local_times(rule: &Rule, from: Timestamp, to: Timestamp) -> Vec<String> {
        rule.occurrences(from, to)
            .iter()
            .map(|occurrence| {
                let local = occurrence.at.to_zoned(rule.time_zone.clone());
                format!(
                    "{} {} {}",
                    occurrence.action.as_str(),
                    local.strftime("%a %Y-%m-%d %H:%M"),
                    local.offset()
                )
            })
            .collect()
    }

    #[test]
    fn a_weekly_class_keeps_its_local_time_across_daylight_saving_changes() {
        // Berlin moves its clocks on 2026-03-29, New York on 2026-03-08: the same local hour
        // is another UTC hour on each side of the change.
        for (zone, before, after, winter, summer) in [
            (
                "Europe/Berlin",
                "2026-03-23T00:00",
                "2026-04-03T00:00",
                "+01",
                "+02",
            ),
            (
                "America/New_York",
                "2026-03-02T00:00",
                "2026-03-13T00:00",
                "-05",
                "-04",
            ),
        ] {
            let rule = weekly(zone, &["mon"], "08:00", Some("10:00"));
            let times = local_times(&rule, at(zone, before), at(zone, after));
            assert_eq!(times.len(), 4, "{zone}: {times:?}");
            assert!(
                times
                    .iter()
                    .all(|time| time.contains(" 08:00 ") || time.contains(" 10:00 ")),
                "{times:?}"
            );
            assert!(
                times[0].ends_with(winter) && times[3].ends_with(summer),
                "{zone}: {times:?}"
            );
            let utc_hour = |index: usize| {
                rule.occurrences(at(zone, before), at(zone, after))[index]
                    .at
                    .to_zoned(TimeZone::UTC)
                    .hour()
            };
            assert_eq!(
                utc_hour(0) - utc_hour(2),
                1,
                "{zone}: an hour earlier in UTC in summer"
            );
        }
    }

    #[test]
    fn windows_pair_each_start_with_the_stop_of_its_day_overnight_too() {
        let rule = Rule {
            repeat: Repeat::Weekly {
                days: Weekdays::from_names(["mon"]).unwrap(),
                from: parse_date("2026-12-07").unwrap(),
                until: None,
            },
            start: Some(parse_time("22:00").unwrap()),
            stop: Some(parse_time("02:00").unwrap()),
            time_zone: parse_time_zone("UTC").unwrap(),
        };
        let from: Timestamp = "2026-12-07T00:00:00Z".parse().unwrap();
        let to: Timestamp = "2026-12-21T00:00:00Z".parse().unwrap();
        let windows = rule.windows(from, to);
        let shown: Vec<String> = windows
            .iter()
            .map(|(start, stop)| format!("{start} {stop}"))
            .collect();
        assert_eq!(
            shown,
            [
                "2026-12-07T22:00:00Z 2026-12-08T02:00:00Z",
                "2026-12-14T22:00:00Z 2026-12-15T02:00:00Z"
            ]
        );
        let start_only = Rule { stop: None, ..rule };
        assert!(start_only.windows(from, to).is_empty());
    }

    #[test]
    fn a_time_the_clocks_skip_moves_later_and_a_repeated_one_is_the_first() {
        let zone = "Europe/Berlin";
        let rule = weekly(zone, &["sun"], "02:30", None);
        // 2026-03-29: 02:00 → 03:00, so 02:30 does not exist and becomes 03:30 (+02).
        let spring = local_times(
            &rule,
            at(zone, "2026-03-29T00:00"),
            at(zone, "2026-03-30T00:00"),
        );
        assert_eq!(spring, ["start Sun 2026-03-29 03:30 +02"]);
        // 2026-10-25: 03:00 → 02:00, so 02:30 happens twice: the first, still summer time.
        let autumn = local_times(
            &rule,
            at(zone, "2026-10-25T00:00"),
            at(zone, "2026-10-26T00:00"),
        );
        assert_eq!(autumn, ["start Sun 2026-10-25 02:30 +02"]);
    }

    #[test]
    fn an_overnight_stop_is_on_the_next_day_and_one_time_rules_act_once() {
        let zone = "UTC";
        let rule = weekly(zone, &["fri"], "22:00", Some("02:00"));
        let times = local_times(
            &rule,
            at(zone, "2026-12-04T00:00"),
            at(zone, "2026-12-06T00:00"),
        );
        assert_eq!(
            times,
            [
                "start Fri 2026-12-04 22:00 +00",
                "stop Sat 2026-12-05 02:00 +00"
            ]
        );
        let once = Rule {
            repeat: Repeat::Once {
                date: parse_date("2026-12-07").unwrap(),
            },
            start: None,
            stop: Some(parse_time("17:00").unwrap()),
            time_zone: TimeZone::UTC,
        };
        let times = local_times(
            &once,
            at(zone, "2026-12-01T00:00"),
            at(zone, "2026-12-31T00:00"),
        );
        assert_eq!(times, ["stop Mon 2026-12-07 17:00 +00"]);
    }

    #[test]
    fn missed_occurrences_count_only_while_they_still_mean_something() {
        let zone = "UTC";
        let rule = weekly(zone, &["mon", "tue"], "08:00", Some("10:00"));
        let monday = rule.occurrences(at(zone, "2026-12-07T00:00"), at(zone, "2026-12-08T00:00"));
        let (start, stop) = (monday[0], monday[1]);
        // A start is worth making until its window ends.
        assert!(rule.still_meaningful(&start, at(zone, "2026-12-07T09:59")));
        assert!(!rule.still_meaningful(&start, at(zone, "2026-12-07T10:00")));
        // A stop is worth making until the rule starts the VMs again.
        assert!(rule.still_meaningful(&stop, at(zone, "2026-12-08T07:59")));
        assert!(!rule.still_meaningful(&stop, at(zone, "2026-12-08T08:00")));
        // Without a stop time, a start is worth making for an hour.
        let start_only = weekly(zone, &["mon"], "08:00", None);
        let start =
            start_only.occurrences(at(zone, "2026-12-07T00:00"), at(zone, "2026-12-08T00:00"))[0];
        assert!(start_only.still_meaningful(&start, at(zone, "2026-12-07T08:59")));
        assert!(!start_only.still_meaningful(&start, at(zone, "2026-12-07T09:00")));
    }

    #[test]
    fn bad_parts_are_named() {
        assert!(parse_time("25:00").unwrap_err().contains("25:00"));
        assert!(parse_time("8").is_err());
        assert!(parse_date("2026-02-30").is_err());
        assert!(
            parse_time_zone("Mars/Olympus")
                .unwrap_err()
                .contains("Mars/Olympus")
        );
        assert!(
            Weekdays::from_names(["mon", "funday"])
                .unwrap_err()
                .contains("funday")
        );
        assert_eq!(
            Weekdays::from_names(["mon", "sun"]).unwrap().names(),
            ["mon", "sun"]
        );
        assert!(Weekdays::from_names(["Mon"]).is_err(), "exactly as written");
        for loose in [" 08:00", "+8:00", "08:0", "08:00:00", "8h00"] {
            assert!(parse_time(loose).is_err(), "{loose}");
        }
        assert_eq!(parse_time("8:05").unwrap(), Time::new(8, 5, 0, 0).unwrap());
        let mut rule = weekly("UTC", &["mon"], "08:00", None);
        rule.start = None;
        assert!(rule.validate().is_err());
    }
}
