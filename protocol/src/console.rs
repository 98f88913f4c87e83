//! Consoles: a stream that starts as a request and goes on as raw bytes.
//!
//! The hub opens a bidirectional stream and sends a [`ConsoleOpen`] request frame. The agent
//! connects to the VM's console and answers with one `Ok` frame ([`ConsoleReady`]) or an
//! `Err` frame. After `Ok`, neither side sends frames on that stream again: it carries the
//! console's bytes both ways (RFB for [`ConsoleKind::Vnc`], terminal bytes for
//! [`ConsoleKind::Serial`]), with QUIC's flow control from end to end. Either side ends the
//! session by finishing or resetting its half; the agent also ends it when the VM's side
//! closes (the VM stopped).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::request::{NoProgress, Request};

/// Which console of a VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConsoleKind {
    /// The VM's screen, through QEMU's VNC server (`qm vncproxy`).
    Vnc,
    /// The VM's first serial port (`serial0: socket`).
    Serial,
}

impl ConsoleKind {
    pub const ALL: [ConsoleKind; 2] = [ConsoleKind::Vnc, ConsoleKind::Serial];

    pub fn as_str(self) -> &'static str {
        match self {
            ConsoleKind::Vnc => "vnc",
            ConsoleKind::Serial => "serial",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == text)
    }
}

/// The length of a VNC password: VNC authentication uses the first 8 bytes of it.
pub const VNC_PASSWORD_LEN: usize = 8;

/// How long an unanswered console waits for the VM's side to connect.
pub const CONSOLE_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Opens a console of a VM; the stream then carries its bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsoleOpen {
    pub vmid: u32,
    pub kind: ConsoleKind,
    /// For [`ConsoleKind::Vnc`]: the one-time VNC password to set (`LC_PVE_TICKET`),
    /// [`VNC_PASSWORD_LEN`] printable ASCII characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
}

/// The console is connected: raw bytes follow.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsoleReady {}

impl Request for ConsoleOpen {
    const KIND: &'static str = "console-open";
    type Response = ConsoleReady;
    type Progress = NoProgress;
}

/// Whether a VNC password is one the agent may hand to `qm vncproxy`: exactly
/// [`VNC_PASSWORD_LEN`] printable, non-space ASCII characters.
pub fn valid_vnc_password(password: &str) -> bool {
    password.len() == VNC_PASSWORD_LEN && password.bytes().all(|byte| byte.is_ascii_graphic())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_eight_printable_characters() {
        assert!(valid_vnc_password("a1!B~c2d"));
        assert!(!valid_vnc_password("short"));
        assert!(!valid_vnc_password("has space"));
        assert!(!valid_vnc_password("nine char"));
        assert!(!valid_vnc_password("tab\tx123"));
        assert!(!valid_vnc_password("ünïcodé"));
    }

    #[test]
    fn kinds_round_trip_through_their_names() {
        for kind in ConsoleKind::ALL {
            assert_eq!(ConsoleKind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(ConsoleKind::parse("spice"), None);
    }
}
