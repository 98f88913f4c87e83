//! Application close codes, sent when one side closes the QUIC connection on purpose.

/// Why a connection was closed. The numeric values are part of the wire contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseCode {
    /// Orderly close, for example on shutdown of the agent.
    Normal,
    /// The node's certificate has been revoked. The agent must stop retrying.
    Revoked,
    /// The peers speak incompatible major versions.
    VersionMismatch,
    /// A newer connection with the same identity replaced this one.
    Replaced,
    /// The peer broke the protocol (bad frame, wrong message order).
    ProtocolError,
    /// The certificate is valid but names no node the hub knows.
    UnknownNode,
    /// The hub is shutting down; the agent should reconnect later.
    HubShutdown,
    /// No heartbeat arrived in time.
    HeartbeatTimeout,
}

impl CloseCode {
    const TABLE: [(CloseCode, u32); 8] = [
        (CloseCode::Normal, 0),
        (CloseCode::Revoked, 1),
        (CloseCode::VersionMismatch, 2),
        (CloseCode::Replaced, 3),
        (CloseCode::ProtocolError, 4),
        (CloseCode::UnknownNode, 5),
        (CloseCode::HubShutdown, 6),
        (CloseCode::HeartbeatTimeout, 7),
    ];

    /// The code as sent on the wire.
    pub fn code(self) -> u32 {
        Self::TABLE
            .iter()
            .find(|(close, _)| *close == self)
            .map(|(_, code)| *code)
            .unwrap_or_default()
    }

    /// Decodes a received code; `None` for a code this version does not know.
    pub fn from_code(code: u64) -> Option<Self> {
        Self::TABLE
            .iter()
            .find(|(_, known)| u64::from(*known) == code)
            .map(|(close, _)| *close)
    }

    /// Whether an agent closed with this code should try to connect again.
    pub fn agent_should_retry(self) -> bool {
        !matches!(self, CloseCode::Revoked | CloseCode::VersionMismatch)
    }
}

impl std::fmt::Display for CloseCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = match self {
            CloseCode::Normal => "normal close",
            CloseCode::Revoked => "node revoked",
            CloseCode::VersionMismatch => "protocol version mismatch",
            CloseCode::Replaced => "replaced by a newer connection",
            CloseCode::ProtocolError => "protocol error",
            CloseCode::UnknownNode => "unknown node",
            CloseCode::HubShutdown => "hub shutting down",
            CloseCode::HeartbeatTimeout => "heartbeat timeout",
        };
        f.write_str(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_are_distinct() {
        let mut seen = std::collections::HashSet::new();
        for (close, code) in CloseCode::TABLE {
            assert!(seen.insert(code), "code {code} used twice");
            assert_eq!(close.code(), code);
            assert_eq!(CloseCode::from_code(u64::from(code)), Some(close));
        }
        assert_eq!(CloseCode::from_code(9999), None);
    }

    #[test]
    fn revoked_and_version_mismatch_stop_retries() {
        assert!(!CloseCode::Revoked.agent_should_retry());
        assert!(!CloseCode::VersionMismatch.agent_should_retry());
        assert!(CloseCode::Replaced.agent_should_retry());
        assert!(CloseCode::HubShutdown.agent_should_retry());
    }
}
