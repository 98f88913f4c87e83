//! The `proxlab-agent` command.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use std::sync::Arc;

use proxlab_agent::collect::Collector;
use proxlab_agent::config::{AgentConfig, EXAMPLE_CONFIG};
use proxlab_agent::context::Context as RequestContext;
use proxlab_agent::enroll::{EnrollParams, enroll};
use proxlab_agent::identity::Identity;
use proxlab_agent::idle::IdleEnforcer;
use proxlab_agent::idle::clock::IdleClock;
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
        /// The node's name on the hub; default: its Proxmox name (`[pve] node`, else the
        /// name in /etc/pve/.members, else the short hostname). Give another when two
        /// clusters on one hub both have a node of this name.
        #[arg(long)]
        node_name: Option<String>,
        /// Replace an existing enrollment.
        #[arg(long)]
        force: bool,
    },
    /// Connect to the hub and serve it until stopped.
    Run,
    /// Check or try out a WASM plugin (for plugin authors).
    Plugin {
        #[command(subcommand)]
        action: PluginCommand,
    },
    /// Print the commented example config file.
    DefaultConfig,
    /// Print the manual page (roff), for packaging.
    #[command(hide = true)]
    Man,
}

#[derive(Debug, Subcommand)]
enum PluginCommand {
    /// Load a plugin as the agent would: manifest, API version, exports and imports.
    Check {
        /// The plugin's directory or its .wasm file.
        plugin: PathBuf,
        /// Its manifest; default: plugin.toml beside the component.
        #[arg(long)]
        manifest: Option<PathBuf>,
    },
    /// Run one hook of a plugin with facts from a file, and print every edit, finding and
    /// notice. Exits non-zero when a finding is an error (the VM's step would fail).
    Run {
        /// The plugin's directory or its .wasm file.
        plugin: PathBuf,
        /// One of name, configure, validate, assigned, unassigned, before-delete,
        /// after-start, after-reset.
        #[arg(long)]
        hook: proxlab_agent::plugins::Hook,
        /// A JSON file of facts: {"class": {...}, "vm": {...}, "student": {...}, "config":
        /// [["key", "value"], ...], "site": {...}, "settings": {...}} (see the plugin guide).
        #[arg(long, alias = "input")]
        facts: PathBuf,
        /// A TOML or JSON file of settings (name = value), over the facts file's.
        #[arg(long)]
        settings: Option<PathBuf>,
        /// Its manifest; default: plugin.toml beside the component.
        #[arg(long)]
        manifest: Option<PathBuf>,
        #[command(flatten)]
        grants: GrantArgs,
    },
    /// Run a plugin against a directory of cases (one JSON file each: {"hook": ...,
    /// "input": {facts}, "expect": {...}} or "expect_error": "..."); fails if one does.
    Test {
        /// The plugin's directory or its .wasm file.
        plugin: PathBuf,
        /// The directory of `*.json` cases.
        cases: PathBuf,
        /// Its manifest; default: plugin.toml beside the component.
        #[arg(long)]
        manifest: Option<PathBuf>,
        #[command(flatten)]
        grants: GrantArgs,
    },
    /// Create a plugin project in a new directory NAME (the SDK inside it, a build script,
    /// facts and a test case): build it, then `plugin check`, `run` and `test` it.
    New {
        /// The plugin's id, and the directory made for it.
        name: String,
    },
}

/// Capabilities granted to a plugin run from the command line, as an operator would in
/// `agent.toml`.
#[derive(Debug, clap::Args)]
struct GrantArgs {
    /// Grant a capability the manifest requests: guest-exec, guest-files (both reach this
    /// node's VMs through `qm`/`pvesh`), http or store.
    #[arg(long)]
    grant: Vec<String>,
    /// A guest command guest-exec may run: the program, then argument patterns (`*` any
    /// one argument, `**` any rest), such as `--guest-command 'passwd --expire *'`.
    #[arg(long)]
    guest_command: Vec<String>,
    /// A guest path guest-files may write (`dir/**`: anything under it).
    #[arg(long)]
    guest_path: Vec<String>,
    /// A host (or host:port) http may reach.
    #[arg(long)]
    http_host: Vec<String>,
    /// Where the store capability keeps its data; default: a fresh temporary directory.
    #[arg(long)]
    store: Option<PathBuf>,
}

impl GrantArgs {
    /// The grant, and where the store keeps its data (a scratch directory, removed when it
    /// is dropped, if none was given).
    fn grant(&self) -> Result<(proxlab_agent::plugins::grants::Grant, StoreDir)> {
        let capabilities = self
            .grant
            .iter()
            .map(|name| name.parse().map_err(anyhow::Error::msg))
            .collect::<Result<Vec<_>>>()?;
        let grant = proxlab_agent::plugins::grants::Grant {
            capabilities,
            sha256: None,
            guest_commands: self.guest_command.clone(),
            http_hosts: self.http_host.clone(),
            guest_paths: self.guest_path.clone(),
        };
        let store = match &self.store {
            Some(dir) => StoreDir {
                path: dir.clone(),
                scratch: false,
            },
            None => StoreDir {
                path: std::env::temp_dir()
                    .join(format!("proxlab-plugin-store-{}", std::process::id())),
                scratch: true,
            },
        };
        Ok((grant, store))
    }
}

/// Where a command-line run keeps the store capability's data.
struct StoreDir {
    path: PathBuf,
    /// Made for this run, and removed after it.
    scratch: bool,
}

impl Drop for StoreDir {
    fn drop(&mut self) {
        if self.scratch {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
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
            // The hub names the node as Proxmox does, unless told otherwise (two clusters
            // on one hub may both have a `pve1`).
            let params = EnrollParams {
                hub,
                token,
                ca_pin,
                node_name: node_name.unwrap_or_else(|| config.pve.node_name()),
                cluster: Some(config.pve.cluster()),
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
            proxlab_agent::parent::follow_parent()?;
            let identity = Identity::load(&state_dir)?;
            let hub = config
                .hub
                .clone()
                .unwrap_or_else(|| identity.enrollment.hub.clone());
            let node = Arc::new(Node::new(config.pve.clone()));
            tracing::info!(node = %node.name, %hub, "starting");
            let plugins = start_plugins(&config, &node, &state_dir).await?;
            let collector = Collector::start(node.clone()).await;
            if let Some(listen) = config.metrics.listen {
                let bound = proxlab_agent::metrics::serve::spawn(listen, collector.clone())
                    .await
                    .with_context(|| format!("[metrics] listen {listen}"))?;
                tracing::info!(%bound, "serving metrics");
            }
            let idle = Arc::new(IdleEnforcer::new(
                node.clone(),
                collector.clone(),
                Arc::new(IdleClock::from_env()),
                Some(state_dir.root()),
            ));
            idle.clone().spawn();
            let context = Arc::new(
                RequestContext::new(node, collector, plugins, idle)
                    .with_tunnels(config.tunnels.clone())
                    .with_op_journal(&state_dir.root().join("operations.jsonl"))
                    .context("cannot open the operation journal")?,
            );
            link::run(identity, hub, context, shutdown_signal())
                .await
                .context("the agent stopped")
        }
        Command::Plugin { action } => plugin_command(&config, action).await,
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

/// The plugin host and the plugins of this node (compiled off the async threads).
async fn start_plugins(
    config: &AgentConfig,
    node: &Arc<Node>,
    state_dir: &StateDir,
) -> Result<Arc<proxlab_agent::plugins::PluginRegistry>> {
    use proxlab_agent::plugins::guest_exec::NodeGuestExec;
    use proxlab_agent::plugins::{NodeFacts, PluginHost, PluginRegistry};

    let facts = NodeFacts {
        node: node.name.clone(),
        agent_version: env!("CARGO_PKG_VERSION").into(),
    };
    let guest = Arc::new(NodeGuestExec::new(
        node.clone(),
        tokio::runtime::Handle::current(),
    ));
    let host = PluginHost::new(config.plugins.clone(), facts, Some(guest))?
        .with_compile_cache(&state_dir.root().join("plugin-cache"))?
        .with_store_dir(&state_dir.root().join("plugin-data"));
    let dir = state_dir.root().to_owned();
    let registry = tokio::task::spawn_blocking(move || PluginRegistry::start(host, &dir)).await?;
    Ok(Arc::new(registry))
}

async fn plugin_command(config: &AgentConfig, action: PluginCommand) -> Result<()> {
    use proxlab_agent::plugins::guest_exec::NodeGuestExec;
    use proxlab_agent::plugins::invoke::invoke;
    use proxlab_agent::plugins::{HookFacts, PluginHost, files};

    let node = Arc::new(Node::new(config.pve.clone()));
    let node_facts = proxlab_agent::plugins::NodeFacts {
        node: node.name.clone(),
        agent_version: env!("CARGO_PKG_VERSION").into(),
    };
    let mut settings = config.plugins.clone();
    let guest: Arc<dyn proxlab_agent::plugins::GuestExec> =
        Arc::new(NodeGuestExec::new(node, tokio::runtime::Handle::current()));
    match action {
        PluginCommand::Check { plugin, manifest } => {
            let host = PluginHost::new(settings, node_facts, None)?;
            let (wasm, manifest) = files::locate(&plugin, manifest.as_deref());
            let started = std::time::Instant::now();
            let loaded = files::load(&host, &wasm, &manifest)?;
            let hooks: Vec<&str> = loaded.manifest.hooks.iter().map(|h| h.as_str()).collect();
            println!(
                "{} {} (API {}): ok
  hooks: {}
  capabilities: {}
  sha256: {}
  compiled in {} ms",
                loaded.manifest.id,
                loaded.manifest.version,
                loaded.manifest.api,
                hooks.join(", "),
                if loaded.manifest.capabilities.is_empty() {
                    "none".to_owned()
                } else {
                    loaded
                        .manifest
                        .capabilities
                        .iter()
                        .map(|c| c.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                },
                loaded.sha256,
                started.elapsed().as_millis()
            );
            for (name, spec) in &loaded.manifest.settings {
                let default = spec
                    .default
                    .as_ref()
                    .map(|value| format!(", default {}", value.to_text()))
                    .unwrap_or_default();
                let scope = if spec.per_class {
                    "site or class"
                } else {
                    "site"
                };
                println!(
                    "  setting {name} ({}, {scope}{default}): {}",
                    spec.kind.as_str(),
                    spec.description
                );
            }
            // Asked for, but this node's agent.toml does not grant it to this build.
            for withheld in host.withheld(&loaded) {
                println!("  withheld on this node: {withheld}");
            }
            Ok(())
        }
        PluginCommand::Run {
            plugin,
            hook,
            facts,
            settings: settings_file,
            manifest,
            grants,
        } => {
            let text = std::fs::read_to_string(&facts)
                .with_context(|| format!("reading {}", facts.display()))?;
            let mut input: HookFacts =
                serde_json::from_str(&text).with_context(|| format!("in {}", facts.display()))?;
            if let Some(file) = settings_file {
                input.settings.extend(read_settings(&file)?);
            }
            let (wasm, manifest) = files::locate(&plugin, manifest.as_deref());
            let id = files::read_manifest(&manifest)?.id;
            let (grant, store) = grants.grant()?;
            settings.grants.insert(id, grant);
            let store_dir = store.path.clone();
            let result = tokio::task::spawn_blocking(move || {
                let host =
                    PluginHost::new(settings, node_facts, Some(guest))?.with_store_dir(&store_dir);
                let loaded = files::load(&host, &wasm, &manifest)?;
                Ok::<_, anyhow::Error>(invoke(&host, &loaded, hook, &input)?)
            })
            .await??;
            drop(store);
            println!("{}", serde_json::to_string_pretty(&result.result)?);
            if result.fails_the_step {
                anyhow::bail!("a finding is an error: the VM's step would fail");
            }
            Ok(())
        }
        PluginCommand::Test {
            plugin,
            cases,
            manifest,
            grants,
        } => {
            let (wasm, manifest) = files::locate(&plugin, manifest.as_deref());
            let id = files::read_manifest(&manifest)?.id;
            let (grant, store) = grants.grant()?;
            settings.grants.insert(id, grant);
            let store_dir = store.path.clone();
            let outcomes = tokio::task::spawn_blocking(move || {
                let host =
                    PluginHost::new(settings, node_facts, Some(guest))?.with_store_dir(&store_dir);
                let loaded = files::load(&host, &wasm, &manifest)?;
                proxlab_agent::plugins::cases::run_cases(&host, &loaded, &cases)
                    .with_context(|| format!("reading the cases in {}", cases.display()))
            })
            .await??;
            drop(store);
            let failed = outcomes
                .iter()
                .filter(|case| case.failure.is_some())
                .count();
            for case in &outcomes {
                match &case.failure {
                    None => println!("ok    {}", case.file.display()),
                    Some(why) => println!("FAIL  {}: {why}", case.file.display()),
                }
            }
            println!("{} passed, {failed} failed", outcomes.len() - failed);
            if outcomes.is_empty() {
                anyhow::bail!("there are no *.json cases there");
            }
            if failed > 0 {
                anyhow::bail!("{failed} of {} cases failed", outcomes.len());
            }
            Ok(())
        }
        PluginCommand::New { name } => {
            let dir = PathBuf::from(&name);
            proxlab_agent::plugins::scaffold::create(&dir, &name)?;
            println!(
                "created the plugin {name} in {}/\n\nnext:\n  cd {name}\n  ./build.sh\n  \
                 proxlab-agent plugin check dist\n  proxlab-agent plugin run dist --hook \
                 assigned --facts facts.json\n  proxlab-agent plugin test dist cases",
                dir.display()
            );
            Ok(())
        }
    }
}

/// Settings from a TOML or JSON file: `name = value` pairs.
fn read_settings(
    file: &std::path::Path,
) -> Result<std::collections::BTreeMap<String, proxlab_agent::plugins::manifest::SettingValue>> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let settings = if file.extension().is_some_and(|ext| ext == "json") {
        serde_json::from_str(&text).with_context(|| format!("in {}", file.display()))?
    } else {
        toml::from_str(&text).with_context(|| format!("in {}", file.display()))?
    };
    Ok(settings)
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
