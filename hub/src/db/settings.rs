//! Site-wide settings an admin changes in the portal.

use sqlx::Row;

use super::{Db, DbError};

/// Whether students may create their own account through a class invite link.
pub const SELF_REGISTRATION: &str = "self_registration";

impl Db {
    pub async fn setting(&self, key: &str) -> Result<Option<String>, DbError> {
        let row = sqlx::query("SELECT value FROM settings WHERE key = $1")
            .bind(key)
            .fetch_optional(self.pool())
            .await?;
        Ok(row.map(|row| row.try_get("value")).transpose()?)
    }

    pub async fn set_setting(&self, key: &str, value: &str) -> Result<(), DbError> {
        sqlx::query(
            "INSERT INTO settings (key, value) VALUES ($1, $2) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .bind(key)
        .bind(value)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// A yes/no setting; unset is no.
    pub async fn flag(&self, key: &str) -> Result<bool, DbError> {
        Ok(self.setting(key).await?.as_deref() == Some("on"))
    }
}
