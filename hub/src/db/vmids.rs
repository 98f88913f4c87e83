//! Choosing VMIDs for the VMs proxlab makes. Proxmox only needs a VMID to be free in the
//! VM's own cluster, but people read VMIDs too: proxlab picks numbers that no VM,
//! reservation or build on the whole hub holds, so "VM 10001" means one VM, and falls back
//! to numbers free in the VM's cluster only when the range has no such number left.

use std::collections::{HashMap, HashSet};
use std::ops::RangeInclusive;

use super::DbError;

/// Hands out VMIDs of `range` inside one transaction.
pub(super) struct VmidPicker {
    range: RangeInclusive<u32>,
    /// Numbers some cluster uses, and the lowest one not looked at yet.
    hub_taken: HashSet<u32>,
    hub_next: u32,
    /// Per cluster, read once it is needed: its numbers, and its lowest one not looked at.
    cluster_taken: HashMap<i64, (HashSet<u32>, u32)>,
}

impl VmidPicker {
    pub(super) async fn new(
        conn: &mut sqlx::AnyConnection,
        range: RangeInclusive<u32>,
    ) -> Result<Self, DbError> {
        Ok(Self {
            hub_taken: taken(conn, None, &range).await?,
            hub_next: *range.start(),
            cluster_taken: HashMap::new(),
            range,
        })
    }

    /// A free VMID for a new VM of `cluster`, or `None` when the range is full there.
    pub(super) async fn pick(
        &mut self,
        conn: &mut sqlx::AnyConnection,
        cluster: i64,
    ) -> Result<Option<u32>, DbError> {
        let end = *self.range.end();
        while self.hub_next <= end {
            let vmid = self.hub_next;
            self.hub_next += 1;
            if self.hub_taken.insert(vmid) {
                self.mark(cluster, vmid);
                return Ok(Some(vmid));
            }
        }
        if !self.cluster_taken.contains_key(&cluster) {
            let numbers = taken(conn, Some(cluster), &self.range).await?;
            self.cluster_taken
                .insert(cluster, (numbers, *self.range.start()));
        }
        let (numbers, next) = self.cluster_taken.get_mut(&cluster).expect("read above");
        while *next <= end {
            let vmid = *next;
            *next += 1;
            if numbers.insert(vmid) {
                return Ok(Some(vmid));
            }
        }
        Ok(None)
    }

    /// Notes `vmid` as taken in `cluster`, once its numbers were read.
    fn mark(&mut self, cluster: i64, vmid: u32) {
        if let Some((numbers, _)) = self.cluster_taken.get_mut(&cluster) {
            numbers.insert(vmid);
        }
    }
}

/// The VMIDs of `range` that VMs, class reservations and builds hold: of one cluster, or
/// of every cluster.
async fn taken(
    conn: &mut sqlx::AnyConnection,
    cluster: Option<i64>,
    range: &RangeInclusive<u32>,
) -> Result<HashSet<u32>, DbError> {
    let rows: Vec<(i64,)> = sqlx::query_as(
        "SELECT vmid FROM vms WHERE vmid BETWEEN $1 AND $2 AND ($3 IS NULL OR cluster_id = $3) \
         UNION SELECT vmid FROM class_vms WHERE vmid BETWEEN $1 AND $2 \
         AND ($3 IS NULL OR cluster_id = $3) \
         UNION SELECT vmid FROM template_builds WHERE vmid BETWEEN $1 AND $2 \
         AND ($3 IS NULL OR cluster_id = $3)",
    )
    .bind(i64::from(*range.start()))
    .bind(i64::from(*range.end()))
    .bind(cluster)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows.into_iter().map(|(vmid,)| vmid as u32).collect())
}
