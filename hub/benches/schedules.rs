//! The scheduler with many classes: `cargo bench -p proxlab-hub --bench schedules`.
//!
//! A real hub (SQLite) with 500 classes, each with a weekly rule (every day, start and stop,
//! time zones of three continents). Prints the wall and CPU time of one scheduler pass when
//! nothing is due (what every hub pays at each wake-up), of the pass that acts on all 500
//! starts at once (the classes have no VMs, so this is the scheduler's own cost: claims,
//! meaning checks, records), and, with the hub's real loop, how long after an occurrence's
//! time its record is written. Asserts nothing about speed.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{TestHub, cpu_time};
use jiff::Timestamp;
use proxlab_hub::db::classes::NewClass;
use proxlab_hub::db::schedules::ScheduleRow;
use proxlab_hub::db::users::Role;
use proxlab_hub::domain::schedules::scheduler;

const CLASSES: usize = 500;
const ZONES: [&str; 3] = ["Europe/Berlin", "America/New_York", "Asia/Tokyo"];

fn rule(class_id: i64, index: usize, start: &str, stop: &str, zone: &str) -> ScheduleRow {
    ScheduleRow {
        id: 0,
        class_id,
        repeat: "weekly".into(),
        start_date: "2026-01-01".into(),
        end_date: None,
        weekdays: 0b111_1111,
        start_time: Some(start.into()),
        stop_time: Some(stop.into()),
        time_zone: zone.into(),
        note: format!("rule {index}"),
        created_by: "bench".into(),
        created_at: 0,
    }
}

#[tokio::main]
async fn main() {
    let hub = TestHub::start_configured(None, |config| {
        config.schedules.run_scheduler = false;
    })
    .await;
    let state = hub.hub().state.clone();
    let db = &state.db;
    let teacher = db.insert_user("tina", Role::Teacher, "x", 0).await.unwrap();
    for index in 0..CLASSES {
        let class = NewClass {
            name: format!("class {index}"),
            seats: 1,
            ..NewClass::default()
        };
        let class_id = db.insert_class(&class, teacher, 0).await.unwrap();
        let zone = ZONES[index % ZONES.len()];
        db.insert_schedule(&rule(class_id, index, "08:00", "16:00", zone))
            .await
            .unwrap();
    }

    // A quiet moment: nothing is due anywhere (03:00 in every zone's night is not needed;
    // starts and stops are all at 08:00/16:00 local, and a week of catch-up is done first).
    let quiet = "2026-12-07T05:30:00Z".parse::<Timestamp>().unwrap();
    scheduler::run_due(&state, quiet).await.unwrap();
    let mut walls = Vec::new();
    let cpu_before = cpu_time();
    for _ in 0..20 {
        let started = Instant::now();
        let fired = scheduler::run_due(&state, quiet).await.unwrap();
        walls.push(started.elapsed());
        assert!(fired.is_empty());
    }
    let cpu = (cpu_time() - cpu_before) / 20;
    walls.sort();
    println!(
        "schedules: classes={CLASSES} quiet_pass_p50_ms={:.1} quiet_pass_cpu_ms={:.1}",
        walls[10].as_secs_f64() * 1000.0,
        cpu.as_secs_f64() * 1000.0
    );

    // Berlin's 08:00 that day: a third of the classes start at once.
    let berlin_start = "2026-12-07T07:00:00Z".parse::<Timestamp>().unwrap();
    let cpu_before = cpu_time();
    let started = Instant::now();
    let fired = scheduler::run_due(&state, berlin_start).await.unwrap();
    let wall = started.elapsed();
    let cpu = cpu_time() - cpu_before;
    println!(
        "schedules: acted_on={} busy_pass_ms={:.1} busy_pass_cpu_ms={:.1}",
        fired.len(),
        wall.as_secs_f64() * 1000.0,
        cpu.as_secs_f64() * 1000.0
    );

    // The real loop: a rule for the next minute, and how late its record is written.
    let hub = TestHub::start().await;
    let state = hub.hub().state.clone();
    let db = &state.db;
    let teacher = db.insert_user("tina", Role::Teacher, "x", 0).await.unwrap();
    let class = NewClass {
        name: "timed".into(),
        seats: 1,
        ..NewClass::default()
    };
    let class_id = db.insert_class(&class, teacher, 0).await.unwrap();
    let now = Timestamp::now().to_zoned(jiff::tz::TimeZone::UTC);
    let next_minute = now
        .checked_add(jiff::Span::new().minutes(1))
        .unwrap()
        .round(
            jiff::ZonedRound::new()
                .smallest(jiff::Unit::Minute)
                .mode(jiff::RoundMode::Trunc),
        )
        .unwrap();
    let start = next_minute.strftime("%H:%M").to_string();
    let mut row = rule(class_id, 0, &start, &start, "UTC");
    row.stop_time = None;
    row.start_date = next_minute.date().to_string();
    row.created_at = Timestamp::now().as_second();
    db.insert_schedule(&row).await.unwrap();
    state.schedules_changed.notify_waiters();
    let deadline = next_minute.timestamp();
    println!("schedules: waiting for {start} UTC (up to a minute)");
    let late = loop {
        let firings = db.firings_since(deadline.as_second()).await.unwrap();
        if firings.iter().any(|firing| firing.done_at.is_some()) {
            break Timestamp::now().duration_since(deadline);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    println!(
        "schedules: occurrence_to_done_ms={:.0} (polled every 5 ms)",
        late.as_secs_f64() * 1000.0
    );
}
