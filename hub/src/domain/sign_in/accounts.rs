//! The account an external identity signs in as: found by the source's subject, made at the
//! first sign-in, and kept up to date with what the source says at every later one.

use super::{ExternalIdentity, SignInError};
use crate::db::identities::ExternalProfile;
use crate::db::users::{Role, UserRow};
use crate::db::{Db, DbError, now_unix};
use crate::domain::accounts::validate_username;

/// The account `identity` signs in as, made or updated.
///
/// A username that is already taken is only taken over when that account waits for this
/// source (a roster made it for single sign-on) or when the source is allowed to link local
/// accounts; otherwise anyone who can choose their name at the provider could become the
/// local account of that name.
pub async fn account_for(db: &Db, identity: &ExternalIdentity) -> Result<UserRow, SignInError> {
    let user = match db
        .user_by_identity(&identity.source, &identity.subject)
        .await?
    {
        Some(user) => user,
        None => first_sign_in(db, identity).await?,
    };
    let role = role_to_keep(db, &user, identity.role).await?;
    db.update_external_profile(
        user.id,
        &ExternalProfile {
            display_name: &identity.display_name,
            email: &identity.email,
            role,
            groups: &identity.groups,
        },
    )
    .await?;
    let user = db.user_by_id(user.id).await?.ok_or(DbError::NotFound)?;
    if user.disabled {
        return Err(SignInError::Disabled);
    }
    Ok(user)
}

async fn first_sign_in(db: &Db, identity: &ExternalIdentity) -> Result<UserRow, SignInError> {
    let now = now_unix();
    if let Some(existing) = db.user_by_name(&identity.username).await? {
        let waiting = existing.auth_source == identity.source;
        let linkable = identity.link_existing && existing.is_local();
        if !(waiting || linkable) || db.user_has_identity(existing.id).await? {
            return Err(SignInError::Refused(format!(
                "an account named {} exists here already and signs in another way; ask an \
                 administrator to link it",
                identity.username
            )));
        }
        db.link_identity(existing.id, &identity.source, &identity.subject, now)
            .await?;
        return Ok(existing);
    }
    validate_username(&identity.username).map_err(|err| {
        SignInError::Refused(format!(
            "the sign-in source's username is not usable: {err}"
        ))
    })?;
    let profile = ExternalProfile {
        display_name: &identity.display_name,
        email: &identity.email,
        role: identity.role,
        groups: &identity.groups,
    };
    let id = db
        .insert_external_user(
            &identity.username,
            &identity.source,
            &identity.subject,
            &profile,
            now,
        )
        .await?;
    db.user_by_id(id)
        .await?
        .ok_or(SignInError::Db(DbError::NotFound))
}

/// The role the account gets: the source's, except that the last enabled admin stays one
/// (a changed group must not lock everyone out of administration).
async fn role_to_keep(db: &Db, user: &UserRow, offered: Role) -> Result<Role, DbError> {
    let last_admin = user.role == Role::Admin
        && !user.disabled
        && !user.role_pinned
        && offered != Role::Admin
        && db.count_admins().await? <= 1;
    if last_admin {
        tracing::warn!(
            user = %user.username,
            "the sign-in source no longer makes the last admin an admin; the role is kept"
        );
        return Ok(Role::Admin);
    }
    Ok(offered)
}
