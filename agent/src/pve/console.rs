//! A VM's consoles on this node: its screen through `qm vncproxy`, which sets a one-time VNC
//! password (`LC_PVE_TICKET`) over QMP and pipes QEMU's VNC socket, as Proxmox's own console
//! proxy does; and its first serial port, QEMU's `<run>/<vmid>.serial0` socket (what `qm
//! terminal` connects to, without the terminal settings `qm terminal` wants a TTY for).

use std::process::Stdio;

use proxlab_protocol::console::{CONSOLE_CONNECT_TIMEOUT, ConsoleKind, valid_vnc_password};
use proxlab_protocol::inventory::PowerState;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::process::{Child, Command};

use super::command::{PveError, classify};
use super::node::Node;
use super::ops;

/// The most of `qm vncproxy`'s stderr kept for an error message.
const STDERR_KEPT: usize = 4096;

/// An open console: its two byte directions, and the process behind it, if any.
pub struct Console {
    pub from_vm: Box<dyn AsyncRead + Send + Unpin>,
    pub to_vm: Box<dyn AsyncWrite + Send + Unpin>,
    /// What the VM's side sent while the console was being opened (its RFB greeting): the
    /// first bytes the caller passes on.
    pub greeting: Vec<u8>,
    proxy: Option<Child>,
}

impl Console {
    /// Ends the console: the `qm vncproxy` process is killed and reaped, so none is left.
    pub async fn close(mut self) {
        if let Some(mut child) = self.proxy.take() {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }
}

/// Opens a console of a running VM of this node.
pub async fn open(
    node: &Node,
    vmid: u32,
    kind: ConsoleKind,
    password: Option<&str>,
) -> Result<Console, PveError> {
    let config = node.require_config(vmid)?;
    if kind == ConsoleKind::Serial && config.main().get("serial0") != Some("socket") {
        return Err(PveError::Invalid(format!(
            "VM {vmid} has no serial console: its configuration needs `serial0: socket`"
        )));
    }
    if ops::status(node, vmid).await? != PowerState::Running {
        return Err(PveError::Conflict(format!("VM {vmid} is not running")));
    }
    match kind {
        ConsoleKind::Vnc => {
            let password = password
                .filter(|password| valid_vnc_password(password))
                .ok_or_else(|| {
                    PveError::Invalid("a VNC console needs an 8-character password".into())
                })?;
            vnc(node, vmid, password).await
        }
        ConsoleKind::Serial => serial(node, vmid).await,
    }
}

/// `LC_PVE_TICKET=<password> qm vncproxy <vmid>`, answered once the VM's VNC server has
/// greeted (or the proxy has failed).
async fn vnc(node: &Node, vmid: u32, password: &str) -> Result<Console, PveError> {
    let program = &node.config.qm;
    let mut child = Command::new(program)
        .args(["vncproxy", &vmid.to_string()])
        .envs(&node.config.env)
        .env("LC_PVE_TICKET", password)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|err| PveError::Spawn {
            program: "qm".into(),
            message: err.to_string(),
        })?;
    let mut stdout = child.stdout.take().expect("piped");
    let stdin = child.stdin.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let mut greeting = vec![0u8; 64];
    let first = tokio::time::timeout(CONSOLE_CONNECT_TIMEOUT, stdout.read(&mut greeting)).await;
    match first {
        Ok(Ok(n)) if n > 0 => {
            greeting.truncate(n);
            // Whatever the proxy says later is for the agent's log, not a buffer that grows.
            tokio::spawn(async move {
                let mut said = Vec::new();
                let _ = (&mut stderr)
                    .take(STDERR_KEPT as u64)
                    .read_to_end(&mut said)
                    .await;
                let _ = tokio::io::copy(&mut stderr, &mut tokio::io::sink()).await;
                if !said.is_empty() {
                    tracing::info!(vmid, said = %String::from_utf8_lossy(&said).trim(), "qm vncproxy");
                }
            });
            Ok(Console {
                from_vm: Box::new(stdout),
                to_vm: Box::new(stdin),
                greeting,
                proxy: Some(child),
            })
        }
        Ok(Ok(_)) | Ok(Err(_)) => {
            let mut said = Vec::new();
            let _ = (&mut stderr)
                .take(STDERR_KEPT as u64)
                .read_to_end(&mut said)
                .await;
            let status = child.wait().await?;
            let stderr = String::from_utf8_lossy(&said).trim().to_owned();
            Err(PveError::CommandFailed {
                program: "qm".into(),
                code: status.code().unwrap_or(-1),
                failure: classify(&stderr),
                stderr,
            })
        }
        Err(_) => {
            let _ = child.start_kill();
            let _ = child.wait().await;
            Err(PveError::Timeout {
                program: "qm vncproxy".into(),
                after: CONSOLE_CONNECT_TIMEOUT,
            })
        }
    }
}

/// The VM's `serial0` socket.
async fn serial(node: &Node, vmid: u32) -> Result<Console, PveError> {
    let path = node.config.run_dir.join(format!("{vmid}.serial0"));
    let stream = tokio::time::timeout(
        CONSOLE_CONNECT_TIMEOUT,
        tokio::net::UnixStream::connect(&path),
    )
    .await
    .map_err(|_| PveError::Timeout {
        program: format!("connecting to {}", path.display()),
        after: CONSOLE_CONNECT_TIMEOUT,
    })?
    .map_err(|err| PveError::Io(format!("cannot connect to VM {vmid}'s serial port: {err}")))?;
    let (from_vm, to_vm) = stream.into_split();
    Ok(Console {
        from_vm: Box::new(from_vm),
        to_vm: Box::new(to_vm),
        greeting: Vec::new(),
        proxy: None,
    })
}
