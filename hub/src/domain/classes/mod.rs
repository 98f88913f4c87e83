//! Classes: what a teacher creates from a template, what students join by invite, and the
//! jobs that deploy and delete their VMs. Every function checks who asks and audits what it
//! changes.

pub mod adopt;
mod copy;
pub mod hardware;
pub mod invites;
pub mod jobs;
pub mod placement;
pub mod publish;
pub mod roster;
pub mod roster_csv;
mod steps;
pub mod tasks;
pub mod versions;

use std::ops::RangeInclusive;
use std::time::Duration;

use crate::HubState;
use crate::db::classes::{ClassRow, ClassVmRow, JoinOutcome, NewClass};
use crate::db::states::{ClassState, ClassVmKind, ClassVmState, JobKind};
use crate::db::{DbError, now_unix};
use crate::domain::audit::{self, Outcome};
use crate::domain::viewer::Viewer;
use crate::secrets::hash_secret;
use crate::vm_key::{VmKey, VmRef};
use placement::Candidate;

/// Where class VMs get their VMIDs, cluster-wide.
pub const VMID_RANGE: RangeInclusive<u32> = 10_000..=999_999;
/// The most student VMs one request may add.
pub const MAX_SEATS: u32 = 500;
/// How long an invite lasts unless the teacher says otherwise.
pub const DEFAULT_INVITE_TTL: Duration = Duration::from_secs(7 * 86_400);
const INVITE_PREFIX: &str = "pli_";

/// Why a class operation did not happen.
#[derive(Debug, thiserror::Error)]
pub enum ClassError {
    /// Missing, or not the viewer's: the same answer for both.
    #[error("no such class")]
    NotFound,
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Conflict(String),
    /// The viewer sees the class but may not do this to it (an assistant changing it).
    #[error("{0}")]
    Forbidden(String),
    #[error(transparent)]
    Db(#[from] DbError),
}

/// What a teacher asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassRequest {
    pub name: String,
    pub description: String,
    /// The template to copy; `None` for a class of empty VMs (see [`EmptyVmSpec`]).
    pub template: Option<VmKey>,
    pub seats: u32,
    /// Pin every VM to this node; `None` spreads them.
    pub node: Option<String>,
    /// CPU cores and memory for every VM instead of the template's.
    pub cores: Option<u32>,
    pub memory_mib: Option<u64>,
    /// For a class without a template: the disk and the NIC's bridge.
    pub empty: EmptyVmSpec,
    /// Plugins the class runs, in order, beyond those enabled for every class.
    pub plugins: Vec<String>,
}

/// What the VMs of a class without a template get besides CPU and memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmptyVmSpec {
    pub disk_gib: u32,
    pub storage: String,
    pub bridge: String,
}

impl Default for EmptyVmSpec {
    fn default() -> Self {
        Self {
            disk_gib: 20,
            storage: "local".into(),
            bridge: "vmbr0".into(),
        }
    }
}

/// CPU cores of the VMs of a class without a template, unless the teacher says otherwise.
pub const EMPTY_VM_CORES: u32 = 2;
/// Memory of the VMs of a class without a template, unless the teacher says otherwise.
pub const EMPTY_VM_MEMORY_MIB: u64 = 2048;

/// A DNS-safe stem for the class's VM names, from its name.
pub fn name_stem(name: &str, class_id: i64) -> String {
    let mut stem = String::new();
    for c in name.to_lowercase().chars() {
        if c.is_ascii_alphanumeric() {
            stem.push(c);
        } else if !stem.ends_with('-') && !stem.is_empty() {
            stem.push('-');
        }
    }
    let stem: String = stem.trim_end_matches('-').chars().take(40).collect();
    let stem = stem.trim_end_matches('-');
    if stem.is_empty() || stem.starts_with(|c: char| c.is_ascii_digit()) {
        format!(
            "class{class_id}{}{stem}",
            if stem.is_empty() { "" } else { "-" }
        )
    } else {
        stem.to_owned()
    }
}

/// How far a class's deployment is.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ClassProgress {
    pub class_id: i64,
    pub ready: usize,
    pub failed: usize,
    pub total: usize,
    /// The newest job, as `deploy running` or `delete done`.
    pub job_state: Option<String>,
    pub job_message: Option<String>,
    /// Each VM's deployment state, by its key (`CLUSTER-VMID`).
    pub vms: Vec<(VmKey, ClassVmState)>,
    /// What the deployment is doing now, in words; `None` when nothing is under way.
    pub stage: Option<String>,
    /// How far each node is, by node name.
    pub nodes: Vec<NodeProgress>,
}

/// A node's part of a class deployment.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NodeProgress {
    pub node: String,
    /// Whether the node's own copy of the class base (the disk its clones are made from) is
    /// ready; `None` when the node has none of its own (its clones use a base on shared
    /// storage).
    pub base_ready: Option<bool>,
    pub ready: usize,
    pub total: usize,
}

/// The newest version any base of the class holds: the one a publish is making, or the
/// current one.
fn newest_base_version(rows: &[ClassVmRow]) -> Option<i64> {
    rows.iter()
        .filter(|vm| vm.kind == ClassVmKind::Base)
        .filter_map(|vm| vm.version)
        .max()
}

/// The bases that matter to progress: those of the newest version (and bases of a class
/// from before versions, which have none).
fn newest_bases(rows: &[ClassVmRow]) -> Vec<&ClassVmRow> {
    let newest = newest_base_version(rows);
    rows.iter()
        .filter(|vm| vm.kind == ClassVmKind::Base && vm.version == newest)
        .collect()
}

/// The stage a deployment or publish is in, from the states of its rows: the base is made
/// first (from the template, or the teacher VM for a later version), then copied to the
/// other nodes, then every node makes its clones.
fn deployment_stage(rows: &[ClassVmRow], current: Option<i64>) -> Option<String> {
    let bases = newest_bases(rows);
    let clones: Vec<&ClassVmRow> = rows
        .iter()
        .filter(|vm| vm.kind != ClassVmKind::Base)
        .collect();
    let waiting = |vms: &[&ClassVmRow]| {
        vms.iter()
            .filter(|vm| vm.state == ClassVmState::Planned)
            .count()
    };
    let (bases_waiting, clones_waiting) = (waiting(&bases), waiting(&clones));
    let publishing = newest_base_version(rows).filter(|newest| Some(*newest) > current);
    let plural = if bases_waiting == 1 { "" } else { "s" };
    match publishing {
        Some(number) if bases_waiting > 0 && bases_waiting == bases.len() => Some(format!(
            "Publishing version {number}: making its base from the teacher VM"
        )),
        Some(number) if bases_waiting > 0 => Some(format!(
            "Publishing version {number}: copying its base to {bases_waiting} more node{plural}"
        )),
        Some(number) => Some(format!(
            "Publishing version {number}: moving the teacher VM onto it"
        )),
        None if bases_waiting > 0 && bases_waiting == bases.len() => {
            Some("Making the class base from the template".into())
        }
        None if bases_waiting > 0 => Some(format!(
            "Copying the base to {bases_waiting} more node{plural}"
        )),
        None if clones_waiting > 0 => Some(format!("Making VMs: {clones_waiting} to go")),
        None => None,
    }
}

fn node_progress(rows: &[ClassVmRow]) -> Vec<NodeProgress> {
    let mut nodes: std::collections::BTreeMap<&str, NodeProgress> = Default::default();
    let bases = newest_bases(rows);
    for vm in rows {
        let entry = nodes.entry(&vm.node).or_insert_with(|| NodeProgress {
            node: vm.node.clone(),
            base_ready: None,
            ready: 0,
            total: 0,
        });
        if vm.kind != ClassVmKind::Base {
            entry.total += 1;
            entry.ready += usize::from(vm.state == ClassVmState::Ready);
        }
    }
    for base in bases {
        if let Some(entry) = nodes.get_mut(base.node.as_str()) {
            entry.base_ready = Some(base.state == ClassVmState::Ready);
        }
    }
    nodes.into_values().collect()
}

/// The deployment state of a class (the caller has checked who may see it).
pub async fn progress(state: &HubState, class_id: i64) -> Result<ClassProgress, ClassError> {
    let rows = state.db.class_vms(class_id).await?;
    let current_version = state
        .db
        .class(class_id)
        .await?
        .and_then(|class| class.current_version);
    let clones: Vec<_> = rows
        .iter()
        .filter(|vm| vm.kind != ClassVmKind::Base)
        .collect();
    let jobs = state.db.class_jobs(class_id).await?;
    Ok(ClassProgress {
        class_id,
        ready: clones
            .iter()
            .filter(|vm| vm.state == ClassVmState::Ready)
            .count(),
        failed: clones
            .iter()
            .filter(|vm| vm.state == ClassVmState::Failed)
            .count(),
        total: clones.len(),
        job_state: jobs
            .first()
            .map(|job| format!("{} {}", job.kind, job.state)),
        job_message: jobs.first().map(|job| job.message.clone()),
        vms: clones.iter().map(|vm| (vm.key, vm.state)).collect(),
        stage: deployment_stage(&rows, current_version),
        nodes: node_progress(&rows),
    })
}

/// Sets the plugins a class runs (beyond those enabled for every class), in order.
pub async fn choose_plugins(
    state: &HubState,
    viewer: &Viewer,
    class_id: i64,
    ids: &[String],
) -> Result<(), ClassError> {
    owned_class(state, viewer, class_id).await?;
    let mut seen: Vec<&String> = Vec::new();
    for id in ids {
        if seen.contains(&id) {
            return Err(ClassError::Invalid(format!("plugin {id} is listed twice")));
        }
        if state.db.plugin(id).await?.is_none() {
            return Err(ClassError::Invalid(format!("there is no plugin {id}")));
        }
        seen.push(id);
    }
    state.db.set_class_plugins(class_id, ids).await?;
    audit::record(
        &state.db,
        viewer,
        "class.plugins",
        &format!("class:{class_id}"),
        Outcome::Ok,
        &ids.join(", "),
    )
    .await;
    Ok(())
}

/// Stores a job for a class, audits what started it, and wakes the runner.
async fn start_job(
    state: &HubState,
    viewer: &Viewer,
    kind: JobKind,
    class_id: i64,
    action: &str,
    detail: &str,
) -> Result<i64, ClassError> {
    let job = state
        .db
        .insert_job(kind, class_id, Some(viewer.id), now_unix())
        .await?;
    audit::record(
        &state.db,
        viewer,
        action,
        &format!("class:{class_id}"),
        Outcome::Ok,
        detail,
    )
    .await;
    state.jobs.wake(job);
    Ok(job)
}

/// The account with this name, or a clear error.
async fn user_named(
    state: &HubState,
    username: &str,
) -> Result<crate::db::users::UserRow, ClassError> {
    state
        .db
        .user_by_name(username)
        .await?
        .ok_or_else(|| ClassError::Invalid(format!("no user named {username}")))
}

/// Checks that the viewer owns the class and that a change to it is `valid`; an invalid one
/// is audited under `action` with the reason. Returns the class's audit target.
pub async fn check_class_change(
    state: &HubState,
    viewer: &Viewer,
    class_id: i64,
    action: &str,
    valid: Result<(), String>,
) -> Result<String, ClassError> {
    owned_class(state, viewer, class_id).await?;
    let target = format!("class:{class_id}");
    if let Err(reason) = valid {
        audit::record(&state.db, viewer, action, &target, Outcome::Failed, &reason).await;
        return Err(ClassError::Invalid(reason));
    }
    Ok(target)
}

/// The classes someone's class list shows: every class for an admin; the ones they own or
/// assist in for a teacher; for a student the ones they joined and any they assist in.
pub async fn listed_classes(state: &HubState, viewer: &Viewer) -> Result<Vec<ClassRow>, DbError> {
    if viewer.is_admin() {
        return state.db.list_classes(None).await;
    }
    let mut classes = state.db.list_classes(Some(viewer.id)).await?;
    if !viewer.is_staff() {
        classes.extend(state.db.enrolled_classes(viewer.id).await?);
        classes.sort_by(|a, b| (&a.name, a.id).cmp(&(&b.name, b.id)));
        classes.dedup_by_key(|class| class.id);
    }
    Ok(classes)
}

/// How someone who may see a class stands in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ClassStanding {
    /// An owner or co-owner (or an admin): everything.
    Owner,
    /// A teaching assistant: sees the class and its VMs, starts, stops and resets them and
    /// opens their consoles; changes nothing about the class.
    Assistant,
}

/// The class, if the viewer owns it, assists in it or is an admin, and which of those.
pub async fn class_in_view(
    state: &HubState,
    viewer: &Viewer,
    class_id: i64,
) -> Result<(ClassRow, ClassStanding), ClassError> {
    let class = state
        .db
        .class(class_id)
        .await?
        .ok_or(ClassError::NotFound)?;
    if viewer.is_admin() || state.db.is_class_owner(class_id, viewer.id).await? {
        Ok((class, ClassStanding::Owner))
    } else if state.db.is_class_assistant(class_id, viewer.id).await? {
        Ok((class, ClassStanding::Assistant))
    } else {
        Err(ClassError::NotFound)
    }
}

/// The class, if the viewer owns it (or is an admin). Its assistants may see it, not
/// change it.
pub async fn owned_class(
    state: &HubState,
    viewer: &Viewer,
    class_id: i64,
) -> Result<ClassRow, ClassError> {
    match class_in_view(state, viewer, class_id).await? {
        (class, ClassStanding::Owner) => Ok(class),
        (_, ClassStanding::Assistant) => Err(ClassError::Forbidden(
            "assistants cannot change the class; ask one of its owners".into(),
        )),
    }
}

/// The storage of every image a VM has.
fn disk_storages(vm: &crate::db::inventory::VmRow) -> Vec<String> {
    let mut storages: Vec<String> = vm
        .disks
        .iter()
        .filter_map(|disk| disk.volid.split_once(':').map(|(s, _)| s.to_owned()))
        .collect();
    storages.sort();
    storages.dedup();
    storages
}

/// Whether VMs of `template` on `node` need a copy of the class base there: they do on
/// every node but the template's own that reaches one of its storages only as a node-local
/// storage of the same name.
async fn needs_own_base(
    state: &HubState,
    template: &crate::db::inventory::VmRow,
    node: &str,
) -> Result<bool, ClassError> {
    if node == template.node {
        return Ok(false);
    }
    // Another cluster's storage of the same name is another storage, shared or not.
    if other_clusters(state, node, &template.node).await? {
        return Ok(true);
    }
    let shared: Vec<String> = state
        .db
        .node_storages(node)
        .await?
        .into_iter()
        .filter(|(_, _, shared, _)| *shared)
        .map(|(storage, ..)| storage)
        .collect();
    Ok(disk_storages(template)
        .iter()
        .any(|storage| !shared.contains(storage)))
}

/// Whether two clusters are known and differ (a node whose agent has not said is in none).
fn apart(one: Option<i64>, other: Option<i64>) -> bool {
    matches!((one, other), (Some(one), Some(other)) if one != other)
}

/// Whether two nodes are known to be in different Proxmox clusters.
async fn other_clusters(state: &HubState, one: &str, other: &str) -> Result<bool, ClassError> {
    let cluster_of = |node: Option<crate::db::nodes::NodeRow>| node.and_then(|n| n.cluster);
    let one = cluster_of(state.db.node_by_name(one).await?);
    let other = cluster_of(state.db.node_by_name(other).await?);
    Ok(apart(one.map(|c| c.id), other.map(|c| c.id)))
}

/// The class bases a plan of VMs needs beyond those the class has: one on every node that
/// gets VMs and cannot reach the first base's disks.
async fn base_copies(
    state: &HubState,
    template: &crate::db::inventory::VmRow,
    nodes: impl IntoIterator<Item = &String>,
    existing: &[String],
) -> Result<Vec<(ClassVmKind, String)>, ClassError> {
    let mut copies: Vec<(ClassVmKind, String)> = Vec::new();
    for node in nodes {
        let planned = copies.iter().any(|(_, planned)| planned == node);
        if !planned && !existing.contains(node) && needs_own_base(state, template, node).await? {
            copies.push((ClassVmKind::Base, node.clone()));
        }
    }
    Ok(copies)
}

/// What a class's VMs are made from, for placement.
enum Source<'a> {
    Template(&'a crate::db::inventory::VmRow),
    /// Empty VMs with their disks on `storage`, in the cluster of `near` (a node of the
    /// class's VMs) when the class has some already.
    Empty {
        storage: &'a str,
        near: Option<&'a str>,
    },
}

/// What new VMs of a class are placed by.
struct Placing<'a> {
    template: Option<&'a crate::db::inventory::VmRow>,
    source: Source<'a>,
    pinned_node: Option<&'a str>,
    memory_mib: u64,
}

/// Where a class's new VMs go, for a new class and for added capacity alike: spread over the
/// candidate nodes, with the class base first (for a new class, on the template's node) and
/// a copy of it for each node that needs its own and has none among `existing_bases`.
async fn plan_vms(
    state: &HubState,
    placing: &Placing<'_>,
    kinds: Vec<ClassVmKind>,
    existing_bases: &[String],
) -> Result<Vec<(ClassVmKind, String)>, ClassError> {
    let candidates = candidates(state, &placing.source, placing.pinned_node).await?;
    let placement = placement::spread(&candidates, kinds.len(), placing.memory_mib);
    let mut plan = Vec::new();
    if let Some(template) = placing.template {
        if existing_bases.is_empty() {
            plan.push((ClassVmKind::Base, template.node.clone()));
        }
        plan.extend(base_copies(state, template, &placement, existing_bases).await?);
    }
    plan.extend(kinds.into_iter().zip(placement));
    Ok(plan)
}

/// The nodes that may take the class's VMs: online, in one cluster unless the class is
/// pinned to a node (the template's; for empty VMs, that of the class's VMs, or for a new
/// class the one with the node with most free memory), and having the storages of the template's disks (the
/// template's own node always has; another node reaches them through shared storage or gets
/// a copy of the class base on its own storage of the same name), or, for empty VMs, having
/// their storage.
async fn candidates(
    state: &HubState,
    source: &Source<'_>,
    pinned: Option<&str>,
) -> Result<Vec<Candidate>, ClassError> {
    let (storages, home) = match source {
        Source::Template(template) => (disk_storages(template), Some(template.node.as_str())),
        Source::Empty { storage, near } => (vec![(*storage).to_owned()], *near),
    };
    let overviews = state.db.node_overviews().await?;
    let cluster_of = |name: &str| {
        let overview = overviews.iter().find(|overview| overview.node.name == name);
        overview.and_then(|overview| overview.node.cluster.as_ref().map(|cluster| cluster.id))
    };
    let home_cluster = home.and_then(cluster_of);
    let mut found = Vec::new();
    for overview in &overviews {
        let node = &overview.node.name;
        if pinned.is_some_and(|pinned| pinned != node) {
            continue;
        }
        let cluster = cluster_of(node);
        if pinned.is_none() && apart(home_cluster, cluster) {
            continue;
        }
        let reachable = if home == Some(node.as_str()) {
            true
        } else {
            let usable: Vec<String> = state
                .db
                .node_storages(node)
                .await?
                .into_iter()
                .map(|(storage, ..)| storage)
                .collect();
            !storages.is_empty() && storages.iter().all(|storage| usable.contains(storage))
        };
        if reachable && state.registry.is_online(node) {
            let free_mib = overview
                .metrics
                .as_ref()
                .map(|m| m.memory_total_bytes.saturating_sub(m.memory_used_bytes) >> 20)
                .unwrap_or(0);
            found.push((
                cluster,
                Candidate {
                    node: node.clone(),
                    free_mib,
                },
            ));
        }
    }
    // A new class of empty VMs has no home yet: the cluster with the freest node is it.
    let home_cluster = match home_cluster {
        None if pinned.is_none() => found
            .iter()
            .max_by_key(|(_, candidate)| candidate.free_mib)
            .and_then(|(cluster, _)| *cluster),
        known => known,
    };
    let found: Vec<Candidate> = found
        .into_iter()
        .filter(|(cluster, _)| pinned.is_some() || !apart(home_cluster, *cluster))
        .map(|(_, candidate)| candidate)
        .collect();
    if found.is_empty() {
        return Err(ClassError::Conflict(match pinned {
            Some(node) => format!(
                "node {node} is offline or cannot reach the template's disks ({})",
                storages.join(", ")
            ),
            None => format!(
                "no online node can reach the storage {}",
                storages.join(", ")
            ),
        }));
    }
    Ok(found)
}

/// A class name: 1 to 64 printable characters.
pub(crate) fn check_class_name(name: &str) -> Result<(), ClassError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
        return Err(ClassError::Invalid(
            "a class name needs 1 to 64 printable characters".into(),
        ));
    }
    Ok(())
}

fn validate_request(request: &ClassRequest) -> Result<(), ClassError> {
    check_class_name(&request.name)?;
    if request.description.chars().count() > 2000 {
        return Err(ClassError::Invalid(
            "the description is limited to 2,000 characters".into(),
        ));
    }
    if request
        .cores
        .is_some_and(|cores| !(1..=128).contains(&cores))
    {
        return Err(ClassError::Invalid("a VM has 1 to 128 cores".into()));
    }
    if request
        .memory_mib
        .is_some_and(|memory| !(64..=1_048_576).contains(&memory))
    {
        return Err(ClassError::Invalid(
            "a VM has 64 MiB to 1 TiB of memory".into(),
        ));
    }
    let simple = |text: &str| {
        !text.is_empty()
            && text.len() <= 64
            && text
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    if request.template.is_none()
        && (!simple(&request.empty.storage)
            || !simple(&request.empty.bridge)
            || !(1..=65_536).contains(&request.empty.disk_gib))
    {
        return Err(ClassError::Invalid(
            "empty VMs need a storage, a bridge and a disk of 1 GiB to 64 TiB".into(),
        ));
    }
    if request.seats == 0 || request.seats > MAX_SEATS {
        return Err(ClassError::Invalid(format!(
            "a class has 1 to {MAX_SEATS} student VMs"
        )));
    }
    Ok(())
}

/// Creates a class and starts deploying it. Returns the class and job ids.
pub async fn create_class(
    state: &HubState,
    viewer: &Viewer,
    request: &ClassRequest,
) -> Result<(i64, i64), ClassError> {
    if !viewer.is_staff() {
        return Err(ClassError::NotFound);
    }
    validate_request(request)?;
    let template = match request.template {
        Some(key) => Some(
            state
                .db
                .vm(key)
                .await?
                .filter(|vm| vm.template)
                .ok_or_else(|| ClassError::Invalid(format!("VM {} is not a template", key.vmid)))?,
        ),
        None => None,
    };
    let source = match &template {
        Some(template) => Source::Template(template),
        None => Source::Empty {
            storage: &request.empty.storage,
            near: None,
        },
    };
    let memory = request.memory_mib.unwrap_or(match &template {
        Some(template) => template.memory_mib,
        None => EMPTY_VM_MEMORY_MIB,
    });
    let kinds = std::iter::once(ClassVmKind::Teacher)
        .chain(std::iter::repeat_n(
            ClassVmKind::Student,
            request.seats as usize,
        ))
        .collect();
    let placing = Placing {
        template: template.as_ref(),
        source,
        pinned_node: request.node.as_deref(),
        memory_mib: memory,
    };
    let plan = plan_vms(state, &placing, kinds, &[]).await?;
    let now = now_unix();
    let class_id = state
        .db
        .insert_class(
            &NewClass {
                name: request.name.trim().to_owned(),
                description: request.description.trim().to_owned(),
                template: request.template,
                pinned_node: request.node.clone(),
                seats: request.seats,
                cores: request
                    .cores
                    .or(template.is_none().then_some(EMPTY_VM_CORES)),
                memory_mib: request
                    .memory_mib
                    .or(template.is_none().then_some(EMPTY_VM_MEMORY_MIB)),
                disk_gib: template.is_none().then_some(request.empty.disk_gib),
                bridge: template.is_none().then(|| request.empty.bridge.clone()),
                storage: template.is_none().then(|| request.empty.storage.clone()),
            },
            viewer.id,
            now,
        )
        .await?;
    let reserved = state
        .db
        .reserve_vmids(class_id, &plan, VMID_RANGE, now)
        .await;
    let chosen = match reserved {
        Ok(_) if request.plugins.is_empty() => Ok(()),
        Ok(_) => choose_plugins(state, viewer, class_id, &request.plugins).await,
        Err(err) => Err(err.into()),
    };
    if let Err(err) = chosen {
        state.db.delete_class(class_id).await?;
        return Err(err);
    }
    let job = start_job(
        state,
        viewer,
        JobKind::Deploy,
        class_id,
        "class.create",
        &format!(
            "{} from {} with {} seats",
            request.name.trim(),
            request.template.map_or_else(
                || "no template".to_owned(),
                |key| format!("template {}", key.vmid)
            ),
            request.seats
        ),
    )
    .await?;
    Ok((class_id, job))
}

/// Adds student VMs to a class; they deploy in a new job, and waitlisted students get them.
pub async fn add_capacity(
    state: &HubState,
    viewer: &Viewer,
    class_id: i64,
    more: u32,
) -> Result<i64, ClassError> {
    let class = owned_class(state, viewer, class_id).await?;
    if more == 0 || more > MAX_SEATS {
        return Err(ClassError::Invalid(format!("add 1 to {MAX_SEATS} VMs")));
    }
    let template =
        match class.template {
            Some(vmid) => {
                Some(state.db.vm(vmid).await?.ok_or_else(|| {
                    ClassError::Conflict(format!("template {} is gone", vmid.vmid))
                })?)
            }
            None => None,
        };
    let storage = class.storage.clone().unwrap_or_default();
    let class_vms = state.db.class_vms(class_id).await?;
    let source = match &template {
        Some(template) => Source::Template(template),
        None => Source::Empty {
            storage: &storage,
            near: class_vms.first().map(|vm| vm.node.as_str()),
        },
    };
    let memory = class
        .memory_mib
        .or(template.as_ref().map(|template| template.memory_mib))
        .unwrap_or(EMPTY_VM_MEMORY_MIB);
    // The nodes with a base of the version new VMs are made from.
    let bases: Vec<String> = class_vms
        .iter()
        .filter(|vm| vm.kind == ClassVmKind::Base && vm.version == class.current_version)
        .map(|vm| vm.node.clone())
        .collect();
    let placing = Placing {
        template: template.as_ref(),
        source,
        pinned_node: class.pinned_node.as_deref(),
        memory_mib: memory,
    };
    let kinds = vec![ClassVmKind::Student; more as usize];
    let plan = plan_vms(state, &placing, kinds, &bases).await?;
    if !state
        .db
        .change_class_seats(class_id, i64::from(more), MAX_SEATS)
        .await?
    {
        return Err(ClassError::Invalid(format!(
            "a class has at most {MAX_SEATS} student VMs"
        )));
    }
    if let Err(err) = state
        .db
        .reserve_vmids(class_id, &plan, VMID_RANGE, now_unix())
        .await
    {
        state
            .db
            .change_class_seats(class_id, -i64::from(more), MAX_SEATS)
            .await?;
        return Err(err.into());
    }
    let job = start_job(
        state,
        viewer,
        JobKind::Deploy,
        class_id,
        "class.capacity",
        &format!("+{more} VMs"),
    )
    .await?;
    Ok(job)
}

/// Starts deleting a class: every VM and the base, then the class itself.
pub async fn delete_class(
    state: &HubState,
    viewer: &Viewer,
    class_id: i64,
) -> Result<i64, ClassError> {
    owned_class(state, viewer, class_id).await?;
    state
        .db
        .set_class_state(class_id, ClassState::Deleting)
        .await?;
    let job = start_job(state, viewer, JobKind::Delete, class_id, "class.delete", "").await?;
    Ok(job)
}

/// The VM of a class a reference names, if any. A bare VMID the class holds in two clusters
/// names neither: the answer asks for one of their keys.
pub fn class_vm_named(rows: &[ClassVmRow], vm: VmRef) -> Result<Option<&ClassVmRow>, ClassError> {
    let named: Vec<&ClassVmRow> = rows.iter().filter(|row| vm.matches(row.key)).collect();
    match named.as_slice() {
        [] => Ok(None),
        [row] => Ok(Some(row)),
        several => {
            let keys: Vec<String> = several.iter().map(|row| row.key.to_string()).collect();
            Err(ClassError::Invalid(format!(
                "this class has VMID {vm} in several clusters: name one as {}",
                keys.join(" or ")
            )))
        }
    }
}

/// Takes student VMs away from a class: they are destroyed with their disks by a job, and
/// their students go back to the waitlist.
pub async fn remove_vms(
    state: &HubState,
    viewer: &Viewer,
    class_id: i64,
    vmids: &[VmRef],
) -> Result<i64, ClassError> {
    owned_class(state, viewer, class_id).await?;
    let rows = state.db.class_vms(class_id).await?;
    let mut removed = 0;
    let mut names = Vec::new();
    for vmid in vmids {
        let row = class_vm_named(&rows, *vmid)?
            .filter(|vm| vm.kind == ClassVmKind::Student)
            .ok_or_else(|| {
                ClassError::Invalid(format!("VM {vmid} is not a student VM of this class"))
            })?;
        names.push(row.vmid);
        state
            .db
            .set_class_vm_state(row.key, ClassVmState::Removing, "", false, now_unix())
            .await?;
        state.db.unassign_vm(row.key).await?;
        removed += 1;
    }
    state
        .db
        .change_class_seats(class_id, -i64::from(removed), MAX_SEATS)
        .await?;
    let job = start_job(
        state,
        viewer,
        JobKind::Shrink,
        class_id,
        "class.capacity",
        &format!("-{removed} VMs: {names:?}"),
    )
    .await?;
    Ok(job)
}

/// Makes another teacher a co-owner, with full rights on the class.
pub async fn add_owner(
    state: &HubState,
    viewer: &Viewer,
    class_id: i64,
    username: &str,
) -> Result<(), ClassError> {
    owned_class(state, viewer, class_id).await?;
    let user = state
        .db
        .user_by_name(username)
        .await?
        .filter(|user| user.role >= crate::db::users::Role::Teacher && !user.disabled)
        .ok_or_else(|| ClassError::Invalid(format!("{username} is not an active teacher")))?;
    state.db.add_class_owner(class_id, user.id).await?;
    people_changed(state, viewer, class_id, "class.owner-add", username).await;
    Ok(())
}

/// Records a change of a class's people (owners, assistants) and tells its open pages.
async fn people_changed(
    state: &HubState,
    viewer: &Viewer,
    class_id: i64,
    action: &str,
    username: &str,
) {
    let target = format!("class:{class_id}");
    audit::record(&state.db, viewer, action, &target, Outcome::Ok, username).await;
    state.jobs.announce(class_id);
}

/// Makes someone (a teacher or a student) an assistant of the class.
pub async fn add_assistant(
    state: &HubState,
    viewer: &Viewer,
    class_id: i64,
    username: &str,
) -> Result<(), ClassError> {
    owned_class(state, viewer, class_id).await?;
    let user = state
        .db
        .user_by_name(username.trim())
        .await?
        .filter(|user| !user.disabled)
        .ok_or_else(|| ClassError::Invalid(format!("{username} is not an active account")))?;
    if state.db.is_class_owner(class_id, user.id).await? {
        return Err(ClassError::Conflict(format!(
            "{username} owns the class already"
        )));
    }
    state.db.add_class_assistant(class_id, user.id).await?;
    people_changed(state, viewer, class_id, "class.assistant-add", username).await;
    Ok(())
}

/// Ends someone's assisting in the class.
pub async fn remove_assistant(
    state: &HubState,
    viewer: &Viewer,
    class_id: i64,
    username: &str,
) -> Result<(), ClassError> {
    owned_class(state, viewer, class_id).await?;
    let user = user_named(state, username).await?;
    if !state.db.remove_class_assistant(class_id, user.id).await? {
        return Err(ClassError::Conflict(format!(
            "{username} is not an assistant of this class"
        )));
    }
    people_changed(state, viewer, class_id, "class.assistant-remove", username).await;
    Ok(())
}

/// Removes a co-owner; a class always keeps one owner.
pub async fn remove_owner(
    state: &HubState,
    viewer: &Viewer,
    class_id: i64,
    username: &str,
) -> Result<(), ClassError> {
    owned_class(state, viewer, class_id).await?;
    let user = user_named(state, username).await?;
    if !state.db.remove_class_owner(class_id, user.id).await? {
        return Err(ClassError::Conflict(format!(
            "{username} is not a co-owner, or the class's last owner"
        )));
    }
    people_changed(state, viewer, class_id, "class.owner-remove", username).await;
    Ok(())
}

/// Removes a student from a class; their VM is made fresh (see [`start_recycling`]) and then
/// goes to the waitlist. Returns the job doing that, if they held a VM.
pub async fn remove_student(
    state: &HubState,
    viewer: &Viewer,
    class_id: i64,
    username: &str,
) -> Result<Option<i64>, ClassError> {
    owned_class(state, viewer, class_id).await?;
    let user = user_named(state, username).await?;
    let recycling = if state.db.remove_enrollment(class_id, user.id).await? {
        Some(start_recycling(state, viewer, class_id).await?)
    } else {
        None
    };
    audit::record(
        &state.db,
        viewer,
        "class.student-remove",
        &format!("class:{class_id}"),
        Outcome::Ok,
        username,
    )
    .await;
    state.jobs.announce(class_id);
    Ok(recycling)
}

/// Starts making the class's `recycling` VMs fresh for their next student: nobody gets a VM
/// with someone else's disk. A reset to the class base, or, in a class without a template,
/// a new empty VM; then the waitlist is served.
pub async fn start_recycling(
    state: &HubState,
    viewer: &Viewer,
    class_id: i64,
) -> Result<i64, ClassError> {
    start_job(
        state,
        viewer,
        JobKind::Recycle,
        class_id,
        "class.recycle",
        "",
    )
    .await
}

/// Gives free VMs to waitlisted students, in join order.
pub async fn serve_waitlist(state: &HubState, class_id: i64) -> Result<(), ClassError> {
    for (user, username) in state.db.waitlist(class_id).await? {
        match state.db.assign_free_vm(class_id, user, now_unix()).await? {
            JoinOutcome::Assigned(vmid) => {
                crate::domain::plugins::tell_assignment(state, class_id, vmid, &username).await
            }
            JoinOutcome::Waitlisted => break,
        }
    }
    Ok(())
}

/// What an invite link asks of the people who open it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InviteRules {
    /// `None` never expires.
    pub ttl: Option<Duration>,
    pub seat_limit: Option<u32>,
    /// Only accounts whose email is in this domain (`school.edu`) may join.
    pub domain: Option<String>,
    /// Only people on the class's roster may join.
    pub roster_only: bool,
}

/// A new invite for a class (the old link stops working at once). Returns the invite token,
/// shown in the link.
pub async fn rotate_invite(
    state: &HubState,
    viewer: &Viewer,
    class_id: i64,
    rules: &InviteRules,
) -> Result<String, ClassError> {
    owned_class(state, viewer, class_id).await?;
    if rules.seat_limit == Some(0) {
        return Err(ClassError::Invalid(
            "a seat limit is at least 1 (leave it out for none)".into(),
        ));
    }
    let domain = match rules.domain.as_deref().map(str::trim) {
        None | Some("") => String::new(),
        Some(domain) => {
            let domain = domain.trim_start_matches('@').to_lowercase();
            let valid = domain.contains('.')
                && domain.len() <= 253
                && domain
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-'));
            if !valid {
                return Err(ClassError::Invalid(format!(
                    "{domain:?} is not an email domain like school.edu"
                )));
            }
            domain
        }
    };
    let nonce = invites::new_nonce();
    let token = state.invite_key.token(class_id, &nonce);
    let expires_at = rules.ttl.map(|ttl| now_unix() + ttl.as_secs() as i64);
    let invite = crate::db::classes::NewInvite {
        hash: &hash_secret(&token),
        nonce: Some(&nonce),
        expires_at,
        seat_limit: rules.seat_limit,
        domain: &domain,
        roster_only: rules.roster_only,
    };
    state.db.set_invite(class_id, &invite).await?;
    let mut detail = match expires_at {
        Some(at) => format!("expires {}", crate::domain::tokens::format_time(at)),
        None => "never expires".into(),
    };
    if !domain.is_empty() {
        detail.push_str(&format!("; accounts of {domain} only"));
    }
    if rules.roster_only {
        detail.push_str("; the roster only");
    }
    audit::record(
        &state.db,
        viewer,
        "class.invite",
        &format!("class:{class_id}"),
        Outcome::Ok,
        &detail,
    )
    .await;
    Ok(token)
}

/// Whether an account may use a class's invite: in the invite's email domain, on the roster,
/// as the invite asks.
async fn may_use_invite(
    state: &HubState,
    class: &ClassRow,
    viewer: &Viewer,
) -> Result<(), ClassError> {
    if !class.invite_domain.is_empty() {
        let user = state
            .db
            .user_by_id(viewer.id)
            .await?
            .ok_or(ClassError::NotFound)?;
        let in_domain = user
            .email
            .rsplit_once('@')
            .is_some_and(|(_, domain)| domain.eq_ignore_ascii_case(&class.invite_domain));
        if !in_domain {
            return Err(ClassError::Invalid(format!(
                "this invite is for accounts of {} only: sign in with your school account",
                class.invite_domain
            )));
        }
    }
    if class.invite_roster_only && !state.db.on_roster(class.id, viewer.id).await? {
        return Err(ClassError::Invalid(
            "this invite is for the people on the class's roster only; ask your teacher".into(),
        ));
    }
    Ok(())
}

/// The token of a class's current invite, for its owners to see again: `None` without an
/// invite, or for one made before links could be shown again.
pub fn current_invite(state: &HubState, class: &ClassRow) -> Option<String> {
    let nonce = class.invite_nonce.as_deref().filter(|_| class.has_invite)?;
    Some(state.invite_key.token(class.id, nonce))
}

/// The class an invite opens, if it is valid now.
pub async fn class_for_invite(state: &HubState, token: &str) -> Result<ClassRow, ClassError> {
    let class = state
        .db
        .class_by_invite(&hash_secret(token))
        .await?
        .filter(|class| class.state == ClassState::Active)
        .ok_or_else(|| ClassError::Invalid("this invite link is not valid (any more)".into()))?;
    if class.invite_expires_at.is_some_and(|at| at <= now_unix()) {
        return Err(ClassError::Invalid("this invite link has expired".into()));
    }
    Ok(class)
}

/// Accounts made through invite links: at most this many per invite and per client address
/// in [`REGISTRATION_WINDOW`] (a classroom behind one address still fits).
pub const REGISTRATIONS_PER_WINDOW: usize = 60;
pub const REGISTRATION_WINDOW: Duration = Duration::from_secs(10 * 60);

pub fn registration_limit() -> crate::throttle::RateLimit {
    crate::throttle::RateLimit::new(REGISTRATIONS_PER_WINDOW, REGISTRATION_WINDOW)
}

/// Creates a student account through an invite link (when an admin allows it) and joins the
/// class with it. The invite and the class's room are checked first, and the account is
/// removed again if the class filled up meanwhile, so a refused registration leaves nothing.
/// A taken username gets the same answer as any unusable one.
pub async fn register_and_join(
    state: &HubState,
    token: &str,
    username: &str,
    password: &str,
    from: std::net::IpAddr,
) -> Result<(Viewer, ClassRow, JoinOutcome), ClassError> {
    if !state
        .db
        .flag(crate::db::settings::SELF_REGISTRATION)
        .await?
    {
        return Err(ClassError::Invalid(
            "this site does not let students create their own accounts; ask your teacher".into(),
        ));
    }
    let class = class_for_invite(state, token).await?;
    if !class.invite_domain.is_empty() || class.invite_roster_only {
        return Err(ClassError::Invalid(
            "this invite is only for accounts the school knows: sign in instead".into(),
        ));
    }
    if let Some(limit) = class.invite_seat_limit
        && state.db.enrollment_count(class.id).await? >= i64::from(limit)
    {
        return Err(ClassError::Conflict("this class is full".into()));
    }
    let address = from.to_string();
    if let Err(wait) = state.registrations.take(
        &[&format!("invite:{}", class.id), &address],
        std::time::Instant::now(),
    ) {
        return Err(ClassError::Conflict(format!(
            "too many accounts were created here just now; try again in {} minutes",
            wait.as_secs().div_ceil(60)
        )));
    }
    let username = username.trim();
    crate::domain::accounts::create_user(
        &state.db,
        username,
        crate::db::users::Role::Student,
        Some(password),
    )
    .await
    .map_err(|err| match err {
        crate::domain::accounts::AccountError::Invalid(message) => ClassError::Invalid(message),
        crate::domain::accounts::AccountError::Db(DbError::Conflict(_)) => ClassError::Invalid(
            format!("the username {username} cannot be used; choose another"),
        ),
        crate::domain::accounts::AccountError::Db(err) => ClassError::Db(err),
    })?;
    let user = state
        .db
        .user_by_name(username)
        .await?
        .ok_or(ClassError::NotFound)?;
    let viewer = Viewer::from(&user);
    let (class, outcome) = match join(state, &viewer, token).await {
        Ok(joined) => joined,
        Err(err) => {
            state.db.delete_new_user(user.id).await?;
            return Err(err);
        }
    };
    audit::record(
        &state.db,
        &viewer,
        "user.register",
        &format!("user:{username}"),
        Outcome::Ok,
        &format!("through an invite link, from {from}"),
    )
    .await;
    Ok((viewer, class, outcome))
}

/// Enrolls the viewer through an invite and gives them a VM if one is free.
pub async fn join(
    state: &HubState,
    viewer: &Viewer,
    token: &str,
) -> Result<(ClassRow, JoinOutcome), ClassError> {
    let class = class_for_invite(state, token).await?;
    may_use_invite(state, &class, viewer).await?;
    let outcome = state
        .db
        .join_class(class.id, viewer.id, now_unix())
        .await?
        .ok_or_else(|| ClassError::Conflict("this class is full".into()))?;
    audit::record(
        &state.db,
        viewer,
        "class.join",
        &format!("class:{}", class.id),
        Outcome::Ok,
        &match outcome {
            JoinOutcome::Assigned(vmid) => format!("got VM {vmid}"),
            JoinOutcome::Waitlisted => "waitlisted".into(),
        },
    )
    .await;
    if let JoinOutcome::Assigned(vmid) = outcome {
        crate::domain::plugins::tell_assignment(state, class.id, vmid, &viewer.username).await;
    }
    state.jobs.announce(class.id);
    Ok((class, outcome))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(vmid: u32, kind: &str, node: &str, state: &str) -> ClassVmRow {
        ClassVmRow {
            key: VmKey::new(1, vmid),
            vmid,
            class_id: 1,
            kind: ClassVmKind::parse(kind).unwrap(),
            node: node.into(),
            state: ClassVmState::parse(state).unwrap(),
            attempts: 0,
            error: String::new(),
            assignee: None,
            identity: None,
            version: Some(1),
            adopted: None,
        }
    }

    #[test]
    fn a_bare_vmid_names_a_class_vm_only_while_one_cluster_has_it() {
        let rows = vec![
            row(200, "student", "pve1", "ready"),
            ClassVmRow {
                key: VmKey::new(2, 200),
                ..row(200, "student", "b-pve1", "ready")
            },
            row(201, "student", "pve1", "ready"),
        ];
        let named = |text: &str| class_vm_named(&rows, text.parse().unwrap());
        assert_eq!(
            named("201").unwrap().map(|vm| vm.key),
            Some(VmKey::new(1, 201))
        );
        assert_eq!(
            named("2-200").unwrap().map(|vm| vm.key),
            Some(VmKey::new(2, 200))
        );
        assert_eq!(named("202").unwrap(), None);
        assert_eq!(named("3-200").unwrap(), None);
        let Err(ClassError::Invalid(said)) = named("200") else {
            panic!("VMID 200 of two clusters named one VM");
        };
        assert!(said.contains("1-200 or 2-200"), "{said}");
    }

    #[test]
    fn a_deployment_reports_its_stage_and_each_node() {
        let mut rows = vec![
            row(1, "base", "pve1", "planned"),
            row(2, "base", "pve2", "planned"),
            row(3, "student", "pve1", "planned"),
            row(4, "student", "pve2", "planned"),
            row(5, "teacher", "pve2", "planned"),
        ];
        let stage = |rows: &[ClassVmRow]| deployment_stage(rows, Some(1));
        assert_eq!(
            stage(&rows).as_deref(),
            Some("Making the class base from the template")
        );
        rows[0].state = ClassVmState::Ready;
        assert_eq!(
            stage(&rows).as_deref(),
            Some("Copying the base to 1 more node")
        );
        rows[1].state = ClassVmState::Ready;
        rows[2].state = ClassVmState::Ready;
        assert_eq!(stage(&rows).as_deref(), Some("Making VMs: 2 to go"));
        let nodes = node_progress(&rows);
        assert_eq!(
            nodes,
            vec![
                NodeProgress {
                    node: "pve1".into(),
                    base_ready: Some(true),
                    ready: 1,
                    total: 1
                },
                NodeProgress {
                    node: "pve2".into(),
                    base_ready: Some(true),
                    ready: 0,
                    total: 2
                },
            ]
        );
        rows[3].state = ClassVmState::Ready;
        rows[4].state = ClassVmState::Failed;
        assert_eq!(stage(&rows), None, "a failed VM is not waited for");
        // On shared storage one base serves every node: the others wait for no base.
        let shared = vec![
            row(1, "base", "pve1", "ready"),
            row(2, "student", "pve2", "ready"),
        ];
        let nodes = node_progress(&shared);
        assert_eq!(
            (nodes[0].base_ready, nodes[1].base_ready),
            (Some(true), None)
        );
    }

    #[test]
    fn a_publish_reports_its_stage_and_the_new_bases_of_each_node() {
        let mut rows = vec![
            row(1, "base", "pve1", "ready"),
            row(2, "base", "pve2", "ready"),
            row(3, "teacher", "pve1", "ready"),
            row(4, "student", "pve2", "ready"),
            ClassVmRow {
                version: Some(2),
                ..row(5, "base", "pve1", "planned")
            },
            ClassVmRow {
                version: Some(2),
                ..row(6, "base", "pve2", "planned")
            },
        ];
        let stage = |rows: &[ClassVmRow]| deployment_stage(rows, Some(1));
        assert_eq!(
            stage(&rows).as_deref(),
            Some("Publishing version 2: making its base from the teacher VM")
        );
        assert_eq!(
            node_progress(&rows)
                .iter()
                .map(|node| node.base_ready)
                .collect::<Vec<_>>(),
            [Some(false), Some(false)],
            "the bars follow the new version's bases"
        );
        rows[4].state = ClassVmState::Ready;
        assert_eq!(
            stage(&rows).as_deref(),
            Some("Publishing version 2: copying its base to 1 more node")
        );
        rows[5].state = ClassVmState::Ready;
        assert_eq!(
            stage(&rows).as_deref(),
            Some("Publishing version 2: moving the teacher VM onto it")
        );
        assert_eq!(deployment_stage(&rows, Some(2)), None, "published");
    }

    #[test]
    fn vm_name_stems_are_dns_names() {
        assert_eq!(name_stem("Web Dev 101", 3), "web-dev-101");
        assert_eq!(name_stem("  Réseaux & Sécurité!! ", 4), "r-seaux-s-curit");
        assert_eq!(name_stem("2024 networks", 5), "class5-2024-networks");
        assert_eq!(name_stem("***", 6), "class6");
        let long = name_stem(&"a".repeat(100), 7);
        assert!(long.len() <= 40);
        for stem in ["web-dev-101", "class5-2024-networks", "class6"] {
            proxlab_pve_name_check(&format!("{stem}-s01"));
        }
    }

    fn proxlab_pve_name_check(name: &str) {
        let ok = name.len() <= 63
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !name.starts_with('-')
            && !name.ends_with('-');
        assert!(ok, "{name}");
    }
}
