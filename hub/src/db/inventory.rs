//! What agents report, as the hub keeps it: VMs, storages, ISO images, node load.

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use proxlab_protocol::inventory::PowerState;
use proxlab_protocol::inventory::{
    DiskInfo, Inventory, InventoryDelta, IpAddress, IsoInfo, NicInfo, NodeMetrics, StorageInfo,
};
use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Db, DbError};
use crate::vm_key::{VmKey, VmRef};

/// A VM as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct VmRow {
    /// Its cluster and VMID: what the hub knows it by.
    pub key: VmKey,
    /// Its VMID on its cluster (`key.vmid`).
    pub vmid: u32,
    pub node: String,
    /// The name of its node's Proxmox cluster (empty until the node's agent reports it).
    pub cluster: String,
    pub name: String,
    pub status: PowerState,
    pub template: bool,
    pub cores: u32,
    pub sockets: u32,
    pub memory_mib: u64,
    pub tags: Vec<String>,
    pub lock: Option<String>,
    pub uptime_secs: u64,
    pub cpu: f64,
    pub mem_bytes: u64,
    pub disks: Vec<DiskInfo>,
    pub nics: Vec<NicInfo>,
    pub ips: Vec<IpAddress>,
    pub status_changed_at: i64,
    pub updated_at: i64,
    /// The user the VM is assigned to, if any.
    pub assignee: Option<String>,
    /// The class the VM belongs to, if any.
    pub class_id: Option<i64>,
    /// Whether that class was made from a template and the VM can be reset to it (not an
    /// adopted VM that is no linked clone of it).
    pub class_has_template: bool,
    /// Its SMBIOS UUID as the node reported it (see `VmInfo::identity`).
    pub identity: Option<String>,
    /// The name of the class it belongs to.
    pub class_name: Option<String>,
    /// Why proxlab itself last stopped it ("Stopped after 30 min idle"), until it starts.
    pub stop_reason: Option<String>,
    /// The class version a reset moves this VM to: set when the class's current version is
    /// newer than the VM's and rolls out on reset (or at once, and this VM was missed).
    pub newer_version: Option<i64>,
    /// Config keys whose change waits for the VM's next start.
    pub pending: Vec<String>,
}

#[cfg(test)]
impl VmRow {
    /// A stopped VM with nothing in it, outside every class, for unit tests.
    pub(crate) fn sample(vmid: u32) -> Self {
        Self {
            key: VmKey::new(1, vmid),
            vmid,
            node: "pve1".into(),
            cluster: "lab".into(),
            name: "vm".into(),
            status: PowerState::Stopped,
            template: false,
            cores: 1,
            sockets: 1,
            memory_mib: 512,
            tags: vec![],
            lock: None,
            uptime_secs: 0,
            cpu: 0.0,
            mem_bytes: 0,
            disks: vec![],
            nics: vec![],
            ips: vec![],
            status_changed_at: 0,
            updated_at: 0,
            assignee: None,
            class_id: None,
            class_has_template: false,
            identity: None,
            class_name: None,
            stop_reason: None,
            newer_version: None,
            pending: vec![],
        }
    }
}

/// Which VMs a listing returns. Every field narrows the result.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VmFilter {
    /// Only VMs this user may see: assigned to them, or in a class they own.
    pub visible_to: Option<i64>,
    pub node: Option<String>,
    /// Only the VMs of this cluster's nodes (by cluster name).
    pub cluster: Option<String>,
    /// Only the VMs of this cluster (by id).
    pub cluster_id: Option<i64>,
    pub status: Option<String>,
    /// A case-insensitive part of the name.
    pub name_contains: Option<String>,
    pub template: Option<bool>,
    /// Only VMs of a class (`true`) or outside every class (`false`).
    pub in_class: Option<bool>,
    /// Only the VMs of this class.
    pub class_id: Option<i64>,
    /// Only these VMs.
    pub keys: Option<Vec<VmKey>>,
    /// One page of the result (by VMID order), or all of it.
    pub page: Option<PageRange>,
}

impl VmFilter {
    /// The templates teachers build classes from: class bases are templates too, but proxlab's
    /// own, and not listed.
    pub fn templates() -> Self {
        Self {
            template: Some(true),
            in_class: Some(false),
            ..Self::default()
        }
    }
}

/// A slice of a listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRange {
    pub limit: u32,
    pub offset: u32,
}

/// Why a request's VM reference names no single VM.
#[derive(Debug, thiserror::Error)]
pub enum VmRefError {
    #[error("no such VM")]
    NotFound,
    /// VMs of several clusters have this VMID: these.
    #[error("{}", ambiguous(.0))]
    Ambiguous(Vec<VmKey>),
    #[error(transparent)]
    Db(#[from] DbError),
}

fn ambiguous(keys: &[VmKey]) -> String {
    let vmid = keys.first().map_or(0, |key| key.vmid);
    let keys: Vec<String> = keys.iter().map(VmKey::to_string).collect();
    format!(
        "VMs of several clusters have VMID {vmid}: name one as {}",
        keys.join(" or ")
    )
}

/// A value for a `$N` placeholder.
enum Bind {
    Int(i64),
    Text(String),
}

type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>;

fn bind_all(mut query: AnyQuery<'_>, binds: Vec<Bind>) -> AnyQuery<'_> {
    for bind in binds {
        query = match bind {
            Bind::Int(value) => query.bind(value),
            Bind::Text(value) => query.bind(value),
        };
    }
    query
}

/// The `WHERE` clause of a VM filter and the values of its placeholders.
fn vm_conditions(filter: &VmFilter) -> (String, Vec<Bind>) {
    let mut conditions = vec!["1 = 1".to_owned()];
    let mut binds = Vec::new();
    let mut add = |condition: &str, bind: Bind| {
        binds.push(bind);
        conditions.push(condition.replace('?', &format!("${}", binds.len())));
    };
    if let Some(user) = filter.visible_to {
        add(
            "(a.user_id = ? OR cv.class_id IN (SELECT o.class_id FROM class_owners o WHERE o.user_id = ? \
             UNION SELECT t.class_id FROM class_assistants t WHERE t.user_id = ?))",
            Bind::Int(user),
        );
    }
    if let Some(node) = &filter.node {
        add("n.name = ?", Bind::Text(node.clone()));
    }
    if let Some(cluster) = &filter.cluster {
        add("ck.name = ?", Bind::Text(cluster.clone()));
    }
    if let Some(cluster_id) = filter.cluster_id {
        add("v.cluster_id = ?", Bind::Int(cluster_id));
    }
    if let Some(status) = &filter.status {
        add("v.status = ?", Bind::Text(status.clone()));
    }
    if let Some(part) = &filter.name_contains {
        let pattern = format!("%{}%", escape_like(&part.to_lowercase()));
        add("LOWER(v.name) LIKE ?", Bind::Text(pattern));
    }
    if let Some(template) = filter.template {
        add("v.template = ?", Bind::Int(i64::from(template)));
    }
    if let Some(class_id) = filter.class_id {
        add("cv.class_id = ?", Bind::Int(class_id));
    }
    match filter.in_class {
        Some(true) => conditions.push("cv.class_id IS NOT NULL".to_owned()),
        Some(false) => conditions.push("cv.class_id IS NULL".to_owned()),
        None => {}
    }
    if let Some(keys) = &filter.keys {
        // Numbers, so they can be written into the statement safely.
        let mut by_cluster: std::collections::BTreeMap<i64, Vec<String>> = Default::default();
        for key in keys {
            by_cluster
                .entry(key.cluster)
                .or_default()
                .push(key.vmid.to_string());
        }
        let list: Vec<String> = by_cluster
            .iter()
            .map(|(cluster, vmids)| {
                format!(
                    "(v.cluster_id = {cluster} AND v.vmid IN ({}))",
                    vmids.join(", ")
                )
            })
            .collect();
        conditions.push(if list.is_empty() {
            "1 = 0".to_owned()
        } else {
            format!("({})", list.join(" OR "))
        });
    }
    (conditions.join(" AND "), binds)
}

/// The tables a VM listing reads.
const VM_TABLES: &str = "vms v JOIN nodes n ON n.id = v.node_id \
     LEFT JOIN clusters ck ON ck.id = v.cluster_id \
     LEFT JOIN vm_assignments a ON a.cluster_id = v.cluster_id AND a.vmid = v.vmid \
     LEFT JOIN users u ON u.id = a.user_id \
     LEFT JOIN class_vms cv ON cv.cluster_id = v.cluster_id AND cv.vmid = v.vmid \
     LEFT JOIN classes cl ON cl.id = cv.class_id \
     LEFT JOIN vm_stop_reasons sr ON sr.cluster_id = v.cluster_id AND sr.vmid = v.vmid \
     LEFT JOIN class_versions cver ON cver.class_id = cl.id AND cver.number = cl.current_version";

const VM_COLUMNS: &str = "v.cluster_id, v.vmid, n.name AS node, ck.name AS cluster, v.name, v.status, v.template, v.cores, v.sockets, \
     v.memory_mib, v.tags, v.lock_reason, v.uptime_secs, v.cpu, v.mem_bytes, v.disks_json, \
     v.nics_json, v.ips_json, v.status_changed_at, v.updated_at, u.username AS assignee, cv.class_id, CASE WHEN cv.adopted = 'plain' THEN NULL ELSE cl.template_vmid END AS class_template, cl.name AS class_name, v.identity, \
     sr.reason AS stop_reason, cv.kind AS class_kind, cv.version AS class_vm_version, \
     cl.current_version AS class_current_version, cver.rollout AS class_rollout, v.pending";

fn json_list<T: serde::de::DeserializeOwned>(
    row: &AnyRow,
    column: &str,
) -> Result<Vec<T>, sqlx::Error> {
    let text: String = row.try_get(column)?;
    Ok(serde_json::from_str(&text).unwrap_or_default())
}

/// A `;`-separated list, as tags and pending keys are stored.
fn split_list(text: &str) -> Vec<String> {
    text.split(';')
        .filter(|item| !item.is_empty())
        .map(str::to_owned)
        .collect()
}

fn vm_from_row(row: &AnyRow) -> Result<VmRow, sqlx::Error> {
    let tags: String = row.try_get("tags")?;
    let pending: String = row.try_get("pending")?;
    let vmid = row.try_get::<i64, _>("vmid")? as u32;
    Ok(VmRow {
        key: VmKey::new(row.try_get("cluster_id")?, vmid),
        vmid,
        node: row.try_get("node")?,
        cluster: row
            .try_get::<Option<String>, _>("cluster")?
            .unwrap_or_default(),
        name: row.try_get("name")?,
        status: super::states::column(row, "status", parse_power_state)?,
        template: row.try_get::<i64, _>("template")? != 0,
        cores: row.try_get::<i64, _>("cores")? as u32,
        sockets: row.try_get::<i64, _>("sockets")? as u32,
        memory_mib: row.try_get::<i64, _>("memory_mib")? as u64,
        tags: split_list(&tags),
        lock: row.try_get("lock_reason")?,
        uptime_secs: row.try_get::<i64, _>("uptime_secs")? as u64,
        cpu: row.try_get("cpu")?,
        mem_bytes: row.try_get::<i64, _>("mem_bytes")? as u64,
        disks: json_list(row, "disks_json")?,
        nics: json_list(row, "nics_json")?,
        ips: json_list(row, "ips_json")?,
        status_changed_at: row.try_get("status_changed_at")?,
        updated_at: row.try_get("updated_at")?,
        assignee: row.try_get("assignee")?,
        class_id: row.try_get("class_id")?,
        class_has_template: row.try_get::<Option<i64>, _>("class_template")?.is_some(),
        identity: row.try_get("identity")?,
        class_name: row.try_get("class_name")?,
        stop_reason: row.try_get("stop_reason")?,
        newer_version: newer_version(row)?,
        pending: split_list(&pending),
    })
}

fn newer_version(row: &AnyRow) -> Result<Option<i64>, sqlx::Error> {
    let kind: Option<String> = row.try_get("class_kind")?;
    let mine: Option<i64> = row.try_get("class_vm_version")?;
    let current: Option<i64> = row.try_get("class_current_version")?;
    let rollout: Option<String> = row.try_get("class_rollout")?;
    let moves_on_reset = matches!(rollout.as_deref(), Some("now" | "next-reset"));
    Ok(current.filter(|current| {
        kind.as_deref().is_some_and(|kind| kind != "base")
            && moves_on_reset
            && mine.is_some_and(|mine| mine != *current)
    }))
}

/// A power state as the inventory and the API spell it.
pub fn power_state_text(state: PowerState) -> &'static str {
    match state {
        PowerState::Running => "running",
        PowerState::Stopped => "stopped",
        PowerState::Paused => "paused",
        PowerState::Unknown => "unknown",
    }
}

/// A stored power state; an unknown word is a decoding error.
fn parse_power_state(text: &str) -> Option<PowerState> {
    [
        PowerState::Running,
        PowerState::Stopped,
        PowerState::Paused,
        PowerState::Unknown,
    ]
    .into_iter()
    .find(|state| power_state_text(*state) == text)
}

fn status_text(vm: &proxlab_protocol::inventory::VmInfo) -> String {
    power_state_text(vm.status).to_owned()
}

/// The node a batch of reports came from, read once for all of them.
#[derive(Debug, Clone, Copy)]
struct Reporter {
    id: i64,
    /// Its cluster: the VMs it reports are that cluster's.
    cluster_id: i64,
}

async fn reporter(conn: &mut sqlx::AnyConnection, node: &str) -> Result<Reporter, DbError> {
    let cluster_id = super::nodes::node_cluster(conn, node).await?;
    let row = sqlx::query("SELECT id FROM nodes WHERE name = $1")
        .bind(node)
        .fetch_one(&mut *conn)
        .await?;
    Ok(Reporter {
        id: row.try_get("id")?,
        cluster_id,
    })
}

/// Stores a VM as its node reported it (a VM that moved between the cluster's nodes keeps
/// its row).
async fn upsert_vm(
    conn: &mut sqlx::AnyConnection,
    node: &Reporter,
    vm: &proxlab_protocol::inventory::VmInfo,
    now: i64,
) -> Result<(), DbError> {
    sqlx::query(
        "INSERT INTO vms (cluster_id, vmid, node_id, name, status, template, cores, sockets, memory_mib, tags, \
         lock_reason, uptime_secs, cpu, mem_bytes, disks_json, nics_json, ips_json, status_changed_at, updated_at, identity, pending) \
         VALUES ($20, $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $17, $18, $19) \
         ON CONFLICT (cluster_id, vmid) DO UPDATE SET node_id = excluded.node_id, name = excluded.name, \
         status_changed_at = CASE WHEN vms.status = excluded.status THEN vms.status_changed_at ELSE excluded.status_changed_at END, \
         status = excluded.status, template = excluded.template, cores = excluded.cores, \
         sockets = excluded.sockets, memory_mib = excluded.memory_mib, tags = excluded.tags, \
         lock_reason = excluded.lock_reason, uptime_secs = excluded.uptime_secs, cpu = excluded.cpu, \
         mem_bytes = excluded.mem_bytes, disks_json = excluded.disks_json, nics_json = excluded.nics_json, \
         ips_json = excluded.ips_json, updated_at = excluded.updated_at, identity = excluded.identity, \
         pending = excluded.pending",
    )
    .bind(i64::from(vm.vmid))
    .bind(node.id)
    .bind(&vm.name)
    .bind(status_text(vm))
    .bind(i64::from(vm.template))
    .bind(i64::from(vm.cores))
    .bind(i64::from(vm.sockets))
    .bind(vm.memory_mib as i64)
    .bind(vm.tags.join(";"))
    .bind(vm.lock.as_deref())
    .bind(vm.uptime_secs as i64)
    .bind(vm.cpu)
    .bind(vm.mem_bytes as i64)
    .bind(json(&vm.disks))
    .bind(json(&vm.nics))
    .bind(json(&vm.ips))
    .bind(now)
    .bind(vm.identity.as_deref())
    .bind(vm.pending.join(";"))
    .bind(node.cluster_id)
    .execute(&mut *conn)
    .await?;
    if let Some(identity) = &vm.identity {
        follow_identity(conn, VmKey::new(node.cluster_id, vm.vmid), identity, now).await?;
    }
    Ok(())
}

/// A VM left its node. An assignment to a VM with a known identity stays (the same VM may
/// come back, moved to another node; another VM under its number ends it, see
/// [`follow_identity`]); one to a VM that never had an identity ends now, since nothing
/// could tell a newcomer under the same VMID from it.
async fn remove_vm(
    conn: &mut sqlx::AnyConnection,
    node: &Reporter,
    vmid: i64,
) -> Result<(), DbError> {
    let removed =
        sqlx::query("DELETE FROM vms WHERE cluster_id = $1 AND vmid = $2 AND node_id = $3")
            .bind(node.cluster_id)
            .bind(vmid)
            .bind(node.id)
            .execute(&mut *conn)
            .await?;
    if removed.rows_affected() > 0 {
        sqlx::query(
            "DELETE FROM vm_assignments WHERE cluster_id = $1 AND vmid = $2 AND identity IS NULL",
        )
        .bind(node.cluster_id)
        .bind(vmid)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// What a VM's identity decides (see `VmInfo::identity`): an assignment or class seat made
/// for another VM under this VMID ends (the student goes back to the waitlist; the class
/// VM is marked failed for good, and destroying it later will not touch the newcomer), and
/// ones made before the VM was first seen take its identity.
async fn follow_identity(
    conn: &mut sqlx::AnyConnection,
    key: VmKey,
    identity: &str,
    now: i64,
) -> Result<(), DbError> {
    let vmid = i64::from(key.vmid);
    sqlx::query(
        "DELETE FROM vm_assignments WHERE vmid = $1 AND identity IS NOT NULL AND identity <> $2 \
         AND cluster_id = $3",
    )
    .bind(vmid)
    .bind(identity)
    .bind(key.cluster)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "UPDATE class_vms SET state = 'failed', attempts = $3, updated_at = $4, \
         error = 'replaced outside proxlab by another VM with the same id' \
         WHERE vmid = $1 AND identity IS NOT NULL AND identity <> $2 AND state <> 'failed' \
         AND cluster_id = $5",
    )
    .bind(vmid)
    .bind(identity)
    .bind(i64::from(super::classes::MAX_ATTEMPTS))
    .bind(now)
    .bind(key.cluster)
    .execute(&mut *conn)
    .await?;
    for table in ["vm_assignments", "class_vms"] {
        sqlx::query(&format!(
            "UPDATE {table} SET identity = $2 WHERE vmid = $1 AND identity IS NULL AND cluster_id = $3"
        ))
        .bind(vmid)
        .bind(identity)
        .bind(key.cluster)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// A JSON column for one of the lists a VM carries.
fn json<T: serde::Serialize>(list: &[T]) -> String {
    serde_json::to_string(list).unwrap_or_else(|_| "[]".into())
}

async fn replace_storages(
    conn: &mut sqlx::AnyConnection,
    node_id: i64,
    storages: &[StorageInfo],
    now: i64,
) -> Result<(), DbError> {
    sqlx::query("DELETE FROM storages WHERE node_id = $1")
        .bind(node_id)
        .execute(&mut *conn)
        .await?;
    for storage in storages {
        sqlx::query(
            "INSERT INTO storages (node_id, storage, kind, shared, active, content, total_bytes, used_bytes, avail_bytes, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(node_id)
        .bind(&storage.id)
        .bind(&storage.kind)
        .bind(i64::from(storage.shared))
        .bind(i64::from(storage.active))
        .bind(storage.content.join(","))
        .bind(storage.total_bytes as i64)
        .bind(storage.used_bytes as i64)
        .bind(storage.avail_bytes as i64)
        .bind(now)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

async fn replace_isos(
    conn: &mut sqlx::AnyConnection,
    node_id: i64,
    isos: &[IsoInfo],
) -> Result<(), DbError> {
    sqlx::query("DELETE FROM isos WHERE node_id = $1")
        .bind(node_id)
        .execute(&mut *conn)
        .await?;
    for iso in isos {
        sqlx::query(
            "INSERT INTO isos (node_id, volid, storage, size_bytes) VALUES ($1, $2, $3, $4)",
        )
        .bind(node_id)
        .bind(&iso.volid)
        .bind(&iso.storage)
        .bind(iso.size_bytes as i64)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// One thing an agent reported that the database keeps.
#[derive(Debug, Clone, Copy)]
pub enum AgentReport<'a> {
    /// The node's full inventory: replaces everything stored about it.
    Inventory(&'a Inventory),
    /// What changed on the node.
    Delta(&'a InventoryDelta),
    /// The node's load, and its VMs' load too when `vm_loads` is set.
    Metrics {
        metrics: &'a NodeMetrics,
        vm_loads: bool,
    },
}

async fn replace_inventory(
    conn: &mut sqlx::AnyConnection,
    node: &Reporter,
    inventory: &Inventory,
    now: i64,
) -> Result<(), DbError> {
    let node_id = node.id;
    let keep: Vec<i64> = inventory.vms.iter().map(|vm| i64::from(vm.vmid)).collect();
    let stored: Vec<i64> = sqlx::query("SELECT vmid FROM vms WHERE node_id = $1")
        .bind(node_id)
        .fetch_all(&mut *conn)
        .await?
        .iter()
        .map(|row| row.try_get("vmid"))
        .collect::<Result<_, _>>()?;
    for vmid in stored.into_iter().filter(|vmid| !keep.contains(vmid)) {
        remove_vm(conn, node, vmid).await?;
    }
    for vm in &inventory.vms {
        upsert_vm(conn, node, vm, now).await?;
    }
    replace_storages(conn, node_id, &inventory.storages, now).await?;
    replace_isos(conn, node_id, &inventory.isos).await
}

async fn apply_delta(
    conn: &mut sqlx::AnyConnection,
    node: &Reporter,
    delta: &InventoryDelta,
    now: i64,
) -> Result<(), DbError> {
    let node_id = node.id;
    for vm in &delta.upserted {
        upsert_vm(conn, node, vm, now).await?;
    }
    for vmid in &delta.removed {
        remove_vm(conn, node, i64::from(*vmid)).await?;
    }
    if let Some(storages) = &delta.storages {
        replace_storages(conn, node_id, storages, now).await?;
    }
    if let Some(isos) = &delta.isos {
        replace_isos(conn, node_id, isos).await?;
    }
    Ok(())
}

async fn record_metrics(
    conn: &mut sqlx::AnyConnection,
    node_id: i64,
    metrics: &NodeMetrics,
    vm_loads: bool,
    now: i64,
) -> Result<(), DbError> {
    sqlx::query(
        "INSERT INTO node_metrics (node_id, cpu, cpu_count, memory_total_bytes, memory_used_bytes, load1, load5, load15, uptime_secs, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
         ON CONFLICT (node_id) DO UPDATE SET cpu = excluded.cpu, cpu_count = excluded.cpu_count, \
         memory_total_bytes = excluded.memory_total_bytes, memory_used_bytes = excluded.memory_used_bytes, \
         load1 = excluded.load1, load5 = excluded.load5, load15 = excluded.load15, \
         uptime_secs = excluded.uptime_secs, updated_at = excluded.updated_at",
    )
    .bind(node_id)
    .bind(metrics.cpu)
    .bind(i64::from(metrics.cpu_count))
    .bind(metrics.memory_total_bytes as i64)
    .bind(metrics.memory_used_bytes as i64)
    .bind(metrics.load_average[0])
    .bind(metrics.load_average[1])
    .bind(metrics.load_average[2])
    .bind(metrics.uptime_secs as i64)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    for load in metrics.vms.iter().filter(|_| vm_loads) {
        sqlx::query("UPDATE vms SET cpu = $1, mem_bytes = $2, uptime_secs = $3 WHERE vmid = $4 AND node_id = $5")
            .bind(load.cpu)
            .bind(load.mem_bytes as i64)
            .bind(load.uptime_secs as i64)
            .bind(i64::from(load.vmid))
            .bind(node_id)
            .execute(&mut *conn)
            .await?;
    }
    if !metrics.storages.is_empty() {
        replace_storages(conn, node_id, &metrics.storages, now).await?;
    }
    Ok(())
}

impl Db {
    /// Stores what agents reported, in order and in one transaction: either all of it is
    /// kept or none (a batch that fails can be stored again one report at a time).
    pub async fn record_reports(
        &self,
        reports: &[(&str, AgentReport<'_>)],
        now: i64,
    ) -> Result<(), DbError> {
        let mut tx = self.write_tx().await?;
        let mut reporters: HashMap<&str, Reporter> = HashMap::new();
        for (node, report) in reports {
            let reporter = match reporters.entry(node) {
                Entry::Occupied(known) => known.into_mut(),
                Entry::Vacant(new) => new.insert(reporter(&mut tx, node).await?),
            };
            match report {
                AgentReport::Inventory(inventory) => {
                    replace_inventory(&mut tx, reporter, inventory, now).await?
                }
                AgentReport::Delta(delta) => apply_delta(&mut tx, reporter, delta, now).await?,
                AgentReport::Metrics { metrics, vm_loads } => {
                    record_metrics(&mut tx, reporter.id, metrics, *vm_loads, now).await?
                }
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// Replaces everything stored about a node with its full inventory.
    pub async fn replace_inventory(
        &self,
        node: &str,
        inventory: &Inventory,
        now: i64,
    ) -> Result<(), DbError> {
        self.record_reports(&[(node, AgentReport::Inventory(inventory))], now)
            .await
    }

    /// Applies what changed on a node.
    pub async fn apply_delta(
        &self,
        node: &str,
        delta: &InventoryDelta,
        now: i64,
    ) -> Result<(), DbError> {
        self.record_reports(&[(node, AgentReport::Delta(delta))], now)
            .await
    }

    /// Records a node's load and its VMs' load.
    pub async fn record_metrics(
        &self,
        node: &str,
        metrics: &NodeMetrics,
        now: i64,
    ) -> Result<(), DbError> {
        let report = AgentReport::Metrics {
            metrics,
            vm_loads: true,
        };
        self.record_reports(&[(node, report)], now).await
    }

    /// Every stored VM, by VMID.
    pub async fn list_vms(&self) -> Result<Vec<VmRow>, DbError> {
        self.find_vms(&VmFilter::default()).await
    }

    /// The stored VMs a filter selects, by VMID: all of them, or one page.
    pub async fn find_vms(&self, filter: &VmFilter) -> Result<Vec<VmRow>, DbError> {
        let (conditions, binds) = vm_conditions(filter);
        let page = filter
            .page
            .map(|page| format!(" LIMIT {} OFFSET {}", page.limit, page.offset))
            .unwrap_or_default();
        let sql = format!(
            "SELECT {VM_COLUMNS} FROM {VM_TABLES} WHERE {conditions} ORDER BY v.vmid, v.cluster_id{page}"
        );
        let rows = bind_all(sqlx::query(&sql), binds)
            .fetch_all(self.pool())
            .await?;
        Ok(rows.iter().map(vm_from_row).collect::<Result<_, _>>()?)
    }

    /// How many stored VMs a filter selects, regardless of its page.
    pub async fn count_vms(&self, filter: &VmFilter) -> Result<u64, DbError> {
        let (conditions, binds) = vm_conditions(filter);
        let sql = format!("SELECT COUNT(*) AS n FROM {VM_TABLES} WHERE {conditions}");
        let row = bind_all(sqlx::query(&sql), binds)
            .fetch_one(self.pool())
            .await?;
        Ok(row.try_get::<i64, _>("n")? as u64)
    }

    /// Records a VM's power state learned from an action's answer.
    pub async fn set_vm_status(&self, key: VmKey, status: &str, now: i64) -> Result<(), DbError> {
        sqlx::query(
            "UPDATE vms SET status_changed_at = CASE WHEN status = $1 THEN status_changed_at ELSE $2 END, \
             status = $1, updated_at = $2 WHERE cluster_id = $3 AND vmid = $4",
        )
        .bind(status)
        .bind(now)
        .bind(key.cluster)
        .bind(i64::from(key.vmid))
        .execute(self.pool())
        .await?;
        Ok(())
    }

    pub async fn vm(&self, key: VmKey) -> Result<Option<VmRow>, DbError> {
        let row = sqlx::query(&format!(
            "SELECT {VM_COLUMNS} FROM {VM_TABLES} WHERE v.cluster_id = $1 AND v.vmid = $2"
        ))
        .bind(key.cluster)
        .bind(i64::from(key.vmid))
        .fetch_optional(self.pool())
        .await?;
        Ok(row.as_ref().map(vm_from_row).transpose()?)
    }

    /// The VM a request names. A bare VMID names the one VM the hub has under it (in the
    /// inventory, a class or a template build); when clusters share it, the request must
    /// say which.
    pub async fn resolve_vm(&self, vm: VmRef) -> Result<VmKey, VmRefError> {
        let vmid = match vm {
            VmRef::Key(key) => return Ok(key),
            VmRef::Vmid(vmid) => vmid,
        };
        let rows = sqlx::query(
            "SELECT cluster_id FROM vms WHERE vmid = $1 \
             UNION SELECT cluster_id FROM class_vms WHERE vmid = $1 \
             UNION SELECT cluster_id FROM template_builds WHERE vmid = $1",
        )
        .bind(i64::from(vmid))
        .fetch_all(self.pool())
        .await
        .map_err(DbError::from)?;
        let clusters: Vec<i64> = rows
            .iter()
            .map(|row| row.try_get("cluster_id"))
            .collect::<Result<_, _>>()
            .map_err(DbError::from)?;
        match clusters.as_slice() {
            [] => Err(VmRefError::NotFound),
            [cluster] => Ok(VmKey::new(*cluster, vmid)),
            _ => Err(VmRefError::Ambiguous(
                clusters
                    .iter()
                    .map(|cluster| VmKey::new(*cluster, vmid))
                    .collect(),
            )),
        }
    }

    /// The storages a node reported: `(storage, kind, shared, avail_bytes)`.
    pub async fn node_storages(
        &self,
        node: &str,
    ) -> Result<Vec<(String, String, bool, u64)>, DbError> {
        let rows = sqlx::query(
            "SELECT s.storage, s.kind, s.shared, s.avail_bytes FROM storages s JOIN nodes n ON n.id = s.node_id \
             WHERE n.name = $1 ORDER BY s.storage",
        )
        .bind(node)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                Ok((
                    row.try_get("storage")?,
                    row.try_get("kind")?,
                    row.try_get::<i64, _>("shared")? != 0,
                    row.try_get::<i64, _>("avail_bytes")? as u64,
                ))
            })
            .collect()
    }
}

/// Drops `LIKE` wildcards from user text: the two backends disagree on a default escape
/// character, and Proxmox VM names (DNS names) cannot contain these characters anyway.
fn escape_like(text: &str) -> String {
    text.chars()
        .filter(|c| !matches!(c, '%' | '_' | '\\'))
        .collect()
}
