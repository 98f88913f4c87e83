//! A real browser for portal tests: Debian's Chromium, driven over WebDriver by
//! chromedriver. When either is missing the tests that need it print a notice and skip; CI
//! installs both.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::process::{Child, Command};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// The W3C WebDriver key that holds an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A headless Chromium session.
pub struct Browser {
    http: reqwest::Client,
    session: String,
    driver_url: String,
    _driver: Child,
    _profile: tempfile::TempDir,
}

/// An element on the page.
#[derive(Debug, Clone)]
pub struct Element(String);

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Browser {
    /// Starts chromedriver and a headless browser, or `None` (with a notice) if they are not
    /// installed.
    pub async fn start() -> Option<Self> {
        if !Path::new(CHROMIUM).exists() || !Path::new(CHROMEDRIVER).exists() {
            eprintln!(
                "NOTICE: {CHROMIUM} or {CHROMEDRIVER} is missing; browser test skipped \
                 (apt-get install chromium chromium-driver)"
            );
            return None;
        }
        let port = free_port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("starting chromedriver");
        let driver_url = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let deadline = Instant::now() + *super::WAIT;
        loop {
            let ready = http.get(format!("{driver_url}/status")).send().await;
            if let Ok(response) = ready
                && let Ok(status) = response.json::<Value>().await
                && status["value"]["ready"] == true
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not become ready"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let profile = tempfile::tempdir().unwrap();
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            // The demo's HTTPS certificate is self-signed.
            "acceptInsecureCerts": true,
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--window-size=1280,900", format!("--user-data-dir={}", profile.path().display())]
            }
        }}});
        let response: Value = http
            .post(format!("{driver_url}/session"))
            .json(&capabilities)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let session = response["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no browser session: {response}"))
            .to_owned();
        let browser = Self {
            http,
            session,
            driver_url,
            _driver: driver,
            _profile: profile,
        };
        // Short, so that a wait whose page navigated away is re-armed in the new page soon;
        // `wait_until` keeps waiting up to the test deadline.
        let script_timeout = 2_000;
        browser
            .command(
                reqwest::Method::POST,
                "/timeouts",
                Some(json!({"script": script_timeout})),
            )
            .await;
        Some(browser)
    }

    async fn command(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/session/{}{path}", self.driver_url, self.session);
        let mut request = self.http.request(method, url);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response: Value = request.send().await.unwrap().json().await.unwrap();
        if let Some(error) = response["value"]["error"].as_str() {
            panic!(
                "WebDriver {path}: {error}: {}",
                response["value"]["message"]
            );
        }
        response["value"].clone()
    }

    /// Blocks requests whose URL matches one of `patterns` (`*` wildcards), through the
    /// DevTools protocol, as a broken network would; an empty list unblocks.
    pub async fn block_urls(&self, patterns: &[&str]) {
        self.command(
            reqwest::Method::POST,
            "/goog/cdp/execute",
            Some(json!({"cmd": "Network.enable", "params": {}})),
        )
        .await;
        self.command(
            reqwest::Method::POST,
            "/goog/cdp/execute",
            Some(json!({"cmd": "Network.setBlockedURLs", "params": {"urls": patterns}})),
        )
        .await;
    }

    pub async fn goto(&self, url: &str) {
        self.command(reqwest::Method::POST, "/url", Some(json!({"url": url})))
            .await;
    }

    /// Forgets every cookie: the next page is seen signed out.
    pub async fn clear_cookies(&self) {
        self.command(reqwest::Method::DELETE, "/cookie", None).await;
    }

    pub async fn current_url(&self) -> String {
        self.command(reqwest::Method::GET, "/url", None)
            .await
            .as_str()
            .unwrap()
            .to_owned()
    }

    pub async fn find(&self, css: &str) -> Element {
        let value = self
            .command(
                reqwest::Method::POST,
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        Element(value[ELEMENT].as_str().unwrap().to_owned())
    }

    pub async fn type_into(&self, element: &Element, text: &str) {
        self.command(
            reqwest::Method::POST,
            &format!("/element/{}/value", element.0),
            Some(json!({"text": text})),
        )
        .await;
    }

    pub async fn click(&self, element: &Element) {
        self.command(
            reqwest::Method::POST,
            &format!("/element/{}/click", element.0),
            Some(json!({})),
        )
        .await;
    }

    /// Runs a script in the page and returns its result.
    pub async fn eval(&self, script: &str) -> Value {
        self.command(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({"script": script, "args": []})),
        )
        .await
    }

    /// The text of the first element matching `css`, or `None`.
    pub async fn text_of(&self, css: &str) -> Option<String> {
        let script = format!(
            "const e = document.querySelector({}); return e ? e.textContent.trim() : null;",
            serde_json::to_string(css).unwrap()
        );
        self.eval(&script).await.as_str().map(str::to_owned)
    }

    /// Waits until `condition` (a script expression) is true in the page. The wait happens
    /// inside the browser: a mutation observer re-checks the condition whenever the page
    /// changes, so nothing polls.
    pub async fn wait_until(&self, what: &str, condition: &str) {
        let script = format!(
            "const done = arguments[arguments.length - 1];
             const check = () => {{ let ok = false; try {{ ok = Boolean({condition}); }} catch (e) {{}}
                                    if (ok) {{ observer.disconnect(); done(true); }} }};
             const observer = new MutationObserver(check);
             observer.observe(document, {{subtree: true, childList: true, characterData: true, attributes: true}});
             check();"
        );
        let url = format!("{}/session/{}/execute/async", self.driver_url, self.session);
        let deadline = Instant::now() + *super::WAIT;
        loop {
            let response: Value = self
                .http
                .post(&url)
                .json(&json!({"script": script, "args": []}))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if response["value"] == Value::Bool(true) {
                return;
            }
            // The script gave up (its timeout is short) or its page navigated away (after a
            // form post, say): wait again, in whatever page is shown now, until the deadline.
            if Instant::now() > deadline {
                let body = self.eval("return document.body.innerText;").await;
                let url = self.current_url().await;
                panic!(
                    "waiting for {what}: {}\nthe page at {url} shows:\n{body}",
                    response["value"]["error"]
                );
            }
        }
    }

    /// Sets the window's size, as a phone's or a desktop's.
    pub async fn resize(&self, width: u32, height: u32) {
        self.command(
            reqwest::Method::POST,
            "/window/rect",
            Some(serde_json::json!({"width": width, "height": height})),
        )
        .await;
    }

    /// What axe-core finds wrong with the page shown, one line per rule (`rule: help —
    /// elements`), or `None` (with a notice) when the build could not fetch axe-core.
    pub async fn accessibility_violations(&self) -> Option<Vec<String>> {
        let path = Path::new(env!("PROXLAB_VENDOR_DIR")).join("axe-core/axe.min.js");
        let Ok(axe) = std::fs::read_to_string(&path) else {
            eprintln!(
                "NOTICE: {} is missing (the build could not reach the npm registry); \
                 accessibility checks skipped",
                path.display()
            );
            return None;
        };
        self.eval(&format!("{axe}\nreturn null;")).await;
        // axe may need longer than the short script timeout of `wait_until`.
        let timeouts = |ms: u64| json!({"script": ms});
        self.command(reqwest::Method::POST, "/timeouts", Some(timeouts(60_000)))
            .await;
        let found = self
            .command(
                reqwest::Method::POST,
                "/execute/async",
                Some(
                    json!({"script": "const done = arguments[arguments.length - 1];
                    axe.run(document, {resultTypes: ['violations']}).then(
                      (result) => done(result.violations.map((v) => v.id + ': ' + v.help + ' — '
                        + v.nodes.map((n) => n.target.join(' ')).join(', '))),
                      (error) => done(['axe failed: ' + error]));",
                    "args": []}),
                ),
            )
            .await;
        self.command(reqwest::Method::POST, "/timeouts", Some(timeouts(2_000)))
            .await;
        Some(
            found
                .as_array()
                .unwrap()
                .iter()
                .map(|line| line.as_str().unwrap().to_owned())
                .collect(),
        )
    }

    /// Opens a new tab and shows it; returns its handle.
    pub async fn new_tab(&self) -> String {
        let value = self
            .command(
                reqwest::Method::POST,
                "/window/new",
                Some(json!({"type": "tab"})),
            )
            .await;
        let handle = value["handle"].as_str().unwrap().to_owned();
        self.switch_to(&handle).await;
        handle
    }

    /// The handle of the tab shown now.
    pub async fn current_tab(&self) -> String {
        let value = self.command(reqwest::Method::GET, "/window", None).await;
        value.as_str().unwrap().to_owned()
    }

    /// Shows the tab `handle`.
    pub async fn switch_to(&self, handle: &str) {
        self.command(
            reqwest::Method::POST,
            "/window",
            Some(json!({"handle": handle})),
        )
        .await;
    }

    /// Closes the tab shown now; another must be switched to before the next command.
    pub async fn close_tab(&self) {
        self.command(reqwest::Method::DELETE, "/window", None).await;
    }

    /// Saves a screenshot (PNG) as `name` in `$PROXLAB_SCREENSHOTS`, when that is set, for
    /// looking at what a test saw.
    pub async fn screenshot(&self, name: &str) {
        use base64::Engine as _;
        let Some(dir) = std::env::var_os("PROXLAB_SCREENSHOTS") else {
            return;
        };
        let path = Path::new(&dir).join(name);
        let data = self
            .command(reqwest::Method::GET, "/screenshot", None)
            .await;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(data.as_str().unwrap())
            .unwrap();
        std::fs::write(&path, bytes).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // chromedriver ends the browser with the session; the driver itself is killed on drop.
        let url = format!("{}/session/{}", self.driver_url, self.session);
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let _ = reqwest::Client::new().delete(url).send().await;
            });
        })
        .join();
    }
}
