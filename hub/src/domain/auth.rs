//! Who is asking: logins, browser sessions, personal API tokens and password changes.
//!
//! Session ids and API tokens are [secrets](crate::secrets): the browser or client holds the
//! secret, the database only its hash. Sessions end after an idle time and after an absolute
//! lifetime, whichever comes first; a password change or a disabled account ends them all.

use std::net::IpAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crate::db::users::{Role, UserRow};
use crate::db::{Db, DbError, now_unix};
use crate::domain::accounts::{self, AccountError};
use crate::domain::audit::{self, Actor, Outcome};
use crate::domain::sign_in::settings::LocalLogin;
use crate::domain::sign_in::{ExternalIdentity, SignInError, accounts as external, ldap};
use crate::domain::viewer::Viewer;
use crate::secrets::{hash_secret, new_secret};
use crate::throttle::LoginThrottle;

const SESSION_PREFIX: &str = "pls_";
const API_TOKEN_PREFIX: &str = "plt_";
const CSRF_PREFIX: &str = "plc_";

/// Touching a session's last-seen time more often than this would write on every request.
const TOUCH_EVERY_SECS: i64 = 60;

/// A browser session: the secret for the cookie and the CSRF token for its forms.
#[derive(Clone)]
pub struct SessionSecret {
    pub id: String,
    pub csrf_token: String,
}

impl std::fmt::Debug for SessionSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionSecret(..)")
    }
}

/// A session found from its cookie.
#[derive(Debug, Clone)]
pub struct ActiveSession {
    pub viewer: Viewer,
    pub csrf_token: String,
    pub id_hash: String,
}

/// What a request signed in with, as stored: kept by long-lived responses (live updates,
/// consoles) to check that it still holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    Session { id_hash: String },
    Token { hash: String },
}

/// Why a login failed. The message never says whether the account exists.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error("wrong username or password")]
    BadCredentials,
    #[error("this account is disabled; ask an administrator")]
    Disabled,
    #[error("too many failed logins; try again in {} s", .0.as_secs().max(1))]
    Throttled(Duration),
    /// Local passwords are for admins only on this hub.
    #[error("sign in with your school account (the buttons below)")]
    LocalLoginOff,
    /// The directory knows the password but proxlab may not take the person in.
    #[error("{0}")]
    Refused(String),
    /// The directory cannot be reached.
    #[error("{0}")]
    Unavailable(String),
    #[error(transparent)]
    Db(#[from] DbError),
}

/// How long sessions live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionPolicy {
    pub idle: Duration,
    pub lifetime: Duration,
}

impl Default for SessionPolicy {
    fn default() -> Self {
        Self {
            idle: Duration::from_secs(4 * 3600),
            lifetime: Duration::from_secs(24 * 3600),
        }
    }
}

/// Logs people in and recognises them afterwards.
#[derive(Debug, Clone)]
pub struct Authenticator {
    db: Db,
    throttle: Arc<LoginThrottle>,
    policy: SessionPolicy,
    /// The directory the password form also checks, for accounts that are not local.
    directory: Option<Arc<ldap::Directory>>,
    local_login: LocalLogin,
}

impl From<SignInError> for LoginError {
    fn from(err: SignInError) -> Self {
        match err {
            SignInError::Refused(reason) => LoginError::Refused(reason),
            SignInError::Unavailable(reason) => LoginError::Unavailable(reason),
            SignInError::Disabled => LoginError::Disabled,
            SignInError::Db(err) => LoginError::Db(err),
        }
    }
}

/// Creates a personal API token for `owner` on behalf of `actor`; the token is returned once.
pub async fn issue_api_token(
    db: &Db,
    owner: &Viewer,
    name: &str,
    actor: Actor<'_>,
) -> Result<String, AccountError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
        return Err(AccountError::Invalid(
            "a token name needs 1 to 64 printable characters".into(),
        ));
    }
    let token = new_secret(API_TOKEN_PREFIX);
    let id = db
        .insert_api_token(owner.id, name, &hash_secret(&token), now_unix())
        .await?;
    audit::record(
        db,
        actor,
        "api-token.create",
        &format!("api-token:{id}"),
        Outcome::Ok,
        &format!("for {}: {name}", owner.username),
    )
    .await;
    Ok(token)
}

/// A hash to verify against when the account does not exist, so that the answer takes as
/// long as for a real account.
fn decoy_hash() -> &'static str {
    static DECOY: OnceLock<String> = OnceLock::new();
    DECOY.get_or_init(|| accounts::hash_password("decoy password, never valid").unwrap_or_default())
}

async fn verify_off_thread(password: &str, hash: &str) -> bool {
    let (password, hash) = (password.to_owned(), hash.to_owned());
    tokio::task::spawn_blocking(move || accounts::verify_password(&password, &hash))
        .await
        .unwrap_or(false)
}

/// The local account `known` if `password` is its password. Unknown and external accounts
/// take as long to refuse as a wrong password.
async fn local_account(known: Option<UserRow>, password: &str) -> Option<UserRow> {
    let local = known.filter(UserRow::is_local);
    let hash = local
        .as_ref()
        .map_or(decoy_hash(), |user| user.password_hash.as_str());
    let matches = verify_off_thread(password, hash).await;
    local.filter(|_| matches)
}

impl Authenticator {
    pub fn new(db: Db, throttle: Arc<LoginThrottle>, policy: SessionPolicy) -> Self {
        Self {
            db,
            throttle,
            policy,
            directory: None,
            local_login: LocalLogin::Everyone,
        }
    }

    /// Also checks passwords against `directory`, for people without a local account.
    pub fn with_directory(mut self, directory: Option<Arc<ldap::Directory>>) -> Self {
        self.directory = directory;
        self
    }

    /// Who may sign in with a local password.
    pub fn with_local_login(mut self, local_login: LocalLogin) -> Self {
        self.local_login = local_login;
        self
    }

    pub fn policy(&self) -> SessionPolicy {
        self.policy
    }

    /// Checks a username and password and opens a session.
    pub async fn login(
        &self,
        username: &str,
        password: &str,
        address: IpAddr,
    ) -> Result<(Viewer, SessionSecret), LoginError> {
        let username = username.trim().to_lowercase();
        let target = format!("user:{username}");
        if let Err(wait) = self.throttle.check(&username, address, Instant::now()) {
            audit::record(
                &self.db,
                Actor::Anonymous,
                "auth.login",
                &target,
                Outcome::Denied,
                &format!("throttled; from {address}"),
            )
            .await;
            return Err(LoginError::Throttled(wait));
        }
        let known = self.db.user_by_name(&username).await?;
        let directory = self.directory.as_ref().filter(|_| {
            known
                .as_ref()
                .is_none_or(|user| user.auth_source == ldap::SOURCE)
        });
        let user = match directory {
            Some(directory) => match directory.authenticate(&username, password).await {
                Ok(Some(identity)) => Some(self.external_account(&identity, address).await?),
                Ok(None) => None,
                Err(err) => {
                    audit::record(
                        &self.db,
                        Actor::Anonymous,
                        "auth.login",
                        &target,
                        Outcome::Failed,
                        &format!("{err}; from {address}"),
                    )
                    .await;
                    return Err(err.into());
                }
            },
            None => local_account(known, password).await,
        };
        let Some(user) = user else {
            self.throttle
                .record_failure(&username, address, Instant::now());
            audit::record(
                &self.db,
                Actor::Anonymous,
                "auth.login",
                &target,
                Outcome::Denied,
                &format!("wrong password or unknown user; from {address}"),
            )
            .await;
            return Err(LoginError::BadCredentials);
        };
        let viewer = Viewer::from(&user);
        let refusal = if user.disabled {
            Some((LoginError::Disabled, "account disabled"))
        } else if user.is_local()
            && self.local_login == LocalLogin::Admins
            && user.role != Role::Admin
        {
            Some((
                LoginError::LocalLoginOff,
                "local passwords are for admins only",
            ))
        } else {
            None
        };
        if let Some((error, reason)) = refusal {
            audit::record(
                &self.db,
                Some(&viewer),
                "auth.login",
                &target,
                Outcome::Denied,
                reason,
            )
            .await;
            return Err(error);
        }
        self.throttle.record_success(&username);
        let secret = self
            .signed_in(&viewer, &target, &format!("from {address}"))
            .await?;
        Ok((viewer, secret))
    }

    /// Opens a session for someone who just proved who they are, and records the sign-in.
    async fn signed_in(
        &self,
        viewer: &Viewer,
        target: &str,
        detail: &str,
    ) -> Result<SessionSecret, DbError> {
        let secret = self.open_session(viewer.id).await?;
        self.db.record_login(viewer.id, now_unix()).await?;
        audit::record(
            &self.db,
            Some(viewer),
            "auth.login",
            target,
            Outcome::Ok,
            detail,
        )
        .await;
        Ok(secret)
    }

    /// The account an external identity signs in as; a refusal is audited.
    async fn external_account(
        &self,
        identity: &ExternalIdentity,
        address: IpAddr,
    ) -> Result<UserRow, LoginError> {
        match external::account_for(&self.db, identity).await {
            Ok(user) => Ok(user),
            Err(err) => {
                audit::record(
                    &self.db,
                    Actor::Anonymous,
                    "auth.login",
                    &format!("user:{}", identity.username),
                    Outcome::Denied,
                    &format!("{err}; from {address}"),
                )
                .await;
                Err(err.into())
            }
        }
    }

    /// Signs in someone an OpenID Connect provider vouched for: their account (made at the
    /// first sign-in) and a session.
    pub async fn external_login(
        &self,
        identity: &ExternalIdentity,
        address: IpAddr,
    ) -> Result<(Viewer, SessionSecret), LoginError> {
        let target = format!("user:{}", identity.username);
        let user = self.external_account(identity, address).await?;
        let viewer = Viewer::from(&user);
        let detail = format!("through {}; from {address}", identity.source);
        let secret = self.signed_in(&viewer, &target, &detail).await?;
        Ok((viewer, secret))
    }

    /// Opens a session for an account that was just created (self-registration).
    pub async fn session_for_new_account(&self, viewer: &Viewer) -> Result<SessionSecret, DbError> {
        let secret = self.open_session(viewer.id).await?;
        self.db.record_login(viewer.id, now_unix()).await?;
        Ok(secret)
    }

    async fn open_session(&self, user_id: i64) -> Result<SessionSecret, DbError> {
        let secret = SessionSecret {
            id: new_secret(SESSION_PREFIX),
            csrf_token: new_secret(CSRF_PREFIX),
        };
        let now = now_unix();
        self.db
            .insert_session(
                &hash_secret(&secret.id),
                user_id,
                &secret.csrf_token,
                now,
                now + self.policy.lifetime.as_secs() as i64,
            )
            .await?;
        Ok(secret)
    }

    /// The session a cookie names, if it is still valid; expired ones are deleted.
    pub async fn session(&self, session_id: &str) -> Result<Option<ActiveSession>, DbError> {
        let id_hash = hash_secret(session_id);
        let Some(row) = self.db.session(&id_hash).await? else {
            return Ok(None);
        };
        let now = now_unix();
        let idle_limit = self.policy.idle.as_secs() as i64;
        if row.expires_at <= now || now - row.last_seen_at > idle_limit || row.user.disabled {
            self.db.delete_session(&id_hash).await?;
            return Ok(None);
        }
        if now - row.last_seen_at >= TOUCH_EVERY_SECS {
            self.db.touch_session(&id_hash, now).await?;
        }
        Ok(Some(ActiveSession {
            viewer: Viewer::from(&row.user),
            csrf_token: row.csrf_token,
            id_hash,
        }))
    }

    /// Whether what a long-lived response signed in with still holds, and as whom: the
    /// session not logged out, expired or idle, the token not revoked, the account enabled,
    /// with its role as it is now. Looking does not count as activity.
    pub async fn recheck(&self, credential: &Credential) -> Result<Option<Viewer>, DbError> {
        let now = now_unix();
        match credential {
            Credential::Session { id_hash } => {
                let idle_limit = self.policy.idle.as_secs() as i64;
                Ok(self.db.session(id_hash).await?.and_then(|row| {
                    let live = row.expires_at > now
                        && now - row.last_seen_at <= idle_limit
                        && !row.user.disabled;
                    live.then(|| Viewer::from(&row.user))
                }))
            }
            Credential::Token { hash } => Ok(self
                .db
                .live_api_token_user(hash)
                .await?
                .filter(|user| !user.disabled)
                .map(|user| Viewer::from(&user))),
        }
    }

    /// The owner of a personal API token, if the token is live and the account enabled.
    pub async fn api_token(&self, token: &str) -> Result<Option<Viewer>, DbError> {
        if !token.starts_with(API_TOKEN_PREFIX) {
            return Ok(None);
        }
        let user = self
            .db
            .api_token_user(&hash_secret(token), now_unix())
            .await?;
        Ok(user
            .filter(|user| !user.disabled)
            .map(|user| Viewer::from(&user)))
    }

    pub async fn logout(&self, session: &ActiveSession) -> Result<(), DbError> {
        self.db.delete_session(&session.id_hash).await?;
        audit::record(
            &self.db,
            Some(&session.viewer),
            "auth.logout",
            &format!("user:{}", session.viewer.username),
            Outcome::Ok,
            "",
        )
        .await;
        Ok(())
    }

    /// Changes the viewer's own password after checking the current one, and ends their other
    /// sessions.
    pub async fn change_password(
        &self,
        session: &ActiveSession,
        current: &str,
        new: &str,
    ) -> Result<(), AccountError> {
        let viewer = &session.viewer;
        let target = format!("user:{}", viewer.username);
        let user = self
            .db
            .user_by_id(viewer.id)
            .await?
            .ok_or(DbError::NotFound)?;
        if !verify_off_thread(current, &user.password_hash).await {
            audit::record(
                &self.db,
                Some(viewer),
                "user.password",
                &target,
                Outcome::Denied,
                "wrong current password",
            )
            .await;
            return Err(AccountError::Invalid(
                "the current password is wrong".into(),
            ));
        }
        accounts::set_password(&self.db, viewer.id, new).await?;
        self.db
            .delete_user_sessions(viewer.id, Some(&session.id_hash))
            .await?;
        audit::record(
            &self.db,
            Some(viewer),
            "user.password",
            &target,
            Outcome::Ok,
            "",
        )
        .await;
        Ok(())
    }

    /// Creates a personal API token for `viewer`; the token is returned once.
    pub async fn create_api_token(
        &self,
        viewer: &Viewer,
        name: &str,
    ) -> Result<String, AccountError> {
        issue_api_token(&self.db, viewer, name, Actor::User(viewer)).await
    }

    /// Revokes one of the viewer's own tokens.
    pub async fn revoke_api_token(&self, viewer: &Viewer, token_id: i64) -> Result<bool, DbError> {
        let revoked = self
            .db
            .revoke_api_token(viewer.id, token_id, now_unix())
            .await?;
        audit::record(
            &self.db,
            Some(viewer),
            "api-token.revoke",
            &format!("api-token:{token_id}"),
            if revoked {
                Outcome::Ok
            } else {
                Outcome::Failed
            },
            "",
        )
        .await;
        Ok(revoked)
    }
}
