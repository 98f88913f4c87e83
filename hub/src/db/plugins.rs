//! Plugins uploaded to the hub, and the plugins each class runs.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Db, DbError};

/// A plugin as stored, without its component.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PluginRow {
    pub id: String,
    pub version: String,
    pub api: String,
    pub hooks: Vec<String>,
    pub capabilities: Vec<String>,
    pub sha256: String,
    pub size_bytes: u64,
    pub all_classes: bool,
    pub uploaded_by: String,
    pub uploaded_at: i64,
}

/// A plugin to store.
#[derive(Debug, Clone)]
pub struct NewPlugin<'a> {
    pub id: &'a str,
    pub version: &'a str,
    pub api: &'a str,
    pub hooks: Vec<&'a str>,
    pub capabilities: Vec<&'a str>,
    pub manifest: &'a str,
    pub sha256: &'a str,
    pub wasm_base64: &'a str,
    pub size_bytes: u64,
    pub uploaded_by: &'a str,
    pub uploaded_at: i64,
}

const COLUMNS: &str = "id, version, api, hooks, capabilities, sha256, size_bytes, all_classes, \
                       uploaded_by, uploaded_at";

fn words(text: &str) -> Vec<String> {
    text.split_whitespace().map(str::to_owned).collect()
}

fn plugin_row(row: &AnyRow) -> Result<PluginRow, sqlx::Error> {
    Ok(PluginRow {
        id: row.try_get("id")?,
        version: row.try_get("version")?,
        api: row.try_get("api")?,
        hooks: words(&row.try_get::<String, _>("hooks")?),
        capabilities: words(&row.try_get::<String, _>("capabilities")?),
        sha256: row.try_get("sha256")?,
        size_bytes: row.try_get::<i64, _>("size_bytes")? as u64,
        all_classes: row.try_get::<i64, _>("all_classes")? != 0,
        uploaded_by: row.try_get("uploaded_by")?,
        uploaded_at: row.try_get("uploaded_at")?,
    })
}

impl Db {
    /// Stores a plugin, replacing an earlier upload with the same id (its class choices and
    /// its "all classes" setting stay).
    pub async fn put_plugin(&self, plugin: &NewPlugin<'_>) -> Result<(), DbError> {
        sqlx::query(
            "INSERT INTO plugins (id, version, api, hooks, capabilities, manifest, sha256, wasm, \
             size_bytes, uploaded_by, uploaded_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
             ON CONFLICT (id) DO UPDATE SET version = excluded.version, api = excluded.api, \
             hooks = excluded.hooks, capabilities = excluded.capabilities, \
             manifest = excluded.manifest, sha256 = excluded.sha256, wasm = excluded.wasm, \
             size_bytes = excluded.size_bytes, uploaded_by = excluded.uploaded_by, \
             uploaded_at = excluded.uploaded_at",
        )
        .bind(plugin.id)
        .bind(plugin.version)
        .bind(plugin.api)
        .bind(plugin.hooks.join(" "))
        .bind(plugin.capabilities.join(" "))
        .bind(plugin.manifest)
        .bind(plugin.sha256)
        .bind(plugin.wasm_base64)
        .bind(plugin.size_bytes as i64)
        .bind(plugin.uploaded_by)
        .bind(plugin.uploaded_at)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    pub async fn plugins(&self) -> Result<Vec<PluginRow>, DbError> {
        let rows = sqlx::query(&format!("SELECT {COLUMNS} FROM plugins ORDER BY id"))
            .fetch_all(self.pool())
            .await?;
        Ok(rows.iter().map(plugin_row).collect::<Result<_, _>>()?)
    }

    pub async fn plugin(&self, id: &str) -> Result<Option<PluginRow>, DbError> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM plugins WHERE id = $1"))
            .bind(id)
            .fetch_optional(self.pool())
            .await?;
        Ok(row.as_ref().map(plugin_row).transpose()?)
    }

    /// A plugin's manifest and base64 component, for pushing it to agents.
    pub async fn plugin_files(
        &self,
        id: &str,
    ) -> Result<Option<(String, String, String)>, DbError> {
        let row = sqlx::query("SELECT manifest, wasm, sha256 FROM plugins WHERE id = $1")
            .bind(id)
            .fetch_optional(self.pool())
            .await?;
        Ok(row
            .map(|row| {
                Ok::<_, sqlx::Error>((
                    row.try_get("manifest")?,
                    row.try_get("wasm")?,
                    row.try_get("sha256")?,
                ))
            })
            .transpose()?)
    }

    pub async fn delete_plugin(&self, id: &str) -> Result<bool, DbError> {
        let mut tx = self.write_tx().await?;
        for table in ["class_plugins", "plugin_settings"] {
            sqlx::query(&format!("DELETE FROM {table} WHERE plugin_id = $1"))
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        let done = sqlx::query("DELETE FROM plugins WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected() > 0)
    }

    pub async fn set_plugin_for_all(&self, id: &str, all: bool) -> Result<bool, DbError> {
        let done = sqlx::query("UPDATE plugins SET all_classes = $1 WHERE id = $2")
            .bind(i64::from(all))
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// The plugins a class chose, in order.
    pub async fn class_plugin_choice(&self, class_id: i64) -> Result<Vec<String>, DbError> {
        let rows: Vec<(String,)> = sqlx::query_as(
            "SELECT plugin_id FROM class_plugins WHERE class_id = $1 ORDER BY position",
        )
        .bind(class_id)
        .fetch_all(self.pool())
        .await?;
        Ok(rows.into_iter().map(|(id,)| id).collect())
    }

    /// Replaces the plugins a class chose.
    pub async fn set_class_plugins(&self, class_id: i64, ids: &[String]) -> Result<(), DbError> {
        let mut tx = self.write_tx().await?;
        sqlx::query("DELETE FROM class_plugins WHERE class_id = $1")
            .bind(class_id)
            .execute(&mut *tx)
            .await?;
        for (position, id) in ids.iter().enumerate() {
            sqlx::query(
                "INSERT INTO class_plugins (class_id, plugin_id, position) VALUES ($1, $2, $3)",
            )
            .bind(class_id)
            .bind(id)
            .bind(position as i64)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The plugins that run for a class, in order: those enabled for every class (by id),
    /// then the class's own choice.
    pub async fn class_plugins(&self, class_id: i64) -> Result<Vec<String>, DbError> {
        let everywhere: Vec<(String,)> =
            sqlx::query_as("SELECT id FROM plugins WHERE all_classes = 1 ORDER BY id")
                .fetch_all(self.pool())
                .await?;
        let mut ids: Vec<String> = everywhere.into_iter().map(|(id,)| id).collect();
        for id in self.class_plugin_choice(class_id).await? {
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        Ok(ids)
    }
}
