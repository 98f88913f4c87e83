//! What only admins, or the operator at the hub's command line, do to the site: accounts,
//! join tokens, nodes and site settings. Each operation checks who acts and writes its audit
//! entry here, so the portal and the CLI cannot differ in either.

use std::time::Duration;

use crate::agents::AgentRegistry;
use crate::db::users::Role;
use crate::db::{Db, DbError, now_unix};
use crate::domain::accounts::{self, AccountError};
use crate::domain::audit::{self, Actor, Outcome};
use crate::domain::tokens::{IssuedToken, create_join_token};

/// Why an admin operation did not happen.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("only admins may do that")]
    Forbidden,
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<AccountError> for AdminError {
    fn from(err: AccountError) -> Self {
        match err {
            AccountError::Invalid(message) => AdminError::Invalid(message),
            AccountError::Db(DbError::NotFound) => AdminError::NotFound("no such user".into()),
            AccountError::Db(err) => AdminError::Db(err),
        }
    }
}

/// Admins and the operator may; nobody else.
fn require_admin(actor: Actor<'_>) -> Result<(), AdminError> {
    match actor {
        Actor::User(viewer) if viewer.is_admin() => Ok(()),
        Actor::Operator => Ok(()),
        Actor::User(_) | Actor::Anonymous | Actor::Automatic(_) => Err(AdminError::Forbidden),
    }
}

/// Records how an operation ended and hands its result on.
async fn audited<T>(
    db: &Db,
    actor: Actor<'_>,
    action: &str,
    target: &str,
    detail: &str,
    result: Result<T, AdminError>,
) -> Result<T, AdminError> {
    let (outcome, detail) = match &result {
        Ok(_) => (Outcome::Ok, detail.to_owned()),
        Err(AdminError::Forbidden) => (Outcome::Denied, String::new()),
        Err(err) => (Outcome::Failed, err.to_string()),
    };
    audit::record(db, actor, action, target, outcome, &detail).await;
    result
}

/// Adds an account; returns the generated password when none was given.
pub async fn add_user(
    db: &Db,
    actor: Actor<'_>,
    username: &str,
    role: Role,
    password: Option<&str>,
) -> Result<Option<String>, AdminError> {
    let create = async {
        require_admin(actor)?;
        Ok(accounts::create_user(db, username, role, password).await?)
    };
    let result = create.await;
    let target = format!("user:{username}");
    audited(db, actor, "user.create", &target, role.as_str(), result).await
}

/// A change an admin makes to an account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserChange {
    Role,
    Disable,
    Enable,
    ResetPassword,
    /// Hands an external account's role back to its sign-in source's group mapping.
    FollowSource,
}

impl UserChange {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "role" => Some(UserChange::Role),
            "disable" => Some(UserChange::Disable),
            "enable" => Some(UserChange::Enable),
            "reset-password" => Some(UserChange::ResetPassword),
            "follow-source" => Some(UserChange::FollowSource),
            _ => None,
        }
    }

    fn audit_action(self) -> &'static str {
        match self {
            UserChange::Role => "user.role",
            UserChange::Disable => "user.disable",
            UserChange::Enable => "user.enable",
            UserChange::ResetPassword => "user.reset-password",
            UserChange::FollowSource => "user.role-follows-source",
        }
    }
}

/// Changes account `user_id`; returns the new password of a reset. `role` is the new role's
/// name for [`UserChange::Role`].
pub async fn change_user(
    db: &Db,
    actor: Actor<'_>,
    user_id: i64,
    change: UserChange,
    role: Option<&str>,
) -> Result<Option<String>, AdminError> {
    let user = db
        .user_by_id(user_id)
        .await?
        .ok_or_else(|| AdminError::NotFound("no such user".into()))?;
    let result = apply_user_change(db, actor, user.id, change, role).await;
    let target = format!("user:{}", user.username);
    audited(db, actor, change.audit_action(), &target, "", result).await
}

async fn apply_user_change(
    db: &Db,
    actor: Actor<'_>,
    user_id: i64,
    change: UserChange,
    role: Option<&str>,
) -> Result<Option<String>, AdminError> {
    require_admin(actor)?;
    if let Actor::User(admin) = actor
        && admin.id == user_id
        && change == UserChange::Disable
    {
        return Err(AdminError::Invalid("you cannot disable yourself".into()));
    }
    Ok(match change {
        UserChange::Role => {
            let role: Role = role
                .unwrap_or_default()
                .parse()
                .map_err(AdminError::Invalid)?;
            accounts::change_role(db, user_id, role).await?;
            None
        }
        UserChange::Disable => {
            accounts::set_disabled(db, user_id, true).await?;
            None
        }
        UserChange::Enable => {
            accounts::set_disabled(db, user_id, false).await?;
            None
        }
        UserChange::ResetPassword => {
            let user = db
                .user_by_id(user_id)
                .await?
                .ok_or_else(|| AdminError::NotFound("no such user".into()))?;
            if !user.is_local() {
                return Err(AdminError::Invalid(format!(
                    "{} signs in through {}: there is no password here to reset",
                    user.username, user.auth_source
                )));
            }
            Some(accounts::reset_password(db, user_id).await?)
        }
        UserChange::FollowSource => {
            db.set_role_pinned(user_id, false).await?;
            None
        }
    })
}

/// Whether people without an account may create one through a class invite link.
pub async fn set_self_registration(db: &Db, actor: Actor<'_>, on: bool) -> Result<(), AdminError> {
    let value = if on { "on" } else { "off" };
    let set = async {
        require_admin(actor)?;
        Ok(db
            .set_setting(crate::db::settings::SELF_REGISTRATION, value)
            .await?)
    };
    let result = set.await;
    audited(
        db,
        actor,
        "settings.self-registration",
        "site",
        value,
        result,
    )
    .await
}

/// What a join token is for: the node that may use it (any, when `None`), for how long, and
/// what the enroll command tells the agent.
#[derive(Debug, Clone, Copy)]
pub struct JoinTokenRequest<'a> {
    pub node: Option<&'a str>,
    pub ttl: Duration,
    pub ca_pin: &'a str,
    pub hub_address: &'a str,
}

/// Issues a one-time join token for enrolling a node.
pub async fn issue_join_token(
    db: &Db,
    actor: Actor<'_>,
    request: JoinTokenRequest<'_>,
) -> Result<IssuedToken, AdminError> {
    let issue = async {
        require_admin(actor)?;
        if let Some(node) = request.node {
            proxlab_protocol::names::validate_node_name(node).map_err(AdminError::Invalid)?;
        }
        let issued = create_join_token(
            db,
            request.ca_pin,
            request.hub_address,
            request.ttl,
            request.node,
        )
        .await?;
        Ok(issued)
    };
    let result = issue.await;
    let target = format!("node:{}", request.node.unwrap_or("any"));
    let detail = format!("valid for {}", humantime::format_duration(request.ttl));
    audited(db, actor, "join-token.create", &target, &detail, result).await
}

/// Revokes an unspent join token; `false` when there was none to revoke.
pub async fn revoke_join_token(db: &Db, actor: Actor<'_>, id: i64) -> Result<bool, AdminError> {
    let revoke = async {
        require_admin(actor)?;
        Ok(db.revoke_join_token(id, now_unix()).await?)
    };
    let missing = format!("no unspent join token {id}");
    let target = format!("join-token:{id}");
    audited_revocation(
        db,
        actor,
        "join-token.revoke",
        &target,
        missing,
        revoke.await,
    )
    .await
}

/// Revokes a node: its certificate never connects again, and its agent, if connected to
/// this process (`registry`), is disconnected at once. `false` when no active node has the
/// name.
pub async fn revoke_node(
    db: &Db,
    registry: Option<&AgentRegistry>,
    actor: Actor<'_>,
    name: &str,
) -> Result<bool, AdminError> {
    let revoke = async {
        require_admin(actor)?;
        Ok(db.revoke_node(name, now_unix()).await?)
    };
    let missing = format!("no active node named {name}");
    let target = format!("node:{name}");
    let revoked =
        audited_revocation(db, actor, "node.revoke", &target, missing, revoke.await).await?;
    if revoked && let Some(registry) = registry {
        registry.disconnect(name, proxlab_protocol::CloseCode::Revoked);
    }
    Ok(revoked)
}

/// Audits a revocation: one that found nothing to revoke is recorded as failed (with
/// `missing` as the reason) and answered `false`.
async fn audited_revocation(
    db: &Db,
    actor: Actor<'_>,
    action: &str,
    target: &str,
    missing: String,
    revoked: Result<bool, AdminError>,
) -> Result<bool, AdminError> {
    let result = match revoked {
        Ok(false) => Err(AdminError::NotFound(missing)),
        other => other,
    };
    match audited(db, actor, action, target, "", result).await {
        Err(AdminError::NotFound(_)) => Ok(false),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::audit::AuditFilter;
    use crate::domain::viewer::Viewer;

    #[tokio::test]
    async fn only_admins_and_the_operator_act_and_every_try_is_audited() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::connect(&Db::sqlite_url(dir.path())).await.unwrap();
        let id = db.insert_user("tina", Role::Teacher, "x", 0).await.unwrap();
        let teacher = Viewer {
            id,
            username: "tina".into(),
            role: Role::Teacher,
        };
        let refused = add_user(&db, Actor::User(&teacher), "eve", Role::Admin, None).await;
        assert!(matches!(refused, Err(AdminError::Forbidden)), "{refused:?}");
        assert!(db.user_by_name("eve").await.unwrap().is_none());
        let made = add_user(
            &db,
            Actor::Operator,
            "ada",
            Role::Admin,
            Some("a long passphrase"),
        )
        .await
        .unwrap();
        assert_eq!(made, None, "a given password is not echoed");
        assert!(
            !revoke_node(&db, None, Actor::Operator, "pve9")
                .await
                .unwrap()
        );
        let entries = db
            .find_audit(&AuditFilter {
                limit: 10,
                ..AuditFilter::default()
            })
            .await
            .unwrap();
        let seen: Vec<(&str, &str, &str)> = entries
            .iter()
            .map(|e| (e.actor.as_str(), e.action.as_str(), e.result.as_str()))
            .collect();
        assert_eq!(
            seen,
            [
                ("operator (command line)", "node.revoke", "failed"),
                ("operator (command line)", "user.create", "ok"),
                ("tina", "user.create", "denied"),
            ]
        );
    }
}
