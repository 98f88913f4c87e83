//! What every part of the hub works with: the database, the agents, the configuration, the
//! job queue and the authenticator, in one value the server start-up assembles.

use proxlab_link::pki::Fingerprint;
use tokio::sync::watch;

use crate::agents::AgentRegistry;
use crate::config::HubConfig;
use crate::db::Db;
use crate::domain::{auth, classes, consoles};
use crate::{inventory, throttle};

/// What request handlers share.
pub struct HubState {
    pub db: Db,
    pub registry: AgentRegistry,
    /// Announces stored inventory changes (for live pages).
    pub inventory_changes: tokio::sync::broadcast::Sender<inventory::InventoryChange>,
    /// The same changes read once and rendered, for live-update streams.
    pub live: crate::web::live::LiveViews,
    pub ca_pin: Fingerprint,
    pub config: HubConfig,
    pub auth: auth::Authenticator,
    /// OpenID Connect providers and the directory, with the sign-ins under way.
    pub sign_in: crate::domain::sign_in::SignIn,
    /// Turns true when the hub stops, so long-lived responses (live updates) end.
    pub stopping: watch::Receiver<bool>,
    /// Runs class jobs and announces class changes.
    pub jobs: classes::jobs::JobQueue,
    /// Accounts created through invite links, per invite and per client address.
    pub registrations: throttle::RateLimit,
    /// What invite links are derived from.
    pub invite_key: classes::invites::InviteKey,
    /// The consoles open now.
    pub consoles: consoles::sessions::ConsoleSessions,
    /// The ports forwarded to VMs now.
    pub forwards: crate::domain::remote::forwards::Forwards,
    /// Wakes the scheduler when a class's schedule changes.
    pub schedules_changed: tokio::sync::Notify,
    /// This process's name in the scheduler's claims.
    pub scheduler_name: String,
    /// The time the scheduler goes by (the system's, unless a test moves it: see
    /// [`crate::domain::schedules::scheduler::CLOCK_SKEW_FILE_ENV`]).
    pub schedule_clock: proxlab_clock::SkewedClock,
    /// Warnings for the people a coming automatic action affects.
    pub notices: crate::domain::notices::Notices,
    /// The VMs whose quota shutdown is under way.
    pub quota_stopping: crate::domain::quota::enforcer::Stopping,
}
