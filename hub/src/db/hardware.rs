//! A class's hardware changes: the job that applies one, and the hardware a class of empty
//! VMs makes new VMs with.

use sqlx::Row;

use super::states::JobKind;
use super::versions::refuse_if_busy;
use super::{Db, DbError};

/// The hardware new VMs of a class without a template are made with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmptyVmHardware<'a> {
    pub cores: Option<u32>,
    pub memory_mib: Option<u64>,
    pub disk_gib: Option<u32>,
    pub bridge: Option<&'a str>,
}

impl Db {
    /// Starts a hardware change of a class, described by `spec`, unless another job of the
    /// class is under way (its VMs would change under it). Returns the job.
    pub async fn start_hardware_change(
        &self,
        class_id: i64,
        spec: &str,
        user_id: i64,
        now: i64,
    ) -> Result<i64, DbError> {
        let mut tx = self.write_tx().await?;
        refuse_if_busy(&mut tx, class_id, JobKind::ALL).await?;
        let row = sqlx::query(
            "INSERT INTO jobs (kind, class_id, state, created_by, created_at, updated_at, spec) \
             VALUES ($1, $2, 'pending', $3, $4, $4, $5) RETURNING id",
        )
        .bind(JobKind::Hardware.as_str())
        .bind(class_id)
        .bind(user_id)
        .bind(now)
        .bind(spec)
        .fetch_one(&mut *tx)
        .await?;
        let job = row.try_get("id")?;
        tx.commit().await?;
        Ok(job)
    }

    /// Sets what a class of empty VMs makes new VMs with; `None` keeps a value.
    pub async fn set_empty_vm_hardware(
        &self,
        class_id: i64,
        hardware: &EmptyVmHardware<'_>,
    ) -> Result<(), DbError> {
        sqlx::query(
            "UPDATE classes SET cores = COALESCE($1, cores), \
             memory_mib = COALESCE($2, memory_mib), disk_gib = COALESCE($3, disk_gib), \
             bridge = COALESCE($4, bridge) WHERE id = $5 AND template_vmid IS NULL",
        )
        .bind(hardware.cores.map(i64::from))
        .bind(hardware.memory_mib.map(|mib| mib as i64))
        .bind(hardware.disk_gib.map(i64::from))
        .bind(hardware.bridge)
        .bind(class_id)
        .execute(self.pool())
        .await?;
        Ok(())
    }
}
