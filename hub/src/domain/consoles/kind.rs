//! The kinds of session the hub relays: the agent's two consoles, the SSH terminal the hub
//! runs itself, and connections to a forwarded port.

use proxlab_protocol::console::ConsoleKind;
use serde::{Deserialize, Serialize};

/// What a session carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SessionKind {
    /// The VM's screen (VNC through `qm vncproxy`).
    Vnc,
    /// The VM's serial port.
    Serial,
    /// The SSH terminal in the browser: the hub is the SSH client.
    Ssh,
    /// A connection to a forwarded port that reaches the VM's SSH server.
    SshForward,
    /// A connection to a forwarded port that reaches the VM's RDP server.
    RdpForward,
}

impl SessionKind {
    pub const ALL: [SessionKind; 5] = [
        SessionKind::Vnc,
        SessionKind::Serial,
        SessionKind::Ssh,
        SessionKind::SshForward,
        SessionKind::RdpForward,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SessionKind::Vnc => "vnc",
            SessionKind::Serial => "serial",
            SessionKind::Ssh => "ssh",
            SessionKind::SshForward => "ssh-forward",
            SessionKind::RdpForward => "rdp-forward",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == text)
    }

    /// The agent's console this kind opens, if it is one.
    pub fn agent_console(self) -> Option<ConsoleKind> {
        match self {
            SessionKind::Vnc => Some(ConsoleKind::Vnc),
            SessionKind::Serial => Some(ConsoleKind::Serial),
            SessionKind::Ssh | SessionKind::SshForward | SessionKind::RdpForward => None,
        }
    }

    /// Whether a console ticket can be issued for this kind (forwarded connections come
    /// through a port, not a ticket).
    pub fn opened_by_ticket(self) -> bool {
        matches!(
            self,
            SessionKind::Vnc | SessionKind::Serial | SessionKind::Ssh
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_through_their_names() {
        for kind in SessionKind::ALL {
            assert_eq!(SessionKind::parse(kind.as_str()), Some(kind));
            let json = serde_json::to_value(kind).unwrap();
            assert_eq!(json, kind.as_str());
        }
        assert_eq!(SessionKind::parse("spice"), None);
    }
}
