//! Idle shutdown: each class's policies, the shutdowns agents did by them, and the reason a
//! VM was last stopped by proxlab itself.

use sqlx::Row;

use super::{Db, DbError};
use crate::vm_key::VmKey;

/// A class's idle policies as stored; `domain::idle` gives them meaning. A `None` time turns
/// its policy off.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct IdlePolicyRow {
    pub class_id: i64,
    pub no_connection_minutes: Option<i64>,
    pub disconnected_minutes: Option<i64>,
    pub idle_guest_minutes: Option<i64>,
    pub idle_cpu_percent: i64,
    pub warn_minutes: i64,
    pub shutdown_minutes: i64,
    pub hard_stop: bool,
    pub guest_message: bool,
    pub updated_by: String,
    pub updated_at: i64,
}

/// One idle shutdown an agent reported.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct IdleStopRow {
    pub id: String,
    /// The VM's key (`CLUSTER-VMID`); stored from its node's cluster.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vm: Option<VmKey>,
    pub vmid: u32,
    pub node: String,
    pub class_id: Option<i64>,
    pub reason: String,
    pub idle_secs: i64,
    pub at: i64,
    pub outcome: String,
    pub message: String,
}

const POLICY_COLUMNS: &str = "class_id, no_connection_minutes, disconnected_minutes, \
     idle_guest_minutes, idle_cpu_percent, warn_minutes, shutdown_minutes, hard_stop, \
     guest_message, updated_by, updated_at";

fn policy_from_row(row: &sqlx::any::AnyRow) -> Result<IdlePolicyRow, sqlx::Error> {
    Ok(IdlePolicyRow {
        class_id: row.try_get("class_id")?,
        no_connection_minutes: row.try_get("no_connection_minutes")?,
        disconnected_minutes: row.try_get("disconnected_minutes")?,
        idle_guest_minutes: row.try_get("idle_guest_minutes")?,
        idle_cpu_percent: row.try_get("idle_cpu_percent")?,
        warn_minutes: row.try_get("warn_minutes")?,
        shutdown_minutes: row.try_get("shutdown_minutes")?,
        hard_stop: row.try_get::<i64, _>("hard_stop")? != 0,
        guest_message: row.try_get::<i64, _>("guest_message")? != 0,
        updated_by: row.try_get("updated_by")?,
        updated_at: row.try_get("updated_at")?,
    })
}

impl Db {
    /// A class's idle policies, if they were ever set.
    pub async fn class_idle_policy(&self, class_id: i64) -> Result<Option<IdlePolicyRow>, DbError> {
        let row = sqlx::query(&format!(
            "SELECT {POLICY_COLUMNS} FROM class_idle_policies WHERE class_id = $1"
        ))
        .bind(class_id)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.as_ref().map(policy_from_row).transpose()?)
    }

    /// Sets a class's idle policies.
    pub async fn set_class_idle_policy(&self, policy: &IdlePolicyRow) -> Result<(), DbError> {
        sqlx::query(&format!(
            "INSERT INTO class_idle_policies ({POLICY_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
             ON CONFLICT (class_id) DO UPDATE SET \
             no_connection_minutes = excluded.no_connection_minutes, \
             disconnected_minutes = excluded.disconnected_minutes, \
             idle_guest_minutes = excluded.idle_guest_minutes, \
             idle_cpu_percent = excluded.idle_cpu_percent, \
             warn_minutes = excluded.warn_minutes, \
             shutdown_minutes = excluded.shutdown_minutes, \
             hard_stop = excluded.hard_stop, \
             guest_message = excluded.guest_message, \
             updated_by = excluded.updated_by, \
             updated_at = excluded.updated_at"
        ))
        .bind(policy.class_id)
        .bind(policy.no_connection_minutes)
        .bind(policy.disconnected_minutes)
        .bind(policy.idle_guest_minutes)
        .bind(policy.idle_cpu_percent)
        .bind(policy.warn_minutes)
        .bind(policy.shutdown_minutes)
        .bind(i64::from(policy.hard_stop))
        .bind(i64::from(policy.guest_message))
        .bind(&policy.updated_by)
        .bind(policy.updated_at)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// The student VMs of every class with idle policies: (node, vmid, the class's policies).
    pub async fn idle_policy_vms(&self) -> Result<Vec<(String, u32, IdlePolicyRow)>, DbError> {
        let columns = POLICY_COLUMNS
            .split(", ")
            .map(|column| format!("p.{}", column.trim()))
            .collect::<Vec<_>>()
            .join(", ");
        let rows = sqlx::query(&format!(
            "SELECT cv.node AS vm_node, cv.vmid AS vm_id, {columns} \
             FROM class_vms cv JOIN class_idle_policies p ON p.class_id = cv.class_id \
             WHERE cv.kind = 'student' AND cv.state = 'ready' ORDER BY cv.vmid"
        ))
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                Ok((
                    row.try_get("vm_node")?,
                    row.try_get::<i64, _>("vm_id")? as u32,
                    policy_from_row(row)?,
                ))
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(DbError::from)
    }

    /// Records a shutdown; `false` when it was recorded before (a report sent again).
    pub async fn record_idle_stop(&self, stop: &IdleStopRow) -> Result<bool, DbError> {
        let inserted = sqlx::query(
            "INSERT INTO idle_stops (id, vmid, node, class_id, reason, idle_secs, at, outcome, \
             message, cluster_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, \
             (SELECT cluster_id FROM nodes WHERE name = $3)) ON CONFLICT DO NOTHING",
        )
        .bind(&stop.id)
        .bind(i64::from(stop.vmid))
        .bind(&stop.node)
        .bind(stop.class_id)
        .bind(&stop.reason)
        .bind(stop.idle_secs)
        .bind(stop.at)
        .bind(&stop.outcome)
        .bind(&stop.message)
        .execute(self.pool())
        .await?;
        Ok(inserted.rows_affected() == 1)
    }

    /// A class's newest idle shutdowns, newest first.
    pub async fn class_idle_stops(
        &self,
        class_id: i64,
        limit: i64,
    ) -> Result<Vec<IdleStopRow>, DbError> {
        let rows = sqlx::query(
            "SELECT id, cluster_id, vmid, node, class_id, reason, idle_secs, at, outcome, message \
             FROM idle_stops WHERE class_id = $1 ORDER BY at DESC, id LIMIT $2",
        )
        .bind(class_id)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                let vmid = row.try_get::<i64, _>("vmid")? as u32;
                Ok(IdleStopRow {
                    id: row.try_get("id")?,
                    vm: row
                        .try_get::<Option<i64>, _>("cluster_id")?
                        .map(|cluster| VmKey::new(cluster, vmid)),
                    vmid,
                    node: row.try_get("node")?,
                    class_id: row.try_get("class_id")?,
                    reason: row.try_get("reason")?,
                    idle_secs: row.try_get("idle_secs")?,
                    at: row.try_get("at")?,
                    outcome: row.try_get("outcome")?,
                    message: row.try_get("message")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(DbError::from)
    }

    /// Says why proxlab stopped a VM ("stopped after 30 min idle"), for its tile.
    pub async fn set_stop_reason(&self, vm: VmKey, reason: &str, at: i64) -> Result<(), DbError> {
        sqlx::query(
            "INSERT INTO vm_stop_reasons (cluster_id, vmid, reason, at) VALUES ($4, $1, $2, $3) \
             ON CONFLICT (cluster_id, vmid) DO UPDATE SET reason = excluded.reason, at = excluded.at",
        )
        .bind(i64::from(vm.vmid))
        .bind(reason)
        .bind(at)
        .bind(vm.cluster)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Forgets why a VM was stopped (it was started again).
    pub async fn clear_stop_reason(&self, vm: VmKey) -> Result<(), DbError> {
        sqlx::query("DELETE FROM vm_stop_reasons WHERE cluster_id = $1 AND vmid = $2")
            .bind(vm.cluster)
            .bind(i64::from(vm.vmid))
            .execute(self.pool())
            .await?;
        Ok(())
    }
}
