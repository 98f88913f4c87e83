//! The `proxlab-agent` command.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use std::sync::Arc;

use proxlab_agent::collect::Collector;
use proxlab_agent::config::{AgentConfig, EXAMPLE_CONFIG};
use proxlab_agent::enroll::{EnrollParams, enroll};
use proxlab_agent::handlers::Context as RequestContext;
use proxlab_agent::identity::Identity;
use proxlab_agent::link::{self, EXIT_REFUSED_BY_HUB, RefusedByHub};
use proxlab_agent::paths::{DEFAULT_CONFIG_PATH, DEFAULT_STATE_DIR, StateDir};
use proxlab_agent::pve::node::Node;
use proxlab_link::pki::Fingerprint;

/// The proxlab agent: runs on a Proxmox node and serves the hub.
#[derive(Debug, Parser)]
#[command(name = "proxlab-agent", version, about)]
struct Cli {
    /// Where the node's key and certificates are kept.
    #[arg(long, global = true, env = "PROXLAB_STATE_DIR")]
    state_dir: Option<PathBuf>,
    /// The config file; a missing default file is fine.
    #[arg(long, global = true, env = "PROXLAB_AGENT_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Enroll this node with a hub, using a one-time join token.
    Enroll {
        /// The hub's QUIC address, HOST:PORT.
        #[arg(long)]
        hub: String,
        /// The join token from `proxlab-hub token create`.
        #[arg(long, env = "PROXLAB_JOIN_TOKEN", hide_env_values = true)]
        token: String,
        /// The hub CA's fingerprint, sha256:HEX, as printed with the token.
        #[arg(long)]
        ca_pin: Fingerprint,
        /// This node's name; default: the short hostname.
        #[arg(long)]
        node_name: Option<String>,
        /// Replace an existing enrollment.
        #[arg(long)]
        force: bool,
    },
    /// Connect to the hub and serve it until stopped.
    Run,
    /// Print the commented example config file.
    DefaultConfig,
    /// Print the manual page (roff), for packaging.
    #[command(hide = true)]
    Man,
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

fn short_hostname() -> String {
    let name = sysinfo::System::host_name().unwrap_or_default();
    name.split('.').next().unwrap_or_default().to_owned()
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("proxlab-agent: {err:#}");
            if err.downcast_ref::<RefusedByHub>().is_some() {
                eprintln!(
                    "proxlab-agent: not retrying. If this node was revoked, enroll it again \
                     with a new join token."
                );
                ExitCode::from(EXIT_REFUSED_BY_HUB)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

async fn run(cli: Cli) -> Result<()> {
    let config = match &cli.config {
        Some(path) => AgentConfig::load(path, true)?,
        None => AgentConfig::load(std::path::Path::new(DEFAULT_CONFIG_PATH), false)?,
    };
    let state_dir = StateDir::new(
        cli.state_dir
            .or(config.state_dir.clone())
            .unwrap_or_else(|| DEFAULT_STATE_DIR.into()),
    );
    match cli.command {
        Command::Enroll {
            hub,
            token,
            ca_pin,
            node_name,
            force,
        } => {
            let params = EnrollParams {
                hub,
                token,
                ca_pin,
                node_name: node_name.unwrap_or_else(short_hostname),
                force,
            };
            let enrollment = enroll(&state_dir, &params).await?;
            println!(
                "Enrolled node {} with the hub at {}. Start the agent: systemctl enable --now proxlab-agent \
                 (or `proxlab-agent run`).",
                enrollment.node_name, enrollment.hub
            );
            Ok(())
        }
        Command::Run => {
            let identity = Identity::load(&state_dir)?;
            let hub = config
                .hub
                .clone()
                .unwrap_or_else(|| identity.enrollment.hub.clone());
            let mut pve = config.pve.clone();
            pve.node
                .get_or_insert_with(|| identity.enrollment.node_name.clone());
            let node = Arc::new(Node::new(pve));
            tracing::info!(node = %node.name, %hub, "starting");
            let collector = Collector::start(node.clone()).await;
            let context = Arc::new(RequestContext::new(node, collector));
            link::run(identity, hub, context, shutdown_signal())
                .await
                .context("the agent stopped")
        }
        Command::DefaultConfig => {
            print!("{EXAMPLE_CONFIG}");
            Ok(())
        }
        Command::Man => {
            use clap::CommandFactory;
            clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout().lock())?;
            Ok(())
        }
    }
}

async fn shutdown_signal() {
    let Ok(mut terminate) =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
    else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}
