//! Quota hours: each class's allowance, hours teachers added, and the metered runs of VMs.

use std::collections::HashMap;

use sqlx::Row;

use super::{Db, DbError};
use crate::domain::quota::meter::Run;
use crate::vm_key::VmKey;

/// A class's quota as stored.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct QuotaRow {
    pub class_id: i64,
    pub hours: i64,
    pub count_scheduled: bool,
    pub updated_by: String,
    pub updated_at: i64,
}

/// A metered run, with the class and user it counts for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunRow {
    pub run: Run,
    pub class_id: Option<i64>,
    pub user_id: Option<i64>,
}

fn quota_from_row(row: &sqlx::any::AnyRow) -> Result<QuotaRow, sqlx::Error> {
    Ok(QuotaRow {
        class_id: row.try_get("class_id")?,
        hours: row.try_get("hours")?,
        count_scheduled: row.try_get::<i64, _>("count_scheduled")? != 0,
        updated_by: row.try_get("updated_by")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn run_from_row(row: &sqlx::any::AnyRow) -> Result<RunRow, sqlx::Error> {
    Ok(RunRow {
        run: Run {
            vm: VmKey::new(
                row.try_get("cluster_id")?,
                row.try_get::<i64, _>("vmid")? as u32,
            ),
            boot_at: row.try_get("boot_at")?,
            last_seen: row.try_get("last_seen")?,
            ended_at: row.try_get("ended_at")?,
        },
        class_id: row.try_get("class_id")?,
        user_id: row.try_get("user_id")?,
    })
}

const QUOTA_COLUMNS: &str = "class_id, hours, count_scheduled, updated_by, updated_at";
const RUN_COLUMNS: &str = "cluster_id, vmid, boot_at, class_id, user_id, last_seen, ended_at";

impl Db {
    /// A class's quota, if it has one.
    pub async fn class_quota(&self, class_id: i64) -> Result<Option<QuotaRow>, DbError> {
        let row = sqlx::query(&format!(
            "SELECT {QUOTA_COLUMNS} FROM class_quotas WHERE class_id = $1"
        ))
        .bind(class_id)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.as_ref().map(quota_from_row).transpose()?)
    }

    /// Every class's quota.
    pub async fn all_quotas(&self) -> Result<Vec<QuotaRow>, DbError> {
        let rows = sqlx::query(&format!(
            "SELECT {QUOTA_COLUMNS} FROM class_quotas ORDER BY class_id"
        ))
        .fetch_all(self.pool())
        .await?;
        Ok(rows.iter().map(quota_from_row).collect::<Result<_, _>>()?)
    }

    /// Sets a class's quota, or removes it (`None`).
    pub async fn set_class_quota(
        &self,
        class_id: i64,
        quota: Option<&QuotaRow>,
    ) -> Result<(), DbError> {
        let Some(quota) = quota else {
            sqlx::query("DELETE FROM class_quotas WHERE class_id = $1")
                .bind(class_id)
                .execute(self.pool())
                .await?;
            return Ok(());
        };
        sqlx::query(&format!(
            "INSERT INTO class_quotas ({QUOTA_COLUMNS}) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (class_id) DO UPDATE SET hours = excluded.hours, \
             count_scheduled = excluded.count_scheduled, updated_by = excluded.updated_by, \
             updated_at = excluded.updated_at"
        ))
        .bind(class_id)
        .bind(quota.hours)
        .bind(i64::from(quota.count_scheduled))
        .bind(&quota.updated_by)
        .bind(quota.updated_at)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Adds hours to students of a class.
    pub async fn add_quota_hours(
        &self,
        class_id: i64,
        user_ids: &[i64],
        hours: i64,
        added_by: &str,
        at: i64,
    ) -> Result<(), DbError> {
        let mut tx = self.write_tx().await?;
        for user_id in user_ids {
            sqlx::query(
                "INSERT INTO quota_extras (class_id, user_id, hours, added_by, added_at) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(class_id)
            .bind(user_id)
            .bind(hours)
            .bind(added_by)
            .bind(at)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The hours added to each student of a class.
    pub async fn quota_extras(&self, class_id: i64) -> Result<HashMap<i64, i64>, DbError> {
        let rows: Vec<(i64, i64)> = sqlx::query_as(
            "SELECT user_id, CAST(SUM(hours) AS BIGINT) FROM quota_extras WHERE class_id = $1 \
             GROUP BY user_id",
        )
        .bind(class_id)
        .fetch_all(self.pool())
        .await?;
        Ok(rows.into_iter().collect())
    }

    /// Stores runs as the meter changed them from `node`'s reports: a new run takes the class
    /// and user its VM has now; a known one gets its new times.
    pub async fn store_runs(&self, node: &str, runs: &[Run]) -> Result<(), DbError> {
        if runs.is_empty() {
            return Ok(());
        }
        let mut tx = self.write_tx().await?;
        for run in runs {
            sqlx::query(
                "INSERT INTO vm_runs (cluster_id, vmid, boot_at, node, class_id, user_id, last_seen, \
                 ended_at) VALUES ($6, $1, $2, $5, \
                 (SELECT class_id FROM class_vms WHERE cluster_id = $6 AND vmid = $1), \
                 (SELECT user_id FROM vm_assignments WHERE cluster_id = $6 AND vmid = $1), $3, $4) \
                 ON CONFLICT (cluster_id, vmid, boot_at) DO UPDATE SET last_seen = excluded.last_seen, \
                 ended_at = excluded.ended_at",
            )
            .bind(i64::from(run.vm.vmid))
            .bind(run.boot_at)
            .bind(run.last_seen)
            .bind(run.ended_at)
            .bind(node)
            .bind(run.vm.cluster)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The runs not yet ended (to resume metering after a restart).
    pub async fn open_runs(&self) -> Result<Vec<Run>, DbError> {
        let rows = sqlx::query(&format!(
            "SELECT {RUN_COLUMNS} FROM vm_runs WHERE ended_at IS NULL"
        ))
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| run_from_row(row).map(|found| found.run))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(DbError::from)
    }

    /// Every run counted for a class.
    pub async fn class_runs(&self, class_id: i64) -> Result<Vec<RunRow>, DbError> {
        let rows = sqlx::query(&format!(
            "SELECT {RUN_COLUMNS} FROM vm_runs WHERE class_id = $1 ORDER BY boot_at"
        ))
        .bind(class_id)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(run_from_row)
            .collect::<Result<_, sqlx::Error>>()
            .map_err(DbError::from)
    }
}
