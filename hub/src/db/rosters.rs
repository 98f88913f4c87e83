//! Class rosters: who a teacher listed for a class, imported in one transaction.

use sqlx::Row;

use super::users::{LOCAL_SOURCE, NO_LOCAL_PASSWORD, UserRow};
use super::{Db, DbError};

/// The account a roster row goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RosterAccount {
    /// An account that exists.
    Existing(i64),
    /// A new local student account with this password hash.
    NewLocal { password_hash: String },
    /// A new student account that waits for its first sign-in through `source`.
    Preregistered { source: String },
}

/// One row to import.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RosterRow {
    pub username: String,
    pub email: String,
    pub display_name: String,
    pub account: RosterAccount,
}

/// A person on a class's roster, as the class page shows them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RosterPerson {
    pub username: String,
    pub display_name: String,
    pub signed_in: bool,
}

impl Db {
    /// The one account with this email, if exactly one has it.
    pub async fn user_by_email(&self, email: &str) -> Result<Option<UserRow>, DbError> {
        if email.is_empty() {
            return Ok(None);
        }
        let rows = sqlx::query(&format!(
            "SELECT {} FROM users u WHERE u.email = $1 LIMIT 2",
            super::users::USER_COLUMNS_U
        ))
        .bind(email)
        .fetch_all(self.pool())
        .await?;
        match rows.as_slice() {
            [row] => Ok(Some(super::users::user_from_row(row)?)),
            _ => Ok(None),
        }
    }

    /// Makes the accounts a roster needs, enrols everyone in the class and puts them on its
    /// roster, all in one transaction: a failure leaves nothing behind. Returns how many
    /// were enrolled now (the others were already).
    pub async fn import_roster(
        &self,
        class_id: i64,
        rows: &[RosterRow],
        now: i64,
    ) -> Result<usize, DbError> {
        let mut tx = self.write_tx().await?;
        let mut enrolled = 0;
        for row in rows {
            let user_id = match &row.account {
                RosterAccount::Existing(id) => *id,
                RosterAccount::NewLocal { password_hash } => {
                    insert_user(&mut tx, row, password_hash, LOCAL_SOURCE, now).await?
                }
                RosterAccount::Preregistered { source } => {
                    insert_user(&mut tx, row, NO_LOCAL_PASSWORD, source, now).await?
                }
            };
            let done = sqlx::query(
                "INSERT INTO enrollments (class_id, user_id, joined_at) VALUES ($1, $2, $3) \
                 ON CONFLICT DO NOTHING",
            )
            .bind(class_id)
            .bind(user_id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            enrolled += done.rows_affected() as usize;
            sqlx::query(
                "INSERT INTO class_roster (class_id, user_id, added_at) VALUES ($1, $2, $3) \
                 ON CONFLICT DO NOTHING",
            )
            .bind(class_id)
            .bind(user_id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(enrolled)
    }

    /// Makes a class's roster follow a directory group (empty: none).
    pub async fn set_roster_group(&self, class_id: i64, group: &str) -> Result<(), DbError> {
        sqlx::query("UPDATE classes SET roster_group = $1 WHERE id = $2")
            .bind(group)
            .bind(class_id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Whether a user is on a class's roster.
    pub async fn on_roster(&self, class_id: i64, user_id: i64) -> Result<bool, DbError> {
        let row =
            sqlx::query("SELECT 1 AS x FROM class_roster WHERE class_id = $1 AND user_id = $2")
                .bind(class_id)
                .bind(user_id)
                .fetch_optional(self.pool())
                .await?;
        Ok(row.is_some())
    }

    /// Everyone on a class's roster, and whether they have signed in yet.
    pub async fn class_roster(&self, class_id: i64) -> Result<Vec<RosterPerson>, DbError> {
        let rows = sqlx::query(
            "SELECT u.username, u.display_name, u.last_login_at FROM class_roster r \
             JOIN users u ON u.id = r.user_id WHERE r.class_id = $1 ORDER BY u.username",
        )
        .bind(class_id)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                Ok(RosterPerson {
                    username: row.try_get("username")?,
                    display_name: row.try_get("display_name")?,
                    signed_in: row.try_get::<Option<i64>, _>("last_login_at")?.is_some(),
                })
            })
            .collect()
    }
}

async fn insert_user(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    row: &RosterRow,
    password_hash: &str,
    source: &str,
    now: i64,
) -> Result<i64, DbError> {
    let inserted = sqlx::query(
        "INSERT INTO users (username, display_name, email, role, password_hash, auth_source, \
         created_at) VALUES ($1, $2, $3, 'student', $4, $5, $6) RETURNING id",
    )
    .bind(&row.username)
    .bind(&row.display_name)
    .bind(&row.email)
    .bind(password_hash)
    .bind(source)
    .bind(now)
    .fetch_one(&mut **tx)
    .await
    .map_err(|err| super::users::name_taken(err, &row.username))?;
    Ok(inserted.try_get("id")?)
}
