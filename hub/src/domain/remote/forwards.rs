//! Forwarded ports: a port of the hub that reaches a VM's SSH or RDP server through its
//! agent, so a student's own `ssh` or Remote Desktop client works from anywhere.
//!
//! A port opens when someone entitled to the VM asks (`open`), for the address they asked
//! from (or any, when the site chooses), and closes when its time is up (renewed by asking
//! again), the VM stops, or the person who asked loses the VM. Each connection through it is
//! a session like a console's: counted against the same limits, listed for admins, audited.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use proxlab_protocol::inventory::PowerState;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::access::{self, Method};
use super::tunnel::{self, TunnelError};
use crate::HubState;
use crate::db::now_unix;
use crate::domain::audit::{self, Outcome};
use crate::domain::consoles::kind::SessionKind;
use crate::domain::consoles::sessions::{ConsoleSession, EndReason};
use crate::domain::consoles::{self, SessionRecord};
use crate::domain::viewer::Viewer;
use crate::domain::vms::{self, VmOpError};
use crate::vm_key::VmKey;

/// How often an open port checks that it may stay open.
const RECHECK: Duration = Duration::from_secs(1);

/// The `[forwarding]` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardSettings {
    /// The hub ports forwards use; `None`: forwarding is off.
    pub ports: Option<RangeInclusive<u16>>,
    /// The address the ports listen on.
    pub listen_ip: IpAddr,
    /// The host name people connect to; default: the portal's host.
    pub host: Option<String>,
    /// Whether a port accepts anyone, not only the address that asked for it.
    pub bind_any: bool,
    /// How long a port stays open after it was last asked for.
    pub open_for: Duration,
}

impl Default for ForwardSettings {
    fn default() -> Self {
        Self {
            ports: None,
            listen_ip: "0.0.0.0".parse().expect("valid address"),
            host: None,
            bind_any: false,
            open_for: Duration::from_secs(60 * 60),
        }
    }
}

/// What a forward reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Service {
    Ssh,
    Rdp,
}

impl Service {
    fn method(self) -> Method {
        match self {
            Service::Ssh => Method::Ssh,
            Service::Rdp => Method::Rdp,
        }
    }

    fn session_kind(self) -> SessionKind {
        match self {
            Service::Ssh => SessionKind::SshForward,
            Service::Rdp => SessionKind::RdpForward,
        }
    }
}

/// Why a port could not be forwarded.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("this hub does not forward ports (an administrator sets [forwarding] ports)")]
    Off,
    #[error(transparent)]
    Vm(#[from] VmOpError),
    #[error("{0} is not running: start it first")]
    NotRunning(String),
    #[error(transparent)]
    Tunnel(#[from] TunnelError),
    #[error("every forwarded port of this hub is in use; try again later")]
    NoFreePort,
}

/// An open forwarded port, as the person who asked sees it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ForwardView {
    /// The VM's key (`CLUSTER-VMID`).
    pub id: VmKey,
    pub vmid: u32,
    pub service: Service,
    pub host: String,
    pub port: u16,
    /// The VM port it reaches.
    pub vm_port: u16,
    /// The only address it accepts connections from; `None`: any.
    pub allowed_from: Option<IpAddr>,
    pub expires_at: i64,
}

/// One open port.
struct Forward {
    view: ForwardView,
    /// The person who asked: connections are theirs.
    viewer: Viewer,
    expires_at: AtomicI64,
    closed: watch::Sender<bool>,
}

impl Forward {
    fn view(&self) -> ForwardView {
        ForwardView {
            expires_at: self.expires_at.load(Ordering::Relaxed),
            ..self.view.clone()
        }
    }
}

type Key = (VmKey, Service, Option<IpAddr>);

/// The hub's open forwarded ports.
#[derive(Default)]
pub struct Forwards {
    settings: ForwardSettings,
    open: Mutex<HashMap<Key, Arc<Forward>>>,
}

impl Forwards {
    pub fn new(settings: ForwardSettings) -> Self {
        Self {
            settings,
            open: Mutex::default(),
        }
    }

    pub fn enabled(&self) -> bool {
        self.settings.ports.is_some()
    }

    /// The open ports of a VM.
    pub fn of_vm(&self, vm: VmKey) -> Vec<ForwardView> {
        let open = self.open.lock().expect("not poisoned");
        let mut views: Vec<ForwardView> = open
            .values()
            .map(|forward| forward.view())
            .filter(|view| view.id == vm)
            .collect();
        views.sort_by_key(|view| view.port);
        views
    }

    fn ports_in_use(&self) -> Vec<u16> {
        let open = self.open.lock().expect("not poisoned");
        open.values().map(|forward| forward.view().port).collect()
    }
}

/// The host name people connect to: the configured one, else the portal's.
fn public_host(state: &HubState) -> String {
    if let Some(host) = &state.forwards.settings.host {
        return host.clone();
    }
    let site = state.config.site_url().unwrap_or_default();
    let authority = site.split("://").nth(1).unwrap_or(&site);
    let authority = authority.split('/').next().unwrap_or(authority);
    match authority.rsplit_once(':') {
        Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) => host.to_owned(),
        _ => authority.to_owned(),
    }
}

/// Opens (or renews) a forwarded port to `service` of `vm` for `viewer`, asking from
/// `requester`. Audited.
pub async fn open(
    state: &Arc<HubState>,
    viewer: &Viewer,
    vm: VmKey,
    service: Service,
    requester: IpAddr,
) -> Result<ForwardView, ForwardError> {
    let result = open_unaudited(state, viewer, vm, service, requester).await;
    let target = vm.audit_target();
    let (outcome, detail) = match &result {
        Ok(view) => (
            Outcome::Ok,
            format!(
                "{service:?} on port {} from {}",
                view.port,
                view.allowed_from
                    .map_or_else(|| "anywhere".to_owned(), |ip| ip.to_string())
            ),
        ),
        Err(err @ ForwardError::Vm(VmOpError::NotFound | VmOpError::Forbidden(_))) => {
            (Outcome::Denied, err.to_string())
        }
        Err(err) => (Outcome::Failed, err.to_string()),
    };
    audit::record(&state.db, viewer, "vm.forward", &target, outcome, &detail).await;
    result
}

async fn open_unaudited(
    state: &Arc<HubState>,
    viewer: &Viewer,
    id: VmKey,
    service: Service,
    requester: IpAddr,
) -> Result<ForwardView, ForwardError> {
    let forwards = &state.forwards;
    let vm = vms::visible_vm(state, viewer, id).await?;
    let class_access = access::check(state, viewer, &vm, service.method()).await?;
    let range = forwards.settings.ports.clone().ok_or(ForwardError::Off)?;
    if vm.status != PowerState::Running {
        return Err(ForwardError::NotRunning(vm.name));
    }
    if tunnel::address_of(&vm).is_none() {
        return Err(TunnelError::NoAddress(vm.name).into());
    }
    let allowed_from = (!forwards.settings.bind_any).then_some(requester);
    let expires_at = now_unix() + forwards.settings.open_for.as_secs() as i64;
    let key = (id, service, allowed_from);
    if let Some(forward) = forwards.open.lock().expect("not poisoned").get(&key) {
        forward.expires_at.store(expires_at, Ordering::Relaxed);
        return Ok(forward.view());
    }
    let listener = bind_free_port(forwards, range).await?;
    let port = listener
        .local_addr()
        .map_err(|_| ForwardError::NoFreePort)?
        .port();
    let vm_port = match service {
        Service::Ssh => class_access.ssh_port,
        Service::Rdp => class_access.rdp_port,
    };
    let forward = Arc::new(Forward {
        view: ForwardView {
            id,
            vmid: id.vmid,
            service,
            host: public_host(state),
            port,
            vm_port,
            allowed_from,
            expires_at,
        },
        viewer: viewer.clone(),
        expires_at: AtomicI64::new(expires_at),
        closed: watch::Sender::new(false),
    });
    forwards
        .open
        .lock()
        .expect("not poisoned")
        .insert(key, forward.clone());
    tracing::info!(vm = %id, port, ?service, user = %viewer.username, "forwarded port opened");
    let view = forward.view();
    tokio::spawn(serve(state.clone(), key, forward, listener));
    Ok(view)
}

/// Binds the first free port of `range` that no forward holds.
async fn bind_free_port(
    forwards: &Forwards,
    range: RangeInclusive<u16>,
) -> Result<TcpListener, ForwardError> {
    let taken = forwards.ports_in_use();
    for port in range.filter(|port| !taken.contains(port)) {
        let address = SocketAddr::new(forwards.settings.listen_ip, port);
        if let Ok(listener) = TcpListener::bind(address).await {
            return Ok(listener);
        }
    }
    Err(ForwardError::NoFreePort)
}

/// Accepts connections until the port must close, then closes it and every connection.
async fn serve(state: Arc<HubState>, key: Key, forward: Arc<Forward>, listener: TcpListener) {
    let mut recheck = tokio::time::interval(RECHECK);
    recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let why = loop {
        tokio::select! {
            accepted = listener.accept() => {
                if let Ok((stream, peer)) = accepted {
                    accept(&state, &forward, stream, peer);
                }
            }
            _ = recheck.tick() => {
                if let Some(why) = must_close(&state, &forward).await {
                    break why;
                }
            }
        }
    };
    drop(listener);
    state
        .forwards
        .open
        .lock()
        .expect("not poisoned")
        .remove(&key);
    forward.closed.send_replace(true);
    let view = forward.view();
    tracing::info!(
        vmid = view.vmid,
        port = view.port,
        why,
        "forwarded port closed"
    );
}

/// Hands a connection from `peer` on to its own task, if it comes from where it may.
fn accept(state: &Arc<HubState>, forward: &Forward, stream: TcpStream, peer: SocketAddr) {
    let view = forward.view();
    if view
        .allowed_from
        .is_some_and(|allowed| !same_address(allowed, peer.ip()))
    {
        tracing::warn!(port = view.port, %peer, "forwarded port: another address refused");
        return;
    }
    let closed = forward.closed.subscribe();
    let viewer = forward.viewer.clone();
    tokio::spawn(connection(state.clone(), viewer, view, stream, closed));
}

/// Why an open port must close now, if it must.
async fn must_close(state: &HubState, forward: &Forward) -> Option<&'static str> {
    if now_unix() >= forward.expires_at.load(Ordering::Relaxed) {
        return Some("its time is up");
    }
    let view = &forward.view;
    let kind = view.service.session_kind();
    match consoles::may_still_use(state, forward.viewer.id, view.id, kind).await {
        Ok(Some(vm)) if vm.status == PowerState::Running => None,
        Ok(Some(_)) => Some("the VM stopped"),
        Ok(None) => Some("the user may no longer reach the VM this way"),
        Err(err) => {
            // The database being away for a moment closes nothing.
            tracing::warn!(%err, "cannot recheck a forwarded port");
            None
        }
    }
}

fn same_address(a: IpAddr, b: IpAddr) -> bool {
    let canonical = |ip: IpAddr| match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    canonical(a) == canonical(b)
}

/// One connection through a forwarded port, as a session of the person who opened it.
async fn connection(
    state: Arc<HubState>,
    viewer: Viewer,
    view: ForwardView,
    mut stream: TcpStream,
    mut closed: watch::Receiver<bool>,
) {
    let kind = view.service.session_kind();
    let record = match state.consoles.open(&viewer, view.id, kind) {
        Ok(slot) => SessionRecord::new(slot),
        Err(limit) => {
            tracing::warn!(%limit, port = view.port, "forwarded connection refused");
            return;
        }
    };
    let reason = match open_tunnel(&state, &viewer, &view).await {
        Ok(tunnel) => {
            let session = record.session().clone();
            let _ = stream.set_nodelay(true);
            tokio::select! {
                reason = relay(&mut stream, tunnel, &session) => reason,
                reason = session.ended() => reason,
                reason = consoles::watch(&state, &session) => reason,
                _ = closed.wait_for(|closed| *closed) => EndReason::AccessLost,
            }
        }
        Err(err) => {
            tracing::info!(%err, port = view.port, "forwarded connection: no tunnel");
            EndReason::NodeLost(err.to_string())
        }
    };
    let _ = stream.shutdown().await;
    record.record_end(&state, &viewer, &reason).await;
}

async fn open_tunnel(
    state: &HubState,
    viewer: &Viewer,
    view: &ForwardView,
) -> Result<tunnel::Tunnel, ForwardError> {
    let vm = vms::visible_vm(state, viewer, view.id).await?;
    Ok(tunnel::open(state, &vm, view.vm_port).await?)
}

/// Carries bytes between the client's connection and the tunnel, counting them.
async fn relay(
    stream: &mut TcpStream,
    tunnel: tunnel::Tunnel,
    session: &ConsoleSession,
) -> EndReason {
    let tunnel::Tunnel {
        mut to_vm,
        mut from_vm,
    } = tunnel;
    let (mut from_client, mut to_client) = stream.split();
    let upstream = async {
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            use tokio::io::AsyncReadExt;
            match from_client.read(&mut buffer).await {
                Ok(0) | Err(_) => return EndReason::BrowserClosed,
                Ok(n) => {
                    if to_vm.write_all(&buffer[..n]).await.is_err() {
                        return EndReason::NodeLost("the tunnel broke".into());
                    }
                    session.sent_to_vm(n);
                }
            }
        }
    };
    let downstream = async {
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            match from_vm.read(&mut buffer).await {
                Ok(Some(n)) => {
                    if to_client.write_all(&buffer[..n]).await.is_err() {
                        return EndReason::BrowserClosed;
                    }
                    session.received_from_vm(n);
                }
                Ok(None) => return EndReason::VmSideClosed,
                Err(_) => return EndReason::NodeLost("the tunnel broke".into()),
            }
        }
    };
    let reason = tokio::select! {
        reason = upstream => reason,
        reason = downstream => reason,
    };
    let _ = to_vm.finish();
    reason
}
