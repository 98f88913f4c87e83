//! Plugin settings (the site's and each class's) and what plugins said about VMs.

use std::collections::BTreeMap;

use proxlab_protocol::plugin_manifest::SettingValue;
use sqlx::Row;

use super::{Db, DbError, now_unix};
use crate::vm_key::VmKey;

/// The site's settings are kept under this class id.
pub const SITE: i64 = 0;

/// What a plugin said about a VM.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PluginNote {
    pub id: i64,
    pub vmid: u32,
    pub hook: String,
    pub plugin: String,
    /// `warning`, `error` or `notice`.
    pub severity: String,
    pub message: String,
    /// Whether a secret waits for the VM's user.
    pub has_secret: bool,
    pub created_at: i64,
}

/// A note to keep.
#[derive(Debug, Clone)]
pub struct NewNote<'a> {
    pub plugin: &'a str,
    pub severity: &'a str,
    pub message: &'a str,
    pub secret: Option<&'a str>,
}

fn note(row: &sqlx::any::AnyRow) -> Result<PluginNote, sqlx::Error> {
    Ok(PluginNote {
        id: row.try_get("id")?,
        vmid: row.try_get::<i64, _>("vmid")? as u32,
        hook: row.try_get("hook")?,
        plugin: row.try_get("plugin")?,
        severity: row.try_get("severity")?,
        message: row.try_get("message")?,
        has_secret: row.try_get::<Option<String>, _>("secret")?.is_some(),
        created_at: row.try_get("created_at")?,
    })
}

impl Db {
    /// A plugin's settings for the site ([`SITE`]) or one class.
    pub async fn plugin_settings(
        &self,
        plugin: &str,
        class_id: i64,
    ) -> Result<BTreeMap<String, SettingValue>, DbError> {
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT name, value FROM plugin_settings WHERE plugin_id = $1 AND class_id = $2",
        )
        .bind(plugin)
        .bind(class_id)
        .fetch_all(self.pool())
        .await?;
        // A value that no longer reads (hand-edited) is left out rather than failing a class.
        Ok(rows
            .into_iter()
            .filter_map(|(name, value)| Some((name, serde_json::from_str(&value).ok()?)))
            .collect())
    }

    /// Replaces a plugin's settings for the site or one class.
    pub async fn set_plugin_settings(
        &self,
        plugin: &str,
        class_id: i64,
        values: &BTreeMap<String, SettingValue>,
    ) -> Result<(), DbError> {
        let mut tx = self.write_tx().await?;
        sqlx::query("DELETE FROM plugin_settings WHERE plugin_id = $1 AND class_id = $2")
            .bind(plugin)
            .bind(class_id)
            .execute(&mut *tx)
            .await?;
        for (name, value) in values {
            sqlx::query(
                "INSERT INTO plugin_settings (plugin_id, class_id, name, value) \
                 VALUES ($1, $2, $3, $4)",
            )
            .bind(plugin)
            .bind(class_id)
            .bind(name)
            .bind(serde_json::to_string(value).expect("a setting value is JSON"))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// A plugin's manifest text.
    pub async fn plugin_manifest(&self, plugin: &str) -> Result<Option<String>, DbError> {
        let row: Option<(String,)> = sqlx::query_as("SELECT manifest FROM plugins WHERE id = $1")
            .bind(plugin)
            .fetch_optional(self.pool())
            .await?;
        Ok(row.map(|(manifest,)| manifest))
    }

    /// Replaces what plugins said about a VM at one hook.
    pub async fn replace_plugin_notes(
        &self,
        vm: VmKey,
        hook: &str,
        notes: &[NewNote<'_>],
    ) -> Result<(), DbError> {
        let mut tx = self.write_tx().await?;
        sqlx::query("DELETE FROM plugin_notes WHERE cluster_id = $1 AND vmid = $2 AND hook = $3")
            .bind(vm.cluster)
            .bind(i64::from(vm.vmid))
            .bind(hook)
            .execute(&mut *tx)
            .await?;
        for note in notes {
            sqlx::query(
                "INSERT INTO plugin_notes (cluster_id, vmid, hook, plugin, severity, message, \
                 secret, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(vm.cluster)
            .bind(i64::from(vm.vmid))
            .bind(hook)
            .bind(note.plugin)
            .bind(note.severity)
            .bind(note.message)
            .bind(note.secret)
            .bind(now_unix())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// What plugins said about one VM.
    pub async fn vm_plugin_notes(&self, vm: VmKey) -> Result<Vec<PluginNote>, DbError> {
        let rows = sqlx::query(
            "SELECT id, vmid, hook, plugin, severity, message, secret, created_at \
             FROM plugin_notes WHERE cluster_id = $1 AND vmid = $2 ORDER BY created_at, plugin",
        )
        .bind(vm.cluster)
        .bind(i64::from(vm.vmid))
        .fetch_all(self.pool())
        .await?;
        Ok(rows.iter().map(note).collect::<Result<_, _>>()?)
    }

    /// What plugins said about a class's VMs (secrets stay with the VMs' users).
    pub async fn class_plugin_notes(&self, class_id: i64) -> Result<Vec<PluginNote>, DbError> {
        let rows = sqlx::query(
            "SELECT n.id, n.vmid, n.hook, n.plugin, n.severity, n.message, n.secret, \
             n.created_at FROM plugin_notes n JOIN class_vms c \
             ON c.cluster_id = n.cluster_id AND c.vmid = n.vmid \
             WHERE c.class_id = $1 ORDER BY n.vmid, n.created_at, n.plugin",
        )
        .bind(class_id)
        .fetch_all(self.pool())
        .await?;
        Ok(rows.iter().map(note).collect::<Result<_, _>>()?)
    }

    /// Hands out a VM's waiting secrets once: they are gone from the database after this.
    pub async fn take_plugin_secrets(&self, vm: VmKey) -> Result<Vec<(String, String)>, DbError> {
        let mut tx = self.write_tx().await?;
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT plugin, secret FROM plugin_notes WHERE cluster_id = $1 AND vmid = $2 \
             AND secret IS NOT NULL ORDER BY created_at, plugin",
        )
        .bind(vm.cluster)
        .bind(i64::from(vm.vmid))
        .fetch_all(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE plugin_notes SET secret = NULL WHERE cluster_id = $1 AND vmid = $2 \
             AND secret IS NOT NULL",
        )
        .bind(vm.cluster)
        .bind(i64::from(vm.vmid))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(rows)
    }
}
