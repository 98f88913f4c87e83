//! proxlab-hub: the centre of a proxlab site. Agents dial it over QUIC; it holds the
//! database and serves HTTP.

pub mod agents;
pub mod client_addr;
pub mod config;
pub mod db;
pub mod demo;
pub mod domain;
pub mod inventory;
pub mod metrics;
pub mod paths;
pub mod pki_store;
pub mod secrets;
pub mod state;
pub mod text;
pub mod throttle;
pub mod vm_key;
pub mod web;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::agents::{AgentRegistry, AgentServer, LinkContext};
use crate::config::HubConfig;
use crate::db::Db;
use crate::domain::consoles::sessions::{ConsoleSessions, EndReason};
use crate::domain::remote::forwards::Forwards;

/// How long open consoles get to close when the hub stops.
const CONSOLE_DRAIN: std::time::Duration = std::time::Duration::from_secs(3);
use crate::domain::{accounts, auth, classes, plugins};
use crate::paths::DataDir;
pub use crate::state::HubState;

/// Opens the database a config names.
pub async fn open_db(config: &HubConfig) -> Result<Db> {
    let url = config
        .database_url
        .clone()
        .unwrap_or_else(|| Db::sqlite_url(&config.data_dir));
    Db::connect(&url).await.context("opening the database")
}

/// Creates the data directory, owner-only.
pub fn prepare_data_dir(config: &HubConfig) -> Result<DataDir> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&config.data_dir)
        .with_context(|| format!("creating the data directory {}", config.data_dir.display()))?;
    Ok(DataDir::new(&config.data_dir))
}

/// Deletes sessions that ended by time, every few minutes (lookups refuse them anyway; this
/// keeps the table small).
async fn sweep_sessions(db: Db, policy: auth::SessionPolicy) {
    let mut every = tokio::time::interval(std::time::Duration::from_secs(600));
    loop {
        every.tick().await;
        let now = db::now_unix();
        match db
            .prune_sessions(now, now - policy.idle.as_secs() as i64)
            .await
        {
            Ok(0) => {}
            Ok(removed) => tracing::debug!(removed, "removed ended sessions"),
            Err(err) => tracing::warn!(%err, "cannot remove ended sessions"),
        }
    }
}

/// A running hub.
pub struct Hub {
    pub state: Arc<HubState>,
    /// `username / password` of the admin created on this start, to be shown once.
    pub first_admin: Option<String>,
    recorder: JoinHandle<()>,
    session_sweeper: JoinHandle<()>,
    /// The schedules' loop, unless the config turns it off.
    scheduler: Option<JoinHandle<()>>,
    quota_checks: Option<JoinHandle<()>>,
    job_runner: JoinHandle<()>,
    plugin_sync: JoinHandle<()>,
    idle_sync: JoinHandle<()>,
    metering: JoinHandle<()>,
    agent_server: AgentServer,
    http_addr: SocketAddr,
    http_task: JoinHandle<()>,
    stop_http: watch::Sender<bool>,
}

impl Hub {
    /// Starts the QUIC endpoint and the HTTP server.
    pub async fn start(config: HubConfig) -> Result<Self> {
        let data_dir = prepare_data_dir(&config)?;
        let pki = pki_store::load_or_create(&data_dir)?;
        let db = open_db(&config).await?;
        db.mark_all_nodes_offline(db::now_unix()).await?;
        let first_admin = accounts::ensure_admin(&db)
            .await
            .context("creating the first admin")?;
        let registry = AgentRegistry::default();
        // Subscribed before any agent can connect, so no first inventory is missed.
        let (inventory_changes, recorder) = inventory::start_recorder(db.clone(), registry.clone());
        let live = web::live::LiveViews::start(db.clone(), registry.clone(), &inventory_changes);
        let ca_pin = pki.ca.fingerprint()?;
        let link = Arc::new(LinkContext {
            db: db.clone(),
            registry: registry.clone(),
            ca: pki.ca,
            hub_version: env!("CARGO_PKG_VERSION").to_owned(),
            presence: Default::default(),
        });
        let agent_server = AgentServer::start(
            link,
            config.quic_addr,
            config.lanes,
            &pki.server,
            &pki.reset_key,
        )?;
        let portal_certificate = web::tls::load(&config, &data_dir)?;
        if let Some(certificate) = &portal_certificate {
            tracing::info!(
                certificate = %certificate.source,
                fingerprint = %certificate.fingerprint,
                "the portal serves HTTPS"
            );
        }
        let listener = tokio::net::TcpListener::bind(config.http_addr)
            .await
            .with_context(|| format!("binding HTTP on {}", config.http_addr))?;
        let http_addr = listener.local_addr()?;
        // Links the hub builds for others use the address it really listens on.
        let bound = HubConfig {
            http_addr,
            ..config.clone()
        };
        let sign_in = domain::sign_in::SignIn::start(&config.sign_in, bound.site_url().as_deref())?;
        let auth = auth::Authenticator::new(
            db.clone(),
            Arc::new(throttle::LoginThrottle::default()),
            config.sessions,
        )
        .with_directory(sign_in.directory.clone())
        .with_local_login(sign_in.local_login);
        let (stop_http, stopping) = watch::channel(false);
        let (jobs, woken) = classes::jobs::JobQueue::new();
        let state = Arc::new(HubState {
            db,
            registry,
            inventory_changes,
            live,
            ca_pin,
            config: bound,
            auth,
            sign_in,
            stopping: stopping.clone(),
            jobs,
            registrations: classes::registration_limit(),
            invite_key: classes::invites::InviteKey::new(&pki.invite_key),
            consoles: ConsoleSessions::new(config.consoles),
            forwards: Forwards::new(config.forwarding.clone()),
            schedules_changed: tokio::sync::Notify::new(),
            scheduler_name: domain::schedules::scheduler::claimer_name(),
            schedule_clock: domain::schedules::scheduler::clock_from_env(),
            notices: domain::notices::Notices::default(),
            quota_stopping: Default::default(),
        });
        let job_runner = classes::jobs::start_runner(state.clone(), woken);
        let plugin_sync = plugins::start_sync(state.clone());
        let idle_sync = domain::idle::sync::start(state.clone());
        let metering = domain::quota::metering::start(state.clone());
        let session_sweeper = tokio::spawn(sweep_sessions(state.db.clone(), config.sessions));
        let scheduler = config
            .schedules
            .run_scheduler
            .then(|| tokio::spawn(domain::schedules::scheduler::run(state.clone())));
        let quota_checks = config
            .schedules
            .run_scheduler
            .then(|| tokio::spawn(domain::quota::enforcer::run(state.clone())));
        let app = web::router(state.clone());
        let transport = match portal_certificate {
            Some(certificate) => {
                web::serve::Transport::tls(certificate.server, state.config.site_url())
            }
            None => web::serve::Transport::Plain,
        };
        let http_task = tokio::spawn(web::serve::serve(listener, app, transport, stopping));
        tracing::info!(
            http = %http_addr,
            quic = %agent_server.local_addr()?,
            pin = %state.ca_pin,
            "hub started"
        );
        Ok(Self {
            state,
            first_admin,
            recorder,
            session_sweeper,
            scheduler,
            quota_checks,
            job_runner,
            plugin_sync,
            idle_sync,
            metering,
            agent_server,
            http_addr,
            http_task,
            stop_http,
        })
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The portal's address on this machine: `http://` or `https://` and the bound address.
    pub fn local_url(&self) -> String {
        let scheme = if self.state.config.tls.is_on() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.http_addr)
    }

    pub fn quic_addr(&self) -> Result<SocketAddr> {
        self.agent_server.local_addr()
    }

    pub fn registry(&self) -> &AgentRegistry {
        &self.state.registry
    }

    pub fn db(&self) -> &Db {
        &self.state.db
    }

    /// Stops accepting, tells agents the hub is going away, and closes the database.
    pub async fn shutdown(self) {
        // Open consoles end first, so their last audit entries are written.
        let consoles = &self.state.consoles;
        consoles.end_all(&EndReason::HubStopping);
        if tokio::time::timeout(CONSOLE_DRAIN, consoles.all_closed())
            .await
            .is_err()
        {
            tracing::warn!("consoles still open at shutdown were cut off");
        }
        let _ = self.stop_http.send(true);
        self.agent_server.shutdown().await;
        let _ = self.http_task.await;
        self.recorder.abort();
        self.session_sweeper.abort();
        if let Some(quota_checks) = &self.quota_checks {
            quota_checks.abort();
        }
        if let Some(scheduler) = &self.scheduler {
            scheduler.abort();
        }
        self.job_runner.abort();
        self.plugin_sync.abort();
        self.idle_sync.abort();
        self.metering.abort();
        // Sessions record their nodes as offline as they end; give them a moment.
        self.state.db.close().await;
    }
}
