//! A real OpenSSH server on this machine standing in for a simulated VM's: its own host key,
//! one client key (made here) for the user the demo runs as, key logins only, on an address of
//! this machine that is not loopback (agents never tunnel to loopback). The demo gives one VM
//! its address; the tests use it the same way.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Where Debian's `openssh-server` puts the daemon.
pub const SSHD: &str = "/usr/sbin/sshd";

/// How long sshd gets to say it listens.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A running `sshd`; stopped on drop.
pub struct LocalSshd {
    pub address: IpAddr,
    pub port: u16,
    /// The user [`Self::client_key`] logs in as.
    pub user: String,
    dir: PathBuf,
    child: Child,
}

/// Whether this machine can run one: the daemon is installed and there is an address.
pub fn available() -> Option<IpAddr> {
    if !Path::new(SSHD).exists() {
        return None;
    }
    proxlab_link::local_addresses::primary_ipv4()
}

fn keygen(path: &Path) -> Result<()> {
    let status = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "proxlab", "-f"])
        .arg(path)
        .stdin(Stdio::null())
        .status()
        .context("running ssh-keygen")?;
    if !status.success() {
        bail!("ssh-keygen failed for {}", path.display());
    }
    Ok(())
}

fn current_user() -> Result<String> {
    let output = std::process::Command::new("id")
        .arg("-un")
        .output()
        .context("running id")?;
    Ok(String::from_utf8(output.stdout)?.trim().to_owned())
}

impl LocalSshd {
    /// Starts `sshd` on `address:port` with its keys in `dir` (made there on first use).
    pub async fn start(dir: &Path, address: IpAddr, port: u16) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        for key in ["host_key", "client_key"] {
            if !dir.join(key).exists() {
                keygen(&dir.join(key))?;
            }
        }
        std::fs::copy(dir.join("client_key.pub"), dir.join("authorized_keys"))?;
        // Privilege separation wants its empty directory when sshd starts as root.
        let _ = std::fs::create_dir_all("/run/sshd");
        let mut sshd = Self {
            address,
            port,
            user: current_user()?,
            dir: dir.to_owned(),
            child: spawn(dir, address, port)?,
        };
        sshd.wait_listening().await?;
        Ok(sshd)
    }

    async fn wait_listening(&mut self) -> Result<()> {
        let stderr = self.child.stderr.take().context("sshd's log")?;
        let mut lines = BufReader::new(stderr).lines();
        let mut log = Vec::new();
        let listening = async {
            while let Some(line) = lines.next_line().await? {
                if line.contains("Server listening on") {
                    return Ok(true);
                }
                log.push(line);
            }
            Ok::<_, std::io::Error>(false)
        };
        let listening = tokio::time::timeout(START_TIMEOUT, listening).await;
        if !matches!(listening, Ok(Ok(true))) {
            bail!("sshd did not start: {}", log.join("; "));
        }
        // Keep draining its log, so sshd never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(())
    }

    /// The private key (OpenSSH format) the server accepts for [`Self::user`].
    pub fn client_key_path(&self) -> PathBuf {
        self.dir.join("client_key")
    }

    pub fn client_key(&self) -> Result<String> {
        Ok(std::fs::read_to_string(self.client_key_path())?)
    }

    /// Restarts with a new host key, as a VM made again from its template would.
    pub async fn change_host_key(&mut self) -> Result<()> {
        let _ = self.child.kill().await;
        let host_key = self.dir.join("host_key");
        std::fs::remove_file(&host_key)?;
        std::fs::remove_file(self.dir.join("host_key.pub"))?;
        keygen(&host_key)?;
        self.child = spawn(&self.dir, self.address, self.port)?;
        self.wait_listening().await
    }
}

fn spawn(dir: &Path, address: IpAddr, port: u16) -> Result<Child> {
    let config = dir.join("sshd_config");
    std::fs::write(
        &config,
        format!(
            "ListenAddress {address}:{port}\nHostKey {host_key}\nAuthorizedKeysFile {keys}\n\
             PidFile none\nUsePAM no\nStrictModes no\nPermitRootLogin prohibit-password\n\
             PasswordAuthentication yes\nKbdInteractiveAuthentication no\nLogLevel INFO\n",
            host_key = dir.join("host_key").display(),
            keys = dir.join("authorized_keys").display(),
        ),
    )?;
    Command::new(SSHD)
        .args(["-D", "-e", "-f"])
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("starting sshd")
}
