//! The hub under test: a data directory prepared through the hub's own library (accounts, API
//! tokens, join tokens, VM assignments), then `proxlab-hub serve` as a separate process, so
//! its memory and CPU are its own.

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use proxlab_hub::config::HubConfig;
use proxlab_hub::db::users::Role;
use proxlab_hub::domain::admin::{self, JoinTokenRequest};
use proxlab_hub::domain::audit::Actor;
use proxlab_hub::domain::auth::issue_api_token;
use proxlab_hub::domain::viewer::Viewer;
use proxlab_hub::{open_db, pki_store, prepare_data_dir};

/// A join token for one simulated node.
pub struct JoinToken {
    pub node: String,
    pub secret: String,
}

/// A browser stream's account (an admin, or a student holding one VM): its API token.
pub struct StreamAccount {
    pub token: String,
}

/// What the harness needs to know about the prepared site.
pub struct Site {
    pub data_dir: PathBuf,
    pub database_url: String,
    pub http_addr: SocketAddr,
    pub quic_addr: SocketAddr,
    pub ca_pin: String,
    pub join_tokens: Vec<JoinToken>,
    pub viewers: Vec<StreamAccount>,
    pub admin_token: String,
}

/// How many of the browser streams are staff (admins, who see every VM); the rest are
/// students, who see their own.
pub fn admin_streams(streams: usize) -> usize {
    streams.div_ceil(10)
}

fn free_tcp_port() -> Result<SocketAddr> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

fn free_udp_port() -> Result<SocketAddr> {
    Ok(UdpSocket::bind("127.0.0.1:0")?.local_addr()?)
}

/// The settings the hub runs with: loopback addresses and the database.
fn hub_config(data_dir: &Path, database_url: &str) -> Result<HubConfig> {
    let mut config = HubConfig::new(data_dir);
    config.http_addr = free_tcp_port()?;
    config.quic_addr = free_udp_port()?;
    config.database_url = Some(database_url.to_owned());
    config.public_address = Some(config.quic_addr.to_string());
    Ok(config)
}

/// Prepares a site for `nodes` nodes of which `students` VMs are held by student streams.
pub async fn prepare(
    data_dir: &Path,
    database_url: &str,
    nodes: &[String],
    streams: usize,
    student_vmids: &[u32],
) -> Result<Site> {
    let config = hub_config(data_dir, database_url)?;
    let data = prepare_data_dir(&config)?;
    let pki = pki_store::load_or_create(&data)?;
    let ca_pin = pki.ca.fingerprint()?.to_string();
    let db = open_db(&config).await?;
    let address = config.quic_addr.to_string();
    let mut join_tokens = Vec::with_capacity(nodes.len());
    for node in nodes {
        let issued = admin::issue_join_token(
            &db,
            Actor::Operator,
            JoinTokenRequest {
                node: Some(node),
                ttl: Duration::from_secs(3600),
                ca_pin: &ca_pin,
                hub_address: &address,
            },
        )
        .await?;
        join_tokens.push(JoinToken {
            node: node.clone(),
            secret: issued.token,
        });
    }
    // The simulated nodes' cluster, for the students' VMs' keys before the nodes connect.
    let cluster = db
        .ensure_cluster(&crate::fleet::load_cluster(), proxlab_hub::db::now_unix())
        .await?;
    let mut viewers = Vec::with_capacity(streams);
    let admins = admin_streams(streams);
    for index in 0..streams {
        let (name, role, vmid) = if index < admins {
            (format!("admin{index}"), Role::Admin, None)
        } else {
            let vmid = student_vmids[(index - admins) % student_vmids.len()];
            (format!("student{index}"), Role::Student, Some(vmid))
        };
        admin::add_user(&db, Actor::Operator, &name, role, None).await?;
        let user = db
            .user_by_name(&name)
            .await?
            .context("the account just added")?;
        if let Some(vmid) = vmid {
            let vm = proxlab_hub::vm_key::VmKey::new(cluster, vmid);
            db.assign_vm(vm, user.id, None, proxlab_hub::db::now_unix())
                .await?;
        }
        let token = issue_api_token(&db, &Viewer::from(&user), "load", Actor::Operator).await?;
        viewers.push(StreamAccount { token });
    }
    let admin_token = viewers
        .first()
        .map(|viewer| viewer.token.clone())
        .context("at least one browser stream")?;
    db.close().await;
    Ok(Site {
        data_dir: data_dir.to_owned(),
        database_url: database_url.to_owned(),
        http_addr: config.http_addr,
        quic_addr: config.quic_addr,
        ca_pin,
        join_tokens,
        viewers,
        admin_token,
    })
}

/// The `proxlab-hub` beside this binary (the same build profile).
pub fn hub_binary() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let bin = exe
        .parent()
        .context("the harness's directory")?
        .join("proxlab-hub");
    if !bin.exists() {
        bail!(
            "{} is missing: build it with the same profile (cargo build --release -p proxlab-hub)",
            bin.display()
        );
    }
    Ok(bin)
}

/// A running hub process.
pub struct HubProcess {
    child: Child,
}

impl HubProcess {
    /// Starts `proxlab-hub serve` and waits until its portal answers.
    pub async fn start(site: &Site, log: &Path) -> Result<Self> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("opening {}", log.display()))?;
        let child = Command::new(hub_binary()?)
            .arg("--data-dir")
            .arg(&site.data_dir)
            .arg("--database-url")
            .arg(&site.database_url)
            .args([
                "serve",
                "--http-addr",
                &site.http_addr.to_string(),
                "--quic-addr",
                &site.quic_addr.to_string(),
            ])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting proxlab-hub")?;
        let hub = Self { child };
        let url = format!("http://{}/health", site.http_addr);
        let client = reqwest::Client::new();
        for _ in 0..600 {
            if client.get(&url).send().await.is_ok() {
                return Ok(hub);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("the hub did not answer {url} within 30 s")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops the hub the way a service manager does (SIGTERM) and waits for it.
    pub fn stop(mut self) -> Result<()> {
        let pid = rustix_pid(self.child.id())?;
        rustix::process::kill_process(pid, rustix::process::Signal::TERM)?;
        self.child.wait()?;
        Ok(())
    }
}

fn rustix_pid(pid: u32) -> Result<rustix::process::Pid> {
    rustix::process::Pid::from_raw(pid as i32).context("a running process's id")
}

impl Drop for HubProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
