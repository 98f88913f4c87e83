//! Accounts that sign in elsewhere: which external identity is which account, and the profile
//! the sign-in source keeps up to date.

use sqlx::Row;

use super::users::{NO_LOCAL_PASSWORD, Role, USER_COLUMNS_U, UserRow, user_from_row};
use super::{Db, DbError};

/// What a sign-in source says about a person at each sign-in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalProfile<'a> {
    pub display_name: &'a str,
    pub email: &'a str,
    /// The role the source's mapping gives; ignored when an admin pinned the account's role.
    pub role: Role,
    /// The groups the source says the person is in.
    pub groups: &'a [String],
}

/// The most groups kept per account, and the longest group name kept.
const MAX_GROUPS: usize = 200;
const MAX_GROUP_BYTES: usize = 512;

/// Groups as stored: one per line, bounded.
fn groups_text(groups: &[String]) -> String {
    groups
        .iter()
        .filter(|group| {
            !group.is_empty() && group.len() <= MAX_GROUP_BYTES && !group.contains('\n')
        })
        .take(MAX_GROUPS)
        .cloned()
        .collect::<Vec<_>>()
        .join("\n")
}

impl Db {
    /// The account an external identity signed in as before.
    pub async fn user_by_identity(
        &self,
        source: &str,
        subject: &str,
    ) -> Result<Option<UserRow>, DbError> {
        let row = sqlx::query(&format!(
            "SELECT {USER_COLUMNS_U} FROM user_identities i JOIN users u ON u.id = i.user_id \
             WHERE i.source = $1 AND i.subject = $2"
        ))
        .bind(source)
        .bind(subject)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.as_ref().map(user_from_row).transpose()?)
    }

    /// Whether any external identity signs in as this account.
    pub async fn user_has_identity(&self, user_id: i64) -> Result<bool, DbError> {
        let row = sqlx::query("SELECT 1 AS found FROM user_identities WHERE user_id = $1 LIMIT 1")
            .bind(user_id)
            .fetch_optional(self.pool())
            .await?;
        Ok(row.is_some())
    }

    /// Creates an account for an identity's first sign-in and links the identity to it, in
    /// one transaction. `Conflict` if the username is taken.
    pub async fn insert_external_user(
        &self,
        username: &str,
        source: &str,
        subject: &str,
        profile: &ExternalProfile<'_>,
        now: i64,
    ) -> Result<i64, DbError> {
        let mut tx = self.write_tx().await?;
        let row = sqlx::query(
            "INSERT INTO users (username, display_name, email, role, password_hash, auth_source, \
             created_at) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
        )
        .bind(username)
        .bind(profile.display_name)
        .bind(profile.email)
        .bind(profile.role.as_str())
        .bind(NO_LOCAL_PASSWORD)
        .bind(source)
        .bind(now)
        .fetch_one(&mut *tx)
        .await
        .map_err(|err| super::users::name_taken(err, username))?;
        let id: i64 = row.try_get("id")?;
        insert_identity(&mut tx, source, subject, id, now).await?;
        tx.commit().await?;
        Ok(id)
    }

    /// Links an identity to an existing account, which from now on signs in through `source`.
    pub async fn link_identity(
        &self,
        user_id: i64,
        source: &str,
        subject: &str,
        now: i64,
    ) -> Result<(), DbError> {
        let mut tx = self.write_tx().await?;
        insert_identity(&mut tx, source, subject, user_id, now).await?;
        sqlx::query("UPDATE users SET auth_source = $1 WHERE id = $2")
            .bind(source)
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Brings an account's name, email and (unless pinned) role up to date with its source.
    pub async fn update_external_profile(
        &self,
        user_id: i64,
        profile: &ExternalProfile<'_>,
    ) -> Result<(), DbError> {
        sqlx::query(
            "UPDATE users SET display_name = $1, email = $2, \
             role = CASE WHEN role_pinned = 0 THEN $3 ELSE role END, sign_in_groups = $5 \
             WHERE id = $4",
        )
        .bind(profile.display_name)
        .bind(profile.email)
        .bind(profile.role.as_str())
        .bind(user_id)
        .bind(groups_text(profile.groups))
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// The groups an account's sign-in source last said it is in.
    pub async fn sign_in_groups(&self, user_id: i64) -> Result<Vec<String>, DbError> {
        let row: Option<(String,)> =
            sqlx::query_as("SELECT sign_in_groups FROM users WHERE id = $1")
                .bind(user_id)
                .fetch_optional(self.pool())
                .await?;
        Ok(row
            .map(|(text,)| text.lines().map(str::to_owned).collect())
            .unwrap_or_default())
    }

    /// Marks an account's role as set by an admin (or hands it back to the sign-in source).
    pub async fn set_role_pinned(&self, user_id: i64, pinned: bool) -> Result<(), DbError> {
        sqlx::query("UPDATE users SET role_pinned = $1 WHERE id = $2")
            .bind(i64::from(pinned))
            .bind(user_id)
            .execute(self.pool())
            .await?;
        Ok(())
    }
}

async fn insert_identity(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    source: &str,
    subject: &str,
    user_id: i64,
    now: i64,
) -> Result<(), DbError> {
    sqlx::query(
        "INSERT INTO user_identities (source, subject, user_id, created_at) VALUES ($1, $2, $3, $4)",
    )
    .bind(source)
    .bind(subject)
    .bind(user_id)
    .bind(now)
    .execute(&mut **tx)
    .await
    .map_err(|err| match &err {
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            DbError::Conflict("this identity is linked to another account".into())
        }
        _ => DbError::Sqlx(err),
    })?;
    Ok(())
}
