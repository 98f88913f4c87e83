//! Classes made of VMs that existed before proxlab managed them (see `domain::classes::adopt`).

use super::classes::{NewClass, insert_class_in};
use super::states::{Adoption, ClassVmKind};
use super::{Db, DbError};
use crate::vm_key::VmKey;

/// One VM to adopt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdoptedVm {
    pub key: VmKey,
    pub node: String,
    pub identity: Option<String>,
    pub adoption: Adoption,
    /// The student it is handed to.
    pub student: Option<i64>,
}

/// A class to adopt: its template (the base) and its students' VMs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAdoption {
    pub class: NewClass,
    pub owner: i64,
    pub template: AdoptedVm,
    pub vms: Vec<AdoptedVm>,
    pub adopted_by: i64,
    pub now: i64,
}

impl Db {
    /// Creates the class with its template as version 1's base and the VMs as ready student
    /// VMs (version 1 when they are linked clones of it), enrolls and assigns the students.
    /// Nothing is adopted when a VM belongs to a class or build already. Returns the class.
    pub async fn adopt_class(&self, adoption: &NewAdoption) -> Result<i64, DbError> {
        let mut tx = self.write_tx().await?;
        for vm in std::iter::once(&adoption.template).chain(&adoption.vms) {
            let (in_class,): (i64,) = sqlx::query_as(
                "SELECT (SELECT COUNT(*) FROM class_vms WHERE cluster_id = $2 AND vmid = $1) + \
                 (SELECT COUNT(*) FROM template_builds WHERE cluster_id = $2 AND vmid = $1 \
                 AND state <> 'template')",
            )
            .bind(i64::from(vm.key.vmid))
            .bind(vm.key.cluster)
            .fetch_one(&mut *tx)
            .await?;
            if in_class > 0 {
                return Err(DbError::Conflict(format!(
                    "VM {} belongs to a class (or is being built) already",
                    vm.key.vmid
                )));
            }
        }
        let class_id =
            insert_class_in(&mut tx, &adoption.class, adoption.owner, adoption.now).await?;
        let rows = std::iter::once((ClassVmKind::Base, &adoption.template))
            .chain(adoption.vms.iter().map(|vm| (ClassVmKind::Student, vm)));
        for (kind, vm) in rows {
            let version = (vm.adoption != Adoption::Plain).then_some(1i64);
            sqlx::query(
                "INSERT INTO class_vms (cluster_id, vmid, class_id, kind, node, state, updated_at, \
                 identity, version, adopted) VALUES ($9, $1, $2, $3, $4, 'ready', $5, $6, $7, $8)",
            )
            .bind(i64::from(vm.key.vmid))
            .bind(class_id)
            .bind(kind.as_str())
            .bind(&vm.node)
            .bind(adoption.now)
            .bind(vm.identity.as_deref())
            .bind(version)
            .bind(vm.adoption.as_str())
            .bind(vm.key.cluster)
            .execute(&mut *tx)
            .await?;
            let Some(student) = vm.student else {
                continue;
            };
            sqlx::query(
                "INSERT INTO enrollments (class_id, user_id, joined_at) VALUES ($1, $2, $3) \
                 ON CONFLICT DO NOTHING",
            )
            .bind(class_id)
            .bind(student)
            .bind(adoption.now)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "INSERT INTO vm_assignments (cluster_id, vmid, user_id, assigned_by, assigned_at, \
                 identity) VALUES ($6, $1, $2, $3, $4, $5) ON CONFLICT (cluster_id, vmid) DO UPDATE SET \
                 user_id = excluded.user_id, assigned_by = excluded.assigned_by, \
                 assigned_at = excluded.assigned_at, identity = excluded.identity",
            )
            .bind(i64::from(vm.key.vmid))
            .bind(student)
            .bind(adoption.adopted_by)
            .bind(adoption.now)
            .bind(vm.identity.as_deref())
            .bind(vm.key.cluster)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(class_id)
    }
}
