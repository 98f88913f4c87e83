//! A real OpenSSH server (Debian's `openssh-server`) standing in for a VM's, at a test port:
//! the demo's launcher, with a skip notice where this machine cannot run one.

use proxlab_hub::demo::sshd::{self, LocalSshd};

/// Starts `sshd` on `port` of this machine's address, or says why not (the test skips).
pub async fn start(port: u16) -> Option<(LocalSshd, tempfile::TempDir)> {
    let Some(address) = sshd::available() else {
        eprintln!(
            "NOTICE: {} (Debian's openssh-server) or a non-loopback IPv4 address is missing; skipping.",
            sshd::SSHD
        );
        return None;
    };
    let dir = tempfile::tempdir().unwrap();
    let server = LocalSshd::start(dir.path(), address, port).await.unwrap();
    Some((server, dir))
}

/// The real `ssh` client, logging in to `server` at `host:port` with its client key and
/// running `command`; no prompts, no known-hosts file.
pub fn client(
    server: &LocalSshd,
    host: std::net::IpAddr,
    port: u16,
    command: &str,
) -> tokio::process::Command {
    let mut ssh = tokio::process::Command::new("ssh");
    ssh.args(["-p", &port.to_string(), "-i"])
        .arg(server.client_key_path())
        .args([
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "LogLevel=ERROR",
        ])
        .arg(format!("{}@{host}", server.user))
        .arg(command);
    ssh
}
