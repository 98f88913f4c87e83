//! Browser sessions: stored by the hash of their id, with a CSRF token each.

use sqlx::Row;

use super::users::{USER_COLUMNS_U, UserRow, user_from_row};
use super::{Db, DbError};

/// A live session and its user.
#[derive(Debug, Clone)]
pub struct SessionRow {
    pub csrf_token: String,
    pub created_at: i64,
    pub last_seen_at: i64,
    pub expires_at: i64,
    pub user: UserRow,
}

impl Db {
    pub async fn insert_session(
        &self,
        id_hash: &str,
        user_id: i64,
        csrf_token: &str,
        now: i64,
        expires_at: i64,
    ) -> Result<(), DbError> {
        sqlx::query(
            "INSERT INTO sessions (id_hash, user_id, csrf_token, created_at, last_seen_at, expires_at) \
             VALUES ($1, $2, $3, $4, $4, $5)",
        )
        .bind(id_hash)
        .bind(user_id)
        .bind(csrf_token)
        .bind(now)
        .bind(expires_at)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// The session with this id hash, if it exists (expiry is the caller's decision).
    pub async fn session(&self, id_hash: &str) -> Result<Option<SessionRow>, DbError> {
        let row = sqlx::query(&format!(
            "SELECT s.csrf_token, s.created_at AS s_created_at, s.last_seen_at, s.expires_at, \
             {USER_COLUMNS_U} FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.id_hash = $1"
        ))
        .bind(id_hash)
        .fetch_optional(self.pool())
        .await?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some(SessionRow {
            csrf_token: row.try_get("csrf_token")?,
            created_at: row.try_get("s_created_at")?,
            last_seen_at: row.try_get("last_seen_at")?,
            expires_at: row.try_get("expires_at")?,
            user: user_from_row(&row)?,
        }))
    }

    pub async fn touch_session(&self, id_hash: &str, now: i64) -> Result<(), DbError> {
        sqlx::query("UPDATE sessions SET last_seen_at = $1 WHERE id_hash = $2")
            .bind(now)
            .bind(id_hash)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    pub async fn delete_session(&self, id_hash: &str) -> Result<(), DbError> {
        sqlx::query("DELETE FROM sessions WHERE id_hash = $1")
            .bind(id_hash)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Ends every session of a user (password change, disabling), except `keep` if given.
    pub async fn delete_user_sessions(
        &self,
        user_id: i64,
        keep: Option<&str>,
    ) -> Result<u64, DbError> {
        let done = sqlx::query("DELETE FROM sessions WHERE user_id = $1 AND id_hash <> $2")
            .bind(user_id)
            .bind(keep.unwrap_or(""))
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected())
    }

    /// Removes sessions that ended by time: past their absolute expiry or idle since
    /// `idle_before`.
    pub async fn prune_sessions(&self, now: i64, idle_before: i64) -> Result<u64, DbError> {
        let done = sqlx::query("DELETE FROM sessions WHERE expires_at <= $1 OR last_seen_at < $2")
            .bind(now)
            .bind(idle_before)
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected())
    }
}
