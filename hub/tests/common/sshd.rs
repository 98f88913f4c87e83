//! A real OpenSSH server (Debian's `openssh-server`) standing in for a VM's: its own host key,
//! one authorized client key for the user the tests run as, on an address of this machine
//! that is not loopback (agents never tunnel to loopback), at a test port.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use super::within;

const SSHD: &str = "/usr/sbin/sshd";

/// A running `sshd`; stopped on drop.
pub struct Sshd {
    pub address: IpAddr,
    pub port: u16,
    /// The user it lets in with [`Self::client_key`].
    pub user: String,
    dir: tempfile::TempDir,
    child: Child,
}

/// This machine's first non-loopback IPv4 address, if it has one.
pub fn machine_address() -> Option<IpAddr> {
    proxlab_agent::tunnel::local_addresses::read()
        .into_iter()
        .find(|address| address.is_ipv4() && !address.is_loopback())
}

fn keygen(path: &Path) {
    let status = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "proxlab-test", "-f"])
        .arg(path)
        .status()
        .expect("ssh-keygen runs");
    assert!(status.success(), "ssh-keygen failed");
}

impl Sshd {
    /// Starts `sshd` on `port`, or says why it cannot (then the test skips).
    pub async fn start(port: u16) -> Option<Self> {
        if !Path::new(SSHD).exists() {
            eprintln!("NOTICE: {SSHD} is missing (Debian's openssh-server); skipping.");
            return None;
        }
        let Some(address) = machine_address() else {
            eprintln!("NOTICE: this machine has no non-loopback IPv4 address; skipping.");
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        keygen(&dir.path().join("host_key"));
        keygen(&dir.path().join("client_key"));
        std::fs::copy(
            dir.path().join("client_key.pub"),
            dir.path().join("authorized_keys"),
        )
        .unwrap();
        let user = String::from_utf8(
            std::process::Command::new("id")
                .arg("-un")
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap()
        .trim()
        .to_owned();
        // Privilege separation wants its empty directory when sshd starts as root.
        let _ = std::fs::create_dir_all("/run/sshd");
        let mut sshd = Self {
            address,
            port,
            user,
            child: Self::spawn(dir.path(), address, port),
            dir,
        };
        sshd.wait_listening().await;
        Some(sshd)
    }

    fn spawn(dir: &Path, address: IpAddr, port: u16) -> Child {
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
        )
        .unwrap();
        Command::new(SSHD)
            .args(["-D", "-e", "-f"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("sshd starts")
    }

    /// Waits for sshd to say it listens.
    async fn wait_listening(&mut self) {
        let stderr = self.child.stderr.take().expect("piped");
        let mut lines = BufReader::new(stderr).lines();
        within("sshd to listen", async {
            while let Some(line) = lines.next_line().await.unwrap() {
                if line.contains("Server listening on") {
                    break;
                }
                eprintln!("sshd: {line}");
            }
        })
        .await;
        // Keep draining its log, so sshd never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    }

    /// The private key (OpenSSH format) the server accepts for [`Self::user`].
    pub fn client_key(&self) -> String {
        std::fs::read_to_string(self.client_key_path()).unwrap()
    }

    pub fn client_key_path(&self) -> PathBuf {
        self.dir.path().join("client_key")
    }

    /// Restarts with a new host key, as a VM made again from its template would.
    pub async fn change_host_key(&mut self) {
        let _ = self.child.kill().await;
        let host_key = self.dir.path().join("host_key");
        std::fs::remove_file(&host_key).unwrap();
        std::fs::remove_file(host_key.with_extension("pub")).unwrap();
        keygen(&host_key);
        self.child = Self::spawn(self.dir.path(), self.address, self.port);
        self.wait_listening().await;
    }
}
