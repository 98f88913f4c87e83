//! Signing in through a real OpenID Connect provider (node-oidc-provider, started by the
//! test): accounts made at the first sign-in, roles from the provider's groups, what the hub
//! refuses (a forged `state`, a replayed callback, ID tokens with a wrong nonce, expired,
//! signed by another key or for another client, a disallowed email domain), signing out at
//! the provider, and local passwords kept for admins. Skipped with a notice without Node.js.

mod common;

use std::sync::Mutex;

use common::TestHub;
use common::browser::Browser;
use common::crash::free_addr;
use common::oidc::{CLIENT_SECRET, TestProvider, sign_in};
use common::web::{WebClient, csrf_field};
use proxlab_hub::db::users::Role;
use proxlab_hub::domain::accounts::{change_role, create_user};
use proxlab_hub::domain::admin::{UserChange, change_user};
use proxlab_hub::domain::audit::Actor;
use proxlab_hub::domain::sign_in::SignInConfig;
use proxlab_hub::domain::sign_in::settings::SignInSection;
use reqwest::StatusCode;

/// A hub whose sign-in offers the provider as `school`, and the provider.
struct Site {
    hub: TestHub,
    provider: TestProvider,
    _secrets: tempfile::TempDir,
}

impl Site {
    /// `top` goes at the top of `[sign_in]`, `extra` into the provider's table.
    async fn start(top: &str, extra: &str) -> Option<Self> {
        let address = free_addr();
        let base = format!("http://{address}");
        let provider = TestProvider::start(
            &format!("{base}/login/oidc/school/callback"),
            &format!("{base}/login"),
        )
        .await?;
        let secrets = tempfile::tempdir().unwrap();
        let secret = secrets.path().join("client-secret");
        std::fs::write(&secret, format!("{CLIENT_SECRET}\n")).unwrap();
        let section: SignInSection = toml::from_str(&format!(
            r#"{top}
[[oidc]]
id = "school"
label = "School"
issuer = "{issuer}"
client_id = "proxlab"
client_secret_file = "{secret}"
scopes = ["openid", "profile", "email", "groups"]
allowed_email_domains = ["school.test"]
{extra}
[oidc.roles]
staff = "teacher"
"#,
            issuer = provider.issuer,
            secret = secret.display(),
        ))
        .unwrap();
        let sign_in = SignInConfig::from_section(section).unwrap();
        let hub = TestHub::start_configured(None, |config| {
            config.http_addr = address.parse().unwrap();
            config.public_url = Some(base.clone());
            config.sign_in = sign_in;
        })
        .await;
        Some(Self {
            hub,
            provider,
            _secrets: secrets,
        })
    }

    fn db(&self) -> &proxlab_hub::db::Db {
        &self.hub.hub().state.db
    }

    fn browser(&self) -> WebClient {
        WebClient::anonymous(&self.hub.url())
    }
}

/// Signs in as `login` in a fresh browser: refused with `status`, on a page that says
/// `says`, and not signed in afterwards.
async fn assert_refused(site: &Site, login: &str, status: StatusCode, says: &str) {
    let browser = site.browser();
    let landing = sign_in(&browser, "/login/oidc/school", login, |url| url).await;
    assert_eq!(landing.status, status, "{login}: {}", landing.body);
    assert!(landing.body.contains(says), "{login}: {}", landing.body);
    assert!(!signed_in(&browser).await, "{login}");
}

/// Whether a client's cookies sign it in.
async fn signed_in(client: &WebClient) -> bool {
    client.get("/vms").await.status() == StatusCode::OK
}

#[tokio::test]
async fn the_first_sign_in_makes_the_account_and_later_ones_keep_it_up_to_date() {
    let Some(site) = Site::start("", "").await else {
        return;
    };
    let tina = site.browser();
    let landing = sign_in(&tina, "/login/oidc/school?next=/classes", "tina", |url| url).await;
    assert_eq!(landing.status, StatusCode::OK, "{}", landing.body);
    assert!(landing.url.ends_with("/classes"), "{}", landing.url);
    assert!(
        landing.body.contains("tina@school.test"),
        "the page shows who signed in"
    );
    let account = site
        .db()
        .user_by_name("tina@school.test")
        .await
        .unwrap()
        .expect("the account was made at the first sign-in");
    assert_eq!(
        account.role,
        Role::Teacher,
        "the staff group makes a teacher"
    );
    assert_eq!(account.auth_source, "oidc:school");
    assert_eq!(account.display_name, "Tina Teacher");
    assert_eq!(account.email, "tina@school.test");

    // Someone in no mapped group is a student; a second sign-in is the same account.
    let sam = site.browser();
    sign_in(&sam, "/login/oidc/school", "sam", |url| url).await;
    sign_in(&sam, "/login/oidc/school", "sam", |url| url).await;
    assert!(signed_in(&sam).await);
    let students: Vec<_> = site
        .db()
        .list_users()
        .await
        .unwrap()
        .into_iter()
        .filter(|user| user.username.starts_with("sam"))
        .collect();
    assert_eq!(students.len(), 1);
    assert_eq!(students[0].role, Role::Student);

    // The provider's answer decides the role at every sign-in, unless an admin pinned it.
    site.db().set_role(account.id, Role::Student).await.unwrap();
    sign_in(&site.browser(), "/login/oidc/school", "tina", |url| url).await;
    let refreshed = site.db().user_by_id(account.id).await.unwrap().unwrap();
    assert_eq!(
        refreshed.role,
        Role::Teacher,
        "the mapping gave the role back"
    );
    change_role(site.db(), account.id, Role::Student)
        .await
        .unwrap();
    sign_in(&site.browser(), "/login/oidc/school", "tina", |url| url).await;
    let pinned = site.db().user_by_id(account.id).await.unwrap().unwrap();
    assert!(pinned.role_pinned);
    assert_eq!(pinned.role, Role::Student, "a role an admin set stays");
    // Until the admin hands it back to the provider (the Users page's "let ... decide").
    change_user(
        site.db(),
        Actor::Operator,
        account.id,
        UserChange::FollowSource,
        None,
    )
    .await
    .unwrap();
    sign_in(&site.browser(), "/login/oidc/school", "tina", |url| url).await;
    let followed = site.db().user_by_id(account.id).await.unwrap().unwrap();
    assert!(!followed.role_pinned);
    assert_eq!(followed.role, Role::Teacher);
    // There is no password to reset for an account that signs in elsewhere.
    assert!(
        change_user(
            site.db(),
            Actor::Operator,
            account.id,
            UserChange::ResetPassword,
            None
        )
        .await
        .is_err()
    );

    // The account has no password here.
    let by_password = site.browser();
    let response = by_password
        .try_login("tina@school.test", "any password")
        .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(!signed_in(&by_password).await);

    // Signing out ends the session here and sends the browser to the provider's sign-out.
    let csrf = csrf_field(&tina.get("/vms").await.text().await.unwrap());
    let response = tina
        .client
        .post(format!("{}/logout", tina.base))
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert!(response.status().is_redirection());
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    assert!(
        location.starts_with(&format!("{}/session/end", site.provider.issuer)),
        "{location}"
    );
    assert!(location.contains("client_id=proxlab"), "{location}");
    assert!(location.contains("post_logout_redirect_uri="), "{location}");
    assert!(!signed_in(&tina).await);
}

#[tokio::test]
async fn answers_that_do_not_check_out_are_refused() {
    let Some(site) = Site::start("", "").await else {
        return;
    };
    // A state this browser was not given.
    let forged = site.browser();
    let landing = sign_in(&forged, "/login/oidc/school", "sam", |url| {
        let (head, _) = url.split_once("state=").unwrap();
        let rest = url.split_once("state=").unwrap().1;
        let tail = rest
            .split_once('&')
            .map_or(String::new(), |(_, tail)| format!("&{tail}"));
        format!("{head}state=forged-state{tail}")
    })
    .await;
    assert_eq!(landing.status, StatusCode::BAD_REQUEST);
    assert!(
        landing.body.contains("not one this browser started"),
        "{}",
        landing.body
    );
    assert!(!signed_in(&forged).await);

    // An error text in a link someone sent is not shown: only a sign-in this browser
    // started can come back with one.
    let lured = site.browser();
    let page = lured
        .get("/login/oidc/school/callback?error=access_denied&error_description=Call+555-0100+now")
        .await;
    assert_eq!(page.status(), StatusCode::BAD_REQUEST);
    let page = page.text().await.unwrap();
    assert!(!page.contains("555-0100"), "{page}");
    assert!(page.contains("not one this browser started"), "{page}");
    let filter = proxlab_hub::db::audit::AuditFilter {
        target: Some("oidc:school".into()),
        limit: 50,
        ..Default::default()
    };
    let denied = site.db().find_audit(&filter).await.unwrap();
    assert!(
        denied.len() >= 2 && denied.iter().all(|entry| entry.result == "denied"),
        "refused callbacks are in the audit log: {denied:?}"
    );

    // A callback used twice: the second time counts for nothing, also in another browser.
    let seen = Mutex::new(None);
    let first = site.browser();
    sign_in(&first, "/login/oidc/school", "sam", |url| {
        *seen.lock().unwrap() = Some(url.clone());
        url
    })
    .await;
    assert!(signed_in(&first).await);
    let callback = seen.lock().unwrap().clone().unwrap();
    let replay = site.browser();
    let response = replay.client.get(&callback).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(!signed_in(&replay).await);

    // ID tokens spoiled at the provider's token endpoint.
    for mode in ["nonce", "expired", "signature", "audience"] {
        site.provider.tamper(Some(mode)).await;
        assert_refused(
            &site,
            "sam",
            StatusCode::FORBIDDEN,
            "did not pass its checks",
        )
        .await;
    }
    site.provider.tamper(None).await;

    // An email domain the site does not take.
    assert_refused(&site, "eve", StatusCode::FORBIDDEN, "eve@elsewhere.test").await;
    assert!(
        site.db()
            .user_by_name("eve@elsewhere.test")
            .await
            .unwrap()
            .is_none()
    );

    // A local account of the same name is not taken over (linking is off by default).
    create_user(
        site.db(),
        "kim@school.test",
        Role::Teacher,
        Some("kims own password"),
    )
    .await
    .unwrap();
    assert_refused(&site, "kim", StatusCode::FORBIDDEN, "exists here already").await;
}

#[tokio::test]
async fn local_passwords_can_be_kept_for_admins_and_a_provider_that_is_down_says_so() {
    let Some(site) = Site::start("local_login = \"admins\"", "").await else {
        return;
    };
    create_user(site.db(), "root", Role::Admin, Some("the admins password"))
        .await
        .unwrap();
    create_user(site.db(), "tom", Role::Teacher, Some("toms local password"))
        .await
        .unwrap();
    let visitor = site.browser();
    let page = visitor.get("/login").await.text().await.unwrap();
    assert!(page.contains("Sign in with School"), "{page}");
    assert!(page.contains("&#x2F;oidc&#x2F;school?next="), "{page}");
    assert!(page.contains("Administrator sign-in"), "{page}");

    let tom = site.browser();
    let response = tom.try_login("tom", "toms local password").await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(response.text().await.unwrap().contains("school account"));
    assert!(!signed_in(&tom).await);
    let root = site.browser();
    assert!(
        root.try_login("root", "the admins password")
            .await
            .status()
            .is_redirection()
    );
    assert!(signed_in(&root).await);

    // The provider stops: its button explains instead of failing blindly (no sign-in went
    // through it yet, so the hub has no metadata of it to fall back on).
    drop(site.provider);
    let response = visitor.get("/login/oidc/school").await;
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    assert!(response.text().await.unwrap().contains("cannot be reached"));
}

#[tokio::test]
async fn a_person_signs_in_through_the_provider_in_a_real_browser() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let Some(site) = Site::start("", "").await else {
        return;
    };
    // The provider's development pages load a web font; there is no internet here.
    browser.block_urls(&["*fonts.googleapis.com*"]).await;
    browser.goto(&format!("{}/login", site.hub.url())).await;
    browser
        .click(&browser.find(".sign-in-providers a").await)
        .await;
    browser
        .type_into(&browser.find("input[name=login]").await, "tina")
        .await;
    browser
        .type_into(&browser.find("input[name=password]").await, "whatever")
        .await;
    browser
        .click(&browser.find("button[type=submit]").await)
        .await;
    browser
        .wait_until(
            "the consent page",
            "document.querySelector('input[name=prompt][value=consent]')",
        )
        .await;
    browser
        .click(&browser.find("button[type=submit]").await)
        .await;
    browser
        .wait_until(
            "the VM list, signed in",
            "document.querySelector('[data-vm-list]') && document.body.dataset.liveUser === 'tina@school.test'",
        )
        .await;
    assert!(browser.current_url().await.starts_with(&site.hub.url()));
}
