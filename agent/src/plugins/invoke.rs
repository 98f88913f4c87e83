//! Calling one hook with JSON in and out: what `proxlab-agent plugin run` does, and how the
//! agent's own steps describe a call.

use serde::{Deserialize, Serialize};

use super::bindings::Severity;
use super::host::{Plugin, PluginError, PluginHost};
use super::manifest::Hook;
use super::{ClassInfo, VmInfo, edits};

/// A hook's input.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HookInput {
    pub class: ClassInfo,
    pub vm: VmInfo,
    /// The VM's config (its own section), for `configure` and `validate`.
    #[serde(default)]
    pub config: Vec<(String, String)>,
}

/// What one hook call gave.
#[derive(Debug, Clone)]
pub struct Invoked {
    /// The outcome as JSON.
    pub result: serde_json::Value,
    /// Whether it would fail the VM's step: a `validate` finding of severity `error`.
    /// `plugin run` exits non-zero then, for authors' CI.
    pub fails_the_step: bool,
}

/// Runs `hook` of `plugin` and describes the outcome as JSON. For `configure`, the edits
/// are also checked against `input.config` the way the agent checks them before writing.
pub fn invoke(
    host: &PluginHost,
    plugin: &Plugin,
    hook: Hook,
    input: &HookInput,
) -> Result<Invoked, PluginError> {
    let (class, vm) = (&input.class, &input.vm);
    let result = match hook {
        Hook::Name => serde_json::json!(host.name(plugin, class, vm)?),
        Hook::Configure => {
            let asked = host.configure(plugin, class, vm, &input.config)?;
            let mut text = String::new();
            for (key, value) in &input.config {
                text.push_str(&format!("{key}: {value}\n"));
            }
            let config = proxlab_pve::config::VmConfig::parse(&text);
            let limits = crate::node_info::limits();
            let result = edits::apply(&config, &asked, &limits).map_err(|message| PluginError {
                plugin: plugin.manifest.id.clone(),
                message,
            })?;
            let entries: Vec<(&str, &str)> = result.main().entries();
            serde_json::json!({
                "edits": asked.iter().map(|edit| match edit {
                    edits::Edit::Set(key, value) => serde_json::json!({"set": [key, value]}),
                    edits::Edit::Delete(key) => serde_json::json!({"delete": key}),
                }).collect::<Vec<_>>(),
                "config": entries,
            })
        }
        Hook::AfterStart => {
            host.after_start(plugin, class, vm)?;
            serde_json::json!({"ok": true})
        }
        Hook::Validate => {
            let findings = host.validate(plugin, class, vm, &input.config)?;
            let fails_the_step = findings
                .iter()
                .any(|finding| matches!(finding.severity, Severity::Error));
            return Ok(Invoked {
                result: serde_json::json!(findings),
                fails_the_step,
            });
        }
    };
    Ok(Invoked {
        result,
        fails_the_step: false,
    })
}
