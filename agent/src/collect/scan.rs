//! One pass over the node: configs, pid files, `/proc`, guest agents, the ARP table.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use proxlab_protocol::inventory::{DiskInfo, NicInfo, PowerState, VmInfo, VmLoad};
use proxlab_pve::config::VmConfig;
use proxlab_pve::drive::Bus;
use proxlab_pve::size::parse_size;

use super::{
    AGENT_FIRST_RETRY, AGENT_MAX_BACKOFF, AGENT_REFRESH, AgentAnswers, AgentPoll, ips, procfs,
};
use crate::pve::node::Node;
use crate::pve::qemu_socket;

/// How often a running VM's QMP is asked for its run state…
const RUN_STATE_REFRESH: std::time::Duration = std::time::Duration::from_secs(5);
/// …how long it may take to answer, and how many are asked in one pass.
const RUN_STATE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);
const RUN_STATE_BATCH: usize = 32;
/// How long a guest agent may take to list its interfaces.
const GUEST_AGENT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The part of a VM record that, when it changes, is worth a delta (not its load).
pub(super) fn reportable(vm: &VmInfo) -> VmInfo {
    VmInfo {
        cpu: 0.0,
        mem_bytes: 0,
        uptime_secs: 0,
        ..vm.clone()
    }
}

/// A parsed config, kept until its file changes.
struct CachedConfig {
    modified: SystemTime,
    len: u64,
    info: VmInfo,
    agent: bool,
}

pub(super) struct Scanner {
    node: Arc<Node>,
    configs: HashMap<u32, CachedConfig>,
    cpu: HashMap<u32, (u64, Instant)>,
    loads: Vec<VmLoad>,
    polls: HashMap<u32, AgentPoll>,
    agent_ips: AgentAnswers,
    /// Each running VM's state as QMP last told it, and when to ask again.
    run_states: HashMap<u32, (PowerState, Instant)>,
}

/// The static part of a VM record, from its config.
fn describe(vmid: u32, node: &str, config: &VmConfig) -> (VmInfo, bool) {
    let main = config.main();
    let number = |key: &str, default: u64| {
        main.get(key)
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let memory_mib = main
        .get("memory")
        .and_then(proxlab_pve::size::parse_memory_mib)
        .unwrap_or(512);
    let disks = config
        .drives()
        .into_iter()
        .filter(|d| d.is_disk_image() && d.key.bus != Bus::Unused)
        .map(|d| DiskInfo {
            key: d.key.to_string(),
            volid: d.volume().to_owned(),
            size_bytes: d.option("size").and_then(parse_size).unwrap_or(0),
        })
        .collect();
    let nics = config
        .nics()
        .into_iter()
        .filter_map(|nic| {
            Some(NicInfo {
                key: format!("net{}", nic.index),
                mac: nic.mac.clone()?.to_ascii_uppercase(),
                bridge: nic.bridge().map(str::to_owned),
                vlan: nic.tag(),
                model: nic.model,
            })
        })
        .collect();
    let agent = config.guest_agent_enabled();
    let info = VmInfo {
        vmid,
        name: main
            .get("name")
            .map_or_else(|| format!("VM {vmid}"), str::to_owned),
        node: node.to_owned(),
        status: PowerState::Stopped,
        template: main.get("template") == Some("1"),
        cores: number("cores", 1) as u32,
        sockets: number("sockets", 1) as u32,
        memory_mib,
        disks,
        nics,
        tags: main
            .get("tags")
            .map(|tags| {
                tags.split([';', ',', ' '])
                    .filter(|t| !t.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default(),
        lock: main.get("lock").map(str::to_owned),
        uptime_secs: 0,
        cpu: 0.0,
        mem_bytes: 0,
        ips: Vec::new(),
        identity: proxlab_pve::ident::smbios_uuid(config),
        pending: config.pending_keys(),
    };
    (info, agent)
}

impl Scanner {
    pub(super) fn new(node: Arc<Node>) -> Self {
        Self {
            node,
            configs: HashMap::new(),
            cpu: HashMap::new(),
            loads: Vec::new(),
            polls: HashMap::new(),
            agent_ips: HashMap::new(),
            run_states: HashMap::new(),
        }
    }

    pub(super) fn loads(&self) -> Vec<VmLoad> {
        self.loads.clone()
    }

    /// Re-reads what changed and returns every VM of this node.
    pub(super) async fn scan(&mut self) -> BTreeMap<u32, VmInfo> {
        let dir = self.node.qemu_dir(&self.node.name);
        let mut seen = Vec::new();
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let name = entry.file_name();
            let Some(vmid) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".conf"))
                .and_then(|id| id.parse::<u32>().ok())
            else {
                continue;
            };
            let Ok(meta) = entry.metadata() else { continue };
            let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
            seen.push(vmid);
            let fresh = self
                .configs
                .get(&vmid)
                .is_some_and(|c| c.modified == modified && c.len == meta.len());
            if fresh {
                continue;
            }
            let Ok(text) = std::fs::read_to_string(entry.path()) else {
                continue;
            };
            let (info, agent) = describe(vmid, &self.node.name, &VmConfig::parse(&text));
            self.configs.insert(
                vmid,
                CachedConfig {
                    modified,
                    len: meta.len(),
                    info,
                    agent,
                },
            );
        }
        self.configs.retain(|vmid, _| seen.contains(vmid));
        self.cpu.retain(|vmid, _| seen.contains(vmid));
        self.polls.retain(|vmid, _| seen.contains(vmid));
        self.agent_ips.retain(|vmid, _| seen.contains(vmid));
        self.run_states.retain(|vmid, _| seen.contains(vmid));

        let arp = std::fs::read_to_string(&self.node.config.arp_table)
            .map(|t| ips::parse_arp_table(&t))
            .unwrap_or_default();
        let mut vms = BTreeMap::new();
        let mut loads = Vec::new();
        let mut to_poll = Vec::new();
        let mut to_ask_state = Vec::new();
        for (vmid, cached) in &self.configs {
            let mut info = cached.info.clone();
            let pid_file = self.node.pid_file(*vmid);
            if let Some(pid) = procfs::live_pid(&pid_file) {
                info.status = match self.run_states.get(vmid) {
                    Some((state, next)) => {
                        if *next <= Instant::now() {
                            to_ask_state.push(*vmid);
                        }
                        *state
                    }
                    None => {
                        to_ask_state.push(*vmid);
                        PowerState::Running
                    }
                };
                // QEMU writes its pid file as it starts.
                info.uptime_secs = std::fs::metadata(&pid_file)
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .map_or(0, |d| d.as_secs());
                info.mem_bytes = procfs::rss_bytes(pid);
                if let Some(ticks) = procfs::cpu_ticks(pid) {
                    let now = Instant::now();
                    if let Some((before, at)) = self.cpu.insert(*vmid, (ticks, now)) {
                        let seconds = now.duration_since(at).as_secs_f64();
                        if seconds > 0.0 {
                            info.cpu = ticks.saturating_sub(before) as f64
                                / procfs::TICKS_PER_SEC
                                / seconds;
                        }
                    }
                }
                loads.push(VmLoad {
                    vmid: *vmid,
                    cpu: info.cpu,
                    mem_bytes: info.mem_bytes,
                    uptime_secs: info.uptime_secs,
                });
                let macs: Vec<String> = info.nics.iter().map(|n| n.mac.clone()).collect();
                info.ips = match self.agent_ips.get(vmid) {
                    Some(found) if !found.is_empty() => found.clone(),
                    _ => ips::from_neighbors(&arp, &macs),
                };
                if cached.agent
                    && self
                        .polls
                        .get(vmid)
                        .is_none_or(|p| p.next <= Instant::now())
                {
                    to_poll.push((*vmid, macs));
                }
            } else {
                self.cpu.remove(vmid);
                self.agent_ips.remove(vmid);
                self.polls.remove(vmid);
                self.run_states.remove(vmid);
            }
            vms.insert(*vmid, info);
        }
        self.loads = loads;
        self.ask_run_states(to_ask_state, &mut vms).await;
        self.poll_agents(to_poll, &mut vms).await;
        vms
    }

    /// Asks QMP for the run state of the running VMs that are due (paused, prelaunch…);
    /// a VM whose QMP does not answer in time stays as it was.
    async fn ask_run_states(&mut self, due: Vec<u32>, vms: &mut BTreeMap<u32, VmInfo>) {
        let mut tasks = tokio::task::JoinSet::new();
        for vmid in due.into_iter().take(RUN_STATE_BATCH) {
            let socket = self.node.qmp_socket(vmid);
            tasks.spawn(async move {
                let asked = qemu_socket::qmp_status(&socket, RUN_STATE_TIMEOUT).await;
                (vmid, asked.map(|status| qemu_socket::power_state(&status)))
            });
        }
        while let Some(Ok((vmid, asked))) = tasks.join_next().await {
            let next = Instant::now() + RUN_STATE_REFRESH;
            let state = match asked {
                Ok(state) => state,
                Err(_) => self
                    .run_states
                    .get(&vmid)
                    .map_or(PowerState::Running, |(state, _)| *state),
            };
            self.run_states.insert(vmid, (state, next));
            if let Some(vm) = vms.get_mut(&vmid) {
                vm.status = state;
            }
        }
    }

    /// Asks guest agents that are due, a few at a time, with short timeouts.
    async fn poll_agents(&mut self, due: Vec<(u32, Vec<String>)>, vms: &mut BTreeMap<u32, VmInfo>) {
        let mut tasks = tokio::task::JoinSet::new();
        for (vmid, macs) in due.into_iter().take(8) {
            let socket = self.node.qga_socket(vmid);
            tasks.spawn(async move {
                let asked = qemu_socket::guest_agent(
                    &socket,
                    "guest-network-get-interfaces",
                    GUEST_AGENT_TIMEOUT,
                )
                .await;
                let found = asked.ok().map(|v| ips::from_guest_agent(&v, &macs));
                (vmid, found)
            });
        }
        while let Some(Ok((vmid, found))) = tasks.join_next().await {
            let poll = self.polls.entry(vmid).or_insert(AgentPoll {
                next: Instant::now(),
                backoff: AGENT_FIRST_RETRY,
            });
            match found {
                Some(addresses) => {
                    poll.backoff = AGENT_FIRST_RETRY;
                    // Until the guest reports an address, ask again soon.
                    poll.next = Instant::now()
                        + if addresses.is_empty() {
                            AGENT_FIRST_RETRY
                        } else {
                            AGENT_REFRESH
                        };
                    if let Some(vm) = vms.get_mut(&vmid)
                        && !addresses.is_empty()
                    {
                        vm.ips = addresses.clone();
                    }
                    self.agent_ips.insert(vmid, addresses);
                }
                None => {
                    poll.next = Instant::now() + poll.backoff;
                    poll.backoff = (poll.backoff * 2).min(AGENT_MAX_BACKOFF);
                }
            }
        }
    }
}
