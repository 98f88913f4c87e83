//! The hub's configuration: defaults, then the TOML file, then environment and flags.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use serde::Deserialize;

use crate::client_addr::IpNet;
use crate::domain::auth::SessionPolicy;
use crate::domain::consoles::sessions::ConsoleLimits;
use crate::domain::remote::forwards::ForwardSettings;
use crate::domain::sign_in::SignInConfig;
use crate::domain::sign_in::settings::SignInSection;
use crate::paths::DEFAULT_DATA_DIR;

/// The default config file of an installed hub.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/proxlab/hub.toml";

/// The commented example config that `proxlab-hub default-config` prints and packages ship.
pub const EXAMPLE_CONFIG: &str = include_str!("../hub.example.toml");

/// The hub config file. Every key is optional; unknown keys are an error.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    pub data_dir: Option<PathBuf>,
    pub http_addr: Option<SocketAddr>,
    pub quic_addr: Option<SocketAddr>,
    /// Whether base copies' bytes travel on lanes (TCP on the QUIC port's number).
    pub lanes: Option<bool>,
    /// `sqlite://...` or `postgres://...`; default: `hub.db` in the data directory.
    pub database_url: Option<String>,
    /// The `HOST:PORT` agents dial, as printed in enroll commands.
    pub public_address: Option<String>,
    /// The portal's address as people type it; `https://` makes cookies Secure.
    pub public_url: Option<String>,
    /// Reverse proxies whose `X-Forwarded-For` entries are believed: addresses or networks.
    pub trusted_proxies: Option<Vec<IpNet>>,
    /// Deprecated: `true` trusts proxies on loopback (use `trusted_proxies`).
    pub trust_forwarded_for: Option<bool>,
    /// `"self-signed"`: the portal serves HTTPS (and HTTP/2) with a certificate it makes.
    pub tls: Option<TlsMode>,
    /// The portal's certificate chain and key (PEM): it serves HTTPS (and HTTP/2) with them.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    #[serde(default, with = "humantime_serde_opt")]
    pub session_idle: Option<Duration>,
    #[serde(default, with = "humantime_serde_opt")]
    pub session_lifetime: Option<Duration>,
    /// Limits on the consoles open through the hub.
    pub consoles: Option<ConsoleSettings>,
    /// Ports the hub forwards to VMs' SSH and RDP servers.
    pub forwarding: Option<ForwardingSettings>,
    /// Class schedules: the default time zone and the warning before a scheduled stop.
    pub schedules: Option<SchedulesSection>,
    /// Who may read `/metrics`.
    pub metrics: Option<MetricsSection>,
    /// Local passwords, OpenID Connect providers and LDAP/Active Directory.
    pub sign_in: Option<SignInSection>,
}

/// The `[metrics]` section.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSection {
    /// Addresses or networks that may read `/metrics`; default: loopback.
    pub allow: Option<Vec<IpNet>>,
    /// A file holding a bearer token that also lets a scraper in, from anywhere.
    pub token_file: Option<PathBuf>,
}

/// Who may read `/metrics`.
#[derive(Debug, Clone)]
pub struct MetricsAccess {
    pub allow: Vec<IpNet>,
    /// The bearer token's hash (see [`crate::secrets::hash_secret`]).
    token_hash: Option<String>,
}

impl Default for MetricsAccess {
    fn default() -> Self {
        Self {
            allow: IpNet::loopback().to_vec(),
            token_hash: None,
        }
    }
}

impl MetricsAccess {
    /// Scrapers from `allow`, and anyone presenting `token`.
    pub fn new(allow: Vec<IpNet>, token: Option<&str>) -> Self {
        Self {
            allow,
            token_hash: token.map(crate::secrets::hash_secret),
        }
    }

    /// Whether `presented` is the token.
    pub fn token_matches(&self, presented: &str) -> bool {
        self.token_hash.as_deref().is_some_and(|expected| {
            crate::secrets::secrets_equal(&crate::secrets::hash_secret(presented), expected)
        })
    }

    fn from_section(section: MetricsSection) -> Result<Self> {
        let mut access = Self::default();
        if let Some(allow) = section.allow {
            access.allow = allow;
        }
        if let Some(file) = section.token_file {
            let token = std::fs::read_to_string(&file)
                .map_err(|err| anyhow::anyhow!("[metrics] token_file {}: {err}", file.display()))?;
            let token = token.trim();
            if token.len() < 16 {
                anyhow::bail!(
                    "[metrics] token_file {}: the token must be at least 16 characters",
                    file.display()
                );
            }
            access.token_hash = Some(crate::secrets::hash_secret(token));
        }
        Ok(access)
    }
}

/// The `[schedules]` section.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchedulesSection {
    /// An IANA time zone (`Europe/Berlin`): what new schedule rules use unless a teacher
    /// picks another.
    pub time_zone: Option<String>,
    #[serde(default, with = "humantime_serde_opt")]
    pub warn_before: Option<Duration>,
}

/// How class schedules behave.
#[derive(Debug, Clone)]
pub struct ScheduleSettings {
    pub time_zone: String,
    /// How long before a scheduled stop the users of running VMs are warned.
    pub warn_before: Duration,
    /// Whether this hub runs the scheduler's loop and the quota checks (tests turn it off to
    /// drive them with a clock of their own).
    pub run_scheduler: bool,
}

impl Default for ScheduleSettings {
    fn default() -> Self {
        Self {
            time_zone: "UTC".into(),
            warn_before: Duration::from_secs(600),
            run_scheduler: true,
        }
    }
}

/// The `[forwarding]` section.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForwardingSettings {
    /// `"40000-40999"`: the hub ports forwards use. Absent: forwarding is off.
    pub ports: Option<String>,
    pub listen_ip: Option<std::net::IpAddr>,
    pub host: Option<String>,
    /// `"requester"` (default) or `"any"`.
    pub bind: Option<String>,
    #[serde(default, with = "humantime_serde_opt")]
    pub open_for: Option<Duration>,
}

impl ForwardingSettings {
    fn apply(self, settings: &mut ForwardSettings) -> Result<()> {
        if let Some(ports) = self.ports {
            settings.ports = Some(parse_port_range(&ports)?);
        }
        if let Some(ip) = self.listen_ip {
            settings.listen_ip = ip;
        }
        settings.host = self.host.or(settings.host.take());
        match self.bind.as_deref() {
            None | Some("requester") => settings.bind_any = false,
            Some("any") => settings.bind_any = true,
            Some(other) => {
                anyhow::bail!("[forwarding] bind is \"requester\" or \"any\", not {other:?}")
            }
        }
        if let Some(open_for) = self.open_for {
            settings.open_for = open_for;
        }
        Ok(())
    }
}

/// `"40000-40999"` (or one port).
fn parse_port_range(text: &str) -> Result<std::ops::RangeInclusive<u16>> {
    let (low, high) = text.split_once('-').unwrap_or((text, text));
    let parse = |part: &str| {
        part.trim()
            .parse::<u16>()
            .ok()
            .filter(|port| *port > 0)
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "[forwarding] ports: {text:?} is not a port range like \"40000-40999\""
                )
            })
    };
    let (low, high) = (parse(low)?, parse(high)?);
    if low > high {
        anyhow::bail!("[forwarding] ports: {text:?} runs backwards");
    }
    Ok(low..=high)
}

/// The `[consoles]` section.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleSettings {
    pub max_per_user: Option<usize>,
    pub max_per_vm: Option<usize>,
    pub max_open: Option<usize>,
    #[serde(default, with = "humantime_serde_opt")]
    pub idle_timeout: Option<Duration>,
}

/// The `tls` setting of the config file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TlsMode {
    Off,
    SelfSigned,
}

/// How the portal speaks to browsers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortalTls {
    /// Plain HTTP/1.1: a TLS-terminating reverse proxy is in front, or the network is closed.
    Off,
    /// HTTPS with a certificate the hub makes at first start and keeps in its data directory.
    SelfSigned,
    /// HTTPS with the operator's certificate chain and private key (PEM files).
    Files { cert: PathBuf, key: PathBuf },
}

impl PortalTls {
    /// The setting the three config keys describe, or why they contradict each other.
    pub fn from_settings(
        mode: Option<TlsMode>,
        cert: Option<PathBuf>,
        key: Option<PathBuf>,
    ) -> Result<Self> {
        match (mode, cert, key) {
            (None | Some(TlsMode::Off), None, None) => Ok(Self::Off),
            (Some(TlsMode::SelfSigned), None, None) => Ok(Self::SelfSigned),
            (None, Some(cert), Some(key)) => Ok(Self::Files { cert, key }),
            (Some(mode), Some(_), _) | (Some(mode), _, Some(_)) => anyhow::bail!(
                "tls = {mode:?} contradicts tls_cert/tls_key: set either tls or both files"
            ),
            (None, Some(_), None) | (None, None, Some(_)) => {
                anyhow::bail!("tls_cert and tls_key must be set together")
            }
        }
    }

    pub fn is_on(&self) -> bool {
        *self != Self::Off
    }
}

/// Durations such as `"4h"` or `"90m"` in the config file.
pub(crate) mod humantime_serde_opt {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Duration>, D::Error> {
        let text = Option::<String>::deserialize(deserializer)?;
        text.map(|text| humantime::parse_duration(&text).map_err(serde::de::Error::custom))
            .transpose()
    }
}

impl ConfigFile {
    /// Reads `path`. A missing file is fine only if `required` is false.
    pub fn load(path: &Path, required: bool) -> Result<Self> {
        match std::fs::read_to_string(path) {
            Ok(text) => toml::from_str(&text).with_context(|| format!("in {}", path.display())),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound && !required => {
                Ok(Self::default())
            }
            Err(err) => Err(err).with_context(|| format!("reading {}", path.display())),
        }
    }
}

/// The settings the hub runs with.
#[derive(Debug, Clone)]
pub struct HubConfig {
    pub data_dir: PathBuf,
    pub http_addr: SocketAddr,
    pub quic_addr: SocketAddr,
    /// Whether the hub listens for lanes (TCP, same port number as `quic_addr`) that carry
    /// base copies' bytes; without them, those bytes take the QUIC streams.
    pub lanes: bool,
    pub database_url: Option<String>,
    pub public_address: Option<String>,
    pub public_url: Option<String>,
    /// Reverse proxies whose `X-Forwarded-For` entries are believed.
    pub trusted_proxies: Vec<IpNet>,
    pub sessions: SessionPolicy,
    /// Whether the portal serves HTTPS itself, and with which certificate.
    pub tls: PortalTls,
    pub consoles: ConsoleLimits,
    pub forwarding: ForwardSettings,
    pub schedules: ScheduleSettings,
    pub metrics: MetricsAccess,
    pub sign_in: SignInConfig,
}

impl HubConfig {
    /// Defaults for a data directory.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            http_addr: "127.0.0.1:8080".parse().expect("valid default"),
            quic_addr: "0.0.0.0:7443".parse().expect("valid default"),
            lanes: true,
            database_url: None,
            public_address: None,
            public_url: None,
            trusted_proxies: Vec::new(),
            sessions: SessionPolicy::default(),
            tls: PortalTls::Off,
            consoles: ConsoleLimits::default(),
            forwarding: ForwardSettings::default(),
            schedules: ScheduleSettings::default(),
            metrics: MetricsAccess::default(),
            sign_in: SignInConfig::default(),
        }
    }

    /// Whether cookies must only travel over TLS: the portal serves HTTPS, or people reach it
    /// through an `https://` address.
    pub fn secure_cookies(&self) -> bool {
        self.tls.is_on()
            || self
                .public_url
                .as_deref()
                .is_some_and(|url| url.starts_with("https://"))
    }

    /// The portal's address for links that leave the page (invite links): `public_url`, or
    /// the address the portal listens on when that is a specific one. Never the request's
    /// `Host` header, which the client chooses. `None` when neither is known.
    pub fn site_url(&self) -> Option<String> {
        match &self.public_url {
            Some(url) => Some(url.trim_end_matches('/').to_owned()),
            None if !self.http_addr.ip().is_unspecified() => {
                let scheme = if self.tls.is_on() { "https" } else { "http" };
                Some(format!("{scheme}://{}", self.http_addr))
            }
            None => None,
        }
    }

    /// Checks what cannot be checked while parsing.
    pub fn validate(&self) -> Result<()> {
        if self.sessions.idle.is_zero() || self.sessions.lifetime < self.sessions.idle {
            anyhow::bail!("session_idle must be positive and no longer than session_lifetime");
        }
        let consoles = &self.consoles;
        if consoles.per_user == 0
            || consoles.per_vm == 0
            || consoles.total == 0
            || consoles.idle.is_zero()
        {
            anyhow::bail!("[consoles] limits must be positive");
        }
        if let Some(url) = &self.public_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            anyhow::bail!("public_url must start with http:// or https://, not {url:?}");
        }
        Ok(())
    }

    /// Applies a config file over the defaults.
    pub fn from_file(file: ConfigFile) -> Result<Self> {
        let mut config = Self::new(file.data_dir.unwrap_or_else(|| DEFAULT_DATA_DIR.into()));
        if let Some(addr) = file.http_addr {
            config.http_addr = addr;
        }
        if let Some(addr) = file.quic_addr {
            config.quic_addr = addr;
        }
        config.lanes = file.lanes.unwrap_or(true);
        config.database_url = file.database_url;
        config.public_address = file.public_address;
        config.public_url = file.public_url;
        config.trusted_proxies = file.trusted_proxies.unwrap_or_default();
        if file.trust_forwarded_for == Some(true) && config.trusted_proxies.is_empty() {
            config.trusted_proxies = IpNet::loopback().to_vec();
        }
        if let Some(idle) = file.session_idle {
            config.sessions.idle = idle;
        }
        if let Some(lifetime) = file.session_lifetime {
            config.sessions.lifetime = lifetime;
        }
        config.tls = PortalTls::from_settings(file.tls, file.tls_cert, file.tls_key)?;
        if let Some(consoles) = file.consoles {
            let limits = &mut config.consoles;
            limits.per_user = consoles.max_per_user.unwrap_or(limits.per_user);
            limits.per_vm = consoles.max_per_vm.unwrap_or(limits.per_vm);
            limits.total = consoles.max_open.unwrap_or(limits.total);
            limits.idle = consoles.idle_timeout.unwrap_or(limits.idle);
        }
        if let Some(forwarding) = file.forwarding {
            forwarding.apply(&mut config.forwarding)?;
        }
        if let Some(sign_in) = file.sign_in {
            config.sign_in = SignInConfig::from_section(sign_in)?;
        }
        if let Some(metrics) = file.metrics {
            config.metrics = MetricsAccess::from_section(metrics)?;
        }
        if let Some(schedules) = file.schedules {
            if let Some(zone) = schedules.time_zone {
                crate::domain::schedules::calendar::parse_time_zone(&zone)
                    .map_err(|reason| anyhow::anyhow!("[schedules] time_zone: {reason}"))?;
                config.schedules.time_zone = zone.trim().to_owned();
            }
            if let Some(lead) = schedules.warn_before {
                config.schedules.warn_before = lead;
            }
        }
        Ok(config)
    }

    /// The address agents should dial, for enroll commands.
    pub fn agent_facing_address(&self) -> String {
        if let Some(address) = &self.public_address {
            return address.clone();
        }
        let port = self.quic_addr.port();
        if self.quic_addr.ip().is_unspecified() {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|name| name.trim().to_owned())
                .unwrap_or_else(|_| "localhost".into());
            format!("{host}:{port}")
        } else {
            self.quic_addr.to_string()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_parses() {
        let file: ConfigFile = toml::from_str(EXAMPLE_CONFIG).unwrap();
        let config = HubConfig::from_file(file).unwrap();
        assert_eq!(config.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
        config.validate().unwrap();
    }

    #[test]
    fn the_example_sign_in_section_parses_once_uncommented() {
        let start = EXAMPLE_CONFIG.find("#[sign_in]").unwrap();
        let uncommented: Vec<&str> = EXAMPLE_CONFIG[start..]
            .lines()
            .filter_map(|line| line.strip_prefix('#'))
            .filter(|line| !line.is_empty() && !line.starts_with(' '))
            .collect();
        let file: ConfigFile = toml::from_str(&uncommented.join("\n")).unwrap();
        let section = file.sign_in.unwrap();
        assert_eq!(section.oidc.len(), 1);
        assert_eq!(section.oidc[0].mapping.roles.len(), 1);
        assert!(section.ldap.is_some_and(|ldap| ldap.nested_groups));
    }

    #[test]
    fn site_urls_come_from_the_configuration_only() {
        let mut config = HubConfig::new("/tmp/x");
        assert_eq!(config.site_url().as_deref(), Some("http://127.0.0.1:8080"));
        config.http_addr = "0.0.0.0:8080".parse().unwrap();
        assert_eq!(config.site_url(), None);
        config.public_url = Some("https://lab.school/".into());
        assert_eq!(config.site_url().as_deref(), Some("https://lab.school"));
    }

    #[test]
    fn session_times_and_public_url() {
        let file: ConfigFile = toml::from_str(
            "session_idle = \"30m\"\nsession_lifetime = \"8h\"\npublic_url = \"https://lab.school\"",
        )
        .unwrap();
        let config = HubConfig::from_file(file).unwrap();
        assert_eq!(config.sessions.idle, Duration::from_secs(1800));
        assert_eq!(config.sessions.lifetime, Duration::from_secs(8 * 3600));
        assert!(config.secure_cookies());
        config.validate().unwrap();
        let file: ConfigFile =
            toml::from_str("session_idle = \"9h\"\nsession_lifetime = \"8h\"").unwrap();
        assert!(HubConfig::from_file(file).unwrap().validate().is_err());
        assert!(toml::from_str::<ConfigFile>("session_idle = \"soon\"").is_err());
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = toml::from_str::<ConfigFile>("data_dri = \"/tmp\"").unwrap_err();
        assert!(err.to_string().contains("data_dri"), "{err}");
    }

    #[test]
    fn file_values_override_defaults() {
        let file: ConfigFile =
            toml::from_str("http_addr = \"0.0.0.0:9000\"\npublic_address = \"hub.school:7443\"")
                .unwrap();
        let config = HubConfig::from_file(file).unwrap();
        assert_eq!(config.http_addr.port(), 9000);
        assert_eq!(config.agent_facing_address(), "hub.school:7443");
    }

    #[test]
    fn tls_is_off_self_signed_or_files_and_never_two_at_once() {
        let parse = |text: &str| HubConfig::from_file(toml::from_str(text).unwrap());
        assert_eq!(parse("").unwrap().tls, PortalTls::Off);
        assert_eq!(parse("tls = \"off\"").unwrap().tls, PortalTls::Off);
        let signed = parse("tls = \"self-signed\"\nhttp_addr = \"127.0.0.1:8443\"").unwrap();
        assert_eq!(signed.tls, PortalTls::SelfSigned);
        assert!(signed.secure_cookies());
        assert_eq!(signed.site_url().as_deref(), Some("https://127.0.0.1:8443"));
        let files = parse("tls_cert = \"/etc/c.pem\"\ntls_key = \"/etc/k.pem\"").unwrap();
        assert_eq!(
            files.tls,
            PortalTls::Files {
                cert: "/etc/c.pem".into(),
                key: "/etc/k.pem".into()
            }
        );
        for contradiction in [
            "tls_cert = \"/etc/c.pem\"",
            "tls_key = \"/etc/k.pem\"",
            "tls = \"self-signed\"\ntls_cert = \"/c\"\ntls_key = \"/k\"",
            "tls = \"off\"\ntls_key = \"/k\"",
        ] {
            assert!(parse(contradiction).is_err(), "{contradiction}");
        }
        assert!(toml::from_str::<ConfigFile>("tls = \"on\"").is_err());
    }
}
