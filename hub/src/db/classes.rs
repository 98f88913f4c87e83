//! Classes, their owners and students, their VMs (reserved by VMID before they exist), and
//! the jobs that deploy and delete them.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::states::{Adoption, ClassState, ClassVmKind, ClassVmState, JobKind, JobState, column};
use super::{Backend, Db, DbError};
use crate::vm_key::VmKey;

/// A class as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassRow {
    pub id: i64,
    pub name: String,
    pub description: String,
    /// The source template; `None` for a class of empty VMs.
    pub template: Option<VmKey>,
    pub cores: Option<u32>,
    pub memory_mib: Option<u64>,
    pub disk_gib: Option<u32>,
    pub bridge: Option<String>,
    /// Where the disks of a class without a template go.
    pub storage: Option<String>,
    pub pinned_node: Option<String>,
    /// Student VMs wanted.
    pub seats: u32,
    pub state: ClassState,
    pub invite_expires_at: Option<i64>,
    pub invite_seat_limit: Option<u32>,
    pub has_invite: bool,
    /// What the current invite token is derived from (see `classes::invites`); `None` for an
    /// invite made before links could be shown again.
    pub invite_nonce: Option<String>,
    /// Only accounts whose email is in this domain may use the invite (empty: any).
    pub invite_domain: String,
    /// Only people on the class's roster may use the invite.
    pub invite_roster_only: bool,
    /// The directory group (DN) the roster follows; empty for none.
    pub roster_group: String,
    pub created_at: i64,
    /// The version new VMs are made from (`None` without a template).
    pub current_version: Option<i64>,
    /// How many versions are kept for rolling back (the current one counts).
    pub keep_versions: u32,
}

/// A class's new invite.
#[derive(Debug, Clone, Copy, Default)]
pub struct NewInvite<'a> {
    /// The token's hash, for looking it up.
    pub hash: &'a str,
    /// What the token is derived from.
    pub nonce: Option<&'a str>,
    pub expires_at: Option<i64>,
    pub seat_limit: Option<u32>,
    /// Who may use it: see [`ClassRow::invite_domain`], [`ClassRow::invite_roster_only`].
    pub domain: &'a str,
    pub roster_only: bool,
}

/// What a new class is made of.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NewClass {
    pub name: String,
    pub description: String,
    pub template: Option<VmKey>,
    pub cores: Option<u32>,
    pub memory_mib: Option<u64>,
    pub disk_gib: Option<u32>,
    pub bridge: Option<String>,
    pub storage: Option<String>,
    pub pinned_node: Option<String>,
    pub seats: u32,
}

/// A VM of a class.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassVmRow {
    /// Its cluster and VMID.
    pub key: VmKey,
    /// Its VMID on its cluster (`key.vmid`).
    pub vmid: u32,
    pub class_id: i64,
    pub kind: ClassVmKind,
    pub node: String,
    pub state: ClassVmState,
    pub attempts: u32,
    pub error: String,
    pub assignee: Option<String>,
    /// The identity of the VM made for this seat, once the hub has seen it.
    pub identity: Option<String>,
    /// The class version a base holds, or a VM's disks were made from.
    pub version: Option<i64>,
    /// How a VM adopted into the class relates to its template; `None` for one proxlab made.
    pub adopted: Option<Adoption>,
}

/// A job as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRow {
    pub id: i64,
    pub kind: JobKind,
    pub class_id: Option<i64>,
    pub created_by: Option<i64>,
    pub state: JobState,
    pub created_at: i64,
    pub updated_at: i64,
    pub message: String,
    /// The version a publish makes or a rollout moves to.
    pub version: Option<i64>,
    /// How long running VMs are warned before a re-image shuts them down.
    pub warn_minutes: u32,
    /// When that warning ends, once it was given.
    pub warn_until: Option<i64>,
    /// What a hardware change changes (JSON of `HardwareChange`).
    pub spec: Option<String>,
}

/// The outcome of a join.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinOutcome {
    /// Enrolled and given this VM (or already had it).
    Assigned(VmKey),
    /// Enrolled; no free VM yet.
    Waitlisted,
}

/// Tries per VM before it is reported as failed.
pub const MAX_ATTEMPTS: u32 = 3;

const CLASS_COLUMNS: &str = "id, name, description, template_cluster_id, template_vmid, cores, memory_mib, disk_gib, \
     bridge, storage, pinned_node, seats, state, invite_hash, invite_expires_at, invite_seat_limit, invite_nonce, created_at, \
     current_version, keep_versions, invite_domain, invite_roster_only, roster_group";

pub(super) const JOB_COLUMNS: &str = "id, kind, class_id, created_by, state, created_at, updated_at, message, version, \
     warn_minutes, warn_until, spec";

fn opt_u32(row: &AnyRow, column: &str) -> Result<Option<u32>, sqlx::Error> {
    Ok(row.try_get::<Option<i64>, _>(column)?.map(|v| v as u32))
}

fn class_from_row(row: &AnyRow) -> Result<ClassRow, sqlx::Error> {
    Ok(ClassRow {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        description: row.try_get("description")?,
        template: match (
            row.try_get::<Option<i64>, _>("template_cluster_id")?,
            opt_u32(row, "template_vmid")?,
        ) {
            (Some(cluster), Some(vmid)) => Some(VmKey::new(cluster, vmid)),
            _ => None,
        },
        cores: opt_u32(row, "cores")?,
        memory_mib: row
            .try_get::<Option<i64>, _>("memory_mib")?
            .map(|v| v as u64),
        disk_gib: opt_u32(row, "disk_gib")?,
        bridge: row.try_get("bridge")?,
        storage: row.try_get("storage")?,
        pinned_node: row.try_get("pinned_node")?,
        seats: row.try_get::<i64, _>("seats")? as u32,
        state: column(row, "state", ClassState::parse)?,
        invite_expires_at: row.try_get("invite_expires_at")?,
        invite_seat_limit: opt_u32(row, "invite_seat_limit")?,
        has_invite: row.try_get::<Option<String>, _>("invite_hash")?.is_some(),
        invite_nonce: row.try_get("invite_nonce")?,
        created_at: row.try_get("created_at")?,
        current_version: row.try_get("current_version")?,
        keep_versions: row.try_get::<i64, _>("keep_versions")? as u32,
        invite_domain: row.try_get("invite_domain")?,
        invite_roster_only: row.try_get::<i64, _>("invite_roster_only")? != 0,
        roster_group: row.try_get("roster_group")?,
    })
}

fn class_vm_from_row(row: &AnyRow) -> Result<ClassVmRow, sqlx::Error> {
    let vmid = row.try_get::<i64, _>("vmid")? as u32;
    Ok(ClassVmRow {
        key: VmKey::new(row.try_get("cluster_id")?, vmid),
        vmid,
        class_id: row.try_get("class_id")?,
        kind: column(row, "kind", ClassVmKind::parse)?,
        node: row.try_get("node")?,
        state: column(row, "state", ClassVmState::parse)?,
        attempts: row.try_get::<i64, _>("attempts")? as u32,
        error: row.try_get("error")?,
        assignee: row.try_get("assignee")?,
        identity: row.try_get("identity")?,
        version: row.try_get("version")?,
        adopted: row
            .try_get::<Option<String>, _>("adopted")?
            .map(|text| {
                Adoption::parse(&text)
                    .ok_or_else(|| sqlx::Error::Decode(format!("unknown adoption {text:?}").into()))
            })
            .transpose()?,
    })
}

pub(super) fn job_from_row(row: &AnyRow) -> Result<JobRow, sqlx::Error> {
    Ok(JobRow {
        id: row.try_get("id")?,
        kind: column(row, "kind", JobKind::parse)?,
        class_id: row.try_get("class_id")?,
        created_by: row.try_get("created_by")?,
        state: column(row, "state", JobState::parse)?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        message: row.try_get("message")?,
        version: row.try_get("version")?,
        warn_minutes: row.try_get::<i64, _>("warn_minutes")? as u32,
        warn_until: row.try_get("warn_until")?,
        spec: row.try_get("spec")?,
    })
}

impl Db {
    /// Creates a class owned by `owner`. Returns its id.
    pub async fn insert_class(
        &self,
        class: &NewClass,
        owner: i64,
        now: i64,
    ) -> Result<i64, DbError> {
        let mut tx = self.write_tx().await?;
        let id = insert_class_in(&mut tx, class, owner, now).await?;
        tx.commit().await?;
        Ok(id)
    }

    pub async fn class(&self, id: i64) -> Result<Option<ClassRow>, DbError> {
        let row = sqlx::query(&format!(
            "SELECT {CLASS_COLUMNS} FROM classes WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.as_ref().map(class_from_row).transpose()?)
    }

    /// Classes a user owns or assists (`staffed_by`), or every class.
    pub async fn list_classes(&self, staffed_by: Option<i64>) -> Result<Vec<ClassRow>, DbError> {
        let rows = match staffed_by {
            Some(user) => {
                sqlx::query(&format!(
                    "SELECT {CLASS_COLUMNS} FROM classes WHERE id IN \
                     (SELECT class_id FROM class_owners WHERE user_id = $1 \
                      UNION SELECT class_id FROM class_assistants WHERE user_id = $1) \
                     ORDER BY name, id"
                ))
                .bind(user)
                .fetch_all(self.pool())
                .await?
            }
            None => {
                sqlx::query(&format!(
                    "SELECT {CLASS_COLUMNS} FROM classes ORDER BY name, id"
                ))
                .fetch_all(self.pool())
                .await?
            }
        };
        Ok(rows.iter().map(class_from_row).collect::<Result<_, _>>()?)
    }

    /// The classes a student is enrolled in.
    pub async fn enrolled_classes(&self, user: i64) -> Result<Vec<ClassRow>, DbError> {
        let rows = sqlx::query(&format!(
            "SELECT {CLASS_COLUMNS} FROM classes WHERE id IN \
             (SELECT class_id FROM enrollments WHERE user_id = $1) ORDER BY name, id"
        ))
        .bind(user)
        .fetch_all(self.pool())
        .await?;
        Ok(rows.iter().map(class_from_row).collect::<Result<_, _>>()?)
    }

    /// The ids of the classes a user owns.
    pub async fn owned_class_ids(&self, user: i64) -> Result<Vec<i64>, DbError> {
        let rows: Vec<(i64,)> = sqlx::query_as(
            "SELECT class_id FROM class_owners WHERE user_id = $1 ORDER BY class_id",
        )
        .bind(user)
        .fetch_all(self.pool())
        .await?;
        Ok(rows.into_iter().map(|(class_id,)| class_id).collect())
    }

    /// The ids of the classes a user assists.
    pub async fn assisted_class_ids(&self, user: i64) -> Result<Vec<i64>, DbError> {
        let rows: Vec<(i64,)> = sqlx::query_as(
            "SELECT class_id FROM class_assistants WHERE user_id = $1 ORDER BY class_id",
        )
        .bind(user)
        .fetch_all(self.pool())
        .await?;
        Ok(rows.into_iter().map(|(class_id,)| class_id).collect())
    }

    pub async fn is_class_assistant(&self, class_id: i64, user: i64) -> Result<bool, DbError> {
        let row =
            sqlx::query("SELECT 1 AS x FROM class_assistants WHERE class_id = $1 AND user_id = $2")
                .bind(class_id)
                .bind(user)
                .fetch_optional(self.pool())
                .await?;
        Ok(row.is_some())
    }

    pub async fn class_assistants(&self, class_id: i64) -> Result<Vec<String>, DbError> {
        let rows: Vec<(String,)> = sqlx::query_as(
            "SELECT u.username FROM class_assistants a JOIN users u ON u.id = a.user_id \
             WHERE a.class_id = $1 ORDER BY u.username",
        )
        .bind(class_id)
        .fetch_all(self.pool())
        .await?;
        Ok(rows.into_iter().map(|(name,)| name).collect())
    }

    pub async fn add_class_assistant(&self, class_id: i64, user: i64) -> Result<(), DbError> {
        sqlx::query(
            "INSERT INTO class_assistants (class_id, user_id) VALUES ($1, $2) \
             ON CONFLICT DO NOTHING",
        )
        .bind(class_id)
        .bind(user)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    pub async fn remove_class_assistant(&self, class_id: i64, user: i64) -> Result<bool, DbError> {
        let done = sqlx::query("DELETE FROM class_assistants WHERE class_id = $1 AND user_id = $2")
            .bind(class_id)
            .bind(user)
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn is_class_owner(&self, class_id: i64, user: i64) -> Result<bool, DbError> {
        let row =
            sqlx::query("SELECT 1 AS x FROM class_owners WHERE class_id = $1 AND user_id = $2")
                .bind(class_id)
                .bind(user)
                .fetch_optional(self.pool())
                .await?;
        Ok(row.is_some())
    }

    pub async fn class_owners(&self, class_id: i64) -> Result<Vec<String>, DbError> {
        let rows: Vec<(String,)> = sqlx::query_as(
            "SELECT u.username FROM class_owners o JOIN users u ON u.id = o.user_id \
             WHERE o.class_id = $1 ORDER BY u.username",
        )
        .bind(class_id)
        .fetch_all(self.pool())
        .await?;
        Ok(rows.into_iter().map(|(name,)| name).collect())
    }

    pub async fn add_class_owner(&self, class_id: i64, user: i64) -> Result<(), DbError> {
        sqlx::query(
            "INSERT INTO class_owners (class_id, user_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
        .bind(class_id)
        .bind(user)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Removes a co-owner; the last owner stays.
    pub async fn remove_class_owner(&self, class_id: i64, user: i64) -> Result<bool, DbError> {
        let done = sqlx::query(
            "DELETE FROM class_owners WHERE class_id = $1 AND user_id = $2 \
             AND (SELECT COUNT(*) FROM class_owners WHERE class_id = $1) > 1",
        )
        .bind(class_id)
        .bind(user)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn set_class_state(&self, class_id: i64, state: ClassState) -> Result<(), DbError> {
        sqlx::query("UPDATE classes SET state = $1 WHERE id = $2")
            .bind(state.as_str())
            .bind(class_id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Adds `delta` seats (negative: removes them) in the database itself, so concurrent
    /// changes add up; refused (`false`, nothing changed) if the result would leave 0..=max.
    pub async fn change_class_seats(
        &self,
        class_id: i64,
        delta: i64,
        max: u32,
    ) -> Result<bool, DbError> {
        let done = sqlx::query(
            "UPDATE classes SET seats = seats + $1 WHERE id = $2 AND seats + $1 >= 0 AND seats + $1 <= $3",
        )
        .bind(delta)
        .bind(class_id)
        .bind(i64::from(max))
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Removes the class and everything that hangs on it.
    pub async fn delete_class(&self, class_id: i64) -> Result<(), DbError> {
        let mut tx = self.write_tx().await?;
        for table in ["vm_assignments", "plugin_notes"] {
            sqlx::query(&format!(
                "DELETE FROM {table} WHERE EXISTS (SELECT 1 FROM class_vms cv \
                 WHERE cv.class_id = $1 AND cv.cluster_id = {table}.cluster_id \
                 AND cv.vmid = {table}.vmid)"
            ))
            .bind(class_id)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query("DELETE FROM plugin_settings WHERE class_id = $1")
            .bind(class_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM classes WHERE id = $1")
            .bind(class_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Sets a new invite (its token's hash, and the nonce it is derived from); the old one
    /// stops working at once.
    pub async fn set_invite(&self, class_id: i64, invite: &NewInvite<'_>) -> Result<(), DbError> {
        sqlx::query(
            "UPDATE classes SET invite_hash = $1, invite_nonce = $2, invite_expires_at = $3, \
             invite_seat_limit = $4, invite_domain = $5, invite_roster_only = $6 WHERE id = $7",
        )
        .bind(invite.hash)
        .bind(invite.nonce)
        .bind(invite.expires_at)
        .bind(invite.seat_limit.map(i64::from))
        .bind(invite.domain)
        .bind(i64::from(invite.roster_only))
        .bind(class_id)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// The class an invite belongs to.
    pub async fn class_by_invite(&self, invite_hash: &str) -> Result<Option<ClassRow>, DbError> {
        let row = sqlx::query(&format!(
            "SELECT {CLASS_COLUMNS} FROM classes WHERE invite_hash = $1"
        ))
        .bind(invite_hash)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.as_ref().map(class_from_row).transpose()?)
    }

    /// Reserves a VMID of `range` for each planned VM of a class, in the cluster of the node
    /// it is planned on (see `db::vmids`). The reservations are rows of `class_vms` in state
    /// `planned`, made from the class's current version.
    pub async fn reserve_vmids(
        &self,
        class_id: i64,
        plan: &[(ClassVmKind, String)],
        range: std::ops::RangeInclusive<u32>,
        now: i64,
    ) -> Result<Vec<VmKey>, DbError> {
        let mut tx = self.write_tx().await?;
        let reserved = reserve_in(&mut tx, class_id, plan, range, None, now).await?;
        tx.commit().await?;
        Ok(reserved)
    }

    pub async fn class_vms(&self, class_id: i64) -> Result<Vec<ClassVmRow>, DbError> {
        let rows = sqlx::query(
            "SELECT c.cluster_id, c.vmid, c.class_id, c.kind, c.node, c.state, c.attempts, c.error, c.identity, c.version, \
             c.adopted, u.username AS assignee \
             FROM class_vms c \
             LEFT JOIN vm_assignments a ON a.cluster_id = c.cluster_id AND a.vmid = c.vmid \
             LEFT JOIN users u ON u.id = a.user_id WHERE c.class_id = $1 \
             ORDER BY c.vmid, c.cluster_id",
        )
        .bind(class_id)
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .iter()
            .map(class_vm_from_row)
            .collect::<Result<_, _>>()?)
    }

    /// Records how a VM's creation or removal went.
    pub async fn set_class_vm_state(
        &self,
        vm: VmKey,
        state: ClassVmState,
        error: &str,
        count_attempt: bool,
        now: i64,
    ) -> Result<(), DbError> {
        sqlx::query(
            "UPDATE class_vms SET state = $1, error = $2, attempts = attempts + $3, updated_at = $4 \
             WHERE cluster_id = $5 AND vmid = $6",
        )
        .bind(state.as_str())
        .bind(error)
        .bind(i64::from(count_attempt))
        .bind(now)
        .bind(vm.cluster)
        .bind(i64::from(vm.vmid))
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Sets the message shown on a ready class VM (a plugin step after its start); returns
    /// the VM's class.
    /// Forgets the identity of a class VM that proxlab itself destroyed to make anew.
    pub async fn forget_class_vm_identity(&self, vm: VmKey) -> Result<(), DbError> {
        sqlx::query("UPDATE class_vms SET identity = NULL WHERE cluster_id = $1 AND vmid = $2")
            .bind(vm.cluster)
            .bind(i64::from(vm.vmid))
            .execute(self.pool())
            .await?;
        Ok(())
    }

    pub async fn set_class_vm_error(&self, vm: VmKey, error: &str) -> Result<Option<i64>, DbError> {
        let class: Option<(i64,)> = sqlx::query_as(
            "UPDATE class_vms SET error = $1 WHERE cluster_id = $2 AND vmid = $3 RETURNING class_id",
        )
        .bind(error)
        .bind(vm.cluster)
        .bind(i64::from(vm.vmid))
        .fetch_optional(self.pool())
        .await?;
        Ok(class.map(|(id,)| id))
    }

    pub async fn remove_class_vm(&self, vm: VmKey) -> Result<(), DbError> {
        let mut tx = self.write_tx().await?;
        for table in ["vm_assignments", "plugin_notes", "class_vms"] {
            sqlx::query(&format!(
                "DELETE FROM {table} WHERE cluster_id = $1 AND vmid = $2"
            ))
            .bind(vm.cluster)
            .bind(i64::from(vm.vmid))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The class a VM belongs to, if any.
    pub async fn class_of_vm(&self, vm: VmKey) -> Result<Option<i64>, DbError> {
        let row = sqlx::query("SELECT class_id FROM class_vms WHERE cluster_id = $1 AND vmid = $2")
            .bind(vm.cluster)
            .bind(i64::from(vm.vmid))
            .fetch_optional(self.pool())
            .await?;
        Ok(row.map(|row| row.try_get("class_id")).transpose()?)
    }

    /// Enrolls a student through the class's invite and gives them one free student VM,
    /// atomically. The invite's seat limit is read and counted under the class's row lock
    /// (SQLite's write lock), so concurrent joins never enrol more students than it allows;
    /// a VM is assigned by a conditional insert that two joins cannot both win. `None`: the
    /// class is full, and nothing changed.
    pub async fn join_class(
        &self,
        class_id: i64,
        user: i64,
        now: i64,
    ) -> Result<Option<JoinOutcome>, DbError> {
        let mut tx = self.write_tx().await?;
        let lock = match self.backend() {
            Backend::Sqlite => "SELECT invite_seat_limit FROM classes WHERE id = $1",
            Backend::Postgres => "SELECT invite_seat_limit FROM classes WHERE id = $1 FOR UPDATE",
        };
        let class = sqlx::query(lock)
            .bind(class_id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(DbError::NotFound)?;
        let limit: Option<i64> = class.try_get("invite_seat_limit")?;
        let enrolled =
            sqlx::query("SELECT 1 AS one FROM enrollments WHERE class_id = $1 AND user_id = $2")
                .bind(class_id)
                .bind(user)
                .fetch_optional(&mut *tx)
                .await?
                .is_some();
        if !enrolled {
            if let Some(limit) = limit {
                let count: i64 =
                    sqlx::query("SELECT COUNT(*) AS n FROM enrollments WHERE class_id = $1")
                        .bind(class_id)
                        .fetch_one(&mut *tx)
                        .await?
                        .try_get("n")?;
                if count >= limit {
                    return Ok(None);
                }
            }
            sqlx::query(
                "INSERT INTO enrollments (class_id, user_id, joined_at) VALUES ($1, $2, $3)",
            )
            .bind(class_id)
            .bind(user)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        self.assign_free_vm(class_id, user, now).await.map(Some)
    }

    /// Enrolls a user and gives them this VM of the class, taking back any other VM of the
    /// class they had (a reassignment; that VM is marked `recycling`). Returns whether a VM
    /// was taken back.
    pub async fn join_class_with_vm(
        &self,
        class_id: i64,
        user: i64,
        vm: VmKey,
        now: i64,
    ) -> Result<bool, DbError> {
        let mut tx = self.write_tx().await?;
        sqlx::query(
            "INSERT INTO enrollments (class_id, user_id, joined_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        )
        .bind(class_id)
        .bind(user)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let freed = release_class_vms(&mut tx, class_id, user, Some(vm)).await?;
        sqlx::query(
            "INSERT INTO vm_assignments (cluster_id, vmid, user_id, assigned_at, identity) \
             VALUES ($4, $1, $2, $3, (SELECT identity FROM vms WHERE cluster_id = $4 AND vmid = $1)) \
             ON CONFLICT (cluster_id, vmid) DO UPDATE SET user_id = excluded.user_id, \
             assigned_at = excluded.assigned_at, identity = excluded.identity",
        )
        .bind(i64::from(vm.vmid))
        .bind(user)
        .bind(now)
        .bind(vm.cluster)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(freed > 0)
    }

    /// Gives an enrolled student a free VM if they have none in the class.
    pub async fn assign_free_vm(
        &self,
        class_id: i64,
        user: i64,
        now: i64,
    ) -> Result<JoinOutcome, DbError> {
        loop {
            let existing = sqlx::query(
                "SELECT c.cluster_id, c.vmid FROM class_vms c \
                 JOIN vm_assignments a ON a.cluster_id = c.cluster_id AND a.vmid = c.vmid \
                 WHERE c.class_id = $1 AND a.user_id = $2",
            )
            .bind(class_id)
            .bind(user)
            .fetch_optional(self.pool())
            .await?;
            if let Some(row) = existing {
                return Ok(JoinOutcome::Assigned(VmKey::new(
                    row.try_get("cluster_id")?,
                    row.try_get::<i64, _>("vmid")? as u32,
                )));
            }
            let free = sqlx::query(
                "SELECT c.cluster_id, c.vmid FROM class_vms c WHERE c.class_id = $1 \
                 AND c.kind = 'student' AND c.state IN ('planned', 'ready') \
                 AND NOT EXISTS (SELECT 1 FROM vm_assignments a \
                 WHERE a.cluster_id = c.cluster_id AND a.vmid = c.vmid) \
                 ORDER BY c.vmid, c.cluster_id LIMIT 1",
            )
            .bind(class_id)
            .fetch_optional(self.pool())
            .await?;
            let Some(free) = free else {
                return Ok(JoinOutcome::Waitlisted);
            };
            let vmid: i64 = free.try_get("vmid")?;
            let cluster: i64 = free.try_get("cluster_id")?;
            let won = sqlx::query(
                "INSERT INTO vm_assignments (cluster_id, vmid, user_id, assigned_at, identity) \
                 VALUES ($4, $1, $2, $3, \
                 (SELECT identity FROM vms WHERE cluster_id = $4 AND vmid = $1)) \
                 ON CONFLICT (cluster_id, vmid) DO NOTHING",
            )
            .bind(vmid)
            .bind(user)
            .bind(now)
            .bind(cluster)
            .execute(self.pool())
            .await?;
            if won.rows_affected() == 1 {
                return Ok(JoinOutcome::Assigned(VmKey::new(cluster, vmid as u32)));
            }
            // Another join took that VM between the two statements: try the next.
        }
    }

    /// Enrolled students without a VM in the class, oldest first.
    pub async fn waitlist(&self, class_id: i64) -> Result<Vec<(i64, String)>, DbError> {
        let rows: Vec<(i64, String)> = sqlx::query_as(
            "SELECT e.user_id, u.username FROM enrollments e JOIN users u ON u.id = e.user_id \
             WHERE e.class_id = $1 AND NOT EXISTS (SELECT 1 FROM class_vms c JOIN vm_assignments a \
             ON a.cluster_id = c.cluster_id AND a.vmid = c.vmid \
             WHERE c.class_id = $1 AND a.user_id = e.user_id) \
             ORDER BY e.joined_at, e.user_id",
        )
        .bind(class_id)
        .fetch_all(self.pool())
        .await?;
        Ok(rows)
    }

    /// The classes a user is enrolled in without a VM yet (waiting for one), by name.
    pub async fn waiting_in(&self, user: i64) -> Result<Vec<String>, DbError> {
        let rows: Vec<(String,)> = sqlx::query_as(
            "SELECT c.name FROM enrollments e JOIN classes c ON c.id = e.class_id \
             WHERE e.user_id = $1 AND c.state = 'active' AND NOT EXISTS (SELECT 1 FROM class_vms cv \
             JOIN vm_assignments a ON a.cluster_id = cv.cluster_id AND a.vmid = cv.vmid \
             WHERE cv.class_id = e.class_id AND a.user_id = $1) \
             ORDER BY c.name",
        )
        .bind(user)
        .fetch_all(self.pool())
        .await?;
        Ok(rows.into_iter().map(|(name,)| name).collect())
    }

    /// How many students are enrolled in a class.
    pub async fn enrollment_count(&self, class_id: i64) -> Result<i64, DbError> {
        Ok(
            sqlx::query("SELECT COUNT(*) AS n FROM enrollments WHERE class_id = $1")
                .bind(class_id)
                .fetch_one(self.pool())
                .await?
                .try_get("n")?,
        )
    }

    /// The students of a class: `(user id, username, their VM if any)`.
    pub async fn roster(
        &self,
        class_id: i64,
    ) -> Result<Vec<(i64, String, Option<VmKey>)>, DbError> {
        let rows = sqlx::query(
            "SELECT e.user_id, u.username, c.cluster_id, c.vmid FROM enrollments e \
             JOIN users u ON u.id = e.user_id \
             LEFT JOIN vm_assignments a ON a.user_id = e.user_id AND EXISTS (SELECT 1 FROM class_vms m \
             WHERE m.class_id = $1 AND m.cluster_id = a.cluster_id AND m.vmid = a.vmid) \
             LEFT JOIN class_vms c ON c.cluster_id = a.cluster_id AND c.vmid = a.vmid \
             WHERE e.class_id = $1 ORDER BY u.username",
        )
        .bind(class_id)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                Ok((
                    row.try_get("user_id")?,
                    row.try_get("username")?,
                    match (
                        row.try_get::<Option<i64>, _>("cluster_id")?,
                        row.try_get::<Option<i64>, _>("vmid")?,
                    ) {
                        (Some(cluster), Some(vmid)) => Some(VmKey::new(cluster, vmid as u32)),
                        _ => None,
                    },
                ))
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(DbError::from)
    }

    /// Takes a class VM away from whoever holds it, marking it `recycling` (see
    /// [`Db::remove_enrollment`]). Returns whether anyone held it.
    pub async fn release_class_vm(&self, vm: VmKey) -> Result<bool, DbError> {
        let mut tx = self.write_tx().await?;
        sqlx::query(
            "UPDATE class_vms SET state = 'recycling' \
             WHERE cluster_id = $1 AND vmid = $2 AND kind = 'student'",
        )
        .bind(vm.cluster)
        .bind(i64::from(vm.vmid))
        .execute(&mut *tx)
        .await?;
        let released =
            sqlx::query("DELETE FROM vm_assignments WHERE cluster_id = $1 AND vmid = $2")
                .bind(vm.cluster)
                .bind(i64::from(vm.vmid))
                .execute(&mut *tx)
                .await?;
        tx.commit().await?;
        Ok(released.rows_affected() == 1)
    }

    /// Takes a student out of a class. The VM they held is marked `recycling`, so that
    /// nobody gets it before it is made fresh; returns whether there was one.
    pub async fn remove_enrollment(&self, class_id: i64, user: i64) -> Result<bool, DbError> {
        let mut tx = self.write_tx().await?;
        let freed = release_class_vms(&mut tx, class_id, user, None).await?;
        sqlx::query("DELETE FROM enrollments WHERE class_id = $1 AND user_id = $2")
            .bind(class_id)
            .bind(user)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(freed > 0)
    }

    pub async fn insert_job(
        &self,
        kind: JobKind,
        class_id: i64,
        created_by: Option<i64>,
        now: i64,
    ) -> Result<i64, DbError> {
        let row = sqlx::query(
            "INSERT INTO jobs (kind, class_id, state, created_by, created_at, updated_at) \
             VALUES ($1, $2, 'pending', $3, $4, $4) RETURNING id",
        )
        .bind(kind.as_str())
        .bind(class_id)
        .bind(created_by)
        .bind(now)
        .fetch_one(self.pool())
        .await?;
        Ok(row.try_get("id")?)
    }

    pub async fn set_job_state(
        &self,
        id: i64,
        state: JobState,
        message: &str,
        now: i64,
    ) -> Result<(), DbError> {
        sqlx::query("UPDATE jobs SET state = $1, message = $2, updated_at = $3 WHERE id = $4")
            .bind(state.as_str())
            .bind(message)
            .bind(now)
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Jobs that have not finished, oldest first: what to resume after a restart.
    pub async fn unfinished_jobs(&self) -> Result<Vec<JobRow>, DbError> {
        let rows = sqlx::query(&format!(
            "SELECT {JOB_COLUMNS} FROM jobs \
             WHERE state IN ('pending', 'running') ORDER BY id"
        ))
        .fetch_all(self.pool())
        .await?;
        Ok(rows.iter().map(job_from_row).collect::<Result<_, _>>()?)
    }

    pub async fn class_jobs(&self, class_id: i64) -> Result<Vec<JobRow>, DbError> {
        let rows = sqlx::query(&format!(
            "SELECT {JOB_COLUMNS} FROM jobs \
             WHERE class_id = $1 ORDER BY id DESC"
        ))
        .bind(class_id)
        .fetch_all(self.pool())
        .await?;
        Ok(rows.iter().map(job_from_row).collect::<Result<_, _>>()?)
    }

    pub async fn job(&self, id: i64) -> Result<Option<JobRow>, DbError> {
        let row = sqlx::query(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1"))
            .bind(id)
            .fetch_optional(self.pool())
            .await?;
        Ok(row.as_ref().map(job_from_row).transpose()?)
    }
}

/// Takes a user's VMs of a class away from them (but `keep`), marking them `recycling`.
/// Returns how many.
async fn release_class_vms(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    class_id: i64,
    user: i64,
    keep: Option<VmKey>,
) -> Result<u64, DbError> {
    let (keep_cluster, keep_vmid) = keep.map_or((-1, -1), |vm| (vm.cluster, i64::from(vm.vmid)));
    sqlx::query(
        "UPDATE class_vms SET state = 'recycling' WHERE class_id = $1 AND kind = 'student' \
         AND NOT (cluster_id = $3 AND vmid = $4) AND EXISTS (SELECT 1 FROM vm_assignments a \
         WHERE a.user_id = $2 AND a.cluster_id = class_vms.cluster_id AND a.vmid = class_vms.vmid)",
    )
    .bind(class_id)
    .bind(user)
    .bind(keep_cluster)
    .bind(keep_vmid)
    .execute(&mut **tx)
    .await?;
    let released = sqlx::query(
        "DELETE FROM vm_assignments WHERE user_id = $1 AND NOT (cluster_id = $3 AND vmid = $4) \
         AND EXISTS (SELECT 1 FROM class_vms cv WHERE cv.class_id = $2 \
         AND cv.cluster_id = vm_assignments.cluster_id AND cv.vmid = vm_assignments.vmid)",
    )
    .bind(user)
    .bind(class_id)
    .bind(keep_cluster)
    .bind(keep_vmid)
    .execute(&mut **tx)
    .await?;
    Ok(released.rows_affected())
}

/// Creates a class owned by `owner` in a transaction (with version 1 when it has a
/// template). Returns its id.
pub(super) async fn insert_class_in(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    class: &NewClass,
    owner: i64,
    now: i64,
) -> Result<i64, DbError> {
    let row = sqlx::query(
        "INSERT INTO classes (name, description, template_vmid, cores, memory_mib, disk_gib, bridge, \
         storage, pinned_node, seats, state, created_by, created_at, current_version, template_cluster_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'active', $11, $12, $13, $14) RETURNING id",
    )
    .bind(&class.name)
    .bind(&class.description)
    .bind(class.template.map(|template| i64::from(template.vmid)))
    .bind(class.cores.map(i64::from))
    .bind(class.memory_mib.map(|v| v as i64))
    .bind(class.disk_gib.map(i64::from))
    .bind(class.bridge.as_deref())
    .bind(class.storage.as_deref())
    .bind(class.pinned_node.as_deref())
    .bind(i64::from(class.seats))
    .bind(owner)
    .bind(now)
    .bind(class.template.map(|_| 1i64))
    .bind(class.template.map(|template| template.cluster))
    .fetch_one(&mut **tx)
    .await?;
    let id: i64 = row.try_get("id")?;
    if class.template.is_some() {
        sqlx::query(
            "INSERT INTO class_versions (class_id, number, note, state, created_by, created_at) \
             SELECT $1, 1, 'made from the template', 'ready', username, $3 FROM users \
             WHERE id = $2",
        )
        .bind(id)
        .bind(owner)
        .bind(now)
        .execute(&mut **tx)
        .await?;
    }
    sqlx::query("INSERT INTO class_owners (class_id, user_id) VALUES ($1, $2)")
        .bind(id)
        .bind(owner)
        .execute(&mut **tx)
        .await?;
    Ok(id)
}

/// Reserves VMIDs as [`Db::reserve_vmids`] does, inside a transaction, for `version` (the
/// class's current one when `None`).
pub(super) async fn reserve_in(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    class_id: i64,
    plan: &[(ClassVmKind, String)],
    range: std::ops::RangeInclusive<u32>,
    version: Option<i64>,
    now: i64,
) -> Result<Vec<VmKey>, DbError> {
    let mut picker = super::vmids::VmidPicker::new(tx, range).await?;
    let mut reserved = Vec::with_capacity(plan.len());
    for (kind, node) in plan {
        let cluster = node_cluster(tx, node).await?;
        let Some(vmid) = picker.pick(tx, cluster).await? else {
            return Err(DbError::Conflict(format!(
                "only {} free VM ids are left in the class range",
                reserved.len()
            )));
        };
        sqlx::query(
            "INSERT INTO class_vms (cluster_id, vmid, class_id, kind, node, state, updated_at, version) \
             VALUES ($7, $1, $2, $3, $4, 'planned', $5, \
             COALESCE($6, (SELECT current_version FROM classes WHERE id = $2)))",
        )
        .bind(i64::from(vmid))
        .bind(class_id)
        .bind(kind.as_str())
        .bind(node)
        .bind(now)
        .bind(version)
        .bind(cluster)
        .execute(&mut **tx)
        .await
        .map_err(|err| match &err {
            sqlx::Error::Database(db) if db.is_unique_violation() => {
                DbError::Conflict("VM ids were taken meanwhile; try again".into())
            }
            _ => DbError::Sqlx(err),
        })?;
        reserved.push(VmKey::new(cluster, vmid));
    }
    Ok(reserved)
}

/// The cluster of a node a VM is planned on.
async fn node_cluster(conn: &mut sqlx::AnyConnection, node: &str) -> Result<i64, DbError> {
    super::nodes::node_cluster(conn, node)
        .await
        .map_err(|err| match err {
            DbError::NotFound => DbError::Conflict(format!("node {node} is not enrolled")),
            other => other,
        })
}
