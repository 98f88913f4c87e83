//! The demo's own OpenID Connect provider, so that "Sign in with ..." can be tried without a
//! school's Entra ID or Google: the certified Node.js `oidc-provider` with a small script of
//! ours (`hub/oidc-provider/`, embedded in the hub), installed from the npm registry with
//! `npm ci` from its lock file. Anyone signs in with any password; `tina` is a teacher. The
//! sign-in tests start the same provider.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::domain::sign_in::SignInConfig;
use crate::domain::sign_in::settings::SignInSection;

const FILES: [(&str, &str); 3] = [
    (
        "package.json",
        include_str!("../../oidc-provider/package.json"),
    ),
    (
        "package-lock.json",
        include_str!("../../oidc-provider/package-lock.json"),
    ),
    (
        "provider.mjs",
        include_str!("../../oidc-provider/provider.mjs"),
    ),
];

/// The provider's id in the demo's `hub.toml` terms (its callback is
/// `/login/oidc/demo/callback`).
pub const PROVIDER_ID: &str = "demo";

/// Whether Node.js and npm are installed.
pub fn node_available() -> bool {
    ["node", "npm"].iter().all(|tool| {
        std::process::Command::new(tool)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    })
}

/// Whether `dir` holds an install of the pinned packages.
fn installed(dir: &Path) -> bool {
    dir.join("node_modules/oidc-provider").is_dir()
        && std::fs::read_to_string(dir.join("package-lock.json"))
            .ok()
            .as_deref()
            == Some(FILES[1].1)
}

/// A name beside `dir` that no other install, in this process or another, uses.
fn beside(dir: &Path, what: &str) -> PathBuf {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    dir.with_extension(format!("{what}-{}-{n}", std::process::id()))
}

/// The provider installed in `dir` (`npm ci` the first time, and when the pinned packages
/// change). One install at a time in a process; across processes, each installs in a
/// directory of its own and renames it into place, and an install already in place is never
/// removed under a provider that runs from it.
pub fn install(dir: &Path) -> Result<PathBuf> {
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _installing = ONE_AT_A_TIME.lock().unwrap_or_else(|err| err.into_inner());
    if !installed(dir) {
        let scratch = beside(dir, "installing");
        std::fs::create_dir_all(&scratch)
            .with_context(|| format!("creating {}", scratch.display()))?;
        for (name, text) in FILES {
            std::fs::write(scratch.join(name), text)?;
        }
        let output = std::process::Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--ignore-scripts"])
            .current_dir(&scratch)
            .output()
            .context("running npm")?;
        if !output.status.success() {
            let _ = std::fs::remove_dir_all(&scratch);
            bail!(
                "npm ci failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        if installed(dir) {
            // Another process installed it meanwhile.
            let _ = std::fs::remove_dir_all(&scratch);
        } else {
            if dir.exists() {
                // An install of other packages: moved aside, then removed.
                let stale = beside(dir, "stale");
                std::fs::rename(dir, &stale)?;
                let _ = std::fs::remove_dir_all(&stale);
            }
            if std::fs::rename(&scratch, dir).is_err() {
                let _ = std::fs::remove_dir_all(&scratch);
                if !installed(dir) {
                    bail!("installing the provider in {} failed", dir.display());
                }
            }
        }
    }
    // The script is ours and small: the embedded one, replaced atomically if it differs.
    let script = dir.join("provider.mjs");
    if std::fs::read_to_string(&script).ok().as_deref() != Some(FILES[2].1) {
        proxlab_link::files::write_atomic(&script, FILES[2].1.as_bytes(), false)?;
    }
    Ok(dir.to_owned())
}

/// The one client the provider knows: proxlab at a site.
#[derive(Debug, Clone)]
pub struct ProviderClient<'a> {
    pub redirect_uri: &'a str,
    pub post_logout_uri: &'a str,
    pub secret: &'a str,
}

/// A running provider; it stops when dropped.
pub struct OidcProvider {
    child: Child,
    pub issuer: String,
}

impl OidcProvider {
    /// Starts the provider installed in `dir` on a free port of 127.0.0.1.
    pub async fn start(dir: &Path, client: &ProviderClient<'_>) -> Result<Self> {
        let mut child = Command::new("node")
            .arg("provider.mjs")
            .current_dir(dir)
            .env("REDIRECT_URI", client.redirect_uri)
            .env("POST_LOGOUT_URI", client.post_logout_uri)
            .env("CLIENT_SECRET", client.secret)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting node")?;
        let mut lines =
            BufReader::new(child.stdout.take().context("the provider's output")?).lines();
        let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
            .await
            .context("the provider did not start within a minute")??
            .context("the provider exited before it started")?;
        // It writes notes to stdout as it goes; a closed pipe would end it.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let ready: serde_json::Value =
            serde_json::from_str(&line).with_context(|| format!("the provider said {line:?}"))?;
        let issuer = ready["issuer"]
            .as_str()
            .context("the provider named no issuer")?
            .to_owned();
        Ok(Self { child, issuer })
    }

    /// The hub's `[sign_in]` for this provider: a "Sign in with School (demo provider)"
    /// button, accounts of school.test only, the staff group as teachers.
    pub fn sign_in_config(&self, secret_file: &Path) -> Result<SignInConfig> {
        let section: SignInSection = toml::from_str(&format!(
            r#"
[[oidc]]
id = "{PROVIDER_ID}"
label = "School (demo provider)"
issuer = "{issuer}"
client_id = "proxlab"
client_secret_file = "{secret}"
scopes = ["openid", "profile", "email", "groups"]
allowed_email_domains = ["school.test"]
[oidc.roles]
staff = "teacher"
"#,
            issuer = self.issuer,
            secret = secret_file.display(),
        ))?;
        SignInConfig::from_section(section)
    }

    /// Stops the provider.
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}
