//! Which user each VM belongs to.

use super::{Db, DbError};

impl Db {
    /// Assigns a VM to a user, replacing any earlier assignee.
    pub async fn assign_vm(
        &self,
        vmid: u32,
        user_id: i64,
        assigned_by: Option<i64>,
        now: i64,
    ) -> Result<(), DbError> {
        sqlx::query(
            "INSERT INTO vm_assignments (vmid, user_id, assigned_by, assigned_at, identity) \
             VALUES ($1, $2, $3, $4, (SELECT identity FROM vms WHERE vmid = $1)) \
             ON CONFLICT (vmid) DO UPDATE SET user_id = excluded.user_id, \
             assigned_by = excluded.assigned_by, assigned_at = excluded.assigned_at, \
             identity = excluded.identity",
        )
        .bind(i64::from(vmid))
        .bind(user_id)
        .bind(assigned_by)
        .bind(now)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Returns whether the VM had an assignee.
    pub async fn unassign_vm(&self, vmid: u32) -> Result<bool, DbError> {
        let done = sqlx::query("DELETE FROM vm_assignments WHERE vmid = $1")
            .bind(i64::from(vmid))
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The user a VM is assigned to.
    pub async fn vm_user(&self, vmid: u32) -> Result<Option<i64>, DbError> {
        let row: Option<(i64,)> =
            sqlx::query_as("SELECT user_id FROM vm_assignments WHERE vmid = $1")
                .bind(i64::from(vmid))
                .fetch_optional(self.pool())
                .await?;
        Ok(row.map(|(user_id,)| user_id))
    }

    /// The VMIDs assigned to a user.
    pub async fn assigned_vmids(&self, user_id: i64) -> Result<Vec<u32>, DbError> {
        let rows: Vec<(i64,)> =
            sqlx::query_as("SELECT vmid FROM vm_assignments WHERE user_id = $1 ORDER BY vmid")
                .bind(user_id)
                .fetch_all(self.pool())
                .await?;
        Ok(rows.into_iter().map(|(vmid,)| vmid as u32).collect())
    }

    /// The class's VMs that are assigned, with their users' ids.
    pub async fn class_assignees(&self, class_id: i64) -> Result<Vec<(u32, i64)>, DbError> {
        let rows: Vec<(i64, i64)> = sqlx::query_as(
            "SELECT a.vmid, a.user_id FROM vm_assignments a \
             JOIN class_vms cv ON cv.vmid = a.vmid WHERE cv.class_id = $1 ORDER BY a.vmid",
        )
        .bind(class_id)
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .into_iter()
            .map(|(vmid, user_id)| (vmid as u32, user_id))
            .collect())
    }

    /// VMs assigned to a user that do not exist yet (a class VM still being made), with
    /// their class's name.
    pub async fn pending_assignments(
        &self,
        user_id: i64,
    ) -> Result<Vec<(u32, Option<String>)>, DbError> {
        let rows: Vec<(i64, Option<String>)> = sqlx::query_as(
            "SELECT a.vmid, c.name FROM vm_assignments a \
             LEFT JOIN class_vms cv ON cv.vmid = a.vmid LEFT JOIN classes c ON c.id = cv.class_id \
             WHERE a.user_id = $1 AND NOT EXISTS (SELECT 1 FROM vms v WHERE v.vmid = a.vmid) \
             ORDER BY a.vmid",
        )
        .bind(user_id)
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .into_iter()
            .map(|(vmid, class)| (vmid as u32, class))
            .collect())
    }
}
