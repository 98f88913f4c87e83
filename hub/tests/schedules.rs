//! Class schedules end to end: a real hub (its scheduler loop off, driven here with a clock of
//! the test's own), two real agents, a two-node pve-sim cluster.

mod common;

use common::crash::CrashLab;
use common::lab::Lab;
use common::pg::{self, PgDatabase};
use common::web::{EventStream, WebClient, join_class};
use common::within;
use jiff::{Timestamp, ToSpan};
use proxlab_hub::db::schedules::FiringRow;
use proxlab_hub::db::users::Role;
use proxlab_hub::domain::schedules::scheduler::{self, Fired};
use proxlab_protocol::inventory::PowerState;
use reqwest::StatusCode;
use serde_json::{Value, json};

/// A local time in a zone as an instant.
fn at(zone: &str, local: &str) -> Timestamp {
    let datetime: jiff::civil::DateTime = local.parse().unwrap();
    datetime
        .to_zoned(jiff::tz::TimeZone::get(zone).unwrap())
        .unwrap()
        .timestamp()
}

/// The next Monday after today, as `YYYY-MM-DD`.
fn next_monday() -> String {
    let today = jiff::Zoned::now().date();
    let mut day = today.tomorrow().unwrap();
    while day.weekday() != jiff::civil::Weekday::Monday {
        day = day.tomorrow().unwrap();
    }
    day.to_string()
}

fn plus(time: Timestamp, seconds: i64) -> Timestamp {
    Timestamp::from_second(time.as_second() + seconds).unwrap()
}

/// Gives the class a weekly rule, Mondays 08:00 to 10:00 UTC from next Monday; returns
/// that Monday's start.
async fn mondays_8_to_10_utc(teacher: &WebClient, class_id: i64) -> Timestamp {
    let monday = next_monday();
    let made = teacher
        .api_post_json(
            &format!("/api/v1/classes/{class_id}/schedule/rules"),
            &json!({"repeat": "weekly", "date": monday, "weekdays": ["mon"],
                    "start": "08:00", "stop": "10:00", "time_zone": "UTC"}),
        )
        .await;
    assert_eq!(made.status(), StatusCode::CREATED);
    at("UTC", &format!("{monday}T08:00"))
}

async fn powers(lab: &Lab, vmids: &[u32]) -> Vec<PowerState> {
    let mut states = Vec::new();
    for vmid in vmids {
        let vm = lab
            .hub
            .hub()
            .state
            .db
            .vm(lab.key(*vmid))
            .await
            .unwrap()
            .unwrap();
        states.push(vm.status);
    }
    states
}

fn summary(fired: &[Fired]) -> Vec<(&'static str, &'static str, String)> {
    fired
        .iter()
        .map(|fired| (fired.action, fired.outcome, fired.detail.clone()))
        .collect()
}

#[tokio::test]
async fn a_weekly_schedule_starts_warns_and_stops_the_students_vms_once() {
    let lab = Lab::start_configured("shared", |config| {
        config.schedules.run_scheduler = false;
        config.schedules.time_zone = "Europe/Berlin".into();
    })
    .await;
    let state = &lab.hub.hub().state;
    let teacher = lab.user("tina", Role::Teacher).await;
    let alice = lab.user("alice", Role::Student).await;
    let (class_id, vmids) = lab.deployed_class(&teacher, "Timed", 2).await;
    join_class(&teacher, &alice, class_id).await;
    let students: Vec<u32> = vmids[1..].to_vec();
    let teacher_vm = vmids[0];

    // Mondays 08:00 to 10:00, Berlin time (the hub's default zone).
    let monday = next_monday();
    let rule: Value = teacher
        .api_post_json(
            &format!("/api/v1/classes/{class_id}/schedule/rules"),
            &json!({"repeat": "weekly", "date": monday, "weekdays": ["mon"],
                    "start": "08:00", "stop": "10:00", "note": "Networks lab"}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(rule["time_zone"], "Europe/Berlin", "{rule}");
    assert!(
        rule["summary"]
            .as_str()
            .unwrap()
            .starts_with("Every Mon from"),
        "{rule}"
    );
    let schedule = teacher
        .json(&format!("/api/v1/classes/{class_id}/schedule"))
        .await;
    assert_eq!(schedule["upcoming"][0]["action"], "start", "{schedule}");
    assert_eq!(
        schedule["upcoming"][0]["at"].as_i64(),
        Some(at("Europe/Berlin", &format!("{monday}T08:00")).as_second())
    );

    // Before its time, nothing; at 08:00 the students' VMs start (not the teacher's).
    let start = at("Europe/Berlin", &format!("{monday}T08:00"));
    assert!(
        scheduler::run_due(state, plus(start, -1))
            .await
            .unwrap()
            .is_empty()
    );
    let fired = scheduler::run_due(state, start).await.unwrap();
    assert_eq!(summary(&fired), [("start", "done", "2 VMs".to_owned())]);
    assert_eq!(powers(&lab, &students).await, [PowerState::Running; 2]);
    assert_eq!(powers(&lab, &[teacher_vm]).await, [PowerState::Stopped]);
    // Once: a later pass, or another hub process on the same database, finds it done.
    assert!(
        scheduler::run_due(state, plus(start, 30))
            .await
            .unwrap()
            .is_empty()
    );

    // Ten minutes before the stop, alice (whose VM runs) is warned on her live stream.
    let mut stream = EventStream::open(&alice, "/api/v1/events").await;
    let stop = at("Europe/Berlin", &format!("{monday}T10:00"));
    let fired = scheduler::run_due(state, plus(stop, -600)).await.unwrap();
    assert_eq!(
        summary(&fired),
        [(
            "warn",
            "done",
            "warned the users of 1 running VMs".to_owned()
        )]
    );
    let notice = stream
        .until("the warning", |_, _| {}, |name, _| name == "notice")
        .await;
    let message = notice["message"].as_str().unwrap();
    assert!(
        message.contains("stops this VM at 10:00 (Europe/Berlin), in 10 min"),
        "{message}"
    );

    // At 10:00 they stop (shut down); the task log and the audit log say who did it.
    let fired = scheduler::run_due(state, stop).await.unwrap();
    assert_eq!(summary(&fired), [("stop", "done", "2 VMs".to_owned())]);
    assert_eq!(powers(&lab, &students).await, [PowerState::Stopped; 2]);
    // Each tile says who stopped it, and when.
    for vmid in &students {
        let vm = state.db.vm(lab.key(*vmid)).await.unwrap().unwrap();
        assert_eq!(
            vm.stop_reason.as_deref(),
            Some("Stopped by the class schedule at Mon 10:00 (Europe/Berlin)")
        );
    }
    let audit = state
        .db
        .find_audit(&proxlab_hub::db::audit::AuditFilter {
            actor: Some("class schedule".into()),
            limit: 50,
            ..Default::default()
        })
        .await
        .unwrap();
    let by_schedule: Vec<&str> = audit
        .iter()
        .filter(|entry| entry.actor == "class schedule")
        .map(|entry| entry.action.as_str())
        .collect();
    assert_eq!(
        by_schedule
            .iter()
            .filter(|action| **action == "vm.start")
            .count(),
        2
    );
    assert_eq!(
        by_schedule
            .iter()
            .filter(|action| **action == "vm.shutdown")
            .count(),
        2
    );

    // A hub that was down all of the next Monday morning: the start's window had ended,
    // so it is skipped (and says why); the stop finds nothing to stop.
    let next = plus(start, 7 * 86_400);
    let fired = scheduler::run_due(state, plus(next, 3 * 3600))
        .await
        .unwrap();
    let mut seen = summary(&fired);
    seen.sort();
    assert_eq!(
        seen,
        [
            (
                "start",
                "skipped",
                "its window had ended before a hub could act on it".to_owned()
            ),
            ("stop", "done", "no VM needed it".to_owned()),
        ]
    );
    assert_eq!(powers(&lab, &students).await, [PowerState::Stopped; 2]);

    // The class page shows the rule, the week and what the schedule did.
    let page = WebClient::login(&lab.hub.url(), "tina", "a-long-password").await;
    let html = page
        .get(&format!("/classes/{class_id}"))
        .await
        .text()
        .await
        .unwrap();
    assert!(html.contains("Every Mon from"), "the rule");
    assert!(html.contains("Networks lab"), "its note");
    assert!(html.contains("window had ended"), "the history");

    // Removing the rule ends it: its next Monday does nothing.
    let removed = teacher
        .api_delete(&format!(
            "/api/v1/classes/{class_id}/schedule/rules/{}",
            rule["id"]
        ))
        .await;
    assert_eq!(removed.status(), StatusCode::OK);
    let later = plus(start, 14 * 86_400);
    assert!(scheduler::run_due(state, later).await.unwrap().is_empty());
}

#[tokio::test]
async fn schedule_rules_are_checked_and_only_the_class_teachers_set_them() {
    let lab = Lab::start_configured("shared", |config| {
        config.schedules.run_scheduler = false;
    })
    .await;
    let teacher = lab.user("tina", Role::Teacher).await;
    let other = lab.user("otto", Role::Teacher).await;
    let student = lab.user("alice", Role::Student).await;
    let (class_id, _) = lab.deployed_class(&teacher, "Rules", 1).await;
    let path = format!("/api/v1/classes/{class_id}/schedule/rules");
    let good = json!({"repeat": "once", "date": "2027-01-11", "stop": "17:00"});
    for client in [&other, &student] {
        let refused = client.api_post_json(&path, &good).await;
        assert_eq!(refused.status(), StatusCode::NOT_FOUND);
    }
    for (bad, says) in [
        (
            json!({"repeat": "weekly", "date": "2027-01-11", "start": "08:00"}),
            "weekday",
        ),
        (
            json!({"repeat": "once", "date": "2027-01-11", "start": "8h"}),
            "not a time of day",
        ),
        (
            json!({"repeat": "once", "date": "2027-02-30", "start": "08:00"}),
            "not a date",
        ),
        (
            json!({"repeat": "once", "date": "2027-01-11", "start": "08:00", "time_zone": "Moon/Base"}),
            "Moon/Base",
        ),
        (
            json!({"repeat": "once", "date": "2027-01-11"}),
            "start time, a stop time",
        ),
        (
            json!({"repeat": "once", "date": "2027-01-11", "start": "08:00", "colour": "red"}),
            "colour",
        ),
    ] {
        let answer = teacher.api_post_json(&path, &bad).await;
        assert_eq!(answer.status(), StatusCode::BAD_REQUEST, "{bad}");
        let body: Value = answer.json().await.unwrap();
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{bad}: {message}");
    }
    let made = teacher.api_post_json(&path, &good).await;
    assert_eq!(made.status(), StatusCode::CREATED);
    let schedule = teacher
        .json(&format!("/api/v1/classes/{class_id}/schedule"))
        .await;
    assert_eq!(schedule["rules"].as_array().unwrap().len(), 1);
    assert_eq!(schedule["default_time_zone"], "UTC");
}

#[tokio::test]
async fn a_running_class_vm_says_when_the_schedule_stops_it() {
    let lab = Lab::start_configured("shared", |config| {
        config.schedules.run_scheduler = false;
    })
    .await;
    let teacher = lab.user("tina", Role::Teacher).await;
    let alice = lab.user("alice", Role::Student).await;
    let (class_id, _) = lab.deployed_class(&teacher, "Soon", 1).await;
    let vmid = join_class(&teacher, &alice, class_id).await["vmid"]
        .as_u64()
        .unwrap();
    let stop = Timestamp::now()
        .to_zoned(jiff::tz::TimeZone::UTC)
        .checked_add(jiff::Span::new().hours(2))
        .unwrap();
    let stop_time = stop.strftime("%H:%M").to_string();
    let made = teacher
        .api_post_json(
            &format!("/api/v1/classes/{class_id}/schedule/rules"),
            &json!({"repeat": "once", "date": stop.date().to_string(), "stop": stop_time}),
        )
        .await;
    assert_eq!(made.status(), StatusCode::CREATED);
    let said = format!("at {stop_time} (UTC), by the class schedule");
    let page = WebClient::login(&lab.hub.url(), "alice", "a-long-password").await;
    let stopped = page.get("/vms").await.text().await.unwrap();
    assert!(!stopped.contains(&said), "a stopped VM has nothing to stop");
    let started = alice.api_post(&format!("/api/v1/vms/{vmid}/start")).await;
    assert_eq!(started.status(), StatusCode::OK);
    for path in ["/vms".to_owned(), format!("/vms/{vmid}")] {
        let html = page.get(&path).await.text().await.unwrap();
        assert!(html.contains(&said), "{path} says when it stops");
    }
}

#[tokio::test]
async fn a_start_that_finds_the_nodes_offline_is_tried_again_once_they_are_back() {
    let mut lab = Lab::start_configured("shared", |config| {
        config.schedules.run_scheduler = false;
    })
    .await;
    let state = lab.hub.hub().state.clone();
    let teacher = lab.user("tina", Role::Teacher).await;
    let (class_id, vmids) = lab.deployed_class(&teacher, "Early", 2).await;
    let students = vmids[1..].to_vec();
    let start = mondays_8_to_10_utc(&teacher, class_id).await;

    // The hub came back at 07:59; the nodes' agents are not back yet at 08:00.
    lab.kill_agents();
    for node in ["pve1", "pve2"] {
        within(
            &format!("{node} offline"),
            state.registry.wait_for(node, false),
        )
        .await;
    }
    let fired = scheduler::run_due(&state, start).await.unwrap();
    assert_eq!(fired.len(), 1);
    assert_eq!((fired[0].action, fired[0].outcome), ("start", "failed"));
    // Not again before the retry time; after it, with the nodes back, the VMs start.
    assert!(
        scheduler::run_due(&state, plus(start, 10))
            .await
            .unwrap()
            .is_empty()
    );
    lab.restart_agents().await;
    let retry = plus(start, scheduler::RETRY_SECS + 1);
    let fired = scheduler::run_due(&state, retry).await.unwrap();
    assert_eq!(summary(&fired), [("start", "done", "2 VMs".to_owned())]);
    assert_eq!(powers(&lab, &students).await, [PowerState::Running; 2]);
    // Done is done.
    assert!(
        scheduler::run_due(&state, plus(retry, 60))
            .await
            .unwrap()
            .is_empty()
    );
}

/// The firings of one rule, as `(action, outcome)`, oldest first.
async fn firings_of(db: &proxlab_hub::db::Db, rule: i64) -> Vec<FiringRow> {
    let mut firings: Vec<FiringRow> = db
        .firings_since(0)
        .await
        .unwrap()
        .into_iter()
        .filter(|firing| firing.schedule_id == rule)
        .collect();
    firings.sort_by_key(|firing| (firing.due_at, firing.action.clone()));
    firings
}

/// Waits (reading the hub's database beside it) until the rule's firings satisfy `done`.
async fn until_firings(
    db: &proxlab_hub::db::Db,
    rule: i64,
    what: &str,
    done: impl Fn(&[FiringRow]) -> bool,
) -> Vec<FiringRow> {
    let wait = async {
        loop {
            let firings = firings_of(db, rule).await;
            if done(&firings) {
                return firings;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    };
    match tokio::time::timeout(*common::WAIT, wait).await {
        Ok(firings) => firings,
        Err(_) => panic!(
            "timed out waiting for {what}: {:?}",
            firings_of(db, rule).await
        ),
    }
}

#[tokio::test]
async fn a_scheduled_start_acts_once_across_hub_kills() {
    let mut lab = CrashLab::start().await;
    let (class_id, students) = lab.deployed_class("Night lab", 2).await;
    let day = jiff::Zoned::now()
        .with_time_zone(jiff::tz::TimeZone::UTC)
        .date()
        .checked_add(3.days())
        .unwrap()
        .to_string();
    let start = at("UTC", &format!("{day}T03:00"));
    // Each start takes the nodes 4 s, so the kill below lands while the hub is starting.
    lab.sim.ok("pve1", "fault", &["--latency", "qm start=4000"]);
    lab.set_hub_clock(plus(start, -2));
    let rule: Value = lab
        .teacher
        .api_post_json(
            &format!("/api/v1/classes/{class_id}/schedule/rules"),
            &json!({"repeat": "once", "date": day, "start": "03:00", "stop": "03:20",
                    "time_zone": "UTC"}),
        )
        .await
        .json()
        .await
        .unwrap();
    let rule = rule["id"].as_i64().unwrap_or_else(|| panic!("{rule}"));
    let db = lab.db().await;

    // Killed (SIGKILL) with the start claimed and not done.
    until_firings(&db, rule, "the start claimed", |firings| {
        !firings.is_empty()
    })
    .await;
    lab.kill_hub().await;
    let claimed = firings_of(&db, rule).await;
    assert_eq!(claimed.len(), 1, "{claimed:?}");
    assert_eq!(
        (claimed[0].action.as_str(), claimed[0].done_at),
        ("start", None),
        "the kill landed mid-start: {claimed:?}"
    );
    lab.sim.ok("pve1", "fault", &["--latency", "qm start=0"]);

    // Back past the claim's lease (still inside the window): the new hub takes the start
    // over, once, and the students' VMs run.
    lab.set_hub_clock(plus(start, scheduler::LEASE_SECS + 10));
    lab.start_hub().await;
    let firings = until_firings(&db, rule, "the start taken over", |firings| {
        firings.iter().any(|firing| firing.done_at.is_some())
    })
    .await;
    assert_eq!(firings.len(), 1, "{firings:?}");
    assert_eq!(firings[0].outcome, "done", "{firings:?}");
    assert_ne!(firings[0].claimed_by, claimed[0].claimed_by);
    for vmid in &students {
        let vm = lab.teacher.json(&format!("/api/v1/vms/{vmid}")).await;
        assert_eq!(vm["status"], "running", "{vm}");
    }

    // A student's VM stopped by the teacher stays stopped when a killed hub comes back:
    // the start is done and is not done again. The stop missed while it was down is done.
    let stopped = students[0];
    let response = lab
        .teacher
        .api_post(&format!("/api/v1/vms/{stopped}/stop"))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    lab.kill_hub().await;
    lab.set_hub_clock(plus(start, 20 * 60 + 5));
    lab.start_hub().await;
    let firings = until_firings(&db, rule, "the missed stop", |firings| {
        firings
            .iter()
            .filter(|firing| firing.done_at.is_some())
            .count()
            == 2
    })
    .await;
    let seen: Vec<(&str, &str)> = firings
        .iter()
        .map(|firing| (firing.action.as_str(), firing.outcome.as_str()))
        .collect();
    assert_eq!(
        seen,
        [("start", "done"), ("stop", "done")],
        "one start and one stop: {firings:?}"
    );
    for vmid in &students {
        let vm = lab.teacher.json(&format!("/api/v1/vms/{vmid}")).await;
        assert_eq!(vm["status"], "stopped", "{vm}");
    }
    // What happened to the stopped VM, oldest first: no start by the schedule after the
    // teacher's stop. (The stop may have asked it to shut down: its node's report of the
    // teacher's stop can be a moment late, and a shutdown of a stopped VM does nothing.)
    let mut history = db
        .find_audit(&proxlab_hub::db::audit::AuditFilter {
            target: Some(common::key_of(&db, stopped).await.audit_target()),
            limit: 50,
            ..Default::default()
        })
        .await
        .unwrap();
    history.sort_by_key(|entry| entry.id);
    let teacher_stop = history
        .iter()
        .position(|entry| entry.actor == "tina" && entry.action == "vm.stop")
        .unwrap_or_else(|| panic!("{history:?}"));
    assert!(
        history[teacher_stop + 1..]
            .iter()
            .all(|entry| entry.actor != scheduler::ACTOR || entry.action != "vm.start"),
        "{history:?}"
    );
    db.close().await;
}

/// A second hub process's state on the lab hub's database: its own data directory, keys and
/// (empty) agent registry; only the database is shared.
async fn second_hub(lab: &Lab, dir: &std::path::Path) -> proxlab_hub::Hub {
    let mut config = proxlab_hub::config::HubConfig::new(dir.join("hub2"));
    config.database_url = Some(lab.hub.config.database_url.clone().unwrap_or_else(|| {
        let file = lab.hub.config.data_dir.join("hub.db");
        format!("sqlite://{}?mode=rwc", file.display())
    }));
    config.http_addr = "127.0.0.1:0".parse().unwrap();
    config.quic_addr = "127.0.0.1:0".parse().unwrap();
    config.schedules.run_scheduler = false;
    proxlab_hub::Hub::start(config)
        .await
        .expect("the second hub starts")
}

#[tokio::test]
async fn two_hubs_on_one_database_act_on_an_occurrence_once() {
    let pg = match pg::server_url("two hubs on one database") {
        Some(server) => Some(PgDatabase::create(&server).await),
        None => None,
    };
    let databases = [None, pg.as_ref().map(|db| db.url.clone())];
    for database_url in &databases[..if pg.is_some() { 2 } else { 1 }] {
        let lab = Lab::start_configured("shared", |config| {
            config.schedules.run_scheduler = false;
            config.database_url = database_url.clone();
        })
        .await;
        let dir = tempfile::tempdir().unwrap();
        let other = second_hub(&lab, dir.path()).await;
        let teacher = lab.user("tina", Role::Teacher).await;
        let (class_id, vmids) = lab.deployed_class(&teacher, "Shared", 2).await;
        let start = mondays_8_to_10_utc(&teacher, class_id).await;

        // Both hubs look at 08:00 at the same moment: one of them has the start.
        let (first, second) = tokio::join!(
            scheduler::run_due(&lab.hub.hub().state, start),
            scheduler::run_due(&other.state, start)
        );
        let (first, second) = (first.unwrap(), second.unwrap());
        assert_eq!(
            first.len() + second.len(),
            1,
            "{database_url:?}: {first:?} {second:?}"
        );
        // The second hub has no agents: had it won, its start failed, and is the lab hub's
        // to try again after the retry time. Either way it is done once, by one hub.
        if !second.is_empty() {
            assert_eq!(second[0].outcome, "failed", "{second:?}");
            let retry = plus(start, scheduler::RETRY_SECS + 1);
            let fired = scheduler::run_due(&lab.hub.hub().state, retry)
                .await
                .unwrap();
            assert_eq!(summary(&fired), [("start", "done", "2 VMs".to_owned())]);
        } else {
            assert_eq!(summary(&first), [("start", "done", "2 VMs".to_owned())]);
        }
        assert_eq!(powers(&lab, &vmids[1..]).await, [PowerState::Running; 2]);
        let later = plus(start, scheduler::RETRY_SECS * 4);
        let (first, second) = tokio::join!(
            scheduler::run_due(&lab.hub.hub().state, later),
            scheduler::run_due(&other.state, later)
        );
        assert!(first.unwrap().is_empty() && second.unwrap().is_empty());
        other.shutdown().await;
    }
    if let Some(pg) = pg {
        pg.drop_database().await;
    }
}
