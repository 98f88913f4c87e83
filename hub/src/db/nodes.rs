//! Enrolled nodes and their online/offline history.

use proxlab_protocol::ClusterIdentity;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::tokens::SpendRefusal;
use super::{Db, DbError, now_unix};

/// What a node's agent said as it connected.
#[derive(Debug, Clone, Copy)]
pub struct ConnectedAgent<'a> {
    pub agent_version: &'a str,
    pub remote_addr: &'a str,
    /// Its cluster, unless the agent is too old to say (or said something invalid).
    pub cluster: Option<&'a ClusterIdentity>,
}

/// A node as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRow {
    pub id: i64,
    pub name: String,
    pub cert_fingerprint: String,
    pub enrolled_at: i64,
    pub revoked_at: Option<i64>,
    pub online: bool,
    pub state_changed_at: Option<i64>,
    pub last_seen_at: Option<i64>,
    pub agent_version: Option<String>,
    pub remote_addr: Option<String>,
    /// The Proxmox cluster it belongs to: unknown until its agent reports it (until then the
    /// node and its VMs are in the placeholder cluster, see [`PLACEHOLDER_CLUSTER`]).
    pub cluster: Option<ClusterRow>,
}

/// The cluster of nodes whose agents have not said which one they are in (too old, or
/// enrolled before agents did): empty name and fingerprint. A node leaves it, VMs and all,
/// when its agent reports its cluster.
pub const PLACEHOLDER_CLUSTER: &str = "";

/// A Proxmox cluster (or a standalone node) that nodes belong to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterRow {
    pub id: i64,
    pub name: String,
    /// `sha256:<hex>` of the cluster's root CA; empty when the node had none.
    pub ca_fingerprint: String,
}

impl ClusterRow {
    fn is_placeholder(&self) -> bool {
        self.name == PLACEHOLDER_CLUSTER && self.ca_fingerprint.is_empty()
    }
}

/// One online/offline transition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransitionRow {
    pub online: bool,
    pub at: i64,
    pub reason: String,
}

/// A node's columns, from `nodes n LEFT JOIN clusters c` (see [`NODE_TABLES`]).
const NODE_COLUMNS: &str = "n.id, n.name, n.cert_fingerprint, n.enrolled_at, n.revoked_at, n.online, \
     n.state_changed_at, n.last_seen_at, n.agent_version, n.remote_addr, n.cluster_id, \
     c.name AS cluster_name, c.ca_fingerprint AS cluster_ca";
const NODE_TABLES: &str = "nodes n LEFT JOIN clusters c ON c.id = n.cluster_id";

fn node_from_row(row: &AnyRow) -> Result<NodeRow, sqlx::Error> {
    Ok(NodeRow {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        cert_fingerprint: row.try_get("cert_fingerprint")?,
        enrolled_at: row.try_get("enrolled_at")?,
        revoked_at: row.try_get("revoked_at")?,
        online: row.try_get::<i64, _>("online")? != 0,
        state_changed_at: row.try_get("state_changed_at")?,
        last_seen_at: row.try_get("last_seen_at")?,
        agent_version: row.try_get("agent_version")?,
        remote_addr: row.try_get("remote_addr")?,
        cluster: match row.try_get::<Option<i64>, _>("cluster_id")? {
            None => None,
            Some(id) => Some(ClusterRow {
                id,
                name: row.try_get("cluster_name")?,
                ca_fingerprint: row.try_get("cluster_ca")?,
            })
            .filter(|cluster| !cluster.is_placeholder()),
        },
    })
}

/// A node with its latest load and storage totals, for overview pages.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeOverview {
    pub node: NodeRow,
    /// `None` until the agent's first metrics arrive.
    pub metrics: Option<NodeLoad>,
    pub storage_total_bytes: u64,
    pub storage_used_bytes: u64,
    pub vm_count: u64,
}

/// The latest load a node reported.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeLoad {
    pub cpu: f64,
    pub cpu_count: u32,
    pub memory_total_bytes: u64,
    pub memory_used_bytes: u64,
    pub load1: f64,
    pub uptime_secs: u64,
    pub updated_at: i64,
}

/// The outcome of an enrollment attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnrollOutcome {
    Enrolled,
    TokenRefused(SpendRefusal),
    /// An active node already has this name.
    NameTaken,
}

impl Db {
    pub async fn list_nodes(&self) -> Result<Vec<NodeRow>, DbError> {
        let rows = sqlx::query(&format!(
            "SELECT {NODE_COLUMNS} FROM {NODE_TABLES} ORDER BY n.name"
        ))
        .fetch_all(self.pool())
        .await?;
        Ok(rows.iter().map(node_from_row).collect::<Result<_, _>>()?)
    }

    pub async fn node_by_name(&self, name: &str) -> Result<Option<NodeRow>, DbError> {
        let row = sqlx::query(&format!(
            "SELECT {NODE_COLUMNS} FROM {NODE_TABLES} WHERE n.name = $1"
        ))
        .bind(name)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.as_ref().map(node_from_row).transpose()?)
    }

    /// Spends the token and records the node with its certificate's fingerprint, in one
    /// transaction: either both happen or neither does.
    pub async fn enroll_node(
        &self,
        token_hash: &str,
        node_name: &str,
        cert_fingerprint: &str,
        now: i64,
    ) -> Result<EnrollOutcome, DbError> {
        let mut tx = self.write_tx().await?;
        if let Err(refusal) = Self::spend_join_token(&mut tx, token_hash, node_name, now).await? {
            return Ok(EnrollOutcome::TokenRefused(refusal));
        }
        let existing = sqlx::query("SELECT revoked_at FROM nodes WHERE name = $1")
            .bind(node_name)
            .fetch_optional(&mut *tx)
            .await?;
        let existing_revoked: Option<Option<i64>> = existing
            .map(|row| row.try_get::<Option<i64>, _>("revoked_at"))
            .transpose()?;
        match existing_revoked {
            // An active node has this name. Roll back so the token stays unspent: the
            // operator can revoke the old node and run the same command again.
            Some(None) => {
                tx.rollback().await?;
                return Ok(EnrollOutcome::NameTaken);
            }
            // Re-enrolling a revoked node: the new certificate replaces the old one.
            Some(Some(_)) => {
                sqlx::query(
                    "UPDATE nodes SET cert_fingerprint = $1, enrolled_at = $2, \
                     revoked_at = NULL, online = 0 WHERE name = $3",
                )
                .bind(cert_fingerprint)
                .bind(now)
                .bind(node_name)
                .execute(&mut *tx)
                .await?;
            }
            None => {
                sqlx::query(
                    "INSERT INTO nodes (name, cert_fingerprint, enrolled_at, online) \
                     VALUES ($1, $2, $3, 0)",
                )
                .bind(node_name)
                .bind(cert_fingerprint)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await?;
        Ok(EnrollOutcome::Enrolled)
    }

    /// Marks a node revoked. Returns whether an active node was revoked.
    pub async fn revoke_node(&self, name: &str, now: i64) -> Result<bool, DbError> {
        let done =
            sqlx::query("UPDATE nodes SET revoked_at = $1 WHERE name = $2 AND revoked_at IS NULL")
                .bind(now)
                .bind(name)
                .execute(self.pool())
                .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Records which Proxmox cluster a node belongs to (as its agent reports at enrollment
    /// and at each connection), adding the cluster when it is new. Returns the cluster's row.
    pub async fn note_node_cluster(
        &self,
        node: &str,
        cluster: &ClusterIdentity,
        now: i64,
    ) -> Result<ClusterRow, DbError> {
        let mut tx = self.write_tx().await?;
        let row = assign_cluster(&mut tx, node, cluster, now).await?;
        tx.commit().await?;
        Ok(row)
    }

    /// The id of a cluster, recorded now if the hub did not know it (for a site prepared
    /// before its nodes connect).
    pub async fn ensure_cluster(
        &self,
        cluster: &ClusterIdentity,
        now: i64,
    ) -> Result<i64, DbError> {
        let mut tx = self.write_tx().await?;
        let id = cluster_id(&mut tx, cluster, now).await?;
        tx.commit().await?;
        Ok(id)
    }

    /// The cluster a node's VMs are keyed under (`clusters.id`; the placeholder cluster
    /// until its agent reports one).
    pub async fn node_cluster_id(&self, node: &str) -> Result<Option<i64>, DbError> {
        let row: Option<(Option<i64>,)> =
            sqlx::query_as("SELECT cluster_id FROM nodes WHERE name = $1")
                .bind(node)
                .fetch_optional(self.pool())
                .await?;
        Ok(row.and_then(|(cluster,)| cluster))
    }

    /// Every cluster that has an enrolled node, by name.
    pub async fn clusters(&self) -> Result<Vec<ClusterRow>, DbError> {
        let rows = sqlx::query(
            "SELECT id, name, ca_fingerprint FROM clusters WHERE id IN \
             (SELECT cluster_id FROM nodes WHERE revoked_at IS NULL) \
             AND NOT (name = $1 AND ca_fingerprint = '') ORDER BY name, id",
        )
        .bind(PLACEHOLDER_CLUSTER)
        .fetch_all(self.pool())
        .await?;
        let clusters = rows.iter().map(|row| -> Result<ClusterRow, sqlx::Error> {
            Ok(ClusterRow {
                id: row.try_get("id")?,
                name: row.try_get("name")?,
                ca_fingerprint: row.try_get("ca_fingerprint")?,
            })
        });
        Ok(clusters.collect::<Result<_, _>>()?)
    }

    /// Records a node coming online (with what its agent said as it connected) or going
    /// offline. Returns the node's cluster (`clusters.id`).
    pub async fn set_node_online(
        &self,
        name: &str,
        online: bool,
        now: i64,
        reason: &str,
        connected: Option<&ConnectedAgent<'_>>,
    ) -> Result<Option<i64>, DbError> {
        let agent_version = connected.map(|agent| agent.agent_version);
        let remote_addr = connected.map(|agent| agent.remote_addr);
        let mut tx = self.write_tx().await?;
        let row = sqlx::query(
            "UPDATE nodes SET online = $1, state_changed_at = $2, last_seen_at = $2, \
             agent_version = COALESCE($3, agent_version), remote_addr = COALESCE($4, remote_addr) \
             WHERE name = $5 RETURNING id, cluster_id",
        )
        .bind(i64::from(online))
        .bind(now)
        .bind(agent_version)
        .bind(remote_addr)
        .bind(name)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(DbError::NotFound)?;
        let id: i64 = row.try_get("id")?;
        let mut cluster_id: Option<i64> = row.try_get("cluster_id")?;
        sqlx::query(
            "INSERT INTO node_transitions (node_id, online, at, reason) VALUES ($1, $2, $3, $4)",
        )
        .bind(id)
        .bind(i64::from(online))
        .bind(now)
        .bind(reason)
        .execute(&mut *tx)
        .await?;
        match connected {
            Some(ConnectedAgent {
                cluster: Some(cluster),
                ..
            }) => cluster_id = Some(assign_cluster(&mut tx, name, cluster, now).await?.id),
            // An agent that does not say: its node and VMs wait in the placeholder.
            Some(_) if cluster_id.is_none() => {
                cluster_id = Some(node_cluster(&mut tx, name).await?)
            }
            _ => {}
        }
        tx.commit().await?;
        Ok(cluster_id)
    }

    /// Records when each node was last seen, in one transaction.
    pub async fn touch_nodes(
        &self,
        seen: &std::collections::HashMap<String, i64>,
    ) -> Result<(), DbError> {
        let mut tx = self.write_tx().await?;
        for (name, at) in seen {
            sqlx::query("UPDATE nodes SET last_seen_at = $1 WHERE name = $2")
                .bind(*at)
                .bind(name)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Marks every node offline: on hub start, since no agent is connected yet.
    pub async fn mark_all_nodes_offline(&self, now: i64) -> Result<(), DbError> {
        let online: Vec<String> = sqlx::query("SELECT name FROM nodes WHERE online = 1")
            .fetch_all(self.pool())
            .await?
            .iter()
            .map(|row| row.try_get("name"))
            .collect::<Result<_, _>>()?;
        for name in online {
            self.set_node_online(&name, false, now, "hub restarted", None)
                .await?;
        }
        Ok(())
    }

    pub async fn node_transitions(&self, name: &str) -> Result<Vec<TransitionRow>, DbError> {
        let rows = sqlx::query(
            "SELECT t.online, t.at, t.reason FROM node_transitions t \
             JOIN nodes n ON n.id = t.node_id WHERE n.name = $1 ORDER BY t.id",
        )
        .bind(name)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                Ok(TransitionRow {
                    online: row.try_get::<i64, _>("online")? != 0,
                    at: row.try_get("at")?,
                    reason: row.try_get("reason")?,
                })
            })
            .collect()
    }

    /// Every node that is not revoked, with its load, storage and VM count.
    pub async fn node_overviews(&self) -> Result<Vec<NodeOverview>, DbError> {
        self.overviews(None).await
    }

    /// One node's overview, if it is enrolled and not revoked.
    pub async fn node_overview(&self, name: &str) -> Result<Option<NodeOverview>, DbError> {
        Ok(self.overviews(Some(name)).await?.pop())
    }

    /// The overviews of every node, or of the one named.
    async fn overviews(&self, name: Option<&str>) -> Result<Vec<NodeOverview>, DbError> {
        let rows = sqlx::query(&format!(
            "SELECT {NODE_COLUMNS}, \
             m.cpu, m.cpu_count, m.memory_total_bytes, m.memory_used_bytes, m.load1, \
             m.uptime_secs, m.updated_at AS metrics_at, \
             (SELECT CAST(COALESCE(SUM(s.total_bytes), 0) AS BIGINT) FROM storages s WHERE s.node_id = n.id AND s.shared = 0) AS storage_total, \
             (SELECT CAST(COALESCE(SUM(s.used_bytes), 0) AS BIGINT) FROM storages s WHERE s.node_id = n.id AND s.shared = 0) AS storage_used, \
             (SELECT COUNT(*) FROM vms v WHERE v.node_id = n.id) AS vm_count \
             FROM {NODE_TABLES} LEFT JOIN node_metrics m ON m.node_id = n.id \
             WHERE n.revoked_at IS NULL AND ($1 IS NULL OR n.name = $1) ORDER BY n.name"
        ))
        .bind(name)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                let metrics_at: Option<i64> = row.try_get("metrics_at")?;
                let metrics = match metrics_at {
                    None => None,
                    Some(updated_at) => Some(NodeLoad {
                        cpu: row.try_get("cpu")?,
                        cpu_count: row.try_get::<i64, _>("cpu_count")? as u32,
                        memory_total_bytes: row.try_get::<i64, _>("memory_total_bytes")? as u64,
                        memory_used_bytes: row.try_get::<i64, _>("memory_used_bytes")? as u64,
                        load1: row.try_get("load1")?,
                        uptime_secs: row.try_get::<i64, _>("uptime_secs")? as u64,
                        updated_at,
                    }),
                };
                let node = node_from_row(row)?;
                Ok(NodeOverview {
                    node,
                    metrics,
                    storage_total_bytes: row.try_get::<i64, _>("storage_total")? as u64,
                    storage_used_bytes: row.try_get::<i64, _>("storage_used")? as u64,
                    vm_count: row.try_get::<i64, _>("vm_count")? as u64,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(DbError::from)
    }
}

/// The cluster of an enrolled node, inside `conn`'s transaction; a node that has none yet
/// (its agent has not connected) is put in the placeholder.
pub(super) async fn node_cluster(
    conn: &mut sqlx::AnyConnection,
    node: &str,
) -> Result<i64, DbError> {
    let row: Option<(Option<i64>,)> =
        sqlx::query_as("SELECT cluster_id FROM nodes WHERE name = $1")
            .bind(node)
            .fetch_optional(&mut *conn)
            .await?;
    match row {
        None => Err(DbError::NotFound),
        Some((Some(cluster),)) => Ok(cluster),
        Some((None,)) => Ok(
            assign_cluster(conn, node, &placeholder_identity(), now_unix())
                .await?
                .id,
        ),
    }
}

fn placeholder_identity() -> ClusterIdentity {
    ClusterIdentity {
        name: PLACEHOLDER_CLUSTER.to_owned(),
        ca_fingerprint: String::new(),
    }
}

/// The id of a cluster, added if it is new, inside `tx`.
async fn cluster_id(
    tx: &mut sqlx::AnyConnection,
    cluster: &ClusterIdentity,
    now: i64,
) -> Result<i64, DbError> {
    let find = || {
        sqlx::query_as::<_, (i64,)>(
            "SELECT id FROM clusters WHERE name = $1 AND ca_fingerprint = $2",
        )
        .bind(&cluster.name)
        .bind(&cluster.ca_fingerprint)
    };
    // Looked up first: an insert that conflicts still uses up a PostgreSQL identity value,
    // and cluster ids are in VMs' addresses, so every connection must not skip one.
    if let Some((id,)) = find().fetch_optional(&mut *tx).await? {
        return Ok(id);
    }
    sqlx::query(
        "INSERT INTO clusters (name, ca_fingerprint, first_seen_at) VALUES ($1, $2, $3) \
         ON CONFLICT (name, ca_fingerprint) DO NOTHING",
    )
    .bind(&cluster.name)
    .bind(&cluster.ca_fingerprint)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    Ok(find().fetch_one(&mut *tx).await?.0)
}

/// Adds the cluster if it is new and makes it the node's, inside `tx`. A node that changes
/// cluster (most often: leaves the placeholder) takes its VMs along, with everything the hub
/// keeps about them.
async fn assign_cluster(
    tx: &mut sqlx::AnyConnection,
    node: &str,
    cluster: &ClusterIdentity,
    now: i64,
) -> Result<ClusterRow, DbError> {
    let id = cluster_id(tx, cluster, now).await?;
    let before = sqlx::query("SELECT id, cluster_id FROM nodes WHERE name = $1")
        .bind(node)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(DbError::NotFound)?;
    let node_id: i64 = before.try_get("id")?;
    let previous: Option<i64> = before.try_get("cluster_id")?;
    if let Some(previous) = previous.filter(|previous| *previous != id) {
        move_node_vms(tx, node_id, node, previous, id).await?;
    }
    sqlx::query("UPDATE nodes SET cluster_id = $1 WHERE id = $2")
        .bind(id)
        .bind(node_id)
        .execute(&mut *tx)
        .await?;
    Ok(ClusterRow {
        id,
        name: cluster.name.clone(),
        ca_fingerprint: cluster.ca_fingerprint.clone(),
    })
}

/// Every table that names a VM by `(cluster_id, vmid)`, besides `vms`.
const VM_TABLES: [&str; 9] = [
    "vm_assignments",
    "class_vms",
    "class_task_results",
    "console_tickets",
    "ssh_host_keys",
    "idle_stops",
    "vm_stop_reasons",
    "vm_runs",
    "template_builds",
];

/// Moves the VMs of a node from one cluster to another: its inventory, and every row about
/// a VM it reports or a class or build placed on it, unless the other cluster already has a
/// row for that VMID (then the stale one stays behind).
async fn move_node_vms(
    tx: &mut sqlx::AnyConnection,
    node_id: i64,
    node: &str,
    from: i64,
    to: i64,
) -> Result<(), DbError> {
    let vmids: Vec<i64> = sqlx::query(
        "SELECT vmid FROM vms WHERE node_id = $1 AND cluster_id = $2 \
         UNION SELECT vmid FROM class_vms WHERE node = $3 AND cluster_id = $2 \
         UNION SELECT vmid FROM template_builds WHERE node = $3 AND cluster_id = $2",
    )
    .bind(node_id)
    .bind(from)
    .bind(node)
    .fetch_all(&mut *tx)
    .await?
    .iter()
    .map(|row| row.try_get("vmid"))
    .collect::<Result<_, _>>()?;
    if vmids.is_empty() {
        return Ok(());
    }
    // Numbers, so they can be written into the statements safely.
    let list = vmids
        .iter()
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    for table in std::iter::once("vms").chain(VM_TABLES) {
        sqlx::query(&format!(
            "UPDATE {table} SET cluster_id = $1 WHERE cluster_id = $2 AND vmid IN ({list}) \
             AND NOT EXISTS (SELECT 1 FROM {table} other WHERE other.cluster_id = $1 \
             AND other.vmid = {table}.vmid)"
        ))
        .bind(to)
        .bind(from)
        .execute(&mut *tx)
        .await?;
    }
    sqlx::query(&format!(
        "UPDATE classes SET template_cluster_id = $1 WHERE template_cluster_id = $2 \
         AND template_vmid IN ({list})"
    ))
    .bind(to)
    .bind(from)
    .execute(&mut *tx)
    .await?;
    Ok(())
}
