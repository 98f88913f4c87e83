//! Simulated agents: each enrolls with the agent's own enrollment code, then keeps a real mTLS
//! QUIC connection to the hub and speaks the agent protocol: hello, its inventory, heartbeats,
//! metrics every 10 s, deltas as its VMs change power and address, answers to the hub's
//! requests, and a reconnect with the agent's backoff when the link drops.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use proxlab_agent::enroll::{EnrollParams, enroll};
use proxlab_agent::identity::Identity;
use proxlab_agent::link::backoff::Backoff;
use proxlab_agent::link::connect::{client_endpoint, dial};
use proxlab_agent::link::control::{EventWriter, heartbeat as heartbeat_event, say_hello};
use proxlab_agent::paths::StateDir;
use proxlab_link::{read_frame, write_frame};
use proxlab_protocol::idle::IdlePolicies;
use proxlab_protocol::inventory::{InventoryDelta, VmInfo};
use proxlab_protocol::limits::{FRAME_READ_TIMEOUT, HEARTBEAT_INTERVAL, MAX_FRAME_LEN};
use proxlab_protocol::requests::{Ping, Pong};
use proxlab_protocol::vm_ops::{Done, Resync};
use proxlab_protocol::{
    ClusterIdentity, ErrorKind, Event, Hello, PROTOCOL_VERSION, RemoteError, Request, RequestFrame,
    ResponseFrame,
};
use rand::Rng;
use tokio::sync::{Notify, mpsc};

use crate::inventory::NodeVms;
use crate::site::JoinToken;

/// How often a simulated VM changes: a mean interval per VM, drawn from an exponential
/// distribution (so changes arrive as a real site's do, not in step).
#[derive(Debug, Clone, Copy)]
pub struct Rates {
    pub power_change_every: Duration,
    pub address_change_every: Duration,
    pub metrics_every: Duration,
}

/// When a probed change was sent, so browser streams can time its arrival.
#[derive(Debug, Clone, Copy)]
pub struct Probe {
    pub seq: u64,
    pub running: bool,
    pub sent: Instant,
}

/// The probes in flight, by VMID.
#[derive(Debug, Default)]
pub struct ProbeBook {
    probes: Mutex<HashMap<u32, Probe>>,
}

impl ProbeBook {
    fn record(&self, vmid: u32, probe: Probe) {
        self.lock().insert(vmid, probe);
    }

    /// The probe a VM's state answers, if its power state matches.
    pub fn matching(&self, vmid: u32, running: bool) -> Option<Probe> {
        self.lock()
            .get(&vmid)
            .copied()
            .filter(|probe| probe.running == running)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u32, Probe>> {
        self.probes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// What the fleet has seen, for the report.
#[derive(Debug, Default)]
pub struct FleetCounters {
    /// Agents with a session whose hello the hub welcomed.
    pub connected: AtomicUsize,
    pub sessions: AtomicUsize,
    pub failed_dials: AtomicUsize,
    pub dropped_sessions: AtomicUsize,
    pub events_sent: AtomicUsize,
    pub resyncs_asked: AtomicUsize,
    pub requests_answered: AtomicUsize,
    /// Why sessions ended or never began, with how often.
    pub drop_reasons: Mutex<std::collections::BTreeMap<String, usize>>,
}

impl FleetCounters {
    fn note_drop(&self, reason: &str) {
        *self
            .drop_reasons
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .entry(reason.to_owned())
            .or_default() += 1;
    }
}

/// An order to one agent from the harness.
#[derive(Debug)]
pub enum Order {
    /// Toggle this VM's power and time its arrival at the browser streams.
    Probe { vm_index: usize, seq: u64 },
}

/// One enrolled simulated node.
pub struct Member {
    pub index: usize,
    pub node: String,
    pub identity: Identity,
}

/// The outcome of enrolling the whole fleet at once.
pub struct Enrolled {
    pub members: Vec<Member>,
    pub errors: Vec<String>,
    pub elapsed: Duration,
}

/// Enrolls every node at once, as many operators running `proxlab-agent enroll` together
/// would (each with its own UDP socket and key).
pub async fn enroll_all(
    dir: &Path,
    hub: SocketAddr,
    ca_pin: &str,
    tokens: Vec<JoinToken>,
) -> Result<Enrolled> {
    let ca_pin = ca_pin.parse().context("the hub's CA pin")?;
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (index, token) in tokens.into_iter().enumerate() {
        let state = StateDir::new(dir.join(&token.node));
        let params = EnrollParams {
            hub: hub.to_string(),
            token: token.secret,
            ca_pin,
            node_name: token.node.clone(),
            cluster: Some(load_cluster()),
            force: false,
        };
        tasks.spawn(async move {
            let result = enroll(&state, &params)
                .await
                .and_then(|_| Identity::load(&state));
            (index, token.node, result)
        });
    }
    let mut members = Vec::new();
    let mut errors = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((index, node, Ok(identity))) => members.push(Member {
                index,
                node,
                identity,
            }),
            Ok((_, node, Err(err))) => errors.push(format!("{node}: {err:#}")),
            Err(err) => errors.push(format!("an enrollment task failed: {err}")),
        }
    }
    members.sort_by_key(|member| member.index);
    Ok(Enrolled {
        members,
        errors,
        elapsed: started.elapsed(),
    })
}

/// What every simulated agent shares.
pub struct Shared {
    pub hub: SocketAddr,
    pub rates: Rates,
    pub vms_per_node: usize,
    pub counters: FleetCounters,
    pub probes: Arc<ProbeBook>,
}

/// Client endpoints, each carrying many agents' connections (one UDP socket per agent would
/// only test the kernel).
pub struct Endpoints {
    endpoints: Vec<quinn::Endpoint>,
}

/// Agents per client endpoint.
const AGENTS_PER_ENDPOINT: usize = 50;

impl Endpoints {
    pub fn new(hub: SocketAddr, agents: usize) -> Result<Self> {
        let endpoints = (0..agents.div_ceil(AGENTS_PER_ENDPOINT).max(1))
            .map(|_| client_endpoint(hub))
            .collect::<Result<_>>()?;
        Ok(Self { endpoints })
    }

    fn for_agent(&self, index: usize) -> quinn::Endpoint {
        self.endpoints[(index / AGENTS_PER_ENDPOINT) % self.endpoints.len()].clone()
    }
}

/// Starts one task per member; returns each agent's order channel.
pub fn start(
    members: Vec<Member>,
    endpoints: &Endpoints,
    shared: &Arc<Shared>,
) -> Result<Vec<mpsc::Sender<Order>>> {
    let mut orders = Vec::with_capacity(members.len());
    for member in members {
        let (sender, receiver) = mpsc::channel(16);
        let config =
            proxlab_link::tls::agent_client_config(&member.identity.ca_pem, &member.identity.node)?;
        let agent = Agent {
            vms: NodeVms::new(&member.node, member.index, shared.vms_per_node),
            endpoint: endpoints.for_agent(member.index),
            config,
            shared: shared.clone(),
            orders: receiver,
            started: Instant::now(),
        };
        tokio::spawn(agent.run());
        orders.push(sender);
    }
    Ok(orders)
}

struct Agent {
    vms: NodeVms,
    endpoint: quinn::Endpoint,
    config: quinn::ClientConfig,
    shared: Arc<Shared>,
    orders: mpsc::Receiver<Order>,
    started: Instant,
}

/// A delay drawn from an exponential distribution with this mean.
fn exponential(mean: Duration) -> Duration {
    let uniform: f64 = rand::rng().random_range(f64::EPSILON..1.0);
    mean.mul_f64(-uniform.ln())
}

impl Agent {
    async fn run(mut self) {
        let mut backoff = Backoff::default();
        loop {
            let began = Instant::now();
            let reason = self.session().await;
            backoff.session_ended(began.elapsed());
            let delay = backoff.next_delay();
            self.shared.counters.note_drop(&reason);
            tokio::time::sleep(delay).await;
        }
    }

    /// One connection, until it fails. Returns why.
    async fn session(&mut self) -> String {
        let shared = self.shared.clone();
        let counters = &shared.counters;
        let connection = match dial(&self.endpoint, self.shared.hub, self.config.clone()).await {
            Ok(connection) => connection,
            Err(err) => {
                counters.failed_dials.fetch_add(1, Ordering::Relaxed);
                return err.to_string();
            }
        };
        let hello = Hello {
            protocol: PROTOCOL_VERSION,
            agent_version: "loadtest".into(),
            node_name: self.vms.node().to_owned(),
            capabilities: vec![
                Ping::KIND.into(),
                Resync::KIND.into(),
                IdlePolicies::KIND.into(),
            ],
            cluster: Some(load_cluster()),
        };
        let (send, _recv, welcome) = match say_hello(&connection, &hello).await {
            Ok(parts) => parts,
            Err(err) => {
                counters.failed_dials.fetch_add(1, Ordering::Relaxed);
                return err;
            }
        };
        counters.sessions.fetch_add(1, Ordering::Relaxed);
        counters.connected.fetch_add(1, Ordering::Relaxed);
        let resync = Arc::new(Notify::new());
        let answering = tokio::spawn(answer_requests(
            connection.clone(),
            resync.clone(),
            self.shared.clone(),
        ));
        let heartbeat = match welcome.heartbeat_secs {
            0 => HEARTBEAT_INTERVAL,
            secs => Duration::from_secs(secs.into()),
        };
        let reason = self.report(send, heartbeat, &resync).await;
        answering.abort();
        counters.connected.fetch_sub(1, Ordering::Relaxed);
        counters.dropped_sessions.fetch_add(1, Ordering::Relaxed);
        connection.close(0u32.into(), b"loadtest agent reconnecting");
        reason
    }

    /// The control stream's writer: the inventory, then events until the stream fails.
    async fn report(
        &mut self,
        send: quinn::SendStream,
        heartbeat_every: Duration,
        resync: &Notify,
    ) -> String {
        let rates = self.shared.rates;
        let vms = self.vms.vm_count().max(1) as u32;
        let mut writer = Writer {
            events: EventWriter::new(send),
            shared: &self.shared,
        };
        if let Err(err) = writer
            .send(Event::Inventory {
                inventory: self.vms.inventory(),
            })
            .await
        {
            return err;
        }
        let mut heartbeat = tokio::time::interval(heartbeat_every);
        // Metrics ticks spread over the period, as independent nodes' are.
        let first_metrics = tokio::time::Instant::now() + exponential(rates.metrics_every / 2);
        let mut metrics = tokio::time::interval_at(first_metrics, rates.metrics_every);
        let mut next_power =
            tokio::time::Instant::now() + exponential(rates.power_change_every / vms);
        let mut next_address =
            tokio::time::Instant::now() + exponential(rates.address_change_every / vms);
        loop {
            let event = tokio::select! {
                _ = heartbeat.tick() => heartbeat_event(),
                _ = metrics.tick() => Event::Metrics {
                    metrics: self.vms.metrics(self.started.elapsed().as_secs()),
                },
                () = tokio::time::sleep_until(next_power) => {
                    next_power += exponential(rates.power_change_every / vms);
                    let index = rand::rng().random_range(0..self.vms.vm_count());
                    changed(self.vms.toggle_power(index))
                }
                () = tokio::time::sleep_until(next_address) => {
                    next_address += exponential(rates.address_change_every / vms);
                    let index = rand::rng().random_range(0..self.vms.vm_count());
                    match self.vms.change_address(index) {
                        Some(vm) => changed(vm),
                        None => continue,
                    }
                }
                () = resync.notified() => Event::Inventory { inventory: self.vms.inventory() },
                order = self.orders.recv() => match order {
                    Some(Order::Probe { vm_index, seq }) => {
                        let vm = self.vms.toggle_power(vm_index);
                        self.shared.probes.record(vm.vmid, Probe {
                            seq,
                            running: vm.status == proxlab_protocol::inventory::PowerState::Running,
                            sent: Instant::now(),
                        });
                        changed(vm)
                    }
                    None => return "the harness stopped".into(),
                },
            };
            if let Err(err) = writer.send(event).await {
                return err;
            }
        }
    }
}

fn changed(vm: VmInfo) -> Event {
    Event::InventoryDelta {
        delta: InventoryDelta {
            upserted: vec![vm],
            ..InventoryDelta::default()
        },
    }
}

/// The agent's event writer, counting what it sends.
struct Writer<'a> {
    events: EventWriter,
    shared: &'a Shared,
}

impl Writer<'_> {
    async fn send(&mut self, event: Event) -> Result<(), String> {
        self.events.send(event).await?;
        self.shared
            .counters
            .events_sent
            .fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// Answers the hub's requests: pings, resyncs and idle policies as an agent does, anything
/// else as an agent without that capability would.
async fn answer_requests(connection: quinn::Connection, resync: Arc<Notify>, shared: Arc<Shared>) {
    while let Ok((mut send, mut recv)) = connection.accept_bi().await {
        let resync = resync.clone();
        let shared = shared.clone();
        tokio::spawn(async move {
            let Ok(frame) =
                read_frame::<RequestFrame>(&mut recv, MAX_FRAME_LEN, FRAME_READ_TIMEOUT).await
            else {
                return;
            };
            let answer = match frame.kind.as_str() {
                Ping::KIND => {
                    let ping: Ping = serde_json::from_value(frame.body).unwrap_or(Ping {
                        payload: String::new(),
                        delay_ms: 0,
                    });
                    ResponseFrame::from_result(Ok(Pong {
                        payload: ping.payload,
                    }))
                }
                Resync::KIND => {
                    shared
                        .counters
                        .resyncs_asked
                        .fetch_add(1, Ordering::Relaxed);
                    resync.notify_one();
                    ResponseFrame::from_result(Ok(Done {}))
                }
                // The hub sends every agent its idle policies on connect; a node without
                // running VMs to watch has nothing more to do with them.
                IdlePolicies::KIND => ResponseFrame::from_result(Ok(Done {})),
                other => ResponseFrame::Err {
                    error: RemoteError::new(
                        ErrorKind::Unsupported,
                        format!("the load harness does not serve {other:?}"),
                    ),
                },
            };
            shared
                .counters
                .requests_answered
                .fetch_add(1, Ordering::Relaxed);
            let _ = write_frame(&mut send, &answer, MAX_FRAME_LEN).await;
            let _ = send.finish();
        });
    }
}

/// The one cluster every simulated node belongs to (their VMIDs never overlap).
pub(crate) fn load_cluster() -> ClusterIdentity {
    ClusterIdentity {
        name: "loadtest".into(),
        ca_fingerprint: String::new(),
    }
}
