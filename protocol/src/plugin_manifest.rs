//! `plugin.toml`: what a plugin says it is, implements and needs. The hub checks it on
//! upload; the agent checks it again against the component.

use serde::Deserialize;

/// The contract versions this agent runs plugins for.
pub const SUPPORTED_APIS: &[&str] = &["0.1.0"];

/// A hook point, as manifests and the contract name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Hook {
    Name,
    Configure,
    AfterStart,
    Validate,
}

impl Hook {
    pub const ALL: [Hook; 4] = [
        Hook::Name,
        Hook::Configure,
        Hook::AfterStart,
        Hook::Validate,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Hook::Name => "name",
            Hook::Configure => "configure",
            Hook::AfterStart => "after-start",
            Hook::Validate => "validate",
        }
    }

    /// The interface a component exports for this hook in contract version `api`.
    pub fn interface(self, api: &str) -> String {
        format!("proxlab:plugin/{}@{api}", self.as_str())
    }
}

impl std::str::FromStr for Hook {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        Hook::ALL
            .into_iter()
            .find(|hook| hook.as_str() == text)
            .ok_or_else(|| {
                format!("unknown hook {text:?} (hooks: name, configure, after-start, validate)")
            })
    }
}

/// Host functions a plugin must ask for, and an operator grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Capability {
    GuestExec,
}

impl Capability {
    pub fn as_str(self) -> &'static str {
        match self {
            Capability::GuestExec => "guest-exec",
        }
    }
}

/// A plugin's manifest.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Lowercase letters, digits and dashes; unique per site.
    pub id: String,
    pub version: String,
    /// The contract version the plugin was built for.
    pub api: String,
    pub hooks: Vec<Hook>,
    #[serde(default)]
    pub capabilities: Vec<Capability>,
}

impl Manifest {
    /// Parses and checks a manifest.
    pub fn parse(text: &str) -> Result<Self, String> {
        let manifest: Manifest =
            toml::from_str(text).map_err(|err| format!("plugin.toml: {}", err.message()))?;
        manifest.check()?;
        Ok(manifest)
    }

    fn check(&self) -> Result<(), String> {
        let id_ok = (1..=64).contains(&self.id.len())
            && self
                .id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !self.id.starts_with('-');
        if !id_ok {
            return Err(format!(
                "plugin id {:?}: use 1 to 64 lowercase letters, digits and dashes",
                self.id
            ));
        }
        let version_ok = !self.version.is_empty()
            && self.version.len() <= 32
            && self
                .version
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".-+".contains(&b));
        if !version_ok {
            return Err(format!(
                "plugin version {:?} is not a version",
                self.version
            ));
        }
        if !SUPPORTED_APIS.contains(&self.api.as_str()) {
            return Err(format!(
                "plugin {} is built for API {}, but this agent runs API {}",
                self.id,
                self.api,
                SUPPORTED_APIS.join(", ")
            ));
        }
        if self.hooks.is_empty() {
            return Err(format!("plugin {} names no hooks", self.id));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_good_manifest_parses() {
        let manifest = Manifest::parse(
            "id = \"vlan\"\nversion = \"1.2.0\"\napi = \"0.1.0\"\nhooks = [\"configure\", \"after-start\"]\ncapabilities = [\"guest-exec\"]\n",
        )
        .unwrap();
        assert_eq!(manifest.hooks, [Hook::Configure, Hook::AfterStart]);
        assert_eq!(manifest.capabilities, [Capability::GuestExec]);
    }

    #[test]
    fn bad_manifests_say_why() {
        for (text, expected) in [
            (
                "id = \"Bad Id\"\nversion = \"1\"\napi = \"0.1.0\"\nhooks = [\"name\"]",
                "plugin id",
            ),
            (
                "id = \"x\"\nversion = \"1\"\napi = \"9.0.0\"\nhooks = [\"name\"]",
                "API 9.0.0",
            ),
            (
                "id = \"x\"\nversion = \"1\"\napi = \"0.1.0\"\nhooks = []",
                "no hooks",
            ),
            (
                "id = \"x\"\nversion = \"1\"\napi = \"0.1.0\"\nhooks = [\"rename\"]",
                "rename",
            ),
            (
                "id = \"x\"\nversion = \"1\"\napi = \"0.1.0\"\nhooks = [\"name\"]\nshell = true",
                "shell",
            ),
            (
                "id = \"x\"\nversion = \"1\"\napi = \"0.1.0\"\nhooks = [\"name\"]\ncapabilities = [\"network\"]",
                "network",
            ),
        ] {
            let err = Manifest::parse(text).unwrap_err();
            assert!(err.contains(expected), "{text}: {err}");
        }
    }
}
