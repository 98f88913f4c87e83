//! A real OpenID Connect provider for the sign-in tests: node-oidc-provider (npm, pinned with
//! its integrity hashes in `hub/tests/oidc/package-lock.json`), installed once per build
//! directory and started per test. Skipped with a notice where Node.js is missing.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use super::WAIT;
use super::web::WebClient;

/// The client secret the provider and the hub share.
pub const CLIENT_SECRET: &str = "proxlab-test-secret";

/// A running provider.
pub struct TestProvider {
    child: Child,
    pub issuer: String,
}

impl Drop for TestProvider {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

fn sources() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oidc")
}

/// The provider's directory with its packages installed (`npm ci` from the lock file). Test
/// binaries run at once: each installs into a directory of its own and renames it into
/// place; the first rename wins.
fn installed() -> PathBuf {
    let target = Path::new(env!("CARGO_TARGET_TMPDIR")).join("oidc-provider");
    let lock = std::fs::read(sources().join("package-lock.json")).unwrap();
    if target.join("node_modules/oidc-provider").is_dir()
        && std::fs::read(target.join("package-lock.json")).ok() == Some(lock)
    {
        return target;
    }
    let scratch = target.with_extension(format!("installing-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch).unwrap();
    for file in ["package.json", "package-lock.json", "provider.mjs"] {
        std::fs::copy(sources().join(file), scratch.join(file)).unwrap();
    }
    let status = std::process::Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--ignore-scripts"])
        .current_dir(&scratch)
        .stdout(Stdio::null())
        .status()
        .expect("npm runs");
    assert!(status.success(), "npm ci for the test OIDC provider failed");
    let _ = std::fs::remove_dir_all(&target);
    if std::fs::rename(&scratch, &target).is_err() {
        let _ = std::fs::remove_dir_all(&scratch);
    }
    // The provider script is small; a changed one is copied over an existing install.
    std::fs::copy(sources().join("provider.mjs"), target.join("provider.mjs")).unwrap();
    target
}

impl TestProvider {
    /// A provider whose one client, `proxlab`, returns to `redirect_uri`; `None` (with a
    /// notice) without Node.js.
    pub async fn start(redirect_uri: &str, post_logout_uri: &str) -> Option<Self> {
        if std::process::Command::new("node")
            .arg("--version")
            .output()
            .is_err()
        {
            eprintln!("NOTICE: node is not installed; the OpenID Connect tests are skipped");
            return None;
        }
        let dir = tokio::task::spawn_blocking(installed).await.unwrap();
        let mut child = Command::new("node")
            .arg("provider.mjs")
            .current_dir(&dir)
            .env("REDIRECT_URI", redirect_uri)
            .env("POST_LOGOUT_URI", post_logout_uri)
            .env("CLIENT_SECRET", CLIENT_SECRET)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("node starts");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let line = tokio::time::timeout(*WAIT, lines.next_line())
            .await
            .expect("the provider starts in time")
            .unwrap()
            .expect("the provider prints its issuer");
        // The provider writes notes to stdout as it goes; a closed pipe would end it.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let ready: serde_json::Value = serde_json::from_str(&line).unwrap();
        Some(Self {
            child,
            issuer: ready["issuer"].as_str().unwrap().to_owned(),
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
