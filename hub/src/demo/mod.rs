//! `proxlab-hub demo`: a complete site on one machine, for a first look.
//!
//! It lays out a two-node pve-sim cluster with a template (a real qcow2 disk) and a few VMs
//! (and, with `--clusters 2`, a second one-node cluster), starts the hub with SQLite, enrolls
//! a real `proxlab-agent` process per node over QUIC with join tokens, and creates demo accounts whose logins go to `<data-dir>/demo.json`. Running it
//! again reuses everything. Ctrl-C stops the agents, the simulated VMs and the hub.

mod class;
mod cluster;
pub mod oidc;
pub mod sshd;
mod tools;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::Hub;
use crate::config::HubConfig;
use crate::db::users::Role;
use crate::db::{Db, now_unix};
use crate::domain::accounts::create_user;
use crate::domain::audit::Actor;
use crate::domain::auth::issue_api_token;
use crate::domain::tokens::create_join_token;
use crate::domain::viewer::Viewer;
use crate::open_db;
use crate::vm_key::VmKey;

pub use cluster::{DEMO_NODES, DemoNode, SECOND_CLUSTER, SECOND_NODES};
use cluster::{DemoCluster, RunningAgent};

/// How the demo is set up.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub dir: PathBuf,
    pub http_addr: SocketAddr,
    pub quic_addr: SocketAddr,
    /// Serve the portal over HTTPS with a self-signed certificate.
    pub tls: bool,
    /// Run the simulated VMs as real QEMU processes (when the cluster is first made).
    pub qemu: bool,
    /// Start an SSH server for alice's VM, when this machine has one.
    pub ssh: bool,
    /// How many simulated Proxmox clusters: 1, or 2 to show a second cluster beside the
    /// first (with a node named like one of the first's).
    pub clusters: u8,
    /// Start the demo's own OpenID Connect provider, when Node.js is installed.
    pub oidc: bool,
}

/// One demo login, as written to `demo.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DemoUser {
    pub username: String,
    pub password: String,
    pub role: String,
    pub api_token: String,
}

/// `<data-dir>/demo.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DemoFile {
    pub url: String,
    pub users: Vec<DemoUser>,
    /// The VM that answers over SSH (the demo's own sshd), when this machine can run one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh: Option<DemoSsh>,
    /// The issuer of the demo's OpenID Connect provider, when it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oidc_issuer: Option<String>,
}

/// How to log in to the demo VM that has an SSH server.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DemoSsh {
    pub vmid: u32,
    pub username: String,
    /// The private key its server accepts (paste it into the console's SSH tab).
    pub private_key_file: PathBuf,
}

/// The accounts the demo creates, and the VM each one gets (by VMID).
const ACCOUNTS: &[(&str, Role, Option<u32>)] = &[
    ("admin", Role::Admin, None),
    ("teacher", Role::Teacher, Some(cluster::TEACHER_VM)),
    ("alice", Role::Student, Some(cluster::ALICE_VM)),
    ("bob", Role::Student, Some(cluster::BOB_VM)),
];

/// Gives each demo account its VM of the first cluster, unless the VM has a user already
/// (the demo ran before).
async fn assign_demo_vms(db: &Db, cluster: i64) -> Result<()> {
    for (username, _, vm) in ACCOUNTS {
        let (Some(vmid), Some(user)) = (vm, db.user_by_name(username).await?) else {
            continue;
        };
        let key = VmKey::new(cluster, *vmid);
        if db.vm_user(key).await?.is_none() {
            db.assign_vm(key, user.id, None, now_unix()).await?;
        }
    }
    Ok(())
}

fn demo_file_path(dir: &Path) -> PathBuf {
    dir.join("demo.json")
}

/// The accounts, with passwords and API tokens; created on the first run.
async fn accounts(db: &Db, dir: &Path) -> Result<DemoFile> {
    let path = demo_file_path(dir);
    if let Ok(text) = std::fs::read_to_string(&path) {
        return serde_json::from_str(&text).with_context(|| format!("reading {}", path.display()));
    }
    if !db.list_users().await?.is_empty() {
        bail!(
            "{} holds a hub without demo.json; remove the directory to start the demo afresh",
            dir.display()
        );
    }
    let mut users = Vec::new();
    for (username, role, _) in ACCOUNTS {
        let password = crate::domain::accounts::generate_password();
        create_user(db, username, *role, Some(&password))
            .await
            .with_context(|| format!("creating the demo account {username}"))?;
        let row = db
            .user_by_name(username)
            .await?
            .context("the new account is missing")?;
        let viewer = Viewer::from(&row);
        let api_token = issue_api_token(db, &viewer, "demo", Actor::Operator).await?;
        users.push(DemoUser {
            username: (*username).to_owned(),
            password,
            role: role.as_str().to_owned(),
            api_token,
        });
    }
    Ok(DemoFile {
        url: String::new(),
        users,
        ssh: None,
        oidc_issuer: None,
    })
}

/// The ports the demo forwards to VMs' SSH and RDP servers.
const DEMO_FORWARD_PORTS: std::ops::RangeInclusive<u16> = 40000..=40099;

/// The port the demo's sshd listens on: SSH's own, which VMs are reached on by default.
const DEMO_SSH_PORT: u16 = 22;

/// Starts the demo's sshd for alice's VM, when this machine can (it is optional: the demo
/// says why not and goes on).
async fn start_sshd(
    dir: &Path,
    tools: &tools::Tools,
    cluster: &DemoCluster,
) -> Option<sshd::LocalSshd> {
    let address = sshd::available()?;
    let server = match sshd::LocalSshd::start(&dir.join("ssh"), address, DEMO_SSH_PORT).await {
        Ok(server) => server,
        Err(err) => {
            eprintln!("The demo runs without an SSH server for alice's VM: {err:#}");
            return None;
        }
    };
    if let Err(err) = cluster.give_alice_address(tools, &address.to_string()) {
        eprintln!("The demo runs without an SSH server for alice's VM: {err:#}");
        return None;
    }
    Some(server)
}

fn write_demo_file(dir: &Path, file: &DemoFile) -> Result<()> {
    let text = serde_json::to_string_pretty(file)? + "\n";
    proxlab_link::files::write_atomic(&demo_file_path(dir), text.as_bytes(), true)
        .context("writing demo.json")
}

/// A running demo: the hub in this process, agents as child processes.
pub struct Demo {
    pub hub: Hub,
    pub file: DemoFile,
    agents: Vec<RunningAgent>,
    /// The first cluster holds the demo's class and accounts' VMs; a second one, if asked
    /// for, a few VMs of its own.
    clusters: Vec<DemoCluster>,
    sshd: Option<sshd::LocalSshd>,
    oidc: Option<oidc::OidcProvider>,
}

/// Starts the demo's OpenID Connect provider for the site at `site_url`, when it can (it is
/// optional: the demo says why not and goes on).
async fn start_oidc(dir: &Path, site_url: &str) -> Option<oidc::OidcProvider> {
    if !oidc::node_available() {
        eprintln!(
            "The demo runs without its OpenID Connect provider: Node.js and npm are not installed."
        );
        return None;
    }
    let started = async {
        let home = dir.join("oidc-provider");
        let installed = tokio::task::spawn_blocking(move || oidc::install(&home)).await??;
        let secret_file = dir.join("oidc-client-secret");
        if !secret_file.exists() {
            let secret = crate::domain::accounts::generate_password();
            proxlab_link::files::write_atomic(&secret_file, secret.as_bytes(), true)?;
        }
        let secret = std::fs::read_to_string(&secret_file)?;
        let client = oidc::ProviderClient {
            redirect_uri: &format!("{site_url}/login/oidc/{}/callback", oidc::PROVIDER_ID),
            post_logout_uri: &format!("{site_url}/login"),
            secret: secret.trim(),
        };
        oidc::OidcProvider::start(&installed, &client).await
    };
    match started.await {
        Ok(provider) => Some(provider),
        Err(err) => {
            eprintln!("The demo runs without its OpenID Connect provider: {err:#}");
            None
        }
    }
}

impl Demo {
    /// Sets up (or reuses) the demo in `options.dir` and starts everything.
    pub async fn start(options: DemoOptions) -> Result<Self> {
        std::fs::create_dir_all(&options.dir)
            .with_context(|| format!("creating {}", options.dir.display()))?;
        let dir = std::fs::canonicalize(&options.dir)?;
        let tools = tools::Tools::locate()?;
        let mut clusters = vec![DemoCluster::prepare(&dir, &tools, options.qemu)?];
        if options.clusters >= 2 {
            clusters.push(DemoCluster::prepare_second(&dir, &tools, options.qemu)?);
        }
        let cluster = &clusters[0];
        let mut config = HubConfig::new(dir.join("hub"));
        config.http_addr = options.http_addr;
        config.quic_addr = options.quic_addr;
        if options.tls {
            config.tls = crate::config::PortalTls::SelfSigned;
        }
        // Forwarded ports for SSH and RDP apps, on the portal's address.
        config.forwarding.ports = Some(DEMO_FORWARD_PORTS);
        config.forwarding.listen_ip = options.http_addr.ip();
        crate::prepare_data_dir(&config)?;
        let db = open_db(&config).await?;
        let accounts = accounts(&db, &dir).await;
        db.close().await;
        let mut file = accounts?;
        // Written before anything else can fail, so the passwords are never lost.
        write_demo_file(&dir, &file)?;

        let sshd = match options.ssh {
            true => start_sshd(&dir, &tools, cluster).await,
            false => None,
        };
        file.ssh = sshd.as_ref().map(|server| DemoSsh {
            vmid: cluster::ALICE_VM,
            username: server.user.clone(),
            private_key_file: server.client_key_path(),
        });
        let site_url = format!(
            "{}://{}",
            if options.tls { "https" } else { "http" },
            options.http_addr
        );
        let oidc = match options.oidc && options.http_addr.port() != 0 {
            true => start_oidc(&dir, &site_url).await,
            false => None,
        };
        if let Some(provider) = &oidc {
            config.sign_in = provider.sign_in_config(&dir.join("oidc-client-secret"))?;
        }
        file.oidc_issuer = oidc.as_ref().map(|provider| provider.issuer.clone());
        let hub = Hub::start(config.clone())
            .await
            .context("starting the hub (is another demo or hub using the ports?)")?;
        file.url = hub.local_url();
        write_demo_file(&dir, &file)?;

        let quic = hub.quic_addr()?;
        let mut agents = Vec::new();
        for cluster in &clusters {
            for node in cluster.nodes.iter().map(|node| node.hub) {
                if !cluster.enrolled(node) {
                    let token = create_join_token(
                        &hub.state.db,
                        &hub.state.ca_pin.to_string(),
                        &quic.to_string(),
                        Duration::from_secs(600),
                        Some(node),
                    )
                    .await?;
                    cluster.enroll(&tools, node, &quic.to_string(), &token.token, &token.ca_pin)?;
                }
                agents.push(cluster.spawn_agent(&tools, node)?);
            }
        }
        for cluster in &clusters {
            for node in cluster.nodes.iter().map(|node| node.hub) {
                let online = hub.registry().wait_for(node, true);
                if tokio::time::timeout(Duration::from_secs(30), online)
                    .await
                    .is_err()
                {
                    bail!(
                        "the agent for {node} did not come online; see {}",
                        cluster.agent_log(node).display()
                    );
                }
            }
        }
        let first_cluster = hub
            .state
            .db
            .node_by_name(DEMO_NODES[0].hub)
            .await?
            .and_then(|node| node.cluster)
            .context("the first demo node reported no cluster")?
            .id;
        assign_demo_vms(&hub.state.db, first_cluster).await?;
        let template = VmKey::new(first_cluster, cluster::TEMPLATE_VM);
        if let Err(err) = class::seed(&hub.state, "teacher", template).await {
            tracing::warn!("the demo class was not made: {err:#}");
        }
        Ok(Self {
            hub,
            file,
            agents,
            clusters,
            sshd,
            oidc,
        })
    }

    /// What to tell the person who started the demo.
    pub fn banner(&self) -> String {
        let mut text = format!(
            "\nproxlab demo is running: {}\n\n  {:<10} {:<8} {}\n",
            self.file.url, "USERNAME", "ROLE", "PASSWORD"
        );
        for user in &self.file.users {
            text.push_str(&format!(
                "  {:<10} {:<8} {}\n",
                user.username, user.role, user.password
            ));
        }
        if let Some(ssh) = &self.file.ssh {
            text.push_str(&format!(
                "\nalice's VM {} answers over SSH: in its console's SSH tab, log in as {} with the \
                 private key in {}.\n",
                ssh.vmid,
                ssh.username,
                ssh.private_key_file.display()
            ));
        }
        if self.oidc.is_some() {
            text.push_str(
                "\n\"Sign in with School (demo provider)\" runs a real OpenID Connect provider: \
                 any name and any password; tina is a teacher (group staff), anyone else a \
                 student, each made at their first sign-in.\n",
            );
        }
        text.push_str(&format!(
            "\nThe teacher's class \"{}\" has a weekly schedule, quota hours and idle shutdown \
             set; its invite link is on its page.\n",
            class::CLASS_NAME
        ));
        let first = &self.clusters[0];
        text.push_str(&format!(
            "\nNodes {} run real agents against a simulated Proxmox cluster in {}.\n",
            DEMO_NODES.map(|node| node.hub).join(" and "),
            first.root().display(),
        ));
        if let Some(second) = self.clusters.get(1) {
            text.push_str(&format!(
                "Node {} (pve1 of cluster {SECOND_CLUSTER}) runs against a second one in {}.\n",
                SECOND_NODES[0].hub,
                second.root().display(),
            ));
        }
        text.push_str(&format!(
            "Logins and API tokens: {}\nPress Ctrl-C to stop.\n",
            demo_file_path(first.dir()).display()
        ));
        text
    }

    /// Stops the agents, the simulated VMs, the demo's sshd and the hub.
    pub async fn stop(self) {
        drop(self.sshd);
        if let Some(provider) = self.oidc {
            provider.stop().await;
        }
        for agent in self.agents {
            agent.stop().await;
        }
        for cluster in &self.clusters {
            cluster.stop_vms();
        }
        self.hub.shutdown().await;
    }
}
