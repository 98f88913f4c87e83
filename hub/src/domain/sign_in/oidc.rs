//! Signing in through an OpenID Connect provider (Entra ID, Google Workspace, Keycloak...):
//! discovery, the authorization code flow with PKCE, and the ID token's checks, all by the
//! `openidconnect` crate; this module decides what the verified claims mean for proxlab.
//!
//! A sign-in is two requests. [`OidcProvider::begin`] sends the browser to the provider with
//! a fresh `state`, `nonce` and PKCE challenge, kept here (not in the browser) until the
//! provider sends the browser back; the browser also gets the `state` in a cookie, so a
//! callback only counts in the browser that started it. [`OidcProvider::finish`] trades the
//! code for tokens, checks the ID token's signature, issuer, audience, expiry and nonce, and
//! reads who the person is.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openidconnect::core::{
    CoreAuthDisplay, CoreAuthPrompt, CoreAuthenticationFlow, CoreErrorResponseType,
    CoreGenderClaim, CoreJsonWebKey, CoreJweContentEncryptionAlgorithm, CoreJwsSigningAlgorithm,
    CoreRevocableToken, CoreRevocationErrorResponse, CoreTokenIntrospectionResponse, CoreTokenType,
};
use openidconnect::{
    AdditionalClaims, AuthorizationCode, Client, ClientId, ClientSecret, CsrfToken,
    EmptyExtraTokenFields, EndSessionUrl, EndpointMaybeSet, EndpointNotSet, EndpointSet,
    IdTokenFields, IssuerUrl, LogoutRequest, Nonce, OAuth2TokenResponse, PkceCodeChallenge,
    PkceCodeVerifier, PostLogoutRedirectUrl, ProviderMetadataWithLogout, RedirectUrl, Scope,
    StandardErrorResponse, StandardTokenResponse, TokenResponse,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::settings::OidcSection;
use super::{ExternalIdentity, Secret, SignInError};
use crate::domain::sign_in::roles::RoleMapping;

/// How long a browser may take at the provider between leaving and coming back.
pub const LOGIN_WINDOW: Duration = Duration::from_secs(600);

/// How many sign-ins may be under way at once; more are refused until some finish or expire.
const MAX_PENDING: usize = 10_000;

/// How long discovered metadata (endpoints, signing keys) is used before it is fetched again.
const METADATA_LIFETIME: Duration = Duration::from_secs(3600);

/// Every claim the ID token carries besides the standard ones (`groups`, `roles`...).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct OtherClaims {
    #[serde(flatten)]
    claims: Map<String, Value>,
}

impl AdditionalClaims for OtherClaims {}

type TokenFields = IdTokenFields<
    OtherClaims,
    EmptyExtraTokenFields,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJwsSigningAlgorithm,
>;

type Tokens = StandardTokenResponse<TokenFields, CoreTokenType>;

/// A client made from discovered metadata: the authorization endpoint is always there, the
/// token and userinfo endpoints may be.
type DiscoveredClient = Client<
    OtherClaims,
    CoreAuthDisplay,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJsonWebKey,
    CoreAuthPrompt,
    StandardErrorResponse<CoreErrorResponseType>,
    Tokens,
    CoreTokenIntrospectionResponse,
    CoreRevocableToken,
    CoreRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

struct Discovered {
    client: DiscoveredClient,
    end_session: Option<EndSessionUrl>,
    at: Instant,
}

/// One configured provider.
pub struct OidcProvider {
    pub id: String,
    pub label: String,
    /// The accounts' `auth_source`: `oidc:<id>`.
    pub source: String,
    pub link_existing: bool,
    issuer: IssuerUrl,
    client_id: ClientId,
    client_secret: Option<Secret>,
    scopes: Vec<String>,
    username_claim: Option<String>,
    allowed_domains: Vec<String>,
    role_claim: String,
    mapping: RoleMapping,
    end_session: bool,
    redirect: RedirectUrl,
    http: reqwest::Client,
    discovered: tokio::sync::Mutex<Option<Arc<Discovered>>>,
}

impl std::fmt::Debug for OidcProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcProvider")
            .field("id", &self.id)
            .field("issuer", &self.issuer.as_str())
            .finish_non_exhaustive()
    }
}

/// A sign-in under way: what the callback must match.
pub struct PendingLogin {
    provider: String,
    nonce: Nonce,
    verifier: PkceCodeVerifier,
    /// Where the person goes once signed in.
    pub next: String,
    started: Instant,
}

/// The sign-ins under way, by `state`. Kept in memory: a hub restart only makes people who
/// were at their provider at that moment start again.
#[derive(Default)]
pub struct PendingLogins {
    logins: Mutex<HashMap<String, PendingLogin>>,
}

impl PendingLogins {
    fn insert(&self, state: String, login: PendingLogin) -> Result<(), SignInError> {
        let mut logins = self.logins.lock().unwrap_or_else(|e| e.into_inner());
        logins.retain(|_, login| login.started.elapsed() < LOGIN_WINDOW);
        if logins.len() >= MAX_PENDING {
            return Err(SignInError::Unavailable(
                "too many sign-ins are under way; try again in a few minutes".into(),
            ));
        }
        logins.insert(state, login);
        Ok(())
    }

    /// The sign-in `state` names, once: a callback cannot be replayed.
    pub fn take(&self, state: &str) -> Option<PendingLogin> {
        let mut logins = self.logins.lock().unwrap_or_else(|e| e.into_inner());
        logins
            .remove(state)
            .filter(|login| login.started.elapsed() < LOGIN_WINDOW)
    }
}

/// Where to send the browser to sign in, and the `state` for its cookie.
pub struct Redirect {
    pub url: String,
    pub state: String,
}

impl OidcProvider {
    /// A provider from its checked settings; `site_url` is the portal's public address,
    /// which the callback URL is built on.
    pub fn new(
        section: &OidcSection,
        client_secret: Option<Secret>,
        site_url: &str,
    ) -> anyhow::Result<Self> {
        let what = format!("[[sign_in.oidc]] {}", section.id);
        let issuer = IssuerUrl::new(section.issuer.trim_end_matches('/').to_owned())
            .map_err(|err| anyhow::anyhow!("{what}: issuer: {err}"))?;
        let redirect = RedirectUrl::new(format!(
            "{}/login/oidc/{}/callback",
            site_url.trim_end_matches('/'),
            section.id
        ))
        .map_err(|err| anyhow::anyhow!("{what}: callback URL: {err}"))?;
        let mut http = reqwest::Client::builder()
            // Following redirects would let a provider's answer point the hub anywhere.
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .connect_timeout(Duration::from_secs(5));
        if let Some(file) = &section.ca_file {
            let pem = std::fs::read(file)
                .map_err(|err| anyhow::anyhow!("{what}: ca_file {}: {err}", file.display()))?;
            for certificate in reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|err| anyhow::anyhow!("{what}: ca_file {}: {err}", file.display()))?
            {
                http = http.add_root_certificate(certificate);
            }
        }
        let scopes = section
            .scopes
            .clone()
            .unwrap_or_else(|| vec!["openid".into(), "profile".into(), "email".into()]);
        Ok(Self {
            id: section.id.clone(),
            label: section.label.clone().unwrap_or_else(|| section.id.clone()),
            source: format!("oidc:{}", section.id),
            link_existing: section.link_existing_accounts,
            issuer,
            client_id: ClientId::new(section.client_id.clone()),
            client_secret,
            scopes,
            username_claim: section.username_claim.clone(),
            allowed_domains: section
                .allowed_email_domains
                .iter()
                .map(|domain| domain.trim().trim_start_matches('@').to_lowercase())
                .collect(),
            role_claim: section
                .role_claim
                .clone()
                .unwrap_or_else(|| "groups".into()),
            mapping: section.mapping.clone(),
            end_session: section.end_session.unwrap_or(true),
            redirect,
            http: http.build()?,
            discovered: tokio::sync::Mutex::new(None),
        })
    }

    /// The provider's metadata and signing keys, fetched at first use and again after an
    /// hour (keys rotate). A provider that cannot be reached keeps its last metadata.
    async fn discovered(&self) -> Result<Arc<Discovered>, SignInError> {
        let mut cached = self.discovered.lock().await;
        if let Some(discovered) = cached.as_ref()
            && discovered.at.elapsed() < METADATA_LIFETIME
        {
            return Ok(discovered.clone());
        }
        match ProviderMetadataWithLogout::discover_async(self.issuer.clone(), &self.http).await {
            Ok(metadata) => {
                let end_session = metadata.additional_metadata().end_session_endpoint.clone();
                let client = Client::from_provider_metadata(
                    metadata,
                    self.client_id.clone(),
                    self.client_secret
                        .as_ref()
                        .map(|secret| ClientSecret::new(secret.expose().to_owned())),
                )
                .set_redirect_uri(self.redirect.clone());
                let discovered = Arc::new(Discovered {
                    client,
                    end_session,
                    at: Instant::now(),
                });
                *cached = Some(discovered.clone());
                Ok(discovered)
            }
            Err(err) => {
                tracing::warn!(provider = %self.id, error = %error_chain(&err), "OIDC discovery failed");
                cached.clone().ok_or_else(|| {
                    SignInError::Unavailable(format!(
                        "{} cannot be reached just now; try again later",
                        self.label
                    ))
                })
            }
        }
    }

    /// Starts a sign-in: where to send the browser.
    pub async fn begin(
        &self,
        pending: &PendingLogins,
        next: &str,
    ) -> Result<Redirect, SignInError> {
        let discovered = self.discovered().await?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut request = discovered
            .client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            .set_pkce_challenge(challenge);
        for scope in self.scopes.iter().filter(|scope| *scope != "openid") {
            request = request.add_scope(Scope::new(scope.clone()));
        }
        let (url, state, nonce) = request.url();
        pending.insert(
            state.secret().clone(),
            PendingLogin {
                provider: self.id.clone(),
                nonce,
                verifier,
                next: next.to_owned(),
                started: Instant::now(),
            },
        )?;
        Ok(Redirect {
            url: url.to_string(),
            state: state.secret().clone(),
        })
    }

    /// Finishes a sign-in the provider sent back with `code`: who the person is.
    pub async fn finish(
        &self,
        login: PendingLogin,
        code: &str,
    ) -> Result<ExternalIdentity, SignInError> {
        if login.provider != self.id {
            return Err(SignInError::Refused(
                "this sign-in was started with another provider; start again".into(),
            ));
        }
        let discovered = self.discovered().await?;
        let not_confirmed = |what: &str, err: &dyn std::error::Error| {
            tracing::warn!(provider = %self.id, error = %error_chain(err), "OIDC {what} failed");
            SignInError::Refused(format!(
                "{} did not confirm the sign-in ({what} failed); start again",
                self.label
            ))
        };
        let tokens = discovered
            .client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .map_err(|err| not_confirmed("the token request", &err))?
            .set_pkce_verifier(login.verifier)
            .request_async(&self.http)
            .await
            .map_err(|err| not_confirmed("the token request", &err))?;
        let id_token = tokens
            .id_token()
            .ok_or_else(|| SignInError::Refused(format!("{} sent no ID token", self.label)))?;
        let verified = id_token
            .claims(&discovered.client.id_token_verifier(), &login.nonce)
            .map_err(|err| {
                tracing::warn!(provider = %self.id, error = %err, "an ID token was refused");
                SignInError::Refused(format!(
                    "{}'s answer did not pass its checks ({err}); start again",
                    self.label
                ))
            })?;
        let mut claims = as_object(verified)?;
        if let Ok(request) = discovered.client.user_info(
            tokens.access_token().clone(),
            Some(verified.subject().clone()),
        ) {
            let info: openidconnect::UserInfoClaims<OtherClaims, CoreGenderClaim> = request
                .request_async(&self.http)
                .await
                .map_err(|err| not_confirmed("the userinfo request", &err))?;
            for (name, value) in as_object(&info)? {
                claims.entry(name).or_insert(value);
            }
        }
        self.identity(&claims)
    }

    /// Who the verified claims say the person is, or why they may not sign in here.
    fn identity(&self, claims: &Map<String, Value>) -> Result<ExternalIdentity, SignInError> {
        let text = |name: &str| {
            claims
                .get(name)
                .and_then(Value::as_str)
                .map(str::trim)
                .filter(|text| !text.is_empty())
        };
        let subject = text("sub")
            .ok_or_else(|| SignInError::Refused("the ID token names no subject".into()))?;
        let email = text("email").unwrap_or_default().to_lowercase();
        if !self.allowed_domains.is_empty() {
            let domain = email.rsplit_once('@').map(|(_, domain)| domain);
            let verified = claims.get("email_verified").and_then(Value::as_bool) != Some(false);
            if !verified
                || !domain.is_some_and(|domain| self.allowed_domains.iter().any(|d| d == domain))
            {
                return Err(SignInError::Refused(format!(
                    "{} may not sign in here: only accounts of {} may",
                    if email.is_empty() {
                        "an account without an email address"
                    } else {
                        &email
                    },
                    self.allowed_domains.join(", ")
                )));
            }
        }
        let username = match &self.username_claim {
            Some(claim) => text(claim),
            None => text("preferred_username").or(Some(email.as_str()).filter(|e| !e.is_empty())),
        }
        .ok_or_else(|| {
            SignInError::Refused(format!(
                "{} sent no {} claim to name the account by",
                self.label,
                self.username_claim
                    .as_deref()
                    .unwrap_or("preferred_username or email")
            ))
        })?
        .to_lowercase();
        let groups = claim_values(claims.get(&self.role_claim));
        Ok(ExternalIdentity {
            source: self.source.clone(),
            subject: subject.to_owned(),
            username,
            display_name: text("name").unwrap_or_default().to_owned(),
            email,
            role: self.mapping.role_for(groups.iter().map(String::as_str)),
            groups,
            link_existing: self.link_existing,
        })
    }

    /// Where to send the browser after signing out here, to sign out at the provider too:
    /// only when the provider offers it and the operator wants it.
    pub async fn logout_url(&self, back_to: &str) -> Option<String> {
        if !self.end_session {
            return None;
        }
        let discovered = self.discovered().await.ok()?;
        let end_session = discovered.end_session.clone()?;
        let mut request = LogoutRequest::from(end_session).set_client_id(self.client_id.clone());
        if let Ok(back_to) = PostLogoutRedirectUrl::new(back_to.to_owned()) {
            request = request.set_post_logout_redirect_uri(back_to);
        }
        Some(request.http_get_url().to_string())
    }
}

/// A claim's values: a string, or the strings of a list.
fn claim_values(value: Option<&Value>) -> Vec<String> {
    match value {
        Some(Value::String(text)) => vec![text.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    }
}

fn as_object(claims: &impl Serialize) -> Result<Map<String, Value>, SignInError> {
    match serde_json::to_value(claims) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(SignInError::Refused(
            "the provider's claims are not an object".into(),
        )),
    }
}

/// An error with its causes, for the log.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::users::Role;
    use serde_json::json;

    fn provider(extra: &str) -> OidcProvider {
        let section: OidcSection = toml::from_str(&format!(
            "id = \"school\"\nissuer = \"https://login.school.test\"\nclient_id = \"proxlab\"\n{extra}"
        ))
        .unwrap();
        OidcProvider::new(&section, None, "https://lab.school.test").unwrap()
    }

    fn claims(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            other => panic!("not an object: {other}"),
        }
    }

    #[test]
    fn the_callback_url_is_built_on_the_public_address() {
        assert_eq!(
            provider("").redirect.as_str(),
            "https://lab.school.test/login/oidc/school/callback"
        );
    }

    #[test]
    fn usernames_come_from_preferred_username_then_email() {
        let school = provider("");
        let who = school
            .identity(&claims(
                json!({"sub": "1", "preferred_username": "Sam@School.test", "email": "x@y.z"}),
            ))
            .unwrap();
        assert_eq!(who.username, "sam@school.test");
        let who = school
            .identity(&claims(
                json!({"sub": "1", "email": "Kim@school.test", "name": "Kim"}),
            ))
            .unwrap();
        assert_eq!(
            (who.username.as_str(), who.display_name.as_str()),
            ("kim@school.test", "Kim")
        );
        assert!(school.identity(&claims(json!({"sub": "1"}))).is_err());
        assert!(school.identity(&claims(json!({"email": "a@b.c"}))).is_err());
        let by_upn = provider("username_claim = \"upn\"");
        assert!(
            by_upn
                .identity(&claims(json!({"sub": "1", "email": "a@b.c"})))
                .is_err()
        );
    }

    #[test]
    fn email_domains_are_enforced_and_must_be_verified() {
        let school = provider("allowed_email_domains = [\"school.test\"]");
        let ok = json!({"sub": "1", "email": "sam@school.test", "email_verified": true});
        assert!(school.identity(&claims(ok)).is_ok());
        let other = json!({"sub": "1", "email": "eve@evil.test"});
        let err = school.identity(&claims(other)).unwrap_err().to_string();
        assert!(
            err.contains("eve@evil.test") && err.contains("school.test"),
            "{err}"
        );
        let unverified = json!({"sub": "1", "email": "sam@school.test", "email_verified": false});
        assert!(school.identity(&claims(unverified)).is_err());
        let suffix = json!({"sub": "1", "email": "eve@notschool.test"});
        assert!(school.identity(&claims(suffix)).is_err());
        assert!(school.identity(&claims(json!({"sub": "1"}))).is_err());
    }

    #[test]
    fn roles_follow_the_role_claim() {
        let school = provider("role_claim = \"roles\"\n[roles]\nstaff = \"teacher\"");
        let teacher = json!({"sub": "1", "email": "t@s.t", "roles": ["staff", "x"]});
        assert_eq!(
            school.identity(&claims(teacher)).unwrap().role,
            Role::Teacher
        );
        let single = json!({"sub": "1", "email": "t@s.t", "roles": "staff"});
        assert_eq!(
            school.identity(&claims(single)).unwrap().role,
            Role::Teacher
        );
        let student = json!({"sub": "1", "email": "t@s.t", "groups": ["staff"]});
        assert_eq!(
            school.identity(&claims(student)).unwrap().role,
            Role::Student
        );
    }
}
