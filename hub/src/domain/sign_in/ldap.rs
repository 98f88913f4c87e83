//! Signing in against an LDAP directory or Active Directory with the password form.
//!
//! Two ways to find the person: a DN template (`uid={username},ou=people,dc=school`) bound
//! directly, or a service account that searches for the entry and then binds as it. Groups
//! come from the entry's `memberOf`, or from a search under `group_base` (with Active
//! Directory's matching rule in chain for nested groups). Only TLS (`ldaps://` or StartTLS)
//! is used, except on the machine itself.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use ldap3::{LdapConnAsync, LdapConnSettings, Scope, SearchEntry, dn_escape, ldap_escape};

use super::roles::RoleMapping;
use super::settings::{LdapSection, check_transport, read_secret};
use super::{ExternalIdentity, Secret, SignInError};

/// The source name of directory accounts.
pub const SOURCE: &str = "ldap";

const DEFAULT_FILTER: &str = "(|(uid={username})(sAMAccountName={username}))";
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// LDAP's `invalidCredentials`: a wrong password, an unknown DN, or (Active Directory) a
/// locked or expired account.
const INVALID_CREDENTIALS: u32 = 49;
/// LDAP's `noSuchObject`.
const NO_SUCH_OBJECT: u32 = 32;
/// Active Directory's "member of, through any depth of nesting".
const IN_CHAIN: &str = "1.2.840.113556.1.4.1941";

/// Checks `[sign_in.ldap]` and reads the service account's password.
pub fn check_settings(section: &LdapSection) -> anyhow::Result<Option<String>> {
    let secure: &[&str] = if section.starttls {
        &["ldaps", "ldap"]
    } else {
        &["ldaps"]
    };
    check_transport("[sign_in.ldap] url", &section.url, secure)?;
    if section.starttls && section.url.starts_with("ldaps://") {
        bail!("[sign_in.ldap] starttls is for ldap:// URLs; ldaps:// is TLS already");
    }
    let secret = read_secret(
        "[sign_in.ldap] bind password",
        section.bind_password_file.as_deref(),
        section.bind_password_env.as_deref(),
    )?;
    match (&section.user_dn_template, &section.bind_dn) {
        (Some(template), None) if template.contains("{username}") => {}
        (Some(_), None) => bail!("[sign_in.ldap] user_dn_template needs {{username}} in it"),
        (None, Some(_)) if secret.is_none() => {
            bail!("[sign_in.ldap] bind_dn needs bind_password_file or bind_password_env")
        }
        (None, Some(_)) if section.user_base.is_none() => {
            bail!("[sign_in.ldap] bind_dn searches under user_base: set it")
        }
        (None, Some(_)) => {}
        (Some(_), Some(_)) => {
            bail!("[sign_in.ldap] set user_dn_template (direct bind) or bind_dn (search), not both")
        }
        (None, None) => bail!("[sign_in.ldap] set user_dn_template or bind_dn"),
    }
    if section.nested_groups && section.group_base.is_none() {
        bail!("[sign_in.ldap] nested_groups searches under group_base: set it");
    }
    Ok(secret)
}

/// How the person's entry is found.
#[derive(Debug)]
enum Lookup {
    Template(String),
    Search {
        bind_dn: String,
        password: Secret,
        base: String,
        filter: String,
    },
}

/// The configured directory.
#[derive(Debug)]
pub struct Directory {
    url: String,
    starttls: bool,
    tls: Option<Arc<rustls::ClientConfig>>,
    lookup: Lookup,
    display_name_attribute: String,
    email_attribute: String,
    group_base: Option<String>,
    nested_groups: bool,
    mapping: RoleMapping,
    timeout: Duration,
    link_existing: bool,
}

/// A directory answer that is not about the person's password: the directory is down,
/// refused the service account, or answered nonsense.
fn unavailable(err: impl std::fmt::Display) -> SignInError {
    tracing::warn!(error = %err, "the LDAP directory failed");
    SignInError::Unavailable(
        "the school directory cannot be reached just now; try again later".into(),
    )
}

impl Directory {
    pub fn new(section: &LdapSection, password: Option<Secret>) -> anyhow::Result<Self> {
        let lookup = match (&section.user_dn_template, &section.bind_dn) {
            (Some(template), _) => Lookup::Template(template.clone()),
            (None, Some(bind_dn)) => Lookup::Search {
                bind_dn: bind_dn.clone(),
                password: password.context("[sign_in.ldap] bind password")?,
                base: section.user_base.clone().unwrap_or_default(),
                filter: section
                    .user_filter
                    .clone()
                    .unwrap_or_else(|| DEFAULT_FILTER.into()),
            },
            (None, None) => bail!("[sign_in.ldap] set user_dn_template or bind_dn"),
        };
        let tls = match &section.ca_file {
            Some(file) => Some(Arc::new(tls_trusting(file)?)),
            None => None,
        };
        Ok(Self {
            url: section.url.clone(),
            starttls: section.starttls,
            tls,
            lookup,
            display_name_attribute: section
                .display_name_attribute
                .clone()
                .unwrap_or_else(|| "displayName".into()),
            email_attribute: section
                .email_attribute
                .clone()
                .unwrap_or_else(|| "mail".into()),
            group_base: section.group_base.clone(),
            nested_groups: section.nested_groups,
            mapping: section.mapping.clone(),
            timeout: section.timeout.unwrap_or(DEFAULT_TIMEOUT),
            link_existing: section.link_existing_accounts,
        })
    }

    /// Who `username` is if `password` is theirs; `None` for a wrong password or an unknown
    /// person, [`SignInError::Unavailable`] when the directory cannot answer.
    pub async fn authenticate(
        &self,
        username: &str,
        password: &str,
    ) -> Result<Option<ExternalIdentity>, SignInError> {
        // An empty password is an anonymous bind, which directories let through.
        if password.is_empty() || username.is_empty() {
            return Ok(None);
        }
        let mut ldap = self.connect().await?;
        let attributes = [
            self.display_name_attribute.as_str(),
            self.email_attribute.as_str(),
            "memberOf",
            "entryUUID",
            "objectGUID",
        ];
        let entry = match &self.lookup {
            Lookup::Template(template) => {
                let dn = template.replace("{username}", &dn_escape(username));
                if !self.bind(&mut ldap, &dn, password).await? {
                    return Ok(None);
                }
                let entries = self
                    .search(&mut ldap, &dn, Scope::Base, "(objectClass=*)", &attributes)
                    .await
                    .map_err(unavailable)?;
                match entries.into_iter().next() {
                    Some(entry) => entry,
                    None => return Ok(None),
                }
            }
            Lookup::Search {
                bind_dn,
                password: service_password,
                base,
                filter,
            } => {
                if !self
                    .bind(&mut ldap, bind_dn, service_password.expose())
                    .await?
                {
                    return Err(unavailable("the directory refused the service account"));
                }
                let filter = filter.replace("{username}", &ldap_escape(username));
                let entries = self
                    .search(&mut ldap, base, Scope::Subtree, &filter, &attributes)
                    .await
                    .map_err(unavailable)?;
                let mut entries = entries.into_iter();
                let (Some(entry), None) = (entries.next(), entries.next()) else {
                    // None, or several people answering to one name: neither signs in.
                    return Ok(None);
                };
                if !self.bind(&mut ldap, &entry.dn, password).await? {
                    return Ok(None);
                }
                entry
            }
        };
        let groups = self.groups(&mut ldap, &entry, username).await?;
        let _ = ldap.unbind().await;
        let first = |name: &str| first_value(&entry, name).unwrap_or_default();
        let subject = stable_id(&entry).unwrap_or_else(|| entry.dn.to_lowercase());
        Ok(Some(ExternalIdentity {
            source: SOURCE.into(),
            subject,
            username: username.to_lowercase(),
            display_name: first(&self.display_name_attribute),
            email: first(&self.email_attribute).to_lowercase(),
            role: self.mapping.role_for(groups.iter().map(String::as_str)),
            groups,
            link_existing: self.link_existing,
        }))
    }

    async fn connect(&self) -> Result<ldap3::Ldap, SignInError> {
        let mut settings = LdapConnSettings::new()
            .set_conn_timeout(self.timeout)
            .set_starttls(self.starttls);
        if let Some(tls) = &self.tls {
            settings = settings.set_config(tls.clone());
        }
        let (connection, mut ldap) = LdapConnAsync::with_settings(settings, &self.url)
            .await
            .map_err(unavailable)?;
        ldap3::drive!(connection);
        ldap.with_timeout(self.timeout);
        Ok(ldap)
    }

    /// The people in a directory group (by DN; with `nested_groups`, through any depth), as
    /// roster entries: their login name (`sAMAccountName` or `uid`), email and display name.
    /// Needs the service account (`bind_dn`).
    pub async fn group_members(
        &self,
        group_dn: &str,
    ) -> Result<Vec<(String, String, String)>, SignInError> {
        let Lookup::Search {
            bind_dn,
            password,
            base,
            ..
        } = &self.lookup
        else {
            return Err(SignInError::Refused(
                "reading a group's members needs the directory's service account (bind_dn)".into(),
            ));
        };
        let mut ldap = self.connect().await?;
        if !self.bind(&mut ldap, bind_dn, password.expose()).await? {
            return Err(unavailable("the directory refused the service account"));
        }
        let attributes = [
            "sAMAccountName",
            "uid",
            self.email_attribute.as_str(),
            self.display_name_attribute.as_str(),
        ];
        let mut people = if self.nested_groups {
            let filter = format!("(memberOf:{IN_CHAIN}:={})", ldap_escape(group_dn));
            self.search(&mut ldap, base, Scope::Subtree, &filter, &attributes)
                .await
                .map_err(unavailable)?
        } else {
            let no_group =
                || SignInError::Refused(format!("the directory has no group {group_dn:?}"));
            let members = ["member", "uniqueMember", "memberUid"];
            let group = self
                .search(
                    &mut ldap,
                    group_dn,
                    Scope::Base,
                    "(objectClass=*)",
                    &members,
                )
                .await
                .map_err(|err| match err {
                    ldap3::LdapError::LdapResult { result } if result.rc == NO_SUCH_OBJECT => {
                        no_group()
                    }
                    other => unavailable(other),
                })?
                .into_iter()
                .next()
                .ok_or_else(no_group)?;
            let mut people = Vec::new();
            for (name, values) in &group.attrs {
                for value in values {
                    let found = if name.eq_ignore_ascii_case("memberUid") {
                        let filter = format!("(uid={})", ldap_escape(value));
                        self.search(&mut ldap, base, Scope::Subtree, &filter, &attributes)
                            .await
                    } else {
                        self.search(
                            &mut ldap,
                            value,
                            Scope::Base,
                            "(objectClass=*)",
                            &attributes,
                        )
                        .await
                    };
                    people.extend(found.map_err(unavailable)?);
                }
            }
            people
        };
        let _ = ldap.unbind().await;
        people.sort_by(|a, b| a.dn.cmp(&b.dn));
        people.dedup_by(|a, b| a.dn == b.dn);
        Ok(people
            .iter()
            .filter_map(|entry| {
                let first = |name: &str| first_value(entry, name);
                let login = first("sAMAccountName").or_else(|| first("uid"))?;
                Some((
                    login.to_lowercase(),
                    first(&self.email_attribute)
                        .unwrap_or_default()
                        .to_lowercase(),
                    first(&self.display_name_attribute).unwrap_or_default(),
                ))
            })
            .collect())
    }

    /// The entries a search finds, with the directory's timeout.
    async fn search(
        &self,
        ldap: &mut ldap3::Ldap,
        base: &str,
        scope: Scope,
        filter: &str,
        attributes: &[&str],
    ) -> Result<Vec<SearchEntry>, ldap3::LdapError> {
        let (entries, _) = ldap
            .with_timeout(self.timeout)
            .search(base, scope, filter, attributes.to_vec())
            .await?
            .success()?;
        Ok(entries.into_iter().map(SearchEntry::construct).collect())
    }

    /// Binds; `false` when the directory says the credentials are wrong.
    async fn bind(
        &self,
        ldap: &mut ldap3::Ldap,
        dn: &str,
        password: &str,
    ) -> Result<bool, SignInError> {
        let result = ldap
            .with_timeout(self.timeout)
            .simple_bind(dn, password)
            .await
            .map_err(unavailable)?;
        match result.rc {
            0 => Ok(true),
            INVALID_CREDENTIALS => Ok(false),
            _ => Err(unavailable(result)),
        }
    }

    /// The person's groups, by DN and by common name.
    async fn groups(
        &self,
        ldap: &mut ldap3::Ldap,
        entry: &SearchEntry,
        username: &str,
    ) -> Result<Vec<String>, SignInError> {
        let Some(base) = &self.group_base else {
            let member_of = entry
                .attrs
                .iter()
                .find(|(key, _)| key.eq_ignore_ascii_case("memberOf"))
                .map(|(_, values)| values.clone())
                .unwrap_or_default();
            return Ok(with_common_names(member_of));
        };
        let dn = ldap_escape(&entry.dn);
        let filter = if self.nested_groups {
            format!("(member:{IN_CHAIN}:={dn})")
        } else {
            format!(
                "(|(member={dn})(uniqueMember={dn})(memberUid={}))",
                ldap_escape(username)
            )
        };
        let groups = self
            .search(ldap, base, Scope::Subtree, &filter, &["1.1"])
            .await
            .map_err(unavailable)?;
        Ok(with_common_names(
            groups.into_iter().map(|group| group.dn).collect(),
        ))
    }
}

/// Group DNs and their first RDN's value (`CN=Teachers,OU=Groups,...` also as `Teachers`),
/// so that the role mapping can name either.
fn with_common_names(dns: Vec<String>) -> Vec<String> {
    let names: Vec<String> = dns
        .iter()
        .filter_map(|dn| {
            dn.split(',')
                .next()?
                .split_once('=')
                .map(|(_, v)| v.trim().to_owned())
        })
        .collect();
    dns.into_iter().chain(names).collect()
}

/// The first value of an attribute (attribute names ignore case).
fn first_value(entry: &SearchEntry, name: &str) -> Option<String> {
    entry
        .attrs
        .iter()
        .find(|(key, _)| key.eq_ignore_ascii_case(name))
        .and_then(|(_, values)| values.first())
        .cloned()
}

/// The directory's id for the entry, which survives renames and moves: OpenLDAP's
/// `entryUUID` or Active Directory's `objectGUID`.
fn stable_id(entry: &SearchEntry) -> Option<String> {
    let text = first_value(entry, "entryUUID").map(|uuid| uuid.to_lowercase());
    text.or_else(|| {
        entry
            .bin_attrs
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case("objectGUID"))
            .and_then(|(_, values)| values.first())
            .map(hex::encode)
    })
}

/// TLS that trusts the CA certificates in `file` (PEM).
fn tls_trusting(file: &std::path::Path) -> anyhow::Result<rustls::ClientConfig> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    let certificates = CertificateDer::pem_file_iter(file)
        .with_context(|| format!("[sign_in.ldap] ca_file {}", file.display()))?;
    for certificate in certificates {
        let certificate =
            certificate.with_context(|| format!("[sign_in.ldap] ca_file {}", file.display()))?;
        roots
            .add(certificate)
            .with_context(|| format!("[sign_in.ldap] ca_file {}", file.display()))?;
    }
    if roots.is_empty() {
        bail!(
            "[sign_in.ldap] ca_file {} holds no certificate",
            file.display()
        );
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(text: &str) -> LdapSection {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn settings_name_one_way_to_find_people_over_tls() {
        let direct = "url = \"ldaps://dc.school\"\nuser_dn_template = \"uid={username},dc=school\"";
        assert!(check_settings(&section(direct)).is_ok());
        let plain = "url = \"ldap://dc.school\"\nuser_dn_template = \"uid={username},dc=school\"";
        assert!(check_settings(&section(plain)).is_err());
        let starttls = format!("{plain}\nstarttls = true");
        assert!(check_settings(&section(&starttls)).is_ok());
        let no_placeholder = "url = \"ldaps://dc.school\"\nuser_dn_template = \"uid=x,dc=school\"";
        assert!(check_settings(&section(no_placeholder)).is_err());
        let no_password = "url = \"ldaps://dc.school\"\nbind_dn = \"cn=svc\"\nuser_base = \"dc=x\"";
        assert!(check_settings(&section(no_password)).is_err());
        assert!(check_settings(&section("url = \"ldaps://dc.school\"")).is_err());
        let nested = format!("{direct}\nnested_groups = true");
        assert!(check_settings(&section(&nested)).is_err());
    }

    #[test]
    fn groups_are_known_by_dn_and_by_name() {
        assert_eq!(
            with_common_names(vec!["CN=Teachers,OU=Groups,DC=school".into()]),
            ["CN=Teachers,OU=Groups,DC=school", "Teachers"]
        );
    }
}
