//! Signing in against a real OpenLDAP `slapd` (started by the test) with the password form:
//! search-then-bind over LDAPS and direct bind over StartTLS, groups to roles, wrong
//! passwords, unknown and ambiguous names, and a directory that is down (local admins still
//! sign in). Skipped with a notice without slapd.

mod common;

use common::TestHub;
use common::slapd::{SERVICE_DN, SERVICE_PASSWORD, SUFFIX, Slapd};
use common::web::WebClient;
use proxlab_hub::db::users::Role;
use proxlab_hub::domain::accounts::create_user;
use proxlab_hub::domain::sign_in::SignInConfig;
use proxlab_hub::domain::sign_in::settings::SignInSection;
use reqwest::StatusCode;

/// The body of `[sign_in.ldap]` that searches with the service account over LDAPS, with
/// `extra` settings after it.
fn searching(directory: &Slapd, extra: &str) -> String {
    format!(
        "url = \"{url}\"\nca_file = \"{ca}\"\nbind_dn = \"{SERVICE_DN}\"\n\
         bind_password_file = \"SECRET_FILE\"\nuser_base = \"ou=people,{SUFFIX}\"\n{extra}",
        url = directory.ldaps_url,
        ca = directory.ca_file().display(),
    )
}

/// The sign-in settings of a `[sign_in.ldap]` body; its service password goes to a file in
/// `secrets`, named where the body says `SECRET_FILE`.
fn settings(ldap: &str, secrets: &tempfile::TempDir) -> SignInConfig {
    let secret = secrets.path().join("bind-password");
    std::fs::write(&secret, SERVICE_PASSWORD).unwrap();
    let ldap = ldap.replace("SECRET_FILE", &secret.display().to_string());
    let section: SignInSection = toml::from_str(&format!("[ldap]\n{ldap}")).unwrap();
    SignInConfig::from_section(section).unwrap()
}

/// A hub whose password form also asks the directory, configured by `ldap` (the body of
/// `[sign_in.ldap]`).
async fn hub_asking(ldap: &str, secrets: &tempfile::TempDir) -> TestHub {
    let sign_in = settings(ldap, secrets);
    TestHub::start_configured(None, |config| config.sign_in = sign_in).await
}

async fn log_in(hub: &TestHub, username: &str, password: &str) -> (StatusCode, String) {
    let client = WebClient::anonymous(&hub.url());
    let response = client.try_login(username, password).await;
    let status = response.status();
    (status, response.text().await.unwrap())
}

#[tokio::test]
async fn search_then_bind_over_ldaps_maps_groups_to_roles() {
    let Some(directory) = Slapd::start().await else {
        return;
    };
    let secrets = tempfile::tempdir().unwrap();
    let hub = hub_asking(
        &searching(
            &directory,
            &format!("group_base = \"ou=groups,{SUFFIX}\"\n[ldap.roles]\nteachers = \"teacher\"\n"),
        ),
        &secrets,
    )
    .await;
    let db = &hub.hub().state.db;

    let (status, _) = log_in(&hub, "tina", "tinas-password").await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let tina = db
        .user_by_name("tina")
        .await
        .unwrap()
        .expect("made at first sign-in");
    assert_eq!(
        tina.role,
        Role::Teacher,
        "the teachers group makes a teacher"
    );
    assert_eq!(tina.auth_source, "ldap");
    assert_eq!(tina.display_name, "Tina Teacher");
    assert_eq!(tina.email, "tina@school.test");
    // The groups are kept for plugins' facts about students.
    let groups = db.sign_in_groups(tina.id).await.unwrap();
    assert!(groups.iter().any(|group| group == "teachers"), "{groups:?}");
    // Case does not matter to the directory; it is one account.
    let (status, _) = log_in(&hub, "TINA", "tinas-password").await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(
        db.list_users()
            .await
            .unwrap()
            .iter()
            .filter(|user| user.auth_source == "ldap")
            .count(),
        1
    );

    let (status, _) = log_in(&hub, "sam", "sams-password").await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let sam = db.user_by_name("sam").await.unwrap().unwrap();
    assert_eq!(sam.role, Role::Student);

    for (username, password, what) in [
        ("tina", "not-her-password", "a wrong password"),
        ("nobody", "whatever-it-is", "an unknown name"),
        ("twin", "twins-password", "a name two entries answer to"),
        ("tina", "", "an empty password (an anonymous bind)"),
    ] {
        let (status, page) = log_in(&hub, username, password).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{what}");
        assert!(page.contains("wrong username or password"), "{what}");
    }
    assert!(db.user_by_name("twin").await.unwrap().is_none());
}

#[tokio::test]
async fn direct_bind_over_starttls_with_group_dns() {
    let Some(directory) = Slapd::start().await else {
        return;
    };
    let secrets = tempfile::tempdir().unwrap();
    let hub = hub_asking(
        &format!(
            "url = \"{url}\"\nstarttls = true\nca_file = \"{ca}\"\n\
             user_dn_template = \"uid={{username}},ou=people,{SUFFIX}\"\n\
             group_base = \"ou=groups,{SUFFIX}\"\n\
             [ldap.roles]\n\"CN=Teachers,OU=Groups,{SUFFIX}\" = \"teacher\"\n",
            url = directory.ldap_url,
            ca = directory.ca_file().display(),
        ),
        &secrets,
    )
    .await;
    let db = &hub.hub().state.db;
    assert_eq!(
        log_in(&hub, "tina", "tinas-password").await.0,
        StatusCode::SEE_OTHER
    );
    let tina = db.user_by_name("tina").await.unwrap().unwrap();
    assert_eq!(
        tina.role,
        Role::Teacher,
        "group DNs compare without regard to case"
    );
    assert_eq!(
        log_in(&hub, "sam", "sams-password").await.0,
        StatusCode::SEE_OTHER
    );
    assert_eq!(
        db.user_by_name("sam").await.unwrap().unwrap().role,
        Role::Student
    );
    // A name that would change the DN's meaning is escaped, not obeyed.
    let (status, _) = log_in(&hub, "tina,ou=people", "tinas-password").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_directory_that_is_down_says_so_and_local_admins_still_sign_in() {
    let Some(mut directory) = Slapd::start().await else {
        return;
    };
    let secrets = tempfile::tempdir().unwrap();
    let hub = hub_asking(&searching(&directory, "timeout = \"2s\"\n"), &secrets).await;
    let db = &hub.hub().state.db;
    create_user(db, "root", Role::Admin, Some("the admins password"))
        .await
        .unwrap();
    assert_eq!(
        log_in(&hub, "tina", "tinas-password").await.0,
        StatusCode::SEE_OTHER
    );

    directory.stop().await;
    let (status, page) = log_in(&hub, "tina", "tinas-password").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert!(page.contains("cannot be reached"), "{page}");
    let (status, _) = log_in(&hub, "root", "the admins password").await;
    assert_eq!(
        status,
        StatusCode::SEE_OTHER,
        "local accounts do not need the directory"
    );
}

#[tokio::test]
async fn a_class_roster_follows_a_directory_group() {
    let Some(directory) = Slapd::start().await else {
        return;
    };
    let secrets = tempfile::tempdir().unwrap();
    let sign_in = settings(&searching(&directory, ""), &secrets);
    let lab = common::lab::Lab::start_configured("shared", |config| config.sign_in = sign_in).await;
    let teacher = lab.user("teach", Role::Teacher).await;
    let (class_id, _) = lab.deployed_class(&teacher, "Pupils", 2).await;
    let sync = |body: serde_json::Value| {
        let teacher = &teacher;
        async move {
            let response = teacher
                .api_post_json(&format!("/api/v1/classes/{class_id}/roster/group"), &body)
                .await;
            let status = response.status();
            (status, response.json::<serde_json::Value>().await.unwrap())
        }
    };
    let (status, outcome) =
        sync(serde_json::json!({ "group": format!("cn=pupils,ou=groups,{SUFFIX}") })).await;
    assert_eq!(status, StatusCode::OK, "{outcome}");
    assert_eq!(
        (
            outcome["listed"].clone(),
            outcome["enrolled"].clone(),
            outcome["preregistered"].clone()
        ),
        (1.into(), 1.into(), 1.into())
    );
    let db = &lab.hub.hub().state.db;
    let sam = db.user_by_name("sam").await.unwrap().unwrap();
    assert_eq!(sam.auth_source, "ldap");
    assert_eq!(sam.display_name, "Sam Student");
    assert!(sam.last_login_at.is_none());

    // Sam's first sign-in with the directory password is the account the roster made.
    let (status, _) = log_in(&lab.hub, "sam", "sams-password").await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let sam_again = db.user_by_name("sam").await.unwrap().unwrap();
    assert_eq!(sam_again.id, sam.id);
    assert!(sam_again.last_login_at.is_some());
    let roster = teacher
        .json(&format!("/api/v1/classes/{class_id}/roster"))
        .await;
    assert_eq!(roster["people"][0]["signed_in"], true);

    // Syncing again follows the same group and changes nothing; an unknown group is named.
    let (status, again) = sync(serde_json::json!({})).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["enrolled"], 0);
    let (status, unknown) =
        sync(serde_json::json!({ "group": format!("cn=nobody,ou=groups,{SUFFIX}") })).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{unknown}");
    assert!(unknown.to_string().contains("no group"), "{unknown}");
}
