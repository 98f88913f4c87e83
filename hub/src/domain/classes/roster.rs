//! Importing a class roster: everyone on it is enrolled and gets a VM (or waits for one);
//! people without an account get one, as the site chooses: a local account with a generated
//! password (shown once to the teacher) or an account that waits for its first sign-in
//! through the school's single sign-on.

use super::roster_csv;
use super::{ClassError, owned_class, serve_waitlist};
use crate::HubState;
use crate::db::now_unix;
use crate::db::rosters::{RosterAccount, RosterRow};
use crate::db::states::ClassState;
use crate::domain::accounts::{generate_password, hash_password};
use crate::domain::audit::{self, Outcome};
use crate::domain::sign_in::{RosterAccounts, SignInError};
use crate::domain::viewer::Viewer;

/// What an import did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct RosterImport {
    /// People on the file.
    pub listed: usize,
    /// Of them, enrolled by this import (the others were in the class already).
    pub enrolled: usize,
    /// Local accounts made, with their passwords: shown once, never stored readable.
    pub created: Vec<NewAccount>,
    /// Accounts made to wait for their first single sign-on.
    pub preregistered: usize,
    /// Enrolled students still waiting for a VM after the import.
    pub waiting: usize,
}

/// A local account a roster made.
#[derive(Clone, PartialEq, Eq, serde::Serialize)]
pub struct NewAccount {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for NewAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewAccount")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// Hashes the new accounts' passwords on a few blocking threads (argon2 takes tens of
/// milliseconds and megabytes each; one thread per core keeps both in bounds).
async fn hash_all(passwords: Vec<String>) -> Result<Vec<String>, ClassError> {
    let threads = std::thread::available_parallelism().map_or(2, usize::from);
    let chunk = passwords.len().div_ceil(threads).max(1);
    let mut tasks = Vec::new();
    for part in passwords.chunks(chunk) {
        let part = part.to_vec();
        tasks.push(tokio::task::spawn_blocking(move || {
            part.iter()
                .map(|password| hash_password(password))
                .collect::<Result<Vec<_>, _>>()
        }));
    }
    let mut hashes = Vec::with_capacity(passwords.len());
    for task in tasks {
        let part = task
            .await
            .map_err(|err| ClassError::Invalid(format!("hashing passwords: {err}")))?
            .map_err(|err| ClassError::Invalid(err.to_string()))?;
        hashes.extend(part);
    }
    Ok(hashes)
}

/// Imports a roster file (CSV, see [`roster_csv`]) into a class the viewer owns. A file with
/// any problem imports nothing and says what is wrong, line by line.
pub async fn import(
    state: &HubState,
    viewer: &Viewer,
    class_id: i64,
    file: &[u8],
) -> Result<RosterImport, ClassError> {
    active_owned_class(state, viewer, class_id).await?;
    let entries =
        roster_csv::parse(file).map_err(|problems| ClassError::Invalid(problems.to_string()))?;
    enrol(
        state,
        viewer,
        class_id,
        &entries,
        &state.sign_in.roster_accounts,
    )
    .await
}

/// Makes a class's roster follow a directory group (`group`, or the one it follows already)
/// and brings it up to date: the group's members are enrolled; those without an account get
/// one that waits for their first directory sign-in. Nobody is removed.
pub async fn sync_group(
    state: &HubState,
    viewer: &Viewer,
    class_id: i64,
    group: Option<&str>,
) -> Result<RosterImport, ClassError> {
    let class = active_owned_class(state, viewer, class_id).await?;
    let directory = state.sign_in.directory.as_ref().ok_or_else(|| {
        ClassError::Invalid("this hub has no directory ([sign_in.ldap] in hub.toml)".into())
    })?;
    let group = match group.map(str::trim) {
        Some(group) if !group.is_empty() => group.to_owned(),
        _ if !class.roster_group.is_empty() => class.roster_group.clone(),
        _ => {
            return Err(ClassError::Invalid(
                "name the directory group (its DN)".into(),
            ));
        }
    };
    let members = directory
        .group_members(&group)
        .await
        .map_err(|err| match err {
            SignInError::Refused(message) => ClassError::Invalid(message),
            SignInError::Unavailable(message) => ClassError::Conflict(message),
            SignInError::Disabled => ClassError::Invalid(err.to_string()),
            SignInError::Db(err) => ClassError::Db(err),
        })?;
    let mut entries = Vec::with_capacity(members.len());
    for (at, (username, email, display_name)) in members.into_iter().enumerate() {
        if crate::domain::accounts::validate_username(&username).is_err() {
            tracing::warn!(%username, %group, "a group member's name cannot be a username here");
            continue;
        }
        entries.push(roster_csv::RosterEntry {
            line: at + 1,
            username,
            email,
            display_name,
        });
    }
    if entries.is_empty() {
        return Err(ClassError::Invalid(format!(
            "the group {group:?} has no members"
        )));
    }
    state.db.set_roster_group(class_id, &group).await?;
    let directory_accounts = RosterAccounts::Source(crate::domain::sign_in::ldap::SOURCE.into());
    enrol(state, viewer, class_id, &entries, &directory_accounts).await
}

async fn active_owned_class(
    state: &HubState,
    viewer: &Viewer,
    class_id: i64,
) -> Result<crate::db::classes::ClassRow, ClassError> {
    let class = owned_class(state, viewer, class_id).await?;
    if class.state != ClassState::Active {
        return Err(ClassError::Conflict("the class is being deleted".into()));
    }
    Ok(class)
}

/// Enrols everyone listed, making the accounts that are missing as `new_accounts` says.
async fn enrol(
    state: &HubState,
    viewer: &Viewer,
    class_id: i64,
    entries: &[roster_csv::RosterEntry],
    new_accounts: &RosterAccounts,
) -> Result<RosterImport, ClassError> {
    let mut rows = Vec::with_capacity(entries.len());
    let mut new_local = Vec::new();
    let mut preregistered = 0;
    for entry in entries {
        let existing = match state.db.user_by_name(&entry.username).await? {
            Some(user) => Some(user),
            None => state.db.user_by_email(&entry.email).await?,
        };
        let account = match (existing, new_accounts) {
            (Some(user), _) => RosterAccount::Existing(user.id),
            (None, RosterAccounts::Local) => {
                new_local.push((rows.len(), generate_password()));
                RosterAccount::NewLocal {
                    password_hash: String::new(),
                }
            }
            (None, RosterAccounts::Source(source)) => {
                preregistered += 1;
                RosterAccount::Preregistered {
                    source: source.clone(),
                }
            }
        };
        rows.push(RosterRow {
            username: entry.username.clone(),
            email: entry.email.clone(),
            display_name: entry.display_name.clone(),
            account,
        });
    }
    let hashes = hash_all(
        new_local
            .iter()
            .map(|(_, password)| password.clone())
            .collect(),
    )
    .await?;
    let mut created = Vec::with_capacity(new_local.len());
    for ((at, password), hash) in new_local.into_iter().zip(hashes) {
        rows[at].account = RosterAccount::NewLocal {
            password_hash: hash,
        };
        created.push(NewAccount {
            username: rows[at].username.clone(),
            password,
        });
    }
    let enrolled = state
        .db
        .import_roster(class_id, &rows, now_unix())
        .await
        .map_err(|err| match err {
            crate::db::DbError::Conflict(message) => ClassError::Conflict(format!(
                "{message} (made meanwhile); the roster was not imported, try again"
            )),
            other => ClassError::Db(other),
        })?;
    serve_waitlist(state, class_id).await?;
    let waiting = state.db.waitlist(class_id).await?.len();
    let outcome = RosterImport {
        listed: entries.len(),
        enrolled,
        created,
        preregistered,
        waiting,
    };
    audit::record(
        &state.db,
        viewer,
        "class.roster",
        &format!("class:{class_id}"),
        Outcome::Ok,
        &format!(
            "{} listed, {} enrolled, {} local accounts made, {} waiting for single sign-on",
            outcome.listed,
            outcome.enrolled,
            outcome.created.len(),
            outcome.preregistered
        ),
    )
    .await;
    state.jobs.announce(class_id);
    Ok(outcome)
}
