//! Importing class rosters: `cargo bench -p proxlab-hub --bench roster`.
//!
//! A real hub (SQLite in its data directory) and a class, then two imports through the same
//! code the class page and the API use: 1,000 people without accounts made as local
//! accounts (a generated password and an argon2id hash each, hashed on every core), and
//! 5,000 made as accounts waiting for single sign-on (no hash). Prints the time of each and
//! the per-account cost. Asserts nothing about speed.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Instant;

use common::TestHub;
use proxlab_hub::db::classes::NewClass;
use proxlab_hub::db::users::Role;
use proxlab_hub::domain::classes::roster;
use proxlab_hub::domain::sign_in::SignInConfig;
use proxlab_hub::domain::sign_in::settings::SignInSection;
use proxlab_hub::domain::viewer::Viewer;

fn roster_csv(prefix: &str, people: usize) -> String {
    let mut csv = String::from("email,display_name\n");
    for n in 0..people {
        csv.push_str(&format!("{prefix}{n:05}@school.test,Student {n}\n"));
    }
    csv
}

async fn class_of(hub: &TestHub, teacher: &str) -> (Viewer, i64) {
    let db = &hub.hub().state.db;
    let teacher_id = db
        .insert_user(teacher, Role::Teacher, "x", 0)
        .await
        .unwrap();
    let class = NewClass {
        name: format!("{teacher}'s lecture"),
        seats: 0,
        ..NewClass::default()
    };
    let class_id = db.insert_class(&class, teacher_id, 0).await.unwrap();
    let row = db.user_by_id(teacher_id).await.unwrap().unwrap();
    (Viewer::from(&row), class_id)
}

async fn measure(hub: &TestHub, teacher: &str, prefix: &str, people: usize, what: &str) {
    let (viewer, class_id) = class_of(hub, teacher).await;
    let csv = roster_csv(prefix, people);
    let started = Instant::now();
    let outcome = roster::import(&hub.hub().state, &viewer, class_id, csv.as_bytes())
        .await
        .unwrap();
    let took = started.elapsed();
    assert_eq!(outcome.enrolled, people);
    println!(
        "{people} people as {what}: {:.2} s ({:.2} ms each)",
        took.as_secs_f64(),
        took.as_secs_f64() * 1000.0 / people as f64
    );
}

#[tokio::main]
async fn main() {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    println!("roster imports on {cores} cores, SQLite:");
    let local = TestHub::start().await;
    measure(&local, "tina", "l", 1000, "local accounts (argon2id each)").await;
    let section: SignInSection = toml::from_str(
        "roster_accounts = \"ldap\"\n[ldap]\nurl = \"ldaps://127.0.0.1:1\"\n\
         user_dn_template = \"uid={username},ou=people,dc=school,dc=test\"\n",
    )
    .unwrap();
    let sign_in = SignInConfig::from_section(section).unwrap();
    let waiting = TestHub::start_configured(None, |config| config.sign_in = sign_in).await;
    measure(
        &waiting,
        "tom",
        "w",
        5000,
        "accounts waiting for single sign-on",
    )
    .await;
}
