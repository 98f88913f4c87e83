//! A class's template versions: the publishes that made them, which one is current, and the
//! jobs that make and roll them out.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::classes::{JOB_COLUMNS, job_from_row, reserve_in};
use super::states::{ClassVmKind, JobKind, Rollout, VersionState, column};
use super::{Db, DbError};

/// A version as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionRow {
    pub class_id: i64,
    pub number: i64,
    pub note: String,
    pub state: VersionState,
    pub rollout: Rollout,
    pub created_by: String,
    pub created_at: i64,
    /// The teacher VM's power state before the publish stopped it (`running`, `stopped`).
    pub teacher_power: Option<String>,
    pub error: String,
}

/// A publish or rollout, as asked for.
#[derive(Debug, Clone)]
pub struct NewRollout<'a> {
    pub class_id: i64,
    pub rollout: Rollout,
    pub warn_minutes: u32,
    pub user_id: i64,
    pub username: &'a str,
    pub now: i64,
}

const VERSION_COLUMNS: &str =
    "class_id, number, note, state, rollout, created_by, created_at, teacher_power, error";

fn version_from_row(row: &AnyRow) -> Result<VersionRow, sqlx::Error> {
    Ok(VersionRow {
        class_id: row.try_get("class_id")?,
        number: row.try_get("number")?,
        note: row.try_get("note")?,
        state: column(row, "state", VersionState::parse)?,
        rollout: column(row, "rollout", Rollout::parse)?,
        created_by: row.try_get("created_by")?,
        created_at: row.try_get("created_at")?,
        teacher_power: row.try_get("teacher_power")?,
        error: row.try_get("error")?,
    })
}

impl Db {
    /// A class's versions, newest first.
    pub async fn class_versions(&self, class_id: i64) -> Result<Vec<VersionRow>, DbError> {
        let rows = sqlx::query(&format!(
            "SELECT {VERSION_COLUMNS} FROM class_versions WHERE class_id = $1 ORDER BY number DESC"
        ))
        .bind(class_id)
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .iter()
            .map(version_from_row)
            .collect::<Result<_, _>>()?)
    }

    pub async fn class_version(
        &self,
        class_id: i64,
        number: i64,
    ) -> Result<Option<VersionRow>, DbError> {
        let row = sqlx::query(&format!(
            "SELECT {VERSION_COLUMNS} FROM class_versions WHERE class_id = $1 AND number = $2"
        ))
        .bind(class_id)
        .bind(number)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.as_ref().map(version_from_row).transpose()?)
    }

    /// Starts a publish: the next version (building), a base VMID reserved on each of
    /// `base_nodes`, and the job, at once. Refused while another publish or rollout of the
    /// class is unfinished. Returns the version's number and the job.
    pub async fn start_publish(
        &self,
        publish: &NewRollout<'_>,
        note: &str,
        base_nodes: &[String],
        range: std::ops::RangeInclusive<u32>,
    ) -> Result<(i64, i64), DbError> {
        let mut tx = self.write_tx().await?;
        refuse_if_rolling_out(&mut tx, publish.class_id).await?;
        let (last,): (Option<i64>,) =
            sqlx::query_as("SELECT MAX(number) FROM class_versions WHERE class_id = $1")
                .bind(publish.class_id)
                .fetch_one(&mut *tx)
                .await?;
        let number = last.unwrap_or(0) + 1;
        sqlx::query(
            "INSERT INTO class_versions (class_id, number, note, state, rollout, created_by, \
             created_at) VALUES ($1, $2, $3, 'building', $4, $5, $6)",
        )
        .bind(publish.class_id)
        .bind(number)
        .bind(note)
        .bind(publish.rollout.as_str())
        .bind(publish.username)
        .bind(publish.now)
        .execute(&mut *tx)
        .await?;
        let plan: Vec<(ClassVmKind, String)> = base_nodes
            .iter()
            .map(|node| (ClassVmKind::Base, node.clone()))
            .collect();
        reserve_in(
            &mut tx,
            publish.class_id,
            &plan,
            range,
            Some(number),
            publish.now,
        )
        .await?;
        let job = insert_rollout_job(&mut tx, JobKind::Publish, publish, number).await?;
        tx.commit().await?;
        Ok((number, job))
    }

    /// Starts moving a class's VMs to the ready version `number` (a rollback, or a change
    /// of how the current version rolls out). Returns the job.
    pub async fn start_rollout(
        &self,
        rollout: &NewRollout<'_>,
        number: i64,
    ) -> Result<i64, DbError> {
        let mut tx = self.write_tx().await?;
        refuse_if_rolling_out(&mut tx, rollout.class_id).await?;
        let updated = sqlx::query(
            "UPDATE class_versions SET rollout = $1 \
             WHERE class_id = $2 AND number = $3 AND state = 'ready'",
        )
        .bind(rollout.rollout.as_str())
        .bind(rollout.class_id)
        .bind(number)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if updated == 0 {
            return Err(DbError::Conflict(format!(
                "version {number} is not ready to roll out (it is still being made, failed, or \
                 was removed)"
            )));
        }
        let job = insert_rollout_job(&mut tx, JobKind::Rollout, rollout, number).await?;
        tx.commit().await?;
        Ok(job)
    }

    pub async fn set_version_state(
        &self,
        class_id: i64,
        number: i64,
        state: VersionState,
        error: &str,
    ) -> Result<(), DbError> {
        sqlx::query(
            "UPDATE class_versions SET state = $1, error = $2 WHERE class_id = $3 AND number = $4",
        )
        .bind(state.as_str())
        .bind(error)
        .bind(class_id)
        .bind(number)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Records the teacher VM's power before a publish stops it, the first time only, and
    /// returns what is recorded (so a resumed publish restores what the teacher had).
    pub async fn keep_teacher_power(
        &self,
        class_id: i64,
        number: i64,
        power: &str,
    ) -> Result<String, DbError> {
        sqlx::query(
            "UPDATE class_versions SET teacher_power = $1 \
             WHERE class_id = $2 AND number = $3 AND teacher_power IS NULL",
        )
        .bind(power)
        .bind(class_id)
        .bind(number)
        .execute(self.pool())
        .await?;
        let (kept,): (Option<String>,) = sqlx::query_as(
            "SELECT teacher_power FROM class_versions WHERE class_id = $1 AND number = $2",
        )
        .bind(class_id)
        .bind(number)
        .fetch_one(self.pool())
        .await?;
        Ok(kept.unwrap_or_else(|| power.to_owned()))
    }

    /// Makes a ready version the one new VMs are made from.
    pub async fn make_version_current(&self, class_id: i64, number: i64) -> Result<(), DbError> {
        sqlx::query("UPDATE classes SET current_version = $1 WHERE id = $2")
            .bind(number)
            .bind(class_id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Records the version a VM's disks were made from.
    pub async fn set_class_vm_version(
        &self,
        vm: crate::vm_key::VmKey,
        number: i64,
    ) -> Result<(), DbError> {
        sqlx::query("UPDATE class_vms SET version = $1 WHERE cluster_id = $2 AND vmid = $3")
            .bind(number)
            .bind(vm.cluster)
            .bind(i64::from(vm.vmid))
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Sets how many versions a class keeps.
    pub async fn set_keep_versions(&self, class_id: i64, keep: u32) -> Result<(), DbError> {
        sqlx::query("UPDATE classes SET keep_versions = $1 WHERE id = $2")
            .bind(i64::from(keep))
            .bind(class_id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// When a job's warning to running VMs ends: set to `until` the first time, and what was
    /// set before on every later call (a resumed job keeps its deadline).
    pub async fn job_warn_until(&self, job: i64, until: i64) -> Result<i64, DbError> {
        sqlx::query("UPDATE jobs SET warn_until = $1 WHERE id = $2 AND warn_until IS NULL")
            .bind(until)
            .bind(job)
            .execute(self.pool())
            .await?;
        let (kept,): (Option<i64>,) = sqlx::query_as("SELECT warn_until FROM jobs WHERE id = $1")
            .bind(job)
            .fetch_one(self.pool())
            .await?;
        Ok(kept.unwrap_or(until))
    }
}

/// The jobs a publish or rollout waits for: those that change the class's bases.
const CHANGES_BASES: &[JobKind] = &[JobKind::Publish, JobKind::Rollout, JobKind::Hardware];

async fn refuse_if_rolling_out(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    class_id: i64,
) -> Result<(), DbError> {
    refuse_if_busy(tx, class_id, CHANGES_BASES).await
}

/// Fails with a conflict when a job of one of `kinds` is pending or running for the class.
pub(super) async fn refuse_if_busy(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    class_id: i64,
    kinds: &[JobKind],
) -> Result<(), DbError> {
    let kinds: Vec<String> = kinds
        .iter()
        .map(|kind| format!("'{}'", kind.as_str()))
        .collect();
    let busy = sqlx::query(&format!(
        "SELECT {JOB_COLUMNS} FROM jobs WHERE class_id = $1 AND kind IN ({}) \
         AND state IN ('pending', 'running') ORDER BY id LIMIT 1",
        kinds.join(", ")
    ))
    .bind(class_id)
    .fetch_optional(&mut **tx)
    .await?;
    match busy.as_ref().map(job_from_row).transpose()? {
        Some(job) => Err(DbError::Conflict(format!(
            "a {} of this class is under way (job {}); wait for it to end",
            job.kind, job.id
        ))),
        None => Ok(()),
    }
}

async fn insert_rollout_job(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    kind: JobKind,
    rollout: &NewRollout<'_>,
    number: i64,
) -> Result<i64, DbError> {
    let row = sqlx::query(
        "INSERT INTO jobs (kind, class_id, state, created_by, created_at, updated_at, version, \
         warn_minutes) VALUES ($1, $2, 'pending', $3, $4, $4, $5, $6) RETURNING id",
    )
    .bind(kind.as_str())
    .bind(rollout.class_id)
    .bind(rollout.user_id)
    .bind(rollout.now)
    .bind(number)
    .bind(i64::from(rollout.warn_minutes))
    .fetch_one(&mut **tx)
    .await?;
    Ok(row.try_get("id")?)
}
