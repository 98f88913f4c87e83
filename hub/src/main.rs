//! The `proxlab-hub` command.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use proxlab_hub::config::{ConfigFile, DEFAULT_CONFIG_PATH, EXAMPLE_CONFIG, HubConfig};
use proxlab_hub::db::inventory::VmRefError;
use proxlab_hub::db::users::Role;
use proxlab_hub::db::{Db, now_unix};
use proxlab_hub::demo::{Demo, DemoOptions};
use proxlab_hub::domain::admin::{self, JoinTokenRequest};
use proxlab_hub::domain::audit::Actor;
use proxlab_hub::domain::auth::issue_api_token;
use proxlab_hub::domain::tokens::format_time;
use proxlab_hub::domain::viewer::Viewer;
use proxlab_hub::vm_key::VmRef;
use proxlab_hub::{Hub, open_db, pki_store, prepare_data_dir};
use serde::Serialize;

/// The proxlab hub: agents dial it, teachers and students use its portal.
#[derive(Debug, Parser)]
#[command(name = "proxlab-hub", version, about)]
struct Cli {
    /// The data directory (CA, certificates, SQLite database).
    #[arg(long, global = true, env = "PROXLAB_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// The config file; a missing default file is fine.
    #[arg(long, global = true, env = "PROXLAB_CONFIG")]
    config: Option<PathBuf>,
    /// The database URL (sqlite://... or postgres://...).
    #[arg(
        long,
        global = true,
        env = "PROXLAB_DATABASE_URL",
        hide_env_values = true
    )]
    database_url: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the hub.
    Serve {
        /// The portal and API address.
        #[arg(long)]
        http_addr: Option<SocketAddr>,
        /// The QUIC address agents dial (UDP).
        #[arg(long)]
        quic_addr: Option<SocketAddr>,
    },
    /// Manage join tokens for enrolling agents.
    Token {
        #[command(subcommand)]
        action: TokenAction,
    },
    /// List enrolled nodes, or revoke one.
    Nodes {
        #[command(subcommand)]
        action: Option<NodesAction>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Manage accounts.
    User {
        #[command(subcommand)]
        action: UserAction,
    },
    /// Run a complete demo site: a simulated two-node Proxmox cluster, two real agents, the
    /// hub, and demo accounts (written to <data-dir>/demo.json).
    Demo {
        /// The portal address.
        #[arg(long, default_value = "127.0.0.1:8080")]
        http_addr: SocketAddr,
        /// The QUIC address the demo's agents dial.
        #[arg(long, default_value = "127.0.0.1:7443")]
        quic_addr: SocketAddr,
        /// Serve the portal over HTTPS (and HTTP/2) with a self-signed certificate.
        #[arg(long)]
        tls: bool,
        /// Run the simulated VMs as real QEMU processes (qemu-system-x86_64, TCG, no disk),
        /// so consoles show a real VM's screen. Applies when the demo is first created.
        #[arg(long)]
        qemu: bool,
        /// Do not start an SSH server for alice's VM (by default one runs on port 22 of this
        /// machine's address when Debian's openssh-server is installed).
        #[arg(long)]
        no_ssh: bool,
        /// How many simulated Proxmox clusters: 2 adds a second, one-node cluster whose node
        /// is called pve1 in Proxmox like the first's (on the hub: pve1-lab-b).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=2))]
        clusters: u8,
        /// Do not start the demo's own OpenID Connect provider (by default one runs when
        /// Node.js and npm are installed, behind a "Sign in with School" button).
        #[arg(long)]
        no_oidc: bool,
    },
    /// Assign VMs to users.
    Vm {
        #[command(subcommand)]
        action: VmAction,
    },
    /// Print the commented example config file.
    DefaultConfig,
    /// Print the manual page (roff), for packaging.
    #[command(hide = true)]
    Man,
}

#[derive(Debug, Subcommand)]
enum TokenAction {
    /// Create a one-time join token and print the enroll command for the node.
    Create(TokenCreate),
    /// List join tokens (never their secrets).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Revoke an unspent join token by id.
    Revoke { id: i64 },
}

#[derive(Debug, Args)]
struct TokenCreate {
    /// How long the token stays valid, for example 30m, 1h, 7d.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    ttl: Duration,
    /// Only a node with this name may use the token.
    #[arg(long)]
    node: Option<String>,
    /// The HOST:PORT agents dial; default: public_address from the config, or this host.
    #[arg(long)]
    hub_address: Option<String>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum UserAction {
    /// Add an account. Without --password-stdin a password is generated and printed once.
    Add {
        name: String,
        #[arg(long, value_parser = parse_role)]
        role: Role,
        /// Read the password from standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// List accounts.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Create a personal API token for a user and print it once.
    Token {
        name: String,
        /// What the token is for, as shown on the profile page.
        #[arg(long, default_value = "command line")]
        label: String,
    },
}

#[derive(Debug, Subcommand)]
enum VmAction {
    /// Assign a VM to a user: they see it on My VMs and may start and stop it. The VM is
    /// CLUSTER-VMID (as in its portal address), or its VMID while only one cluster has it.
    Assign { vm: VmRef, username: String },
    /// Remove a VM's assignment.
    Unassign { vm: VmRef },
}

fn parse_role(text: &str) -> Result<Role, String> {
    text.parse()
}

#[derive(Debug, Subcommand)]
enum NodesAction {
    /// Revoke a node: its agent is disconnected and can never reconnect with its
    /// certificate.
    Revoke { name: String },
}

fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PROXLAB_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
}

impl Cli {
    /// Layers the config: defaults, file, environment and flags.
    fn hub_config(&self) -> Result<HubConfig> {
        let (path, required) = match &self.config {
            Some(path) => (path.clone(), true),
            None => (PathBuf::from(DEFAULT_CONFIG_PATH), false),
        };
        let mut config = HubConfig::from_file(ConfigFile::load(&path, required)?)?;
        if let Some(dir) = &self.data_dir {
            config.data_dir = dir.clone();
        }
        if let Some(url) = &self.database_url {
            config.database_url = Some(url.clone());
        }
        config.validate()?;
        Ok(config)
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("proxlab-hub: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<()> {
    let mut config = cli.hub_config()?;
    match cli.command {
        Command::Serve {
            http_addr,
            quic_addr,
        } => {
            if let Some(addr) = http_addr {
                config.http_addr = addr;
            }
            if let Some(addr) = quic_addr {
                config.quic_addr = addr;
            }
            serve(config).await
        }
        Command::Token { action } => token(config, action).await,
        Command::Nodes { action: None, json } => list_nodes(&config, json).await,
        Command::Nodes {
            action: Some(NodesAction::Revoke { name }),
            ..
        } => revoke_node(&config, &name).await,
        Command::User { action } => user(&config, action).await,
        Command::Vm { action } => vm(&config, action).await,
        Command::Demo {
            http_addr,
            quic_addr,
            tls,
            qemu,
            no_ssh,
            clusters,
            no_oidc,
        } => {
            let dir = cli
                .data_dir
                .clone()
                .unwrap_or_else(|| PathBuf::from("proxlab-demo"));
            demo(DemoOptions {
                dir,
                http_addr,
                quic_addr,
                tls,
                qemu,
                ssh: !no_ssh,
                clusters,
                oidc: !no_oidc,
            })
            .await
        }
        Command::DefaultConfig => {
            print!("{EXAMPLE_CONFIG}");
            Ok(())
        }
        Command::Man => print_man_page(),
    }
}

fn print_man_page() -> Result<()> {
    use clap::CommandFactory;
    clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout().lock())?;
    Ok(())
}

async fn serve(config: HubConfig) -> Result<()> {
    let hub = Hub::start(config).await?;
    println!(
        "proxlab hub listening: {} (portal), {} (agents, UDP)",
        hub.local_url(),
        hub.quic_addr()?
    );
    println!("CA pin: {}", hub.state.ca_pin);
    if let Some(login) = &hub.first_admin {
        println!("First start: an admin account was created. Log in as {login}");
        println!("(shown only now; change the password after logging in)");
    }
    shutdown_signal().await;
    tracing::info!("shutting down");
    hub.shutdown().await;
    Ok(())
}

async fn demo(options: DemoOptions) -> Result<()> {
    let demo = Demo::start(options).await?;
    println!("{}", demo.banner());
    shutdown_signal().await;
    eprintln!("Stopping the demo...");
    demo.stop().await;
    Ok(())
}

async fn shutdown_signal() {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing the SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}

/// Opens the database of a hub that may be running in another process.
async fn open_existing(config: &HubConfig) -> Result<Db> {
    if config.database_url.is_none() && !config.data_dir.join("hub.db").exists() {
        bail!(
            "no hub database in {}: start the hub once with `proxlab-hub serve`, or pass --data-dir",
            config.data_dir.display()
        );
    }
    open_db(config).await
}

async fn token(config: HubConfig, action: TokenAction) -> Result<()> {
    match action {
        TokenAction::Create(args) => {
            let data_dir = prepare_data_dir(&config)?;
            let pki = pki_store::load_or_create(&data_dir)?;
            let db = open_db(&config).await?;
            let address = args
                .hub_address
                .unwrap_or_else(|| config.agent_facing_address());
            let request = JoinTokenRequest {
                node: args.node.as_deref(),
                ttl: args.ttl,
                ca_pin: &pki.ca.fingerprint()?.to_string(),
                hub_address: &address,
            };
            let issued = admin::issue_join_token(&db, Actor::Operator, request).await?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&issued)?);
            } else {
                println!("Join token (shown once): {}", issued.token);
                println!("CA pin:                  {}", issued.ca_pin);
                println!("Expires:                 {}", issued.expires_at);
                println!();
                println!("Run this on the Proxmox node:");
                println!("  {}", issued.command);
            }
            Ok(())
        }
        TokenAction::List { json } => {
            let db = open_existing(&config).await?;
            let now = now_unix();
            let rows: Vec<TokenView> = db
                .list_join_tokens()
                .await?
                .into_iter()
                .map(|row| TokenView {
                    id: row.id,
                    state: row.state(now),
                    node: row.node_name,
                    expires_at: format_time(row.expires_at),
                    spent_by_node: row.spent_by_node,
                })
                .collect();
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                println!(
                    "{:>4}  {:<8}  {:<20}  {:<16}  SPENT BY",
                    "ID", "STATE", "EXPIRES", "NODE"
                );
                for row in rows {
                    println!(
                        "{:>4}  {:<8}  {:<20}  {:<16}  {}",
                        row.id,
                        row.state,
                        row.expires_at,
                        row.node.as_deref().unwrap_or("(any)"),
                        row.spent_by_node.as_deref().unwrap_or("-")
                    );
                }
            }
            Ok(())
        }
        TokenAction::Revoke { id } => {
            let db = open_existing(&config).await?;
            if !admin::revoke_join_token(&db, Actor::Operator, id).await? {
                bail!("no unspent, unrevoked join token with id {id}");
            }
            println!("Join token {id} revoked.");
            Ok(())
        }
    }
}

#[derive(Serialize)]
struct TokenView {
    id: i64,
    state: &'static str,
    node: Option<String>,
    expires_at: String,
    spent_by_node: Option<String>,
}

#[derive(Serialize)]
struct NodeView {
    name: String,
    cluster: Option<String>,
    state: &'static str,
    last_seen: Option<String>,
    agent_version: Option<String>,
    remote_addr: Option<String>,
}

async fn list_nodes(config: &HubConfig, json: bool) -> Result<()> {
    let db = open_existing(config).await?;
    let nodes: Vec<NodeView> = db
        .list_nodes()
        .await?
        .into_iter()
        .map(|row| NodeView {
            state: match (row.revoked_at, row.online) {
                (Some(_), _) => "revoked",
                (None, true) => "online",
                (None, false) => "offline",
            },
            name: row.name,
            cluster: row.cluster.map(|cluster| cluster.name),
            last_seen: row.last_seen_at.map(format_time),
            agent_version: row.agent_version,
            remote_addr: row.remote_addr,
        })
        .collect();
    if json {
        println!("{}", serde_json::to_string_pretty(&nodes)?);
        return Ok(());
    }
    println!(
        "{:<20}  {:<20}  {:<8}  {:<20}  {:<10}  REMOTE",
        "NAME", "CLUSTER", "STATE", "LAST SEEN", "VERSION"
    );
    for node in nodes {
        println!(
            "{:<20}  {:<20}  {:<8}  {:<20}  {:<10}  {}",
            node.name,
            node.cluster.as_deref().unwrap_or("-"),
            node.state,
            node.last_seen.as_deref().unwrap_or("never"),
            node.agent_version.as_deref().unwrap_or("-"),
            node.remote_addr.as_deref().unwrap_or("-")
        );
    }
    Ok(())
}

async fn user(config: &HubConfig, action: UserAction) -> Result<()> {
    let db = open_existing(config).await?;
    match action {
        UserAction::Add {
            name,
            role,
            password_stdin,
        } => {
            let password = if password_stdin {
                let mut line = String::new();
                std::io::stdin()
                    .read_line(&mut line)
                    .context("reading the password")?;
                Some(line.trim_end_matches(['\n', '\r']).to_owned())
            } else {
                None
            };
            let generated =
                admin::add_user(&db, Actor::Operator, &name, role, password.as_deref()).await?;
            println!("Added {} {name}.", role.as_str());
            if let Some(password) = generated {
                println!("Password (shown once): {password}");
            }
            Ok(())
        }
        UserAction::List { json } => {
            let users = db.list_users().await?;
            if json {
                let list: Vec<_> = users
                    .iter()
                    .map(|u| serde_json::json!({"username": u.username, "role": u.role.as_str(), "disabled": u.disabled}))
                    .collect();
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                println!("{:<24}  {:<8}  STATE", "USERNAME", "ROLE");
                for u in users {
                    println!(
                        "{:<24}  {:<8}  {}",
                        u.username,
                        u.role.as_str(),
                        if u.disabled { "disabled" } else { "active" }
                    );
                }
            }
            Ok(())
        }
        UserAction::Token { name, label } => {
            let user = db
                .user_by_name(&name)
                .await?
                .with_context(|| format!("no user named {name}"))?;
            let token = issue_api_token(&db, &Viewer::from(&user), &label, Actor::Operator).await?;
            println!("{token}");
            Ok(())
        }
    }
}

async fn vm(config: &HubConfig, action: VmAction) -> Result<()> {
    let db = open_existing(config).await?;
    let (vm, username) = match &action {
        VmAction::Assign { vm, username } => (*vm, Some(username.as_str())),
        VmAction::Unassign { vm } => (*vm, None),
    };
    let key = match db.resolve_vm(vm).await {
        Ok(key) => key,
        Err(VmRefError::NotFound) => bail!("there is no VM {vm}"),
        Err(err) => return Err(err.into()),
    };
    let vmid = key.vmid;
    proxlab_hub::domain::vms::assign_as_operator(&db, key, username).await?;
    match username {
        Some(username) => println!("VM {vmid} is assigned to {username}."),
        None => println!("VM {vmid} is unassigned."),
    }
    Ok(())
}

async fn revoke_node(config: &HubConfig, name: &str) -> Result<()> {
    let db = open_existing(config).await?;
    // A hub running elsewhere refuses the node's certificate from its next connection on.
    if !admin::revoke_node(&db, None, Actor::Operator, name).await? {
        bail!("no active node named {name}");
    }
    println!("Node {name} revoked. A running hub disconnects it at its next heartbeat.");
    Ok(())
}
