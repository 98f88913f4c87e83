//! Class rosters on a real lab: a CSV enrols everyone and makes the missing accounts (local
//! ones with passwords shown once, or ones waiting for single sign-on), a file with any
//! problem imports nothing, 5,000 rows in one go, the class page's upload (CSRF inside the
//! multipart form), and invite links limited to an email domain or to the roster.

mod common;

use std::time::Instant;

use common::lab::Lab;
use common::web::{WebClient, csrf_field};
use proxlab_hub::db::users::Role;
use proxlab_hub::domain::sign_in::SignInConfig;
use proxlab_hub::domain::sign_in::settings::SignInSection;
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn upload(client: &WebClient, class_id: i64, csv: impl Into<Vec<u8>>) -> (StatusCode, Value) {
    let response = client
        .client
        .post(format!("{}/api/v1/classes/{class_id}/roster", client.base))
        .bearer_auth(client.bearer.as_deref().unwrap())
        .header("content-type", "text/csv")
        .body(csv.into())
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap())
}

async fn users(lab: &Lab) -> usize {
    lab.hub.hub().state.db.list_users().await.unwrap().len()
}

#[tokio::test]
async fn a_roster_enrols_everyone_and_makes_the_missing_accounts() {
    let lab = Lab::start().await;
    let teacher = lab.user("tina", Role::Teacher).await;
    lab.user("sam", Role::Student).await;
    let (class_id, _) = lab.deployed_class(&teacher, "Rostered", 2).await;

    let csv = "username,email,display_name\nsam,,Sam Student\nkim,kim@school.test,Kim Lee\n,lee@school.test,Lee Park\n";
    let (status, outcome) = upload(&teacher, class_id, csv).await;
    assert_eq!(status, StatusCode::OK, "{outcome}");
    assert_eq!(outcome["listed"], 3);
    assert_eq!(outcome["enrolled"], 3);
    assert_eq!(outcome["waiting"], 1, "two seats for three people");
    let created = outcome["created"].as_array().unwrap();
    let names: Vec<&str> = created
        .iter()
        .map(|a| a["username"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["kim", "lee@school.test"]);
    let kim_password = created[0]["password"].as_str().unwrap();
    assert_eq!(kim_password.len(), 20);

    let db = &lab.hub.hub().state.db;
    let kim = db.user_by_name("kim").await.unwrap().unwrap();
    assert_eq!(
        (kim.email.as_str(), kim.display_name.as_str()),
        ("kim@school.test", "Kim Lee")
    );
    assert_eq!(kim.role, Role::Student);
    let roster = teacher
        .json(&format!("/api/v1/classes/{class_id}/roster"))
        .await;
    let not_signed_in = |roster: &Value| -> Vec<String> {
        roster["people"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|person| person["signed_in"] == false)
            .map(|person| person["username"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(not_signed_in(&roster), ["kim", "lee@school.test", "sam"]);

    // Kim signs in with the password the teacher was shown, and has a VM.
    let kim_browser = WebClient::login(&lab.hub.url(), "kim", kim_password).await;
    let mine = kim_browser.json("/api/v1/vms").await;
    assert_eq!(mine["vms"].as_array().unwrap().len(), 1, "{mine}");
    let roster = teacher
        .json(&format!("/api/v1/classes/{class_id}/roster"))
        .await;
    assert_eq!(not_signed_in(&roster), ["lee@school.test", "sam"]);

    // The same file again changes nothing.
    let before = users(&lab).await;
    let (status, again) = upload(&teacher, class_id, csv).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (again["enrolled"].clone(), again["created"].clone()),
        (json!(0), json!([]))
    );
    assert_eq!(users(&lab).await, before);
}

#[tokio::test]
async fn a_roster_with_any_problem_imports_nothing() {
    let lab = Lab::start().await;
    let teacher = lab.user("tina", Role::Teacher).await;
    let student = lab.user("sam", Role::Student).await;
    let (class_id, _) = lab.deployed_class(&teacher, "Careful", 1).await;
    let before = users(&lab).await;
    for (what, csv, says) in [
        (
            "a duplicate",
            b"username\nnew1\nnew2\nNEW1\n".to_vec(),
            "line 4: new1 is listed twice (also on line 2)",
        ),
        (
            "an unknown column",
            b"username,klass\nnew1,7a\n".to_vec(),
            "unknown column \"klass\"",
        ),
        (
            "Latin-1 from an old spreadsheet",
            b"username,name\nnew1,Ren\xE9\n".to_vec(),
            "line 2 is not UTF-8",
        ),
        (
            "a bad username",
            b"username\nnew1\nno way\n".to_vec(),
            "line 3: invalid username",
        ),
        ("no rows", b"username\n".to_vec(), "lists nobody"),
    ] {
        let (status, answer) = upload(&teacher, class_id, csv).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{what}: {answer}");
        let message = answer["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(message.contains(says), "{what}: {answer}");
        assert!(message.contains("not imported"), "{what}: {answer}");
    }
    assert_eq!(users(&lab).await, before, "no account was made");
    let detail = teacher.json(&format!("/api/v1/classes/{class_id}")).await;
    assert_eq!(detail["students"], json!([]), "nobody was enrolled");
    // Only the class's owners import rosters.
    let (status, _) = upload(&student, class_id, "username\nx1\n").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn five_thousand_people_wait_for_their_single_sign_on() {
    // Accounts for people without one wait for their first sign-in through the directory
    // (which need not answer for an import).
    let section: SignInSection = toml::from_str(
        "roster_accounts = \"ldap\"\n[ldap]\nurl = \"ldaps://127.0.0.1:1\"\n\
         user_dn_template = \"uid={username},ou=people,dc=school,dc=test\"\n",
    )
    .unwrap();
    let sign_in = SignInConfig::from_section(section).unwrap();
    let lab = Lab::start_configured("shared", |config| config.sign_in = sign_in).await;
    let teacher = lab.user("tina", Role::Teacher).await;
    let (class_id, _) = lab.deployed_class(&teacher, "Lecture", 2).await;
    let mut csv = String::from("email,display_name\n");
    for n in 0..5000 {
        csv.push_str(&format!("s{n:04}@school.test,Student {n}\n"));
    }
    let started = Instant::now();
    let (status, outcome) = upload(&teacher, class_id, csv).await;
    eprintln!("5,000 roster rows imported in {:?}", started.elapsed());
    assert_eq!(status, StatusCode::OK, "{outcome}");
    assert_eq!(outcome["listed"], 5000);
    assert_eq!(outcome["enrolled"], 5000);
    assert_eq!(outcome["preregistered"], 5000);
    assert_eq!(outcome["created"], json!([]));
    assert_eq!(outcome["waiting"], 4998);
    let db = &lab.hub.hub().state.db;
    let waiting = db.user_by_name("s4999@school.test").await.unwrap().unwrap();
    assert_eq!(waiting.auth_source, "ldap");
    assert!(!waiting.is_local());
}

#[tokio::test]
async fn the_class_page_uploads_a_roster_and_invites_can_be_limited() {
    let lab = Lab::start().await;
    let teacher_api = lab.user("tina", Role::Teacher).await;
    lab.user("oscar", Role::Student).await;
    let (class_id, _) = lab.deployed_class(&teacher_api, "Limited", 2).await;
    let teacher = WebClient::login(&lab.hub.url(), "tina", "a-long-password").await;
    let page = teacher
        .get(&format!("/classes/{class_id}"))
        .await
        .text()
        .await
        .unwrap();
    let csrf = csrf_field(&page);
    let form = |csrf: Option<&str>| {
        let mut form = reqwest::multipart::Form::new();
        if let Some(csrf) = csrf {
            form = form.text("csrf", csrf.to_owned());
        }
        form.part(
            "roster",
            reqwest::multipart::Part::bytes(b"username,email\nkim,kim@school.test\n".to_vec())
                .file_name("roster.csv"),
        )
    };
    let url = format!("{}/classes/{class_id}/roster", teacher.base);
    let forged = teacher
        .client
        .post(&url)
        .multipart(form(None))
        .send()
        .await
        .unwrap();
    assert_eq!(
        forged.status(),
        StatusCode::FORBIDDEN,
        "an upload without the CSRF token"
    );
    let response = teacher
        .client
        .post(&url)
        .multipart(form(Some(&csrf)))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let result = response.text().await.unwrap();
    assert!(result.contains("shown only now"), "{result}");
    assert!(result.contains("download=\"passwords.csv\""));
    let password = {
        let at = result.find("<td><code>").unwrap() + "<td><code>".len();
        result[at..at + 20].to_owned()
    };

    // An invite for the roster only, and one for an email domain only.
    let invite = |rules: Value| {
        let teacher_api = &teacher_api;
        async move {
            let answer: Value = teacher_api
                .api_post_json(&format!("/api/v1/classes/{class_id}/invite"), &rules)
                .await
                .json()
                .await
                .unwrap();
            answer["token"].as_str().unwrap().to_owned()
        }
    };
    let oscar = WebClient::login(&lab.hub.url(), "oscar", "a-long-password").await;
    let kim = WebClient::login(&lab.hub.url(), "kim", &password).await;
    let roster_only = invite(json!({ "roster_only": true })).await;
    let refused = oscar.api_post(&format!("/api/v1/join/{roster_only}")).await;
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    assert!(refused.text().await.unwrap().contains("roster"));
    assert_eq!(
        kim.api_post(&format!("/api/v1/join/{roster_only}"))
            .await
            .status(),
        StatusCode::OK
    );
    let school_only = invite(json!({ "email_domain": "school.test" })).await;
    let refused = oscar.api_post(&format!("/api/v1/join/{school_only}")).await;
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    assert!(refused.text().await.unwrap().contains("school.test"));
    assert_eq!(
        kim.api_post(&format!("/api/v1/join/{school_only}"))
            .await
            .status(),
        StatusCode::OK
    );
}
