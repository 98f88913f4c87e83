//! The `[sign_in]` section of `hub.toml`: local passwords, OpenID Connect providers and an
//! LDAP/Active Directory, as the operator writes them, checked before the hub starts.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Deserialize;

use super::roles::RoleMapping;

/// `[sign_in]`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignInSection {
    /// Who may sign in with a password kept by proxlab: `"everyone"` (default) or `"admins"`.
    pub local_login: Option<LocalLogin>,
    /// What a roster does with people who have no account yet: `"local"` (accounts with
    /// generated passwords) or the id of a source their first sign-in will come through
    /// (`"oidc:school"`, `"ldap"`).
    pub roster_accounts: Option<String>,
    #[serde(default)]
    pub oidc: Vec<OidcSection>,
    pub ldap: Option<LdapSection>,
}

/// Who may use the password form for accounts kept here.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LocalLogin {
    #[default]
    Everyone,
    Admins,
}

/// `[[sign_in.oidc]]`: one OpenID Connect provider.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcSection {
    /// In URLs and account sources: letters, digits and `-`.
    pub id: String,
    /// The button says "Sign in with LABEL".
    pub label: Option<String>,
    pub issuer: String,
    pub client_id: String,
    pub client_secret_file: Option<PathBuf>,
    /// The name of an environment variable holding the client secret.
    pub client_secret_env: Option<String>,
    pub scopes: Option<Vec<String>>,
    /// The claim that becomes the username (default `preferred_username`, else `email`).
    pub username_claim: Option<String>,
    /// Only people whose (verified) email is in one of these domains may sign in.
    #[serde(default)]
    pub allowed_email_domains: Vec<String>,
    /// The claim holding groups or roles (a string or a list), read by `roles`.
    pub role_claim: Option<String>,
    #[serde(flatten)]
    pub mapping: RoleMapping,
    /// Whether a first sign-in may take over a local account of the same username.
    #[serde(default)]
    pub link_existing_accounts: bool,
    /// Extra CA certificates (PEM) for a provider with a private CA.
    pub ca_file: Option<PathBuf>,
    /// Whether signing out also signs out at the provider, when it offers that.
    pub end_session: Option<bool>,
}

/// `[sign_in.ldap]`: one directory.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LdapSection {
    /// `ldaps://host[:port]` or `ldap://host[:port]` (with `starttls = true`).
    pub url: String,
    #[serde(default)]
    pub starttls: bool,
    pub ca_file: Option<PathBuf>,
    /// Direct bind: the DN with `{username}` in it (`uid={username},ou=people,dc=school`).
    pub user_dn_template: Option<String>,
    /// Search then bind: the service account that searches.
    pub bind_dn: Option<String>,
    pub bind_password_file: Option<PathBuf>,
    pub bind_password_env: Option<String>,
    pub user_base: Option<String>,
    /// `{username}` is replaced with the escaped username; default
    /// `(|(uid={username})(sAMAccountName={username}))`.
    pub user_filter: Option<String>,
    pub display_name_attribute: Option<String>,
    pub email_attribute: Option<String>,
    /// Groups: the user's `memberOf` values (default), or, with `nested_groups`, every group
    /// under `group_base` that has the user as a member through any depth (Active Directory's
    /// matching rule in chain).
    #[serde(default)]
    pub nested_groups: bool,
    pub group_base: Option<String>,
    #[serde(flatten)]
    pub mapping: RoleMapping,
    #[serde(default, with = "crate::config::humantime_serde_opt")]
    pub timeout: Option<Duration>,
    /// Whether a first sign-in may take over a local account of the same username.
    #[serde(default)]
    pub link_existing_accounts: bool,
}

/// An id usable in a URL path and an account source.
pub fn check_provider_id(id: &str) -> Result<()> {
    let valid = !id.is_empty()
        && id.len() <= 32
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !valid {
        bail!("[[sign_in.oidc]] id {id:?}: use 1 to 32 lower-case letters, digits or '-'");
    }
    Ok(())
}

/// A secret from a file (trimmed) or an environment variable; exactly one must be named.
pub fn read_secret(what: &str, file: Option<&Path>, env: Option<&str>) -> Result<Option<String>> {
    let secret = match (file, env) {
        (Some(_), Some(_)) => bail!("{what}: give a file or an environment variable, not both"),
        (Some(file), None) => Some(
            std::fs::read_to_string(file)
                .with_context(|| format!("{what}: reading {}", file.display()))?
                .trim()
                .to_owned(),
        ),
        (None, Some(name)) => Some(
            std::env::var(name)
                .with_context(|| format!("{what}: the environment variable {name} is not set"))?
                .trim()
                .to_owned(),
        ),
        (None, None) => None,
    };
    if secret.as_deref() == Some("") {
        bail!("{what} is empty");
    }
    Ok(secret)
}

/// Whether an issuer's or directory's URL may be used: TLS, except on the machine itself
/// (test providers).
pub fn check_transport(what: &str, url: &str, secure_schemes: &[&str]) -> Result<()> {
    let (scheme, rest) = url
        .split_once("://")
        .with_context(|| format!("{what} {url:?} is not a URL"))?;
    if secure_schemes.contains(&scheme) {
        return Ok(());
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    let host = match host.strip_prefix('[') {
        Some(bracketed) => bracketed.split(']').next().unwrap_or_default(),
        None => host.split(':').next().unwrap_or_default(),
    };
    let loopback = matches!(host, "localhost" | "127.0.0.1" | "::1");
    if loopback {
        return Ok(());
    }
    bail!(
        "{what} {url:?}: use {} (plain {scheme} is only allowed on localhost)",
        secure_schemes.join(" or ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_ids_are_url_safe() {
        assert!(check_provider_id("entra-id").is_ok());
        for bad in ["", "Entra", "a/b", "a b", &"x".repeat(33)] {
            assert!(check_provider_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn plain_transport_only_on_loopback() {
        let https = ["https"];
        assert!(check_transport("issuer", "https://login.school/x", &https).is_ok());
        assert!(check_transport("issuer", "http://127.0.0.1:3000/", &https).is_ok());
        assert!(check_transport("issuer", "http://localhost/", &https).is_ok());
        assert!(check_transport("issuer", "http://login.school/", &https).is_err());
        assert!(check_transport("issuer", "http://127.0.0.1.evil/", &https).is_err());
        assert!(check_transport("issuer", "login.school", &https).is_err());
        assert!(check_transport("issuer", "http://localhost@evil.school/", &https).is_err());
        assert!(check_transport("issuer", "http://[::1]:8080/", &https).is_ok());
        let ldap = ["ldaps"];
        assert!(check_transport("url", "ldap://dc.school", &ldap).is_err());
    }

    #[test]
    fn secrets_come_from_one_place() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secret");
        std::fs::write(&file, "s3cret\n").unwrap();
        assert_eq!(
            read_secret("client secret", Some(&file), None).unwrap(),
            Some("s3cret".into())
        );
        assert_eq!(read_secret("client secret", None, None).unwrap(), None);
        assert!(read_secret("client secret", Some(&file), Some("X")).is_err());
        assert!(read_secret("client secret", None, Some("PROXLAB_TEST_UNSET_VAR")).is_err());
    }
}
