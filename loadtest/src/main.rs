//! `proxlab-loadtest`: a real hub process under the load of many simulated agents and
//! browsers, and a report of what it cost. See the README's "Load test" section.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use clap::Parser;
use rand::Rng;

use proxlab_loadtest::browsers::{self, ApiCounters, Samples, StreamCounters};
use proxlab_loadtest::fleet::{self, Endpoints, Order, Rates, Shared};
use proxlab_loadtest::report::{self, Report};
use proxlab_loadtest::site::{self, HubProcess};
use proxlab_loadtest::{inventory, measure};

/// Runs a hub under the load of many simulated agents and browser streams, and reports its
/// memory, CPU, live-update latency, API latency and database growth.
#[derive(Debug, Parser)]
#[command(name = "proxlab-loadtest", version, about)]
struct Cli {
    /// Simulated agents (nodes).
    #[arg(long, default_value_t = 1000)]
    agents: usize,
    /// VMs on each simulated node.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u16).range(1..=100))]
    vms: u16,
    /// Open live-update streams (a tenth staff, the rest students with one VM each).
    #[arg(long, default_value_t = 100)]
    streams: usize,
    /// How long to measure the steady state.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    steady: Duration,
    /// How long to let the connect-time bursts pass before measuring.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    warm_up: Duration,
    /// Mean time between power changes of one VM.
    #[arg(long, default_value = "30min", value_parser = humantime::parse_duration)]
    power_change_every: Duration,
    /// Mean time between address changes of one running VM.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    address_change_every: Duration,
    /// Use PostgreSQL: a server URL (a scratch database is created and dropped there).
    /// SQLite otherwise.
    #[arg(long)]
    postgres: Option<String>,
    /// Where the hub's data directory and the agents' state go (a temporary directory if
    /// not given; kept if given).
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Skip restarting the hub under the connected fleet.
    #[arg(long)]
    no_restart: bool,
}

/// How long the fleet may take to connect and report before the run gives up.
const SETTLE_LIMIT: Duration = Duration::from_secs(300);

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    let temp = tempfile::tempdir()?;
    let work = cli.work_dir.clone().unwrap_or_else(|| temp.path().into());
    std::fs::create_dir_all(&work)?;
    let scratch = match &cli.postgres {
        Some(server) => Some(report::ScratchDb::create(server).await?),
        None => None,
    };
    let outcome = run(&cli, &work, scratch.as_ref().map(|db| db.url.as_str())).await;
    if let Some(scratch) = scratch {
        scratch.drop_database().await?;
    }
    let report = outcome?;
    println!("{report}");
    Ok(())
}

async fn run(cli: &Cli, work: &std::path::Path, postgres: Option<&str>) -> Result<Report> {
    let vms = usize::from(cli.vms);
    let hub_dir = work.join("hub");
    let database_url = match postgres {
        Some(url) => url.to_owned(),
        None => proxlab_hub::db::Db::sqlite_url(&hub_dir),
    };
    let nodes: Vec<String> = (0..cli.agents).map(|i| format!("load{i:04}")).collect();
    let students = cli.streams - site::admin_streams(cli.streams);
    let student_vmids: Vec<u32> = (0..students.max(1))
        .map(|k| inventory::vmid(k * cli.agents / students.max(1), k % vms))
        .collect();
    eprintln!(
        "preparing the site ({} join tokens, {} accounts)",
        nodes.len(),
        cli.streams
    );
    let mut site =
        site::prepare(&hub_dir, &database_url, &nodes, cli.streams, &student_vmids).await?;
    let log = work.join("hub.log");
    let hub = HubProcess::start(&site, &log).await?;
    let mut report = Report::new(cli.agents, vms, cli.streams, postgres.is_some());

    eprintln!("enrolling {} agents at once", cli.agents);
    let enrolled = fleet::enroll_all(
        &work.join("agents"),
        site.quic_addr,
        &site.ca_pin,
        std::mem::take(&mut site.join_tokens),
    )
    .await?;
    report.enrollment(enrolled.elapsed, enrolled.members.len(), &enrolled.errors);

    let shared = Arc::new(Shared {
        hub: site.quic_addr,
        rates: Rates {
            power_change_every: cli.power_change_every,
            address_change_every: cli.address_change_every,
            metrics_every: Duration::from_secs(10),
        },
        vms_per_node: vms,
        counters: Default::default(),
        probes: Default::default(),
    });
    let agents = enrolled.members.len();
    let endpoints = Endpoints::new(site.quic_addr, agents)?;
    eprintln!("connecting {agents} agents");
    let began = Instant::now();
    let orders = fleet::start(enrolled.members, &endpoints, &shared)?;
    let expected_vms = (agents * vms) as u64;
    settle(
        &shared,
        agents,
        site.http_addr,
        &site.admin_token,
        expected_vms,
    )
    .await?;
    report.connect(began.elapsed());

    eprintln!("opening {} browser streams", cli.streams);
    let streams = Arc::new(StreamCounters::default());
    let sse_latencies = Arc::new(Samples::default());
    for viewer in &site.viewers {
        tokio::spawn(browsers::stream(
            site.http_addr,
            viewer.token.clone(),
            shared.probes.clone(),
            sse_latencies.clone(),
            streams.clone(),
        ));
    }
    wait_for("every browser stream to open", SETTLE_LIMIT, || {
        streams.open.load(Ordering::Relaxed) >= cli.streams
    })
    .await?;
    // Let the connect-time bursts (every agent's first metrics) pass.
    tokio::time::sleep(cli.warm_up).await;
    sse_latencies.take();

    eprintln!("measuring {:?} of steady state", cli.steady);
    let before = measure::read_process(hub.pid())?;
    let postgres_before = measure::cpu_of_processes_named("postgres");
    let db_before = measure::read_db(&site.database_url, &site.data_dir).await?;
    let events_before = shared.counters.events_sent.load(Ordering::Relaxed);
    let until = Instant::now() + cli.steady;
    let api_latencies = Arc::new(Samples::default());
    let api_counters = Arc::new(ApiCounters::default());
    let api = tokio::spawn(browsers::list_vms(
        site.http_addr,
        site.admin_token.clone(),
        until,
        api_latencies.clone(),
        api_counters.clone(),
    ));
    probe_until(until, &orders, &student_vmids, cli.agents, vms).await;
    api.await?;
    let after = measure::read_process(hub.pid())?;
    let postgres_cpu = postgres
        .is_some()
        .then(|| measure::cpu_of_processes_named("postgres").saturating_sub(postgres_before));
    let db_after = measure::read_db(&site.database_url, &site.data_dir).await?;
    let events = shared.counters.events_sent.load(Ordering::Relaxed) - events_before;
    report.steady(
        cli.steady,
        &before,
        &after,
        postgres_cpu,
        &db_before,
        &db_after,
        events,
        sse_latencies.take(),
        api_latencies.take(),
        api_counters.errors.load(Ordering::Relaxed),
        &streams,
    );

    if !cli.no_restart {
        eprintln!("restarting the hub under {agents} connected agents");
        let dials_before = shared.counters.failed_dials.load(Ordering::Relaxed);
        hub.stop()?;
        wait_for("every agent to notice the hub left", SETTLE_LIMIT, || {
            shared.counters.connected.load(Ordering::Relaxed) == 0
        })
        .await?;
        let began = Instant::now();
        let hub = HubProcess::start(&site, &log).await?;
        settle(
            &shared,
            agents,
            site.http_addr,
            &site.admin_token,
            expected_vms,
        )
        .await?;
        let failed = shared.counters.failed_dials.load(Ordering::Relaxed) - dials_before;
        report.restart(began.elapsed(), failed, measure::read_process(hub.pid())?);
        drop(hub);
    }
    report.fleet(&shared.counters);
    Ok(report)
}

/// Waits until every agent is connected and the hub has recorded every VM.
async fn settle(
    shared: &Shared,
    agents: usize,
    http: std::net::SocketAddr,
    admin_token: &str,
    expected_vms: u64,
) -> Result<()> {
    wait_for("every agent to connect", SETTLE_LIMIT, || {
        shared.counters.connected.load(Ordering::Relaxed) >= agents
    })
    .await?;
    let deadline = Instant::now() + SETTLE_LIMIT;
    loop {
        if browsers::recorded_vms(http, admin_token).await == Some(expected_vms) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the hub did not record {expected_vms} VMs within {SETTLE_LIMIT:?}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn wait_for(what: &str, limit: Duration, done: impl Fn() -> bool) -> Result<()> {
    let deadline = Instant::now() + limit;
    while !done() {
        if Instant::now() > deadline {
            bail!("gave up waiting for {what} after {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// Four probes a second until `until`: a power change of a student's VM (every stream of that
/// student and every staff stream should show it).
async fn probe_until(
    until: Instant,
    orders: &[tokio::sync::mpsc::Sender<Order>],
    student_vmids: &[u32],
    agents: usize,
    vms: usize,
) {
    let mut seq = 0;
    let mut ticker = tokio::time::interval(Duration::from_millis(250));
    while Instant::now() < until {
        ticker.tick().await;
        seq += 1;
        let vmid = student_vmids[rand::rng().random_range(0..student_vmids.len())];
        let (node, vm_index) = inventory::locate(vmid);
        if node < agents && vm_index < vms {
            let _ = orders[node].try_send(Order::Probe { vm_index, seq });
        }
    }
}
