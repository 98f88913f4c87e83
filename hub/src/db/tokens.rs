//! Join tokens: stored only as hashes, single-use, expiring.

use sqlx::Row;

use super::{Db, DbError};

/// A stored join token, without its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinTokenRow {
    pub id: i64,
    pub node_name: Option<String>,
    pub created_at: i64,
    pub expires_at: i64,
    pub spent_at: Option<i64>,
    pub spent_by_node: Option<String>,
    pub revoked_at: Option<i64>,
}

impl JoinTokenRow {
    /// `valid`, `spent`, `revoked` or `expired`, as of `now`.
    pub fn state(&self, now: i64) -> &'static str {
        if self.spent_at.is_some() {
            "spent"
        } else if self.revoked_at.is_some() {
            "revoked"
        } else if self.expires_at <= now {
            "expired"
        } else {
            "valid"
        }
    }
}

/// Why a token could not be spent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpendRefusal {
    Unknown,
    Expired,
    Spent,
    Revoked,
    WrongNode,
}

impl Db {
    pub async fn insert_join_token(
        &self,
        token_hash: &str,
        node_name: Option<&str>,
        created_at: i64,
        expires_at: i64,
    ) -> Result<i64, DbError> {
        let row = sqlx::query(
            "INSERT INTO join_tokens (token_hash, node_name, created_at, expires_at) \
             VALUES ($1, $2, $3, $4) RETURNING id",
        )
        .bind(token_hash)
        .bind(node_name)
        .bind(created_at)
        .bind(expires_at)
        .fetch_one(self.pool())
        .await?;
        Ok(row.try_get("id")?)
    }

    pub async fn list_join_tokens(&self) -> Result<Vec<JoinTokenRow>, DbError> {
        let rows = sqlx::query(
            "SELECT id, node_name, created_at, expires_at, spent_at, spent_by_node, revoked_at \
             FROM join_tokens ORDER BY id",
        )
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                Ok(JoinTokenRow {
                    id: row.try_get("id")?,
                    node_name: row.try_get("node_name")?,
                    created_at: row.try_get("created_at")?,
                    expires_at: row.try_get("expires_at")?,
                    spent_at: row.try_get("spent_at")?,
                    spent_by_node: row.try_get("spent_by_node")?,
                    revoked_at: row.try_get("revoked_at")?,
                })
            })
            .collect()
    }

    /// Revokes an unspent token. Returns whether a token was revoked.
    pub async fn revoke_join_token(&self, id: i64, now: i64) -> Result<bool, DbError> {
        let done = sqlx::query(
            "UPDATE join_tokens SET revoked_at = $1 \
             WHERE id = $2 AND spent_at IS NULL AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(id)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Why the token with this hash cannot be spent by `node_name` (after a spend failed).
    pub(crate) async fn explain_spend_refusal(
        conn: &mut sqlx::AnyConnection,
        token_hash: &str,
        node_name: &str,
        now: i64,
    ) -> Result<SpendRefusal, DbError> {
        let row = sqlx::query(
            "SELECT node_name, expires_at, spent_at, revoked_at FROM join_tokens \
             WHERE token_hash = $1",
        )
        .bind(token_hash)
        .fetch_optional(&mut *conn)
        .await?;
        let Some(row) = row else {
            return Ok(SpendRefusal::Unknown);
        };
        let bound: Option<String> = row.try_get("node_name")?;
        let expires_at: i64 = row.try_get("expires_at")?;
        let spent_at: Option<i64> = row.try_get("spent_at")?;
        let revoked_at: Option<i64> = row.try_get("revoked_at")?;
        Ok(if spent_at.is_some() {
            SpendRefusal::Spent
        } else if revoked_at.is_some() {
            SpendRefusal::Revoked
        } else if expires_at <= now {
            SpendRefusal::Expired
        } else if bound.is_some_and(|bound| bound != node_name) {
            SpendRefusal::WrongNode
        } else {
            SpendRefusal::Unknown
        })
    }

    /// Spends a token inside a transaction. The conditional update is the first write, so
    /// two enrollments racing for one token cannot both succeed.
    pub(crate) async fn spend_join_token(
        conn: &mut sqlx::AnyConnection,
        token_hash: &str,
        node_name: &str,
        now: i64,
    ) -> Result<Result<(), SpendRefusal>, DbError> {
        let done = sqlx::query(
            "UPDATE join_tokens SET spent_at = $1, spent_by_node = $2 \
             WHERE token_hash = $3 AND spent_at IS NULL AND revoked_at IS NULL \
               AND expires_at > $1 AND (node_name IS NULL OR node_name = $2)",
        )
        .bind(now)
        .bind(node_name)
        .bind(token_hash)
        .execute(&mut *conn)
        .await?;
        if done.rows_affected() == 1 {
            return Ok(Ok(()));
        }
        Ok(Err(Self::explain_spend_refusal(
            conn, token_hash, node_name, now,
        )
        .await?))
    }
}
