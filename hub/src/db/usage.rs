//! What usage reports read beyond the metered runs: sessions opened, idle shutdowns.

use std::collections::HashMap;

use super::{Db, DbError};

/// A metered run with where and for whom it counted, for site-wide reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteRun {
    pub class_id: Option<i64>,
    pub node: String,
    pub boot_at: i64,
    pub end_at: i64,
}

impl Db {
    /// Sessions (screen, terminal, SSH, forwarded ports) each user opened to the class's VMs.
    pub async fn class_session_counts(&self, class_id: i64) -> Result<HashMap<i64, i64>, DbError> {
        let rows: Vec<(i64, i64)> = sqlx::query_as(
            "SELECT a.actor_id, CAST(COUNT(*) AS BIGINT) FROM audit_log a \
             WHERE a.action IN ('console.open', 'vm.forward') AND a.result = 'ok' \
             AND a.actor_id IS NOT NULL AND a.target IN \
             (SELECT 'vm:' || CAST(cluster_id AS TEXT) || '-' || CAST(vmid AS TEXT) \
             FROM class_vms WHERE class_id = $1) \
             GROUP BY a.actor_id",
        )
        .bind(class_id)
        .fetch_all(self.pool())
        .await?;
        Ok(rows.into_iter().collect())
    }

    /// Idle shutdowns of each VM of a class.
    pub async fn class_idle_stop_counts(
        &self,
        class_id: i64,
    ) -> Result<HashMap<crate::vm_key::VmKey, i64>, DbError> {
        let rows: Vec<(Option<i64>, i64, i64)> = sqlx::query_as(
            "SELECT cluster_id, vmid, CAST(COUNT(*) AS BIGINT) FROM idle_stops \
             WHERE class_id = $1 AND outcome <> 'failed' GROUP BY cluster_id, vmid",
        )
        .bind(class_id)
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(cluster, vmid, count)| {
                Some((crate::vm_key::VmKey::new(cluster?, vmid as u32), count))
            })
            .collect())
    }

    /// Every metered run that overlaps `from` to `to` (Unix seconds).
    pub async fn site_runs(&self, from: i64, to: i64) -> Result<Vec<SiteRun>, DbError> {
        let rows: Vec<(Option<i64>, String, i64, i64)> = sqlx::query_as(
            "SELECT class_id, node, boot_at, COALESCE(ended_at, last_seen) AS end_at \
             FROM vm_runs WHERE boot_at < $2 AND COALESCE(ended_at, last_seen) > $1 \
             ORDER BY boot_at",
        )
        .bind(from)
        .bind(to)
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .into_iter()
            .map(|(class_id, node, boot_at, end_at)| SiteRun {
                class_id,
                node,
                boot_at,
                end_at,
            })
            .collect())
    }
}
