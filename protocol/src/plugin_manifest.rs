//! `plugin.toml`: what a plugin says it is, implements and needs. The hub checks it on
//! upload; the agent checks it again against the component.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The contract versions this agent runs plugins for.
pub const SUPPORTED_APIS: &[&str] = &["0.1.0", "0.2.0"];

/// The contract version that added the hooks after the first four, the capabilities after
/// `guest-exec`, and settings.
pub const API_0_2: &str = "0.2.0";

/// A hook point, as manifests and the contract name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Hook {
    Name,
    Configure,
    AfterStart,
    Validate,
    Assigned,
    Unassigned,
    BeforeDelete,
    AfterReset,
}

impl Hook {
    pub const ALL: [Hook; 8] = [
        Hook::Name,
        Hook::Configure,
        Hook::AfterStart,
        Hook::Validate,
        Hook::Assigned,
        Hook::Unassigned,
        Hook::BeforeDelete,
        Hook::AfterReset,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Hook::Name => "name",
            Hook::Configure => "configure",
            Hook::AfterStart => "after-start",
            Hook::Validate => "validate",
            Hook::Assigned => "assigned",
            Hook::Unassigned => "unassigned",
            Hook::BeforeDelete => "before-delete",
            Hook::AfterReset => "after-reset",
        }
    }

    /// Whether contract version `api` has this hook.
    pub fn in_api(self, api: &str) -> bool {
        api == API_0_2
            || matches!(
                self,
                Hook::Name | Hook::Configure | Hook::AfterStart | Hook::Validate
            )
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
                let known: Vec<&str> = Hook::ALL.iter().map(|hook| hook.as_str()).collect();
                format!("unknown hook {text:?} (hooks: {})", known.join(", "))
            })
    }
}

/// Host functions a plugin must ask for, and an operator grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Capability {
    /// Commands in the hook's VM's guest.
    GuestExec,
    /// Writing files into the hook's VM's guest (0.2.0).
    GuestFiles,
    /// HTTP requests to the hosts the operator lists (0.2.0).
    Http,
    /// A key-value store of the plugin's own on the node (0.2.0).
    Store,
}

impl Capability {
    pub const ALL: [Capability; 4] = [
        Capability::GuestExec,
        Capability::GuestFiles,
        Capability::Http,
        Capability::Store,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Capability::GuestExec => "guest-exec",
            Capability::GuestFiles => "guest-files",
            Capability::Http => "http",
            Capability::Store => "store",
        }
    }

    /// Whether contract version `api` has this capability.
    pub fn in_api(self, api: &str) -> bool {
        api == API_0_2 || self == Capability::GuestExec
    }
}

impl std::str::FromStr for Capability {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        Capability::ALL
            .into_iter()
            .find(|capability| capability.as_str() == text)
            .ok_or_else(|| {
                let known: Vec<&str> = Capability::ALL.iter().map(|c| c.as_str()).collect();
                format!(
                    "unknown capability {text:?} (capabilities: {})",
                    known.join(", ")
                )
            })
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
    /// What admins (and, where allowed, teachers per class) may set, by name (0.2.0).
    #[serde(default)]
    pub settings: BTreeMap<String, SettingSpec>,
}

/// A setting's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SettingType {
    String,
    Integer,
    Boolean,
}

impl SettingType {
    pub fn as_str(self) -> &'static str {
        match self {
            SettingType::String => "string",
            SettingType::Integer => "integer",
            SettingType::Boolean => "boolean",
        }
    }
}

/// One setting a plugin declares.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettingSpec {
    #[serde(rename = "type")]
    pub kind: SettingType,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub default: Option<SettingValue>,
    /// Whether a class's teachers may set their own value.
    #[serde(default)]
    pub per_class: bool,
}

/// A setting's value. In JSON and TOML it is the plain value: `"text"`, `4`, `true`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SettingValue {
    Boolean(bool),
    Integer(i64),
    Text(String),
}

/// The longest text a setting may hold.
pub const MAX_SETTING_BYTES: usize = 4096;

impl SettingSpec {
    /// Reads a value typed into a form: checked against the type, `None` for an empty field.
    pub fn parse_value(&self, text: &str) -> Result<Option<SettingValue>, String> {
        let text = text.trim();
        if text.is_empty() {
            return Ok(None);
        }
        let value = match self.kind {
            SettingType::String => SettingValue::Text(text.to_owned()),
            SettingType::Integer => SettingValue::Integer(
                text.parse()
                    .map_err(|_| format!("{text:?} is not a whole number"))?,
            ),
            SettingType::Boolean => match text {
                "true" | "on" | "yes" | "1" => SettingValue::Boolean(true),
                "false" | "off" | "no" | "0" => SettingValue::Boolean(false),
                _ => return Err(format!("{text:?} is not true or false")),
            },
        };
        self.check_value(&value)?;
        Ok(Some(value))
    }

    /// Whether `value` is of this setting's type and size.
    pub fn check_value(&self, value: &SettingValue) -> Result<(), String> {
        match (self.kind, value) {
            (SettingType::String, SettingValue::Text(text)) => {
                if text.len() > MAX_SETTING_BYTES {
                    return Err(format!("longer than {MAX_SETTING_BYTES} bytes"));
                }
                if text
                    .chars()
                    .any(|c| c.is_control() && c != '\n' && c != '\t')
                {
                    return Err("holds control characters".into());
                }
                Ok(())
            }
            (SettingType::Integer, SettingValue::Integer(_))
            | (SettingType::Boolean, SettingValue::Boolean(_)) => Ok(()),
            (kind, _) => Err(format!("is not of type {}", kind.as_str())),
        }
    }
}

impl SettingValue {
    /// The value as a form shows it.
    pub fn to_text(&self) -> String {
        match self {
            SettingValue::Text(text) => text.clone(),
            SettingValue::Integer(number) => number.to_string(),
            SettingValue::Boolean(flag) => flag.to_string(),
        }
    }
}

impl Manifest {
    /// The settings a hook gets: each layer's values over the earlier layers' (the site's,
    /// then the class's) over the defaults. A name the manifest does not declare, or a value
    /// of the wrong type, is refused.
    pub fn resolve_settings(
        &self,
        layers: &[&BTreeMap<String, SettingValue>],
    ) -> Result<BTreeMap<String, SettingValue>, String> {
        let mut resolved: BTreeMap<String, SettingValue> = self
            .settings
            .iter()
            .filter_map(|(name, spec)| Some((name.clone(), spec.default.clone()?)))
            .collect();
        for layer in layers {
            for (name, value) in *layer {
                let spec = self
                    .settings
                    .get(name)
                    .ok_or_else(|| format!("there is no setting {name:?} in its manifest"))?;
                spec.check_value(value)
                    .map_err(|reason| format!("setting {name}: {value:?} {reason}"))?;
                resolved.insert(name.clone(), value.clone());
            }
        }
        Ok(resolved)
    }

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
        if let Some(hook) = self.hooks.iter().find(|hook| !hook.in_api(&self.api)) {
            return Err(format!(
                "hook {} needs API {API_0_2}; this manifest says API {}",
                hook.as_str(),
                self.api
            ));
        }
        if let Some(capability) = self.capabilities.iter().find(|c| !c.in_api(&self.api)) {
            return Err(format!(
                "capability {} needs API {API_0_2}; this manifest says API {}",
                capability.as_str(),
                self.api
            ));
        }
        if !self.settings.is_empty() && self.api != API_0_2 {
            return Err(format!(
                "settings need API {API_0_2}; this manifest says API {}",
                self.api
            ));
        }
        if self.settings.len() > 64 {
            return Err("a plugin may declare at most 64 settings".into());
        }
        for (name, spec) in &self.settings {
            let name_ok = (1..=64).contains(&name.len())
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
                && name.as_bytes()[0].is_ascii_lowercase();
            if !name_ok {
                return Err(format!(
                    "setting {name:?}: use 1 to 64 lowercase letters, digits and underscores, \
                     starting with a letter"
                ));
            }
            if let Some(default) = &spec.default {
                spec.check_value(default)
                    .map_err(|reason| format!("setting {name}: its default {reason}"))?;
            }
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
    fn a_0_2_manifest_declares_settings() {
        let manifest = Manifest::parse(
            "id = \"sizing\"\nversion = \"1\"\napi = \"0.2.0\"\nhooks = [\"assigned\"]\n\
             capabilities = [\"http\", \"store\"]\n[settings.cores]\ntype = \"integer\"\n\
             default = 2\nper_class = true\n[settings.note]\ntype = \"string\"\n",
        )
        .unwrap();
        let cores = &manifest.settings["cores"];
        assert_eq!(cores.default, Some(SettingValue::Integer(2)));
        assert!(cores.per_class && !manifest.settings["note"].per_class);
        assert_eq!(
            cores.parse_value(" 4 ").unwrap(),
            Some(SettingValue::Integer(4))
        );
        assert_eq!(cores.parse_value("").unwrap(), None);
        assert!(
            cores
                .parse_value("four")
                .unwrap_err()
                .contains("whole number")
        );
        let note = &manifest.settings["note"];
        assert!(note.parse_value("a\u{7}b").unwrap_err().contains("control"));
        assert!(note.parse_value(&"x".repeat(5000)).is_err());
    }

    #[test]
    fn settings_resolve_class_over_site_over_default() {
        let manifest = Manifest::parse(
            "id = \"x\"\nversion = \"1\"\napi = \"0.2.0\"\nhooks = [\"name\"]\n\
             [settings.cores]\ntype = \"integer\"\ndefault = 2\n\
             [settings.label]\ntype = \"string\"\ndefault = \"lab\"\n[settings.open]\ntype = \"boolean\"\n",
        )
        .unwrap();
        let site = BTreeMap::from([("cores".to_owned(), SettingValue::Integer(4))]);
        let class = BTreeMap::from([("label".to_owned(), SettingValue::Text("net".into()))]);
        let resolved = manifest.resolve_settings(&[&site, &class]).unwrap();
        assert_eq!(resolved["cores"], SettingValue::Integer(4));
        assert_eq!(resolved["label"], SettingValue::Text("net".into()));
        assert!(!resolved.contains_key("open"));
        let wrong = BTreeMap::from([("cores".to_owned(), SettingValue::Text("4".into()))]);
        assert!(
            manifest
                .resolve_settings(&[&wrong])
                .unwrap_err()
                .contains("setting cores")
        );
        let unknown = BTreeMap::from([("color".to_owned(), SettingValue::Boolean(true))]);
        assert!(
            manifest
                .resolve_settings(&[&unknown])
                .unwrap_err()
                .contains("no setting")
        );
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
            (
                "id = \"x\"\nversion = \"1\"\napi = \"0.1.0\"\nhooks = [\"assigned\"]",
                "needs API 0.2.0",
            ),
            (
                "id = \"x\"\nversion = \"1\"\napi = \"0.1.0\"\nhooks = [\"name\"]\ncapabilities = [\"http\"]",
                "needs API 0.2.0",
            ),
            (
                "id = \"x\"\nversion = \"1\"\napi = \"0.2.0\"\nhooks = [\"name\"]\n[settings.Bad]\ntype = \"string\"",
                "setting \"Bad\"",
            ),
            (
                "id = \"x\"\nversion = \"1\"\napi = \"0.2.0\"\nhooks = [\"name\"]\n[settings.n]\ntype = \"integer\"\ndefault = \"two\"",
                "its default is not of type integer",
            ),
        ] {
            let err = Manifest::parse(text).unwrap_err();
            assert!(err.contains(expected), "{text}: {err}");
        }
    }
}
