//! Periodic, read-only reporting: inventory (with IPs) and metrics. It never changes the
//! node; it watches configs and pid files, and sends the hub only what changed.

pub mod ips;
pub mod procfs;
mod scan;
mod storages;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use proxlab_protocol::Event;
use proxlab_protocol::inventory::{
    Inventory, InventoryDelta, IsoInfo, NodeMetrics, StorageInfo, VmInfo,
};
use sysinfo::{CpuRefreshKind, MemoryRefreshKind, RefreshKind, System};
use tokio::sync::broadcast;

use crate::pve::node::Node;

/// How often configs and pid files are rescanned.
pub const SCAN_INTERVAL: Duration = Duration::from_secs(1);
/// How often storages and node metrics are refreshed.
pub const METRICS_INTERVAL: Duration = Duration::from_secs(10);

/// What the session writer receives.
#[derive(Debug, Clone)]
pub enum Report {
    Event(Event),
    /// Send a full inventory now.
    Resync,
}

#[derive(Debug, Default)]
struct State {
    vms: BTreeMap<u32, VmInfo>,
    storages: Vec<StorageInfo>,
    isos: Vec<IsoInfo>,
}

/// The collector's shared state and its channel to sessions.
#[derive(Debug)]
pub struct Collector {
    state: Mutex<State>,
    reports: broadcast::Sender<Report>,
}

impl Collector {
    /// Scans once, then keeps scanning in the background.
    pub async fn start(node: Arc<Node>) -> Arc<Self> {
        let collector = Arc::new(Self {
            state: Mutex::default(),
            reports: broadcast::channel(1024).0,
        });
        let mut scanner = scan::Scanner::new(node.clone());
        let mut storages = storages::StorageReader::default();
        collector.apply(scanner.scan().await);
        collector.refresh_storage(&node, &mut storages).await;
        let worker = collector.clone();
        tokio::spawn(async move { worker.run(node, scanner, storages).await });
        collector
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Report> {
        self.reports.subscribe()
    }

    /// Sends an event to the hub (through every session).
    pub fn report(&self, event: Event) {
        let _ = self.reports.send(Report::Event(event));
    }

    /// Asks every session to send a full inventory.
    pub fn request_resync(&self) {
        let _ = self.reports.send(Report::Resync);
    }

    /// The current inventory.
    pub fn snapshot(&self) -> Inventory {
        let state = self.state.lock().expect("not poisoned");
        Inventory {
            vms: state.vms.values().cloned().collect(),
            storages: state.storages.clone(),
            isos: state.isos.clone(),
        }
    }

    /// One VM as last scanned.
    pub fn vm(&self, vmid: u32) -> Option<VmInfo> {
        let state = self.state.lock().expect("not poisoned");
        state.vms.get(&vmid).cloned()
    }

    /// Folds a scan into the state; announces what changed.
    fn apply(&self, scanned: BTreeMap<u32, VmInfo>) {
        let mut delta = InventoryDelta::default();
        {
            let mut state = self.state.lock().expect("not poisoned");
            for (vmid, vm) in &scanned {
                let changed = state
                    .vms
                    .get(vmid)
                    .is_none_or(|old| scan::reportable(old) != scan::reportable(vm));
                if changed {
                    delta.upserted.push(vm.clone());
                }
            }
            delta.removed = state
                .vms
                .keys()
                .filter(|vmid| !scanned.contains_key(vmid))
                .copied()
                .collect();
            state.vms = scanned;
        }
        if !delta.upserted.is_empty() || !delta.removed.is_empty() {
            let _ = self
                .reports
                .send(Report::Event(Event::InventoryDelta { delta }));
        }
    }

    async fn refresh_storage(&self, node: &Node, reader: &mut storages::StorageReader) {
        let (storages, isos) = reader.read(node).await;
        let mut delta = InventoryDelta::default();
        {
            let mut state = self.state.lock().expect("not poisoned");
            if state.storages != storages {
                delta.storages = Some(storages.clone());
                state.storages = storages;
            }
            if state.isos != isos {
                delta.isos = Some(isos.clone());
                state.isos = isos;
            }
        }
        if delta.storages.is_some() || delta.isos.is_some() {
            let _ = self
                .reports
                .send(Report::Event(Event::InventoryDelta { delta }));
        }
    }

    async fn run(
        self: Arc<Self>,
        node: Arc<Node>,
        mut scanner: scan::Scanner,
        mut storages: storages::StorageReader,
    ) {
        let mut system = System::new_with_specifics(
            RefreshKind::nothing()
                .with_cpu(CpuRefreshKind::nothing().with_cpu_usage())
                .with_memory(MemoryRefreshKind::nothing().with_ram()),
        );
        let mut last_metrics = Instant::now();
        let mut ticker = tokio::time::interval(SCAN_INTERVAL);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            self.apply(scanner.scan().await);
            if last_metrics.elapsed() >= METRICS_INTERVAL {
                last_metrics = Instant::now();
                self.refresh_storage(&node, &mut storages).await;
                system.refresh_cpu_usage();
                system.refresh_memory();
                let load = System::load_average();
                let metrics = NodeMetrics {
                    cpu: f64::from(system.global_cpu_usage()) / 100.0,
                    cpu_count: system.cpus().len() as u32,
                    memory_total_bytes: system.total_memory(),
                    memory_used_bytes: system.used_memory(),
                    load_average: [load.one, load.five, load.fifteen],
                    uptime_secs: System::uptime(),
                    storages: self.state.lock().expect("not poisoned").storages.clone(),
                    vms: scanner.loads(),
                };
                let _ = self.reports.send(Report::Event(Event::Metrics { metrics }));
            }
        }
    }
}

/// Per-VM guest-agent polling state: when to ask next, and how long to back off.
#[derive(Debug, Clone)]
struct AgentPoll {
    next: Instant,
    backoff: Duration,
}

/// The guest agent is asked again this often once it answered…
const AGENT_REFRESH: Duration = Duration::from_secs(30);
/// …and this often at first, doubling up to the maximum while it does not answer.
const AGENT_FIRST_RETRY: Duration = Duration::from_secs(2);
const AGENT_MAX_BACKOFF: Duration = Duration::from_secs(60);

type AgentAnswers = HashMap<u32, Vec<proxlab_protocol::inventory::IpAddress>>;
