//! The task log of a class: bulk actions and how each went for every VM.

use sqlx::Row;

use super::{Db, DbError};

/// One task of a class.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TaskRow {
    pub id: i64,
    pub class_id: i64,
    /// The VM action, such as `stop`.
    pub action: String,
    pub started_by: String,
    pub started_at: i64,
    /// `None` while it runs.
    pub finished_at: Option<i64>,
    pub total: i64,
    pub failed: i64,
}

/// What a task did to one VM.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TaskResultRow {
    /// The VM's key (`CLUSTER-VMID`).
    #[serde(rename = "vm")]
    pub key: crate::vm_key::VmKey,
    pub vmid: u32,
    pub ok: bool,
    /// A sentence for whoever ran the task.
    pub message: String,
    /// What the node said, for staff; empty when there is nothing more.
    pub detail: String,
}

const TASK_COLUMNS: &str =
    "id, class_id, action, started_by, started_at, finished_at, total, failed";

fn task_from_row(row: &sqlx::any::AnyRow) -> Result<TaskRow, sqlx::Error> {
    Ok(TaskRow {
        id: row.try_get("id")?,
        class_id: row.try_get("class_id")?,
        action: row.try_get("action")?,
        started_by: row.try_get("started_by")?,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
        total: row.try_get("total")?,
        failed: row.try_get("failed")?,
    })
}

impl Db {
    /// Starts a task on `total` VMs; returns its id.
    pub async fn insert_task(
        &self,
        class_id: i64,
        action: &str,
        started_by: &str,
        total: usize,
        now: i64,
    ) -> Result<i64, DbError> {
        let (id,): (i64,) = sqlx::query_as(
            "INSERT INTO class_tasks (class_id, action, started_by, started_at, total) \
             VALUES ($1, $2, $3, $4, $5) RETURNING id",
        )
        .bind(class_id)
        .bind(action)
        .bind(started_by)
        .bind(now)
        .bind(total as i64)
        .fetch_one(self.pool())
        .await?;
        Ok(id)
    }

    /// Records how the task went for one VM.
    pub async fn insert_task_result(
        &self,
        task_id: i64,
        result: &TaskResultRow,
    ) -> Result<(), DbError> {
        sqlx::query(
            "INSERT INTO class_task_results (task_id, cluster_id, vmid, outcome, message, detail) \
             VALUES ($1, $6, $2, $3, $4, $5)",
        )
        .bind(task_id)
        .bind(i64::from(result.key.vmid))
        .bind(if result.ok { "ok" } else { "failed" })
        .bind(&result.message)
        .bind(&result.detail)
        .bind(result.key.cluster)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Marks a task finished, counting its failures from its results.
    pub async fn finish_task(&self, task_id: i64, now: i64) -> Result<(), DbError> {
        sqlx::query(
            "UPDATE class_tasks SET finished_at = $1, failed = (SELECT COUNT(*) FROM \
             class_task_results WHERE task_id = $2 AND outcome = 'failed') WHERE id = $2",
        )
        .bind(now)
        .bind(task_id)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Ends the unfinished tasks of a class named `action`, as they are: a job that a hub
    /// crash cut short starts a new task for what is left. The total becomes the VMs the
    /// task got to.
    pub async fn end_cut_short_tasks(
        &self,
        class_id: i64,
        action: &str,
        now: i64,
    ) -> Result<(), DbError> {
        sqlx::query(
            "UPDATE class_tasks SET finished_at = $1, \
             total = (SELECT COUNT(*) FROM class_task_results r WHERE r.task_id = class_tasks.id), \
             failed = (SELECT COUNT(*) FROM class_task_results r \
             WHERE r.task_id = class_tasks.id AND r.outcome = 'failed') \
             WHERE class_id = $2 AND action = $3 AND finished_at IS NULL",
        )
        .bind(now)
        .bind(class_id)
        .bind(action)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// The newest tasks of a class first.
    pub async fn class_tasks(&self, class_id: i64, limit: u32) -> Result<Vec<TaskRow>, DbError> {
        let rows = sqlx::query(&format!(
            "SELECT {TASK_COLUMNS} FROM class_tasks WHERE class_id = $1 ORDER BY id DESC LIMIT {}",
            limit.clamp(1, 500)
        ))
        .bind(class_id)
        .fetch_all(self.pool())
        .await?;
        Ok(rows.iter().map(task_from_row).collect::<Result<_, _>>()?)
    }

    /// One task of a class.
    pub async fn class_task(&self, class_id: i64, task_id: i64) -> Result<TaskRow, DbError> {
        let row = sqlx::query(&format!(
            "SELECT {TASK_COLUMNS} FROM class_tasks WHERE class_id = $1 AND id = $2"
        ))
        .bind(class_id)
        .bind(task_id)
        .fetch_optional(self.pool())
        .await?
        .ok_or(DbError::NotFound)?;
        Ok(task_from_row(&row)?)
    }

    /// What a task did, by VMID.
    pub async fn task_results(&self, task_id: i64) -> Result<Vec<TaskResultRow>, DbError> {
        let rows = sqlx::query(
            "SELECT cluster_id, vmid, outcome, message, detail FROM class_task_results \
             WHERE task_id = $1 ORDER BY vmid, cluster_id",
        )
        .bind(task_id)
        .fetch_all(self.pool())
        .await?;
        let results = rows.iter().map(|row| {
            let vmid = row.try_get::<i64, _>("vmid")? as u32;
            Ok::<_, sqlx::Error>(TaskResultRow {
                key: crate::vm_key::VmKey::new(row.try_get("cluster_id")?, vmid),
                vmid,
                ok: row.try_get::<String, _>("outcome")? == "ok",
                message: row.try_get("message")?,
                detail: row.try_get("detail")?,
            })
        });
        Ok(results.collect::<Result<_, _>>()?)
    }
}
