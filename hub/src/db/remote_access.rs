//! What a class's students may use to reach their VMs, and the SSH host keys VMs showed.

use sqlx::Row;

use super::{Db, DbError};

/// How a class's VMs may be reached (see `domain::remote`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassAccess {
    /// The screen and serial console in the browser.
    pub console: bool,
    /// SSH: the terminal in the browser and a forwarded port.
    pub ssh: bool,
    /// RDP, through a forwarded port.
    pub rdp: bool,
    pub ssh_port: u16,
    pub rdp_port: u16,
}

impl Default for ClassAccess {
    fn default() -> Self {
        Self {
            console: true,
            ssh: true,
            rdp: true,
            ssh_port: 22,
            rdp_port: 3389,
        }
    }
}

/// The host key a VM showed first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownHostKey {
    /// The VM's identity (SMBIOS UUID) when the key was remembered.
    pub vm_identity: Option<String>,
    pub algorithm: String,
    /// `SHA256:` and the unpadded base64 of the key's hash, as OpenSSH prints it.
    pub fingerprint: String,
    pub first_seen: i64,
    /// Who accepted it: the first user who connected, or who accepted a change.
    pub accepted_by: String,
}

fn port(row: &sqlx::any::AnyRow, column: &str) -> Result<u16, DbError> {
    let value: i64 = row.try_get(column)?;
    u16::try_from(value).map_err(|_| {
        DbError::Sqlx(sqlx::Error::Decode(
            format!("{column} {value} is not a port").into(),
        ))
    })
}

impl Db {
    /// A class's access settings; the defaults when it has none of its own.
    pub async fn class_access(&self, class_id: i64) -> Result<ClassAccess, DbError> {
        let row = sqlx::query(
            "SELECT console, ssh, rdp, ssh_port, rdp_port FROM class_access WHERE class_id = $1",
        )
        .bind(class_id)
        .fetch_optional(self.pool())
        .await?;
        let Some(row) = row else {
            return Ok(ClassAccess::default());
        };
        Ok(ClassAccess {
            console: row.try_get::<i64, _>("console")? != 0,
            ssh: row.try_get::<i64, _>("ssh")? != 0,
            rdp: row.try_get::<i64, _>("rdp")? != 0,
            ssh_port: port(&row, "ssh_port")?,
            rdp_port: port(&row, "rdp_port")?,
        })
    }

    pub async fn set_class_access(
        &self,
        class_id: i64,
        access: &ClassAccess,
    ) -> Result<(), DbError> {
        sqlx::query(
            "INSERT INTO class_access (class_id, console, ssh, rdp, ssh_port, rdp_port) \
             VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (class_id) DO UPDATE SET console = excluded.console, ssh = excluded.ssh, \
             rdp = excluded.rdp, ssh_port = excluded.ssh_port, rdp_port = excluded.rdp_port",
        )
        .bind(class_id)
        .bind(i64::from(access.console))
        .bind(i64::from(access.ssh))
        .bind(i64::from(access.rdp))
        .bind(i64::from(access.ssh_port))
        .bind(i64::from(access.rdp_port))
        .execute(self.pool())
        .await?;
        Ok(())
    }

    pub async fn ssh_host_key(
        &self,
        vm: crate::vm_key::VmKey,
    ) -> Result<Option<KnownHostKey>, DbError> {
        let row = sqlx::query(
            "SELECT vm_identity, algorithm, fingerprint, first_seen, accepted_by FROM ssh_host_keys \
             WHERE cluster_id = $1 AND vmid = $2",
        )
        .bind(vm.cluster)
        .bind(i64::from(vm.vmid))
        .fetch_optional(self.pool())
        .await?;
        row.map(|row| {
            Ok(KnownHostKey {
                vm_identity: row.try_get("vm_identity")?,
                algorithm: row.try_get("algorithm")?,
                fingerprint: row.try_get("fingerprint")?,
                first_seen: row.try_get("first_seen")?,
                accepted_by: row.try_get("accepted_by")?,
            })
        })
        .transpose()
    }

    /// Remembers `key` as the VM's host key, replacing any other.
    pub async fn set_ssh_host_key(
        &self,
        vm: crate::vm_key::VmKey,
        key: &KnownHostKey,
    ) -> Result<(), DbError> {
        sqlx::query(
            "INSERT INTO ssh_host_keys (cluster_id, vmid, vm_identity, algorithm, fingerprint, \
             first_seen, accepted_by) VALUES ($7, $1, $2, $3, $4, $5, $6) \
             ON CONFLICT (cluster_id, vmid) DO UPDATE SET vm_identity = excluded.vm_identity, \
             algorithm = excluded.algorithm, \
             fingerprint = excluded.fingerprint, first_seen = excluded.first_seen, \
             accepted_by = excluded.accepted_by",
        )
        .bind(i64::from(vm.vmid))
        .bind(&key.vm_identity)
        .bind(&key.algorithm)
        .bind(&key.fingerprint)
        .bind(key.first_seen)
        .bind(&key.accepted_by)
        .bind(vm.cluster)
        .execute(self.pool())
        .await?;
        Ok(())
    }
}
