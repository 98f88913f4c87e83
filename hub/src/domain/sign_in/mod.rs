//! Signing in with the school's accounts: OpenID Connect providers ([`oidc`]) and an
//! LDAP/Active Directory ([`ldap`]), beside the local accounts of [`crate::domain::auth`].
//!
//! Every source ends in an [`ExternalIdentity`]: who the person is by the source's stable
//! subject, the username and profile to show, and the role its group mapping gives. The
//! first sign-in makes the account (just in time); later ones keep its name, email and role
//! up to date unless an admin pinned the role ([`accounts`]).

pub mod accounts;
pub mod ldap;
pub mod oidc;
pub mod roles;
pub mod settings;

use std::sync::Arc;

use anyhow::Result;

use crate::db::DbError;
use crate::db::users::Role;
use settings::{LocalLogin, SignInSection};

/// A secret from the configuration: never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// Why someone could not sign in through a source.
#[derive(Debug, thiserror::Error)]
pub enum SignInError {
    /// The source or proxlab's rules say no; the message says why.
    #[error("{0}")]
    Refused(String),
    /// The source cannot be reached: nothing is wrong with the person's account.
    #[error("{0}")]
    Unavailable(String),
    #[error("this account is disabled; ask an administrator")]
    Disabled,
    #[error(transparent)]
    Db(#[from] DbError),
}

/// A person as a sign-in source vouches for them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalIdentity {
    /// `oidc:<id>` or `ldap`.
    pub source: String,
    /// The source's stable id for the person (`sub`, `entryUUID`, `objectGUID`, the DN).
    pub subject: String,
    pub username: String,
    pub display_name: String,
    pub email: String,
    pub role: Role,
    /// The groups the source says the person is in (kept for plugins).
    pub groups: Vec<String>,
    /// Whether a first sign-in may take over a local account of the same username.
    pub link_existing: bool,
}

/// What people without an account get when a roster names them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum RosterAccounts {
    /// Local accounts with generated passwords, shown once.
    #[default]
    Local,
    /// Accounts waiting for their first sign-in through this source.
    Source(String),
}

/// The checked `[sign_in]` settings, secrets read.
#[derive(Debug, Clone, Default)]
pub struct SignInConfig {
    pub local_login: LocalLogin,
    pub roster_accounts: RosterAccounts,
    pub oidc: Vec<(settings::OidcSection, Option<Secret>)>,
    pub ldap: Option<(settings::LdapSection, Option<Secret>)>,
}

impl SignInConfig {
    /// Checks the section and reads the secrets it names.
    pub fn from_section(section: SignInSection) -> Result<Self> {
        let mut oidc = Vec::new();
        for provider in section.oidc {
            settings::check_provider_id(&provider.id)?;
            if oidc
                .iter()
                .any(|(known, _): &(settings::OidcSection, _)| known.id == provider.id)
            {
                anyhow::bail!("[[sign_in.oidc]] id {:?} is used twice", provider.id);
            }
            let what = format!("[[sign_in.oidc]] {}", provider.id);
            settings::check_transport(&format!("{what}: issuer"), &provider.issuer, &["https"])?;
            let secret = settings::read_secret(
                &format!("{what}: client secret"),
                provider.client_secret_file.as_deref(),
                provider.client_secret_env.as_deref(),
            )?;
            oidc.push((provider, secret.map(Secret)));
        }
        let ldap = match section.ldap {
            Some(directory) => {
                let secret = ldap::check_settings(&directory)?;
                Some((directory, secret.map(Secret)))
            }
            None => None,
        };
        let roster_accounts = match section.roster_accounts.as_deref() {
            None | Some("local") => RosterAccounts::Local,
            Some("ldap") if ldap.is_some() => RosterAccounts::Source("ldap".into()),
            Some(source)
                if source
                    .strip_prefix("oidc:")
                    .is_some_and(|id| oidc.iter().any(|(provider, _)| provider.id == id)) =>
            {
                RosterAccounts::Source(source.to_owned())
            }
            Some(other) => anyhow::bail!(
                "[sign_in] roster_accounts {other:?}: use \"local\", \"ldap\" (with [sign_in.ldap]) \
                 or \"oidc:ID\" naming a configured provider"
            ),
        };
        Ok(Self {
            local_login: section.local_login.unwrap_or_default(),
            roster_accounts,
            oidc,
            ldap,
        })
    }
}

/// The sign-in sources a running hub offers.
#[derive(Default)]
pub struct SignIn {
    pub providers: Vec<Arc<oidc::OidcProvider>>,
    pub pending: oidc::PendingLogins,
    pub directory: Option<Arc<ldap::Directory>>,
    pub local_login: LocalLogin,
    pub roster_accounts: RosterAccounts,
}

impl SignIn {
    /// The sources of `config`; callback URLs are built on `site_url`.
    pub fn start(config: &SignInConfig, site_url: Option<&str>) -> Result<Self> {
        let mut providers = Vec::new();
        for (section, secret) in &config.oidc {
            let site_url = site_url.ok_or_else(|| {
                anyhow::anyhow!(
                    "[[sign_in.oidc]] {}: set public_url, the portal's address the provider \
                     sends people back to",
                    section.id
                )
            })?;
            providers.push(Arc::new(oidc::OidcProvider::new(
                section,
                secret.clone(),
                site_url,
            )?));
        }
        let directory = match &config.ldap {
            Some((section, secret)) => {
                Some(Arc::new(ldap::Directory::new(section, secret.clone())?))
            }
            None => None,
        };
        Ok(Self {
            providers,
            pending: oidc::PendingLogins::default(),
            directory,
            local_login: config.local_login,
            roster_accounts: config.roster_accounts.clone(),
        })
    }

    pub fn provider(&self, id: &str) -> Option<&Arc<oidc::OidcProvider>> {
        self.providers.iter().find(|provider| provider.id == id)
    }

    /// The provider an account signs in through, if it is an OIDC one.
    pub fn provider_of_source(&self, source: &str) -> Option<&Arc<oidc::OidcProvider>> {
        self.providers
            .iter()
            .find(|provider| provider.source == source)
    }
}
