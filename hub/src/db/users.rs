//! Accounts.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Db, DbError};

/// What a user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Student,
    Teacher,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Student => "student",
            Role::Teacher => "teacher",
            Role::Admin => "admin",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "student" => Ok(Role::Student),
            "teacher" => Ok(Role::Teacher),
            "admin" => Ok(Role::Admin),
            other => Err(format!(
                "unknown role {other:?}: use admin, teacher or student"
            )),
        }
    }
}

/// A stored user (the password hash stays in the database layer's callers' hands only for
/// verification).
#[derive(Clone, PartialEq, Eq)]
pub struct UserRow {
    pub id: i64,
    pub username: String,
    pub display_name: String,
    pub role: Role,
    pub password_hash: String,
    pub disabled: bool,
    pub created_at: i64,
    pub last_login_at: Option<i64>,
    pub email: String,
    /// How the account signs in: [`LOCAL_SOURCE`], `oidc:<id>` or `ldap`.
    pub auth_source: String,
    /// An admin set the role by hand: sign-in sources do not replace it.
    pub role_pinned: bool,
}

/// The `auth_source` of accounts that sign in with their password here.
pub const LOCAL_SOURCE: &str = "local";

/// The password hash of accounts that sign in elsewhere: no password verifies against it.
pub const NO_LOCAL_PASSWORD: &str = "!external";

impl UserRow {
    /// Whether the account signs in with a password kept here.
    pub fn is_local(&self) -> bool {
        self.auth_source == LOCAL_SOURCE
    }
}

impl std::fmt::Debug for UserRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserRow")
            .field("id", &self.id)
            .field("username", &self.username)
            .field("role", &self.role)
            .field("disabled", &self.disabled)
            .field("auth_source", &self.auth_source)
            .finish_non_exhaustive()
    }
}

const USER_COLUMNS: &str = "id, username, display_name, role, password_hash, disabled, \
     created_at, last_login_at, email, auth_source, role_pinned";

/// The user columns for a query that joins `users u` with other tables.
pub(super) const USER_COLUMNS_U: &str = "u.id, u.username, u.display_name, u.role, \
     u.password_hash, u.disabled, u.created_at, u.last_login_at, u.email, u.auth_source, \
     u.role_pinned";

pub(super) fn user_from_row(row: &AnyRow) -> Result<UserRow, sqlx::Error> {
    let role: String = row.try_get("role")?;
    Ok(UserRow {
        id: row.try_get("id")?,
        username: row.try_get("username")?,
        display_name: row.try_get("display_name")?,
        role: role
            .parse()
            .map_err(|err: String| sqlx::Error::Decode(err.into()))?,
        password_hash: row.try_get("password_hash")?,
        disabled: row.try_get::<i64, _>("disabled")? != 0,
        created_at: row.try_get("created_at")?,
        last_login_at: row.try_get("last_login_at")?,
        email: row.try_get("email")?,
        auth_source: row.try_get("auth_source")?,
        role_pinned: row.try_get::<i64, _>("role_pinned")? != 0,
    })
}

/// A failed insert into `users`, as `Conflict` when the username is taken.
pub(super) fn name_taken(err: sqlx::Error, username: &str) -> DbError {
    match &err {
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            DbError::Conflict(format!("a user named {username} exists"))
        }
        _ => DbError::Sqlx(err),
    }
}

impl Db {
    /// Adds a user. `Conflict` if the name is taken.
    pub async fn insert_user(
        &self,
        username: &str,
        role: Role,
        password_hash: &str,
        now: i64,
    ) -> Result<i64, DbError> {
        let taken = sqlx::query("SELECT id FROM users WHERE username = $1")
            .bind(username)
            .fetch_optional(self.pool())
            .await?;
        if taken.is_some() {
            return Err(DbError::Conflict(format!("a user named {username} exists")));
        }
        let row = sqlx::query(
            "INSERT INTO users (username, role, password_hash, created_at) VALUES ($1, $2, $3, $4) RETURNING id",
        )
        .bind(username)
        .bind(role.as_str())
        .bind(password_hash)
        .bind(now)
        .fetch_one(self.pool())
        .await
        .map_err(|err| name_taken(err, username))?;
        Ok(row.try_get("id")?)
    }

    /// Deletes an account that has done nothing yet (a registration undone).
    pub async fn delete_new_user(&self, id: i64) -> Result<(), DbError> {
        sqlx::query("DELETE FROM users WHERE id = $1 AND last_login_at IS NULL")
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    pub async fn user_by_name(&self, username: &str) -> Result<Option<UserRow>, DbError> {
        let row = sqlx::query(&format!(
            "SELECT {USER_COLUMNS} FROM users WHERE username = $1"
        ))
        .bind(username)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.as_ref().map(user_from_row).transpose()?)
    }

    pub async fn list_users(&self) -> Result<Vec<UserRow>, DbError> {
        let rows = sqlx::query(&format!(
            "SELECT {USER_COLUMNS} FROM users ORDER BY username"
        ))
        .fetch_all(self.pool())
        .await?;
        Ok(rows.iter().map(user_from_row).collect::<Result<_, _>>()?)
    }

    /// How many enabled admins exist.
    pub async fn count_admins(&self) -> Result<i64, DbError> {
        let row =
            sqlx::query("SELECT COUNT(*) AS n FROM users WHERE role = 'admin' AND disabled = 0")
                .fetch_one(self.pool())
                .await?;
        Ok(row.try_get("n")?)
    }

    pub async fn set_password_hash(
        &self,
        username: &str,
        password_hash: &str,
    ) -> Result<(), DbError> {
        let done = sqlx::query("UPDATE users SET password_hash = $1 WHERE username = $2")
            .bind(password_hash)
            .bind(username)
            .execute(self.pool())
            .await?;
        if done.rows_affected() == 0 {
            return Err(DbError::NotFound);
        }
        Ok(())
    }

    pub async fn user_by_id(&self, id: i64) -> Result<Option<UserRow>, DbError> {
        let row = sqlx::query(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1"))
            .bind(id)
            .fetch_optional(self.pool())
            .await?;
        Ok(row.as_ref().map(user_from_row).transpose()?)
    }

    pub async fn set_password_hash_by_id(
        &self,
        id: i64,
        password_hash: &str,
    ) -> Result<(), DbError> {
        self.update_user(id, "password_hash = $1", password_hash)
            .await
    }

    pub async fn set_role(&self, id: i64, role: Role) -> Result<(), DbError> {
        self.update_user(id, "role = $1", role.as_str()).await
    }

    pub async fn set_disabled(&self, id: i64, disabled: bool) -> Result<(), DbError> {
        let done = sqlx::query("UPDATE users SET disabled = $1 WHERE id = $2")
            .bind(i64::from(disabled))
            .bind(id)
            .execute(self.pool())
            .await?;
        if done.rows_affected() == 0 {
            return Err(DbError::NotFound);
        }
        Ok(())
    }

    pub async fn record_login(&self, id: i64, now: i64) -> Result<(), DbError> {
        sqlx::query("UPDATE users SET last_login_at = $1 WHERE id = $2")
            .bind(now)
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Sets one text column (`assignment` names it as `column = $1`).
    async fn update_user(&self, id: i64, assignment: &str, value: &str) -> Result<(), DbError> {
        let done = sqlx::query(&format!("UPDATE users SET {assignment} WHERE id = $2"))
            .bind(value)
            .bind(id)
            .execute(self.pool())
            .await?;
        if done.rows_affected() == 0 {
            return Err(DbError::NotFound);
        }
        Ok(())
    }
}
