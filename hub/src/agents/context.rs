//! What the connection handlers (enrollment and agent sessions) share.

use proxlab_link::pki::CertificateAuthority;

use super::presence::Presence;
use super::registry::AgentRegistry;
use crate::db::Db;

/// What the connection handlers share.
pub struct LinkContext {
    pub db: Db,
    pub registry: AgentRegistry,
    pub ca: CertificateAuthority,
    pub hub_version: String,
    /// Heartbeats since the last sweep.
    pub presence: Presence,
}
