//! Calling one hook with JSON in and out: what `proxlab-agent plugin run` and `plugin test`
//! do. The input is [`HookFacts`]; edits are checked and applied to the input's config the
//! way the agent checks them before writing, and the result shows every edit.

use proxlab_pve::config::VmConfig;

use super::HookFacts;
use super::bindings::Severity;
use super::edits::{Edit, Step};
use super::host::{Plugin, PluginError, PluginHost};
use super::host_v2::HookOutput;
use super::manifest::Hook;

/// What one hook call gave.
#[derive(Debug, Clone)]
pub struct Invoked {
    /// The outcome as JSON.
    pub result: serde_json::Value,
    /// Whether it would fail the VM's step: a `validate` finding of severity `error`.
    /// `plugin run` exits non-zero then, for authors' CI.
    pub fails_the_step: bool,
}

/// The input's config as a VM config (its description included).
fn config_of(facts: &HookFacts) -> VmConfig {
    let mut text = String::new();
    for (key, value) in facts.config.iter().filter(|(key, _)| key != "description") {
        text.push_str(&format!("{key}: {value}\n"));
    }
    let mut config = VmConfig::parse(&text);
    if let Some((_, description)) = facts.config.iter().find(|(key, _)| key == "description") {
        config.main_mut().set_description(description);
    }
    config
}

fn edit_json(edit: &Edit) -> serde_json::Value {
    match edit {
        Edit::Set(key, value) => serde_json::json!({"set": [key, value]}),
        Edit::Delete(key) => serde_json::json!({"delete": key}),
        Edit::Describe(text) => serde_json::json!({"describe": text}),
    }
}

/// Runs `hook` of `plugin` with `facts` and describes the outcome as JSON.
pub fn invoke(
    host: &PluginHost,
    plugin: &Plugin,
    hook: Hook,
    facts: &HookFacts,
) -> Result<Invoked, PluginError> {
    let refused = |message: String| PluginError {
        plugin: plugin.manifest.id.clone(),
        message,
    };
    let mut fails_the_step = false;
    // The settings as the hub would resolve them: the manifest's defaults under the given.
    let mut facts = facts.clone();
    facts.settings = plugin
        .manifest
        .resolve_settings(&[&facts.settings])
        .map_err(refused)?;
    let facts = &facts;
    let result = match host.call(plugin, hook, facts)? {
        HookOutput::Naming(naming) => serde_json::json!(naming),
        HookOutput::Edits(asked) => {
            let limits = crate::node_info::limits();
            let config = config_of(facts);
            let edited = Step::default()
                .apply(&config, &plugin.manifest.id, &asked, &limits)
                .map_err(refused)?;
            let main = edited.main();
            serde_json::json!({
                "edits": asked.iter().map(edit_json).collect::<Vec<_>>(),
                "config": main.entries(),
                "description": main.description().unwrap_or_default(),
            })
        }
        HookOutput::Findings(findings) => {
            fails_the_step = findings
                .iter()
                .any(|finding| matches!(finding.severity, Severity::Error));
            serde_json::json!(findings)
        }
        HookOutput::Notice(notice) => serde_json::json!({
            "ok": true,
            "notice": notice.map(|notice| serde_json::json!({
                "message": notice.message,
                "secret": notice.secret,
            })),
        }),
        HookOutput::Done => serde_json::json!({"ok": true}),
    };
    Ok(Invoked {
        result,
        fails_the_step,
    })
}
