//! Accounts: names, argon2id password hashes, generated passwords, the first admin.

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, SaltString};
use argon2::{Argon2, PasswordHasher, PasswordVerifier};
use rand::Rng;

use crate::db::users::Role;
use crate::db::{Db, DbError, now_unix};

/// The shortest password proxlab accepts.
pub const MIN_PASSWORD_LEN: usize = 10;

/// Why an account could not be made or changed.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Db(#[from] DbError),
}

/// Checks a username: 1 to 64 of lower-case letters, digits, `.`, `_` and `-`, starting with
/// a letter or digit, with at most one `@` inside (school accounts are often email addresses).
pub fn validate_username(name: &str) -> Result<(), AccountError> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && !name.ends_with('@')
        && name.matches('@').count() <= 1
        && name.chars().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-' | '@')
        });
    if valid {
        Ok(())
    } else {
        Err(AccountError::Invalid(format!(
            "invalid username {name:?}: use 1 to 64 lower-case letters, digits, '.', '_', '-' \
             and at most one '@'"
        )))
    }
}

/// An argon2id hash (PHC string) with a fresh salt.
pub fn hash_password(password: &str) -> Result<String, AccountError> {
    if password.chars().count() < MIN_PASSWORD_LEN {
        return Err(AccountError::Invalid(format!(
            "passwords need at least {MIN_PASSWORD_LEN} characters"
        )));
    }
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|err| AccountError::Invalid(format!("hashing the password: {err}")))
}

/// Whether `password` matches a stored hash.
pub fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|parsed| {
        Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    })
}

/// A random password that is easy to read out: 20 characters without look-alikes.
pub fn generate_password() -> String {
    const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut rng = rand::rng();
    (0..20)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// Creates a user. Without a password one is generated and returned, to be shown once.
pub async fn create_user(
    db: &Db,
    username: &str,
    role: Role,
    password: Option<&str>,
) -> Result<Option<String>, AccountError> {
    validate_username(username)?;
    let generated = password.is_none().then(generate_password);
    let secret = password
        .map(str::to_owned)
        .or_else(|| generated.clone())
        .unwrap_or_default();
    let hash = hash_off_thread(secret).await?;
    db.insert_user(username, role, &hash, now_unix()).await?;
    Ok(generated)
}

/// Hashing takes tens of milliseconds of CPU: keep it off the async workers.
async fn hash_off_thread(password: String) -> Result<String, AccountError> {
    tokio::task::spawn_blocking(move || hash_password(&password))
        .await
        .map_err(|err| AccountError::Invalid(err.to_string()))?
}

/// Sets a user's password (checked for length) by id, and revokes their API tokens: a
/// password changes because it may be known to someone else, who may have made tokens.
pub async fn set_password(db: &Db, user_id: i64, password: &str) -> Result<(), AccountError> {
    let hash = hash_off_thread(password.to_owned()).await?;
    db.set_password_hash_by_id(user_id, &hash).await?;
    db.revoke_user_api_tokens(user_id, now_unix()).await?;
    Ok(())
}

/// Changes a user's role, refusing to demote the last enabled admin.
pub async fn change_role(db: &Db, user_id: i64, role: Role) -> Result<(), AccountError> {
    let user = db.user_by_id(user_id).await?.ok_or(DbError::NotFound)?;
    if user.role == Role::Admin
        && role != Role::Admin
        && !user.disabled
        && db.count_admins().await? <= 1
    {
        return Err(AccountError::Invalid(
            "this is the last admin: make another admin first".into(),
        ));
    }
    db.set_role(user_id, role).await?;
    if !user.is_local() {
        // Set by hand: the sign-in source's group mapping no longer decides it.
        db.set_role_pinned(user_id, true).await?;
    }
    Ok(())
}

/// Disables or enables a user. Disabling ends their sessions; the last enabled admin stays.
pub async fn set_disabled(db: &Db, user_id: i64, disabled: bool) -> Result<(), AccountError> {
    let user = db.user_by_id(user_id).await?.ok_or(DbError::NotFound)?;
    if disabled && user.role == Role::Admin && !user.disabled && db.count_admins().await? <= 1 {
        return Err(AccountError::Invalid(
            "this is the last admin: it cannot be disabled".into(),
        ));
    }
    db.set_disabled(user_id, disabled).await?;
    if disabled {
        db.delete_user_sessions(user_id, None).await?;
    }
    Ok(())
}

/// Gives a user a new generated password, ends their sessions, and returns the password to
/// be shown once.
pub async fn reset_password(db: &Db, user_id: i64) -> Result<String, AccountError> {
    let password = generate_password();
    set_password(db, user_id, &password).await?;
    db.delete_user_sessions(user_id, None).await?;
    Ok(password)
}

/// On a hub without an enabled admin, creates `admin` with a generated password and returns
/// it, to be printed once.
pub async fn ensure_admin(db: &Db) -> Result<Option<String>, AccountError> {
    if db.count_admins().await? > 0 {
        return Ok(None);
    }
    let username = if db.user_by_name("admin").await?.is_some() {
        format!("admin-{}", now_unix())
    } else {
        "admin".to_owned()
    };
    let password = create_user(db, &username, Role::Admin, None).await?;
    Ok(password.map(|password| format!("{username} / {password}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_argon2id_salted_and_verify() {
        let first = hash_password("correct horse battery").unwrap();
        let second = hash_password("correct horse battery").unwrap();
        assert!(first.starts_with("$argon2id$"), "{first}");
        assert_ne!(first, second, "each hash has its own salt");
        assert!(verify_password("correct horse battery", &first));
        assert!(!verify_password("wrong horse battery", &first));
        assert!(!verify_password("correct horse battery", "not a hash"));
        assert!(hash_password("short").is_err());
    }

    #[test]
    fn usernames() {
        for good in ["alice", "a.b-c_d", "s12345", "sam@school.edu"] {
            assert!(validate_username(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "Alice",
            "-x",
            "a b",
            "ä",
            "a@b@c",
            "sam@",
            "@school",
            &"x".repeat(65),
        ] {
            assert!(validate_username(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn generated_passwords_are_long_and_differ() {
        let (a, b) = (generate_password(), generate_password());
        assert_eq!(a.len(), 20);
        assert_ne!(a, b);
        assert!(hash_password(&a).is_ok());
    }
}
