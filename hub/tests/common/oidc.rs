//! A real OpenID Connect provider for the sign-in tests: node-oidc-provider (npm, pinned with
//! its integrity hashes in `hub/oidc-provider/package-lock.json`), the demo's own, installed
//! once per build directory and started per test. Skipped with a notice where Node.js is
//! missing.

use std::path::Path;

use proxlab_hub::demo::oidc::{OidcProvider, ProviderClient, install, node_available};

use super::web::WebClient;

/// The client secret the provider and the hub share.
pub const CLIENT_SECRET: &str = "proxlab-test-secret";

/// A running provider.
pub struct TestProvider {
    _provider: OidcProvider,
    pub issuer: String,
}

impl TestProvider {
    /// A provider whose one client, `proxlab`, returns to `redirect_uri`; `None` (with a
    /// notice) without Node.js.
    pub async fn start(redirect_uri: &str, post_logout_uri: &str) -> Option<Self> {
        if !node_available() {
            eprintln!("NOTICE: node or npm is not installed; the OpenID Connect tests are skipped");
            return None;
        }
        let target = Path::new(env!("CARGO_TARGET_TMPDIR")).join("oidc-provider");
        let dir = tokio::task::spawn_blocking(move || install(&target))
            .await
            .unwrap()
            .expect("the test provider installs");
        let client = ProviderClient {
            redirect_uri,
            post_logout_uri,
            secret: CLIENT_SECRET,
        };
        let provider = OidcProvider::start(&dir, &client)
            .await
            .expect("the test provider starts");
        Some(Self {
            issuer: provider.issuer.clone(),
            _provider: provider,
        })
    }

    /// Makes the token endpoint hand out ID tokens spoiled in one way, or no longer.
    pub async fn tamper(&self, mode: Option<&str>) {
        let response = reqwest::Client::new()
            .post(format!("{}/test/tamper", self.issuer))
            .query(&[("mode", mode.unwrap_or(""))])
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success());
    }
}

/// Where a sign-in through the provider ended: the hub's last answer.
pub struct Landing {
    pub url: String,
    pub status: reqwest::StatusCode,
    pub body: String,
}

/// The `action` of the first form in a page.
fn form_action(html: &str) -> Option<String> {
    let start = html.find("<form")?;
    let marker = "action=\"";
    let at = html[start..].find(marker)? + start + marker.len();
    let end = html[at..].find('"')? + at;
    Some(html[at..end].replace("&amp;", "&").replace("&#x2F;", "/"))
}

fn absolute(base: &str, location: &str) -> String {
    reqwest::Url::parse(base)
        .unwrap()
        .join(location)
        .unwrap()
        .to_string()
}

/// Follows a sign-in from the hub's `start` path through the provider's login (as `login`,
/// with any password) and consent pages, back to the hub; `callback` may change the URL the
/// provider sends the browser back with before it is followed.
pub async fn sign_in(
    client: &WebClient,
    start: &str,
    login: &str,
    callback: impl Fn(String) -> String,
) -> Landing {
    let mut url = format!("{}{start}", client.base);
    let mut form: Option<Vec<(&str, &str)>> = None;
    for _ in 0..20 {
        let request = match form.take() {
            Some(fields) => client.client.post(&url).form(&fields),
            None => client.client.get(&url),
        };
        let response = request.send().await.unwrap();
        let status = response.status();
        if status.is_redirection() {
            let location = response.headers()["location"].to_str().unwrap().to_owned();
            url = absolute(&url, &location);
            if url.starts_with(&client.base) && url.contains("/callback?") {
                url = callback(url);
            }
            continue;
        }
        let body = response.text().await.unwrap();
        if url.starts_with(&client.base) {
            return Landing { url, status, body };
        }
        let action = form_action(&body).unwrap_or_else(|| panic!("a form at {url}: {body}"));
        url = absolute(&url, &action);
        form = Some(if body.contains("name=\"login\"") {
            vec![
                ("prompt", "login"),
                ("login", login),
                ("password", "any password"),
            ]
        } else {
            vec![("prompt", "consent")]
        });
    }
    panic!("the sign-in did not come back to the hub");
}
