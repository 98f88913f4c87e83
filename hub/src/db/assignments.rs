//! Which user each VM belongs to.

use super::{Db, DbError};
use crate::vm_key::VmKey;

/// A `(cluster_id, vmid)` row as a key.
fn key((cluster, vmid): (i64, i64)) -> VmKey {
    VmKey::new(cluster, vmid as u32)
}

impl Db {
    /// Assigns a VM to a user, replacing any earlier assignee.
    pub async fn assign_vm(
        &self,
        vm: VmKey,
        user_id: i64,
        assigned_by: Option<i64>,
        now: i64,
    ) -> Result<(), DbError> {
        sqlx::query(
            "INSERT INTO vm_assignments (cluster_id, vmid, user_id, assigned_by, assigned_at, identity) \
             VALUES ($1, $2, $3, $4, $5, \
             (SELECT identity FROM vms WHERE cluster_id = $1 AND vmid = $2)) \
             ON CONFLICT (cluster_id, vmid) DO UPDATE SET user_id = excluded.user_id, \
             assigned_by = excluded.assigned_by, assigned_at = excluded.assigned_at, \
             identity = excluded.identity",
        )
        .bind(vm.cluster)
        .bind(i64::from(vm.vmid))
        .bind(user_id)
        .bind(assigned_by)
        .bind(now)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Returns whether the VM had an assignee.
    pub async fn unassign_vm(&self, vm: VmKey) -> Result<bool, DbError> {
        let done = sqlx::query("DELETE FROM vm_assignments WHERE cluster_id = $1 AND vmid = $2")
            .bind(vm.cluster)
            .bind(i64::from(vm.vmid))
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The user a VM is assigned to.
    pub async fn vm_user(&self, vm: VmKey) -> Result<Option<i64>, DbError> {
        let row: Option<(i64,)> = sqlx::query_as(
            "SELECT user_id FROM vm_assignments WHERE cluster_id = $1 AND vmid = $2",
        )
        .bind(vm.cluster)
        .bind(i64::from(vm.vmid))
        .fetch_optional(self.pool())
        .await?;
        Ok(row.map(|(user_id,)| user_id))
    }

    /// The VMs assigned to a user.
    pub async fn assigned_vms(&self, user_id: i64) -> Result<Vec<VmKey>, DbError> {
        let rows: Vec<(i64, i64)> = sqlx::query_as(
            "SELECT cluster_id, vmid FROM vm_assignments WHERE user_id = $1 \
             ORDER BY vmid, cluster_id",
        )
        .bind(user_id)
        .fetch_all(self.pool())
        .await?;
        Ok(rows.into_iter().map(key).collect())
    }

    /// The class's VMs that are assigned, with their users' ids.
    pub async fn class_assignees(&self, class_id: i64) -> Result<Vec<(VmKey, i64)>, DbError> {
        let rows: Vec<(i64, i64, i64)> = sqlx::query_as(
            "SELECT a.cluster_id, a.vmid, a.user_id FROM vm_assignments a \
             JOIN class_vms cv ON cv.cluster_id = a.cluster_id AND cv.vmid = a.vmid \
             WHERE cv.class_id = $1 ORDER BY a.vmid, a.cluster_id",
        )
        .bind(class_id)
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .into_iter()
            .map(|(cluster, vmid, user_id)| (key((cluster, vmid)), user_id))
            .collect())
    }

    /// VMs assigned to a user that do not exist yet (a class VM still being made), with
    /// their class's name.
    pub async fn pending_assignments(
        &self,
        user_id: i64,
    ) -> Result<Vec<(VmKey, Option<String>)>, DbError> {
        let rows: Vec<(i64, i64, Option<String>)> = sqlx::query_as(
            "SELECT a.cluster_id, a.vmid, c.name FROM vm_assignments a \
             LEFT JOIN class_vms cv ON cv.cluster_id = a.cluster_id AND cv.vmid = a.vmid \
             LEFT JOIN classes c ON c.id = cv.class_id \
             WHERE a.user_id = $1 AND NOT EXISTS \
             (SELECT 1 FROM vms v WHERE v.cluster_id = a.cluster_id AND v.vmid = a.vmid) \
             ORDER BY a.vmid, a.cluster_id",
        )
        .bind(user_id)
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .into_iter()
            .map(|(cluster, vmid, class)| (key((cluster, vmid)), class))
            .collect())
    }
}
