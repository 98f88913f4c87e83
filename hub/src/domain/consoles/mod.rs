//! Consoles: who may open which VM's screen, serial port or SSH terminal, the single-use
//! tickets that open them, the sessions open now, and what the audit log says about them.
//!
//! A console opens in two steps. [`issue`] checks that the viewer may use the VM that way and
//! that it runs, and hands out a ticket bound to the viewer, the VM and the kind of console,
//! valid for [`TICKET_LIFETIME`]. [`connect`] spends the ticket (once), checks everything
//! again, registers the session within the hub's limits and asks the VM's agent for a stream:
//! a console, or a tunnel to the VM's SSH port. The web layer then bridges the browser's
//! WebSocket to that stream (running the SSH client for an SSH terminal), and [`watch`] ends
//! the session when the viewer loses the VM.

pub mod kind;
pub mod sessions;
pub mod tickets;

use std::sync::Arc;
use std::time::Duration;

use proxlab_protocol::ErrorKind;
use proxlab_protocol::console::{CONSOLE_CONNECT_TIMEOUT, ConsoleKind, ConsoleOpen};
use proxlab_protocol::inventory::PowerState;

use crate::HubState;
use crate::agents::CallError;
use crate::db::consoles::TicketRefusal;
use crate::db::{DbError, now_unix};
use crate::domain::audit::{self, Outcome};
use crate::domain::remote::access::{self, Method};
use crate::domain::remote::tunnel::{self, TunnelError};
use crate::domain::viewer::Viewer;
use crate::domain::vms::{self, VmOpError};
use crate::secrets::{hash_secret, new_secret};
use crate::vm_key::VmKey;
use kind::SessionKind;
use sessions::{ConsoleSession, EndReason, LimitReached, SessionSlot};

/// How long a ticket may wait for its WebSocket.
pub const TICKET_LIFETIME: Duration = Duration::from_secs(30);

/// How often an open console checks that its user may still use the VM.
pub const ACCESS_RECHECK: Duration = Duration::from_secs(1);

/// A ticket for one console.
#[derive(Debug, Clone)]
pub struct IssuedTicket {
    pub ticket: String,
    /// For a VNC console: what the browser authenticates to the VM's VNC server with.
    pub password: Option<String>,
    pub expires_at: i64,
}

/// Why a console could not be had.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error(transparent)]
    Vm(#[from] VmOpError),
    #[error("{0} is not running: start it first")]
    NotRunning(String),
    #[error("this console link has expired; open the console again")]
    TicketExpired,
    #[error("this console link was used already; open the console again")]
    TicketSpent,
    #[error("this console link is not valid")]
    TicketUnknown,
    #[error(transparent)]
    Limit(#[from] LimitReached),
    #[error(
        "this VM has no serial port; a teacher adds one as `serial0: socket` in its hardware \
         (and restarts it)"
    )]
    NoSerialPort,
    #[error("the node could not open the console: {0}")]
    Node(CallError),
    #[error("{0}")]
    Tunnel(#[from] TunnelError),
    #[error(transparent)]
    Db(#[from] DbError),
}

impl ConsoleError {
    /// The WebSocket close code for a console refused after the upgrade.
    pub fn close_code(&self) -> u16 {
        match self {
            ConsoleError::TicketExpired => 4001,
            ConsoleError::TicketSpent => 4002,
            ConsoleError::TicketUnknown => 4003,
            ConsoleError::Vm(VmOpError::NotFound) => 4004,
            ConsoleError::Vm(_) => 4005,
            ConsoleError::NotRunning(_) => 4009,
            ConsoleError::Limit(_) => 4029,
            ConsoleError::NoSerialPort => 4040,
            ConsoleError::Node(_) | ConsoleError::Tunnel(TunnelError::Node(_)) => 4502,
            ConsoleError::Tunnel(TunnelError::Refused(_)) => 4403,
            ConsoleError::Tunnel(TunnelError::NoAddress(_) | TunnelError::Unreachable(_)) => 4503,
            ConsoleError::Db(_) => 1011,
        }
    }
}

/// The way into a VM a kind of console is.
fn method_of(kind: SessionKind) -> Method {
    match kind {
        SessionKind::Vnc | SessionKind::Serial => Method::Console,
        SessionKind::Ssh | SessionKind::SshForward => Method::Ssh,
        SessionKind::RdpForward => Method::Rdp,
    }
}

/// Issues a ticket for `kind` of console of `key` to `viewer`.
pub async fn issue(
    state: &HubState,
    viewer: &Viewer,
    key: VmKey,
    kind: SessionKind,
) -> Result<IssuedTicket, ConsoleError> {
    let vm = vms::visible_vm(state, viewer, key).await?;
    if !kind.opened_by_ticket() {
        return Err(VmOpError::NotAllowed(format!(
            "a {} session comes through a forwarded port, not a console ticket",
            kind.as_str()
        ))
        .into());
    }
    if vm.template {
        return Err(
            VmOpError::NotAllowed(format!("{} is a template: it has no console", vm.name)).into(),
        );
    }
    access::check(state, viewer, &vm, method_of(kind)).await?;
    if vm.status == PowerState::Stopped {
        return Err(ConsoleError::NotRunning(vm.name));
    }
    if kind == SessionKind::Ssh && tunnel::address_of(&vm).is_none() {
        return Err(TunnelError::NoAddress(vm.name).into());
    }
    let ticket = new_secret(tickets::TICKET_PREFIX);
    let now = now_unix();
    let expires_at = now + TICKET_LIFETIME.as_secs() as i64;
    state
        .db
        .insert_console_ticket(
            &hash_secret(&ticket),
            viewer.id,
            key,
            kind.as_str(),
            now,
            expires_at,
        )
        .await?;
    let password = (kind == SessionKind::Vnc).then(|| tickets::vnc_password(&ticket));
    Ok(IssuedTicket {
        ticket,
        password,
        expires_at,
    })
}

/// A console the agent has opened: the session, and the stream that carries its bytes.
pub struct OpenConsole {
    pub record: SessionRecord,
    pub to_agent: quinn::SendStream,
    pub from_agent: quinn::RecvStream,
}

/// An open session's registration, and what its audit entries say.
pub struct SessionRecord {
    pub slot: SessionSlot,
    /// Where the audit entries name the VM.
    target: String,
}

/// Spends `ticket` for `viewer` and opens the console it was issued for. Every refusal is
/// audited.
pub async fn connect(
    state: &HubState,
    viewer: &Viewer,
    ticket: &str,
) -> Result<OpenConsole, ConsoleError> {
    let result = connect_unaudited(state, viewer, ticket).await;
    match &result {
        Ok(open) => {
            let detail = open.record.slot.session.kind.as_str();
            audit::record(
                &state.db,
                viewer,
                "console.open",
                &open.record.target,
                Outcome::Ok,
                detail,
            )
            .await;
        }
        Err(err) => {
            let outcome = match err {
                ConsoleError::Node(_) | ConsoleError::Tunnel(_) | ConsoleError::Db(_) => {
                    Outcome::Failed
                }
                _ => Outcome::Denied,
            };
            audit::record(
                &state.db,
                viewer,
                "console.open",
                "console",
                outcome,
                &err.to_string(),
            )
            .await;
        }
    }
    result
}

async fn connect_unaudited(
    state: &HubState,
    viewer: &Viewer,
    ticket: &str,
) -> Result<OpenConsole, ConsoleError> {
    let spent = state
        .db
        .spend_console_ticket(&hash_secret(ticket), now_unix())
        .await?
        .map_err(|refusal| match refusal {
            TicketRefusal::Unknown => ConsoleError::TicketUnknown,
            TicketRefusal::Expired => ConsoleError::TicketExpired,
            TicketRefusal::Spent => ConsoleError::TicketSpent,
        })?;
    // Someone else's ticket is as good as none: it says nothing about their VM.
    if spent.user_id != viewer.id {
        return Err(ConsoleError::TicketUnknown);
    }
    let kind = SessionKind::parse(&spent.kind).ok_or(ConsoleError::TicketUnknown)?;
    // Whether it runs is the node's to say now (the stored state may be a moment behind).
    let vm = vms::visible_vm(state, viewer, spent.vm).await?;
    let access = access::check(state, viewer, &vm, method_of(kind)).await?;
    let slot = state.consoles.open(viewer, vm.key, kind)?;
    let record = SessionRecord {
        slot,
        target: vm.key.audit_target(),
    };
    let Some(console) = kind.agent_console() else {
        let tunnel = tunnel::open(state, &vm, access.ssh_port).await?;
        return Ok(OpenConsole {
            record,
            to_agent: tunnel.to_vm,
            from_agent: tunnel.from_vm,
        });
    };
    let request = ConsoleOpen {
        vmid: vm.vmid,
        kind: console,
        password: (console == ConsoleKind::Vnc).then(|| tickets::vnc_password(ticket)),
    };
    let (_, to_agent, from_agent) = state
        .registry
        .open_stream(
            &vm.node,
            &request,
            CONSOLE_CONNECT_TIMEOUT + Duration::from_secs(5),
        )
        .await
        .map_err(|err| match err {
            CallError::Remote(remote)
                if console == ConsoleKind::Serial && remote.kind == ErrorKind::BadRequest =>
            {
                ConsoleError::NoSerialPort
            }
            CallError::Remote(remote) if remote.kind == ErrorKind::Conflict => {
                ConsoleError::NotRunning(vm.name.clone())
            }
            other => ConsoleError::Node(other),
        })?;
    Ok(OpenConsole {
        record,
        to_agent,
        from_agent,
    })
}

impl SessionRecord {
    /// Registers a session that did not come through a ticket (a forwarded port).
    pub fn new(slot: SessionSlot) -> Self {
        let target = slot.session.vm.audit_target();
        Self { slot, target }
    }

    pub fn session(&self) -> &Arc<ConsoleSession> {
        &self.slot.session
    }

    /// Records how the session went, once it has ended.
    pub async fn record_end(&self, state: &HubState, viewer: &Viewer, reason: &EndReason) {
        let session = self.session();
        let detail = format!(
            "{} session, {} s, {} bytes to the VM, {} bytes from it; {}",
            session.kind.as_str(),
            (now_unix() - session.started_at).max(0),
            session
                .bytes_to_vm
                .load(std::sync::atomic::Ordering::Relaxed),
            session
                .bytes_from_vm
                .load(std::sync::atomic::Ordering::Relaxed),
            reason.message(),
        );
        audit::record(
            &state.db,
            viewer,
            "console.close",
            &self.target,
            Outcome::Ok,
            &detail,
        )
        .await;
    }
}

/// Resolves when the session's user may no longer use its VM (disabled, VM reassigned or
/// gone, class deleted, role changed, this way in turned off for the class), checking every
/// [`ACCESS_RECHECK`].
pub async fn watch(state: &HubState, session: &ConsoleSession) -> EndReason {
    let mut every = tokio::time::interval(ACCESS_RECHECK);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        match still_allowed(state, session).await {
            Ok(true) => {}
            Ok(false) => return EndReason::AccessLost,
            // The database being away for a moment does not end anyone's console.
            Err(err) => tracing::warn!(%err, "cannot recheck a console's access"),
        }
        if session.idle_secs() >= state.consoles.limits().idle.as_secs() {
            return EndReason::Idle;
        }
    }
}

async fn still_allowed(state: &HubState, session: &ConsoleSession) -> Result<bool, DbError> {
    Ok(
        may_still_use(state, session.user_id, session.vm, session.kind)
            .await?
            .is_some(),
    )
}

/// Whether user `user_id` may still reach `vmid` the way `kind` does: enabled, still able to
/// see the VM, and allowed that way in by its class now. The VM as it stands when so.
pub async fn may_still_use(
    state: &HubState,
    user_id: i64,
    key: VmKey,
    kind: SessionKind,
) -> Result<Option<crate::db::inventory::VmRow>, DbError> {
    let Some(user) = state.db.user_by_id(user_id).await? else {
        return Ok(None);
    };
    if user.disabled {
        return Ok(None);
    }
    let viewer = Viewer::from(&user);
    let vm = match vms::visible_vm(state, &viewer, key).await {
        Ok(vm) => vm,
        Err(VmOpError::Db(err)) => return Err(err),
        Err(_) => return Ok(None),
    };
    match access::check(state, &viewer, &vm, method_of(kind)).await {
        Ok(_) => Ok(Some(vm)),
        Err(VmOpError::Db(err)) => Err(err),
        Err(_) => Ok(None),
    }
}

/// Ends an open console for an admin; `false` when no such session is open. Audited.
pub async fn end_session(state: &HubState, viewer: &Viewer, id: u64) -> Result<bool, ConsoleError> {
    if !viewer.is_admin() {
        return Err(VmOpError::Forbidden("only admins end consoles".into()).into());
    }
    let Some(session) = state.consoles.get(id) else {
        return Ok(false);
    };
    session.end(EndReason::EndedBy(viewer.username.clone()));
    let detail = format!("{}'s {} console", session.username, session.kind.as_str());
    let target = session.vm.audit_target();
    audit::record(
        &state.db,
        viewer,
        "console.end",
        &target,
        Outcome::Ok,
        &detail,
    )
    .await;
    Ok(true)
}
