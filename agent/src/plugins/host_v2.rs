//! Contract 0.2.0 on the host: the functions its plugins may call (each capability scoped
//! to the hook's own VM and plugin), and one entry point, [`PluginHost::call`], that runs any
//! hook of a plugin of either version with the same [`HookFacts`].

use std::time::Duration;

use super::bindings::{self, Finding, Naming, Severity};
use super::bindings_v2::{self as v2, types as t};
use super::bounds::{self, printable};
use super::edits::Edit;
use super::facts::HookFacts;
use super::grants;
use super::host::{Plugin, PluginError, PluginHost, PluginState, failure};
use super::manifest::{API_0_2, Capability, Hook, Manifest};

/// The largest file `guest-files` writes (what the guest agent takes in one write).
pub const MAX_GUEST_FILE_BYTES: usize = 60 * 1024;
/// The longest secret a notice may carry.
const MAX_SECRET_BYTES: usize = 1024;

/// What a hook gave.
#[derive(Debug, Clone)]
pub enum HookOutput {
    /// `name`.
    Naming(Naming),
    /// `configure`, `assigned`, `unassigned`: edits, not yet checked (see
    /// [`super::edits::Step`]).
    Edits(Vec<Edit>),
    /// `validate`.
    Findings(Vec<Finding>),
    /// `after-start`, `after-reset`: what to tell the VM's user.
    Notice(Option<Notice>),
    /// `before-delete`.
    Done,
}

/// What a plugin tells a VM's user.
#[derive(Clone, PartialEq, Eq)]
pub struct Notice {
    pub message: String,
    /// Shown once to the VM's user; never logged.
    pub secret: Option<String>,
}

impl std::fmt::Debug for Notice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notice")
            .field("message", &self.message)
            .field("secret", &self.secret.as_ref().map(|_| "<hidden>"))
            .finish()
    }
}

/// Why a component's imports do not match what its manifest asks for, if they do not: a
/// plugin may import a capability's interface only when its manifest requests it.
pub(super) fn unrequested_import(manifest: &Manifest, imports: &[String]) -> Option<String> {
    let api = &manifest.api;
    let asks = |capability| manifest.capabilities.contains(&capability);
    let needs: &[(&str, &[Capability])] = &[
        ("guest", &[Capability::GuestExec, Capability::GuestFiles]),
        ("http", &[Capability::Http]),
        ("store", &[Capability::Store]),
    ];
    needs.iter().find_map(|(interface, capabilities)| {
        let imported = imports
            .iter()
            .any(|name| *name == format!("proxlab:plugin/{interface}@{api}"));
        let names: Vec<&str> = capabilities
            .iter()
            .filter(|c| c.in_api(api))
            .map(|c| c.as_str())
            .collect();
        (imported && !capabilities.iter().any(|c| asks(*c))).then(|| {
            format!(
                "the component imports {interface} but the manifest does not request the {} \
                 capability",
                names.join(" or ")
            )
        })
    })
}

/// A plugin's edits, bounded in number and key length.
pub(super) fn bounded_edits(plugin: &str, edits: Vec<Edit>) -> Result<Vec<Edit>, PluginError> {
    if edits.len() > bounds::MAX_EDITS {
        return Err(failure(
            plugin,
            format!(
                "asked for {} edits; a call may ask for at most {}",
                edits.len(),
                bounds::MAX_EDITS
            ),
        ));
    }
    if edits
        .iter()
        .filter_map(Edit::key)
        .any(|key| key.len() > bounds::MAX_KEY_BYTES)
    {
        return Err(failure(
            plugin,
            format!(
                "named a config key longer than {} bytes",
                bounds::MAX_KEY_BYTES
            ),
        ));
    }
    Ok(edits)
}

/// A plugin's findings, bounded in number and printable.
pub(super) fn bounded_findings(
    plugin: &str,
    findings: Vec<Finding>,
) -> Result<Vec<Finding>, PluginError> {
    if findings.len() > bounds::MAX_FINDINGS {
        return Err(failure(
            plugin,
            format!(
                "reported {} findings; a call may report at most {}",
                findings.len(),
                bounds::MAX_FINDINGS
            ),
        ));
    }
    Ok(findings
        .into_iter()
        .map(|finding| Finding {
            message: printable(&finding.message, bounds::MAX_MESSAGE_BYTES),
            ..finding
        })
        .collect())
}

fn edits_v2(edits: Vec<t::ConfigEdit>) -> Vec<Edit> {
    edits
        .into_iter()
        .map(|edit| match edit {
            t::ConfigEdit::Set((key, value)) => Edit::Set(key, value),
            t::ConfigEdit::Delete(key) => Edit::Delete(key),
            t::ConfigEdit::Describe(text) => Edit::Describe(text),
        })
        .collect()
}

fn notice_v2(plugin: &str, notice: Option<t::Notice>) -> Result<Option<Notice>, PluginError> {
    let Some(notice) = notice else {
        return Ok(None);
    };
    if let Some(secret) = &notice.secret
        && (secret.len() > MAX_SECRET_BYTES || secret.chars().any(char::is_control))
    {
        return Err(failure(
            plugin,
            format!(
                "gave a secret that is not one printable line of at most {MAX_SECRET_BYTES} \
                 bytes"
            ),
        ));
    }
    Ok(Some(Notice {
        message: printable(&notice.message, bounds::MAX_MESSAGE_BYTES),
        secret: notice.secret,
    }))
}

impl PluginHost {
    /// Runs `hook` of `plugin`, of either contract version, with `facts`.
    pub fn call(
        &self,
        plugin: &Plugin,
        hook: Hook,
        facts: &HookFacts,
    ) -> Result<HookOutput, PluginError> {
        if plugin.manifest.api == API_0_2 {
            return self.call_v2(plugin, hook, facts);
        }
        let (class, vm) = (facts.class_v1(), facts.vm_v1());
        Ok(match hook {
            Hook::Name => HookOutput::Naming(self.name(plugin, &class, &vm)?),
            Hook::Configure => {
                HookOutput::Edits(self.configure(plugin, &class, &vm, &facts.config)?)
            }
            Hook::Validate => {
                HookOutput::Findings(self.validate(plugin, &class, &vm, &facts.config)?)
            }
            Hook::AfterStart => {
                self.after_start(plugin, &class, &vm)?;
                HookOutput::Notice(None)
            }
            other => {
                return Err(failure(
                    &plugin.manifest.id,
                    format!("API {} has no hook {}", plugin.manifest.api, other.as_str()),
                ));
            }
        })
    }

    fn call_v2(
        &self,
        plugin: &Plugin,
        hook: Hook,
        facts: &HookFacts,
    ) -> Result<HookOutput, PluginError> {
        let id = &plugin.manifest.id;
        let node = self.node_facts();
        let input = facts.v2(&node.node, &node.agent_version);
        let failed = |message: String| failure(id, message);
        macro_rules! call {
            ($module:ident, $method:ident) => {
                self.run(plugin, hook, facts.vm.vmid, |store, pre, instance| {
                    v2::$module::GuestIndices::new(pre)?
                        .load(&mut *store, instance)?
                        .$method(store, &input)
                })?
            };
        }
        Ok(match hook {
            Hook::Name => {
                let naming = call!(name, call_name).map_err(failed)?;
                let naming = Naming {
                    name: naming.name,
                    hostname: naming.hostname,
                };
                self.check_naming(id, &naming)?;
                HookOutput::Naming(naming)
            }
            Hook::Configure => {
                let edits = call!(configure, call_configure).map_err(failed)?;
                HookOutput::Edits(bounded_edits(id, edits_v2(edits))?)
            }
            Hook::Assigned => {
                let edits = call!(assigned, call_assigned).map_err(failed)?;
                HookOutput::Edits(bounded_edits(id, edits_v2(edits))?)
            }
            Hook::Unassigned => {
                let edits = call!(unassigned, call_unassigned).map_err(failed)?;
                HookOutput::Edits(bounded_edits(id, edits_v2(edits))?)
            }
            Hook::Validate => {
                let findings = call!(validate, call_validate)
                    .into_iter()
                    .map(|finding| Finding {
                        severity: match finding.severity {
                            t::Severity::Ok => Severity::Ok,
                            t::Severity::Warning => Severity::Warning,
                            t::Severity::Error => Severity::Error,
                        },
                        message: finding.message,
                    })
                    .collect();
                HookOutput::Findings(bounded_findings(id, findings)?)
            }
            Hook::BeforeDelete => {
                call!(before_delete, call_before_delete).map_err(failed)?;
                HookOutput::Done
            }
            Hook::AfterStart => {
                let notice = call!(after_start, call_after_start).map_err(failed)?;
                HookOutput::Notice(notice_v2(id, notice)?)
            }
            Hook::AfterReset => {
                let notice = call!(after_reset, call_after_reset).map_err(failed)?;
                HookOutput::Notice(notice_v2(id, notice)?)
            }
        })
    }
}

impl t::Host for PluginState {}

impl v2::host::Host for PluginState {
    fn log(&mut self, level: v2::host::Level, message: String) {
        use bindings::host::Level as V1;
        let level = match level {
            v2::host::Level::Debug => V1::Debug,
            v2::host::Level::Info => V1::Info,
            v2::host::Level::Warn => V1::Warn,
            v2::host::Level::Error => V1::Error,
        };
        bindings::host::Host::log(self, level, message);
    }
}

impl v2::guest::Host for PluginState {
    fn exec(
        &mut self,
        command: String,
        args: Vec<String>,
        stdin: Option<String>,
        timeout_ms: u32,
    ) -> Result<t::ExecResult, String> {
        let vmid = self.vmid;
        let result = self.guest_exec(vmid, &command, &args, stdin.as_deref(), timeout_ms)?;
        Ok(t::ExecResult {
            exit_code: result.exit_code,
            stdout: result.stdout,
            stderr: result.stderr,
        })
    }

    fn write_file(&mut self, path: String, content: Vec<u8>) -> Result<(), String> {
        let Some((guest, paths)) = self.guest_files.clone() else {
            return Err(self.refuse_ungranted(Capability::GuestFiles));
        };
        if !grants::path_allowed(&paths, &path) {
            let message = format!(
                "the operator has not granted writing {path:?} in the guest (guest_paths in \
                 its grant)"
            );
            return Err(self.deny(&message));
        }
        if content.len() > MAX_GUEST_FILE_BYTES {
            return Err(format!(
                "a guest file has at most {MAX_GUEST_FILE_BYTES} bytes"
            ));
        }
        let timeout = self.time_left()?.min(Duration::from_secs(30));
        guest
            .write_file(self.vmid, &path, &content, timeout)
            .map_err(|err| printable(&err, bounds::MAX_MESSAGE_BYTES))
    }
}

impl v2::http::Host for PluginState {
    fn request(
        &mut self,
        method: String,
        url: String,
        headers: Vec<(String, String)>,
        body: Option<Vec<u8>>,
    ) -> Result<t::HttpResponse, String> {
        let Some(hosts) = self.http_hosts.clone() else {
            return Err(self.refuse_ungranted(Capability::Http));
        };
        let timeout = self.time_left()?;
        match super::http::request(&hosts, &method, &url, &headers, body, timeout) {
            Ok(response) => Ok(t::HttpResponse {
                status: response.status,
                headers: response.headers,
                body: response.body,
            }),
            Err(err) if err.contains("has not listed") => Err(self.deny(&err)),
            Err(err) => Err(printable(&err, bounds::MAX_MESSAGE_BYTES)),
        }
    }
}

impl v2::store::Host for PluginState {
    fn get(&mut self, key: String) -> Option<String> {
        let Some(store) = self.store.clone() else {
            self.refuse_ungranted(Capability::Store);
            return None;
        };
        store.get(&self.plugin, &key)
    }

    fn set(&mut self, key: String, value: String) -> Result<(), String> {
        let Some(store) = self.store.clone() else {
            return Err(self.refuse_ungranted(Capability::Store));
        };
        store.set(&self.plugin, &key, &value)
    }

    fn delete(&mut self, key: String) {
        let Some(store) = self.store.clone() else {
            self.refuse_ungranted(Capability::Store);
            return;
        };
        if let Err(err) = store.delete(&self.plugin, &key) {
            tracing::warn!(plugin = %self.plugin, %err, "a store delete failed");
        }
    }
}
