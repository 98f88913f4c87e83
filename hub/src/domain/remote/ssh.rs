//! The SSH terminal in the browser: the hub is the SSH client (russh), over a tunnel through
//! the VM's agent. The credentials the user types go from the page to here and into the SSH
//! handshake; they are never stored or logged.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::client::{self, Handle, Msg};
use russh::keys::{HashAlg, PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use russh::{Channel, ChannelReadHalf, ChannelWriteHalf, Disconnect};
use serde::Deserialize;
use tokio::sync::mpsc;

use super::host_keys::{self, KeyOwner, PresentedKey, Verdict};
use super::tunnel::Tunnel;
use crate::HubState;
use crate::domain::viewer::Viewer;

/// How long the user has to accept a changed host key.
pub const HOST_KEY_DECISION_TIMEOUT: Duration = Duration::from_secs(300);

/// How long each step of the SSH handshake and login may take (not counting the time the
/// user takes to decide on a changed host key).
const LOGIN_TIMEOUT: Duration = Duration::from_secs(20);

/// The terminal type the pseudo-terminal announces (xterm.js implements it).
const TERM: &str = "xterm-256color";

/// What the page sends first: who to log in as, how, and the terminal's size.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Login {
    pub username: String,
    #[serde(default)]
    pub password: Option<String>,
    /// An OpenSSH or PEM private key, pasted into the page.
    #[serde(default)]
    pub private_key: Option<String>,
    #[serde(default)]
    pub passphrase: Option<String>,
    pub cols: u32,
    pub rows: u32,
}

impl fmt::Debug for Login {
    /// Never prints a secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Login")
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "(hidden)"))
            .field(
                "private_key",
                &self.private_key.as_ref().map(|_| "(hidden)"),
            )
            .field("cols", &self.cols)
            .field("rows", &self.rows)
            .finish()
    }
}

impl Login {
    /// Checks what the page sent before anything reaches the VM.
    pub fn validate(&self) -> Result<(), SshError> {
        let name_ok = !self.username.is_empty()
            && self.username.len() <= 64
            && !self
                .username
                .chars()
                .any(|c| c.is_control() || c.is_whitespace());
        if !name_ok {
            return Err(SshError::BadLogin(
                "a username is 1 to 64 characters without spaces".into(),
            ));
        }
        if self.password.is_none() == self.private_key.is_none() {
            return Err(SshError::BadLogin(
                "give either a password or a private key".into(),
            ));
        }
        if !(1..=1000).contains(&self.cols) || !(1..=1000).contains(&self.rows) {
            return Err(SshError::BadLogin(
                "the terminal size is out of range".into(),
            ));
        }
        Ok(())
    }
}

/// Why the SSH terminal could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum SshError {
    #[error("{0}")]
    BadLogin(String),
    #[error("the private key could not be read: {0}")]
    BadKey(String),
    #[error("the VM refused the login (wrong username, password or key)")]
    LoginRefused,
    #[error("the VM's host key changed and was not accepted")]
    HostKeyRejected,
    #[error("the VM's SSH server did not answer in time")]
    Timeout,
    #[error("SSH: {0}")]
    Protocol(String),
}

impl SshError {
    /// The WebSocket close code the page gets.
    pub fn close_code(&self) -> u16 {
        match self {
            SshError::BadLogin(_) | SshError::BadKey(_) => 4400,
            SshError::LoginRefused => 4401,
            SshError::HostKeyRejected => 4402,
            SshError::Timeout | SshError::Protocol(_) => 4503,
        }
    }
}

/// What the client tells the person at the terminal while it connects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// The key the VM showed, and how it compares with the one remembered.
    HostKey {
        presented: PresentedKey,
        verdict: Verdict,
    },
}

/// The client's line to the person at the terminal: notices out, accepted fingerprints in.
pub struct Prompt {
    pub notices: mpsc::Sender<Notice>,
    pub accepted: mpsc::Receiver<String>,
}

/// russh's side of the connection: checks the host key.
struct Client {
    state: Arc<HubState>,
    viewer: Viewer,
    owner: KeyOwner,
    prompt: Prompt,
    /// Set when the host key was refused, to tell that apart from other failures.
    refused: Arc<Mutex<bool>>,
    /// Set while the user decides on a changed host key: the handshake's clock stops.
    deciding: Arc<AtomicBool>,
}

impl Client {
    async fn accept(&mut self, presented: PresentedKey) -> bool {
        let verdict =
            match host_keys::check(&self.state, &self.viewer, &self.owner, &presented).await {
                Ok(verdict) => verdict,
                Err(err) => {
                    tracing::warn!(%err, vm = %self.owner.vm, "cannot check an SSH host key");
                    return false;
                }
            };
        let changed = matches!(verdict, Verdict::Changed { .. });
        let notice = Notice::HostKey {
            presented: presented.clone(),
            verdict,
        };
        if self.prompt.notices.send(notice).await.is_err() {
            return false;
        }
        if !changed {
            return true;
        }
        self.deciding.store(true, Ordering::Relaxed);
        let decision =
            tokio::time::timeout(HOST_KEY_DECISION_TIMEOUT, self.prompt.accepted.recv()).await;
        self.deciding.store(false, Ordering::Relaxed);
        if decision.is_ok_and(|accepted| accepted.as_deref() == Some(&presented.fingerprint)) {
            let remembered =
                host_keys::remember(&self.state, &self.viewer, &self.owner, &presented).await;
            return remembered.is_ok();
        }
        false
    }
}

impl client::Handler for Client {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let key = match key {
            PublicKeyOrCertificate::PublicKey { key, .. } => key.key_data(),
            PublicKeyOrCertificate::Certificate(certificate) => certificate.public_key(),
        };
        let presented = PresentedKey {
            algorithm: key.algorithm().to_string(),
            fingerprint: key.fingerprint(HashAlg::Sha256).to_string(),
        };
        let accepted = self.accept(presented).await;
        if !accepted {
            *self.refused.lock().expect("not poisoned") = true;
        }
        Ok(accepted)
    }
}

/// A logged-in SSH session with a shell on a pseudo-terminal.
pub struct Shell {
    handle: Handle<Client>,
    /// What the shell prints.
    pub output: ChannelReadHalf,
    input: ChannelWriteHalf<Msg>,
}

/// The writing side of a [`Shell`]: keystrokes, window sizes, the end.
pub struct ShellInput {
    handle: Handle<Client>,
    channel: ChannelWriteHalf<Msg>,
}

impl Shell {
    /// Splits the shell into what it prints and what it is sent.
    pub fn split(self) -> (ChannelReadHalf, ShellInput) {
        let input = ShellInput {
            handle: self.handle,
            channel: self.input,
        };
        (self.output, input)
    }
}

impl ShellInput {
    /// Types `bytes` into the shell; waits while the SSH window is full.
    pub async fn send(&self, bytes: &[u8]) -> Result<(), russh::Error> {
        self.channel.data(bytes).await
    }

    /// Tells the VM's terminal its new size.
    pub async fn resize(&self, cols: u32, rows: u32) {
        let _ = self
            .channel
            .window_change(cols.clamp(1, 1000), rows.clamp(1, 1000), 0, 0)
            .await;
    }

    /// Ends the session politely.
    pub async fn close(self) {
        let _ = self.channel.eof().await;
        let _ = self
            .handle
            .disconnect(Disconnect::ByApplication, "closed", "en")
            .await;
    }
}

fn config() -> Arc<client::Config> {
    Arc::new(client::Config {
        // Nothing but the user's own keystrokes keeps a session alive; the hub's idle
        // timeout applies.
        keepalive_interval: Some(Duration::from_secs(30)),
        nodelay: true,
        ..client::Config::default()
    })
}

/// Connects over `tunnel`, checks the host key (asking through `prompt` when it changed),
/// logs in and starts a shell on a pseudo-terminal.
pub async fn open(
    state: Arc<HubState>,
    viewer: &Viewer,
    owner: KeyOwner,
    tunnel: Tunnel,
    login: Login,
    prompt: Prompt,
) -> Result<Shell, SshError> {
    login.validate()?;
    let key = match &login.private_key {
        Some(pem) => Some(Arc::new(
            russh::keys::decode_secret_key(pem, login.passphrase.as_deref())
                .map_err(|err| SshError::BadKey(err.to_string()))?,
        )),
        None => None,
    };
    let refused = Arc::new(Mutex::new(false));
    let deciding = Arc::new(AtomicBool::new(false));
    let client = Client {
        state,
        viewer: viewer.clone(),
        owner,
        prompt,
        refused: refused.clone(),
        deciding: deciding.clone(),
    };
    let stream = tokio::io::join(tunnel.from_vm, tunnel.to_vm);
    let connected = handshake(client::connect_stream(config(), stream, client), &deciding).await?;
    let mut handle = connected.map_err(|err| {
        if *refused.lock().expect("not poisoned") {
            SshError::HostKeyRejected
        } else {
            SshError::Protocol(err.to_string())
        }
    })?;
    let logged_in = tokio::time::timeout(LOGIN_TIMEOUT, authenticate(&mut handle, &login, key))
        .await
        .map_err(|_| SshError::Timeout)??;
    if !logged_in {
        return Err(SshError::LoginRefused);
    }
    let channel = tokio::time::timeout(LOGIN_TIMEOUT, start_shell(&handle, &login))
        .await
        .map_err(|_| SshError::Timeout)?
        .map_err(|err| SshError::Protocol(err.to_string()))?;
    let (output, input) = channel.split();
    Ok(Shell {
        handle,
        output,
        input,
    })
}

/// Waits for the handshake; a server that says nothing for [`LOGIN_TIMEOUT`] times out, while
/// the time the user takes over a changed host key does not count.
async fn handshake<T>(
    connecting: impl Future<Output = T>,
    deciding: &AtomicBool,
) -> Result<T, SshError> {
    tokio::pin!(connecting);
    loop {
        match tokio::time::timeout(LOGIN_TIMEOUT, &mut connecting).await {
            Ok(result) => return Ok(result),
            Err(_) if deciding.load(Ordering::Relaxed) => continue,
            Err(_) => return Err(SshError::Timeout),
        }
    }
}

async fn authenticate(
    handle: &mut Handle<Client>,
    login: &Login,
    key: Option<Arc<russh::keys::PrivateKey>>,
) -> Result<bool, SshError> {
    let protocol = |err: russh::Error| SshError::Protocol(err.to_string());
    let result = match (key, &login.password) {
        (Some(key), _) => {
            let hash = handle
                .best_supported_rsa_hash()
                .await
                .map_err(protocol)?
                .flatten();
            handle
                .authenticate_publickey(&login.username, PrivateKeyWithHashAlg::new(key, hash))
                .await
        }
        (None, Some(password)) => {
            handle
                .authenticate_password(&login.username, password)
                .await
        }
        (None, None) => return Ok(false),
    };
    Ok(result.map_err(protocol)?.success())
}

async fn start_shell(handle: &Handle<Client>, login: &Login) -> Result<Channel<Msg>, russh::Error> {
    let channel = handle.channel_open_session().await?;
    channel
        .request_pty(true, TERM, login.cols, login.rows, 0, 0, &[])
        .await?;
    channel.request_shell(true).await?;
    Ok(channel)
}
