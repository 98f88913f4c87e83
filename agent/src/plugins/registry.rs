//! The plugins an agent has: dropped in by the operator or installed by the hub, and how
//! the clone path and a VM's first start run them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use proxlab_protocol::Event;
use proxlab_protocol::plugins::{
    PluginClass, PluginFinding, PluginNotice, PluginSettingValues, PluginSite, PluginSteps,
    PluginStudent, PluginVm,
};
use proxlab_pve::config::VmConfig;
use proxlab_pve::policy::NodeLimits;
use serde::{Deserialize, Serialize};

use super::bounds;
use super::edits::{Edit, Step};
use super::host::{Plugin, PluginError, PluginHost, sha256_hex};
use super::host_v2::HookOutput;
use super::manifest::{Hook, Manifest};
use super::{Finding, HookFacts, Severity, VmFacts, files};

/// A config's own section as key and value pairs, its description included: what hooks
/// are told.
pub fn entries(config: &VmConfig) -> Vec<(String, String)> {
    let main = config.main();
    let mut entries: Vec<(String, String)> = main
        .entries()
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    if let Some(description) = main.description() {
        entries.push(("description".into(), description));
    }
    entries
}

/// The plugins of this agent, by id.
pub struct PluginRegistry {
    host: PluginHost,
    plugins: RwLock<BTreeMap<String, Arc<Plugin>>>,
    /// Where plugins from the hub are kept (`<state>/plugins`).
    installed_dir: PathBuf,
    /// What each class VM made with plugins remembers (`<state>/class-vms/<vmid>.json`).
    records_dir: PathBuf,
}

/// What a class VM made with plugins remembers: its plugins and facts, for the hooks that
/// run later (when a student gets it or leaves it, after its first start or a reset, before
/// it is deleted).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ClassVmRecord {
    plugins: Vec<String>,
    class: PluginClass,
    vm: PluginVm,
    name: String,
    /// Whether the after-start steps ran.
    started: bool,
    #[serde(default)]
    cluster: String,
    #[serde(default)]
    site: PluginSite,
    #[serde(default)]
    settings: PluginSettingValues,
}

/// How one VM's plugin steps at one hook went, for the hub.
#[derive(Debug, Clone, Default)]
pub struct StepReport {
    /// The first failure, which stopped the steps.
    pub error: Option<String>,
    pub findings: Vec<PluginFinding>,
    pub notices: Vec<PluginNotice>,
}

impl StepReport {
    /// The report as the event the hub records.
    pub fn event(self, vmid: u32, hook: Hook) -> Event {
        Event::PluginSteps {
            vmid,
            hook: hook.as_str().into(),
            error: self.error,
            findings: self.findings,
            notices: self.notices,
        }
    }

    fn found(&mut self, plugin: &str, findings: Vec<Finding>) {
        for finding in findings {
            let severity = match finding.severity {
                Severity::Ok => continue,
                Severity::Warning => "warning",
                Severity::Error => "error",
            };
            self.findings.push(PluginFinding {
                plugin: plugin.to_owned(),
                severity: severity.into(),
                message: finding.message,
            });
        }
    }
}

/// The facts of one hook call on a class VM.
struct CallFacts<'a> {
    class: &'a PluginClass,
    vm: &'a PluginVm,
    vmid: u32,
    name: &'a str,
    cluster: &'a str,
    site: &'a PluginSite,
    settings: &'a PluginSettingValues,
}

impl CallFacts<'_> {
    fn for_plugin(&self, plugin: &str, config: &VmConfig) -> HookFacts {
        HookFacts {
            class: self.class.clone(),
            vm: VmFacts {
                vmid: self.vmid,
                kind: self.vm.kind.clone(),
                index: self.vm.index,
                student: self.vm.student.clone(),
                name: self.name.to_owned(),
                node: String::new(),
                cluster: self.cluster.to_owned(),
            },
            student: self.vm.student_facts.clone(),
            config: entries(config),
            site: self.site.clone(),
            settings: self.settings.get(plugin).cloned().unwrap_or_default(),
        }
    }
}

impl ClassVmRecord {
    fn call_facts(&self, vmid: u32) -> CallFacts<'_> {
        CallFacts {
            class: &self.class,
            vm: &self.vm,
            vmid,
            name: &self.name,
            cluster: &self.cluster,
            site: &self.site,
            settings: &self.settings,
        }
    }
}

impl PluginRegistry {
    /// Loads the operator's drop-in plugins, then those the hub installed. On a shared id the
    /// operator's plugin stays: a hub-installed one never takes its place (or its grants).
    /// Plugins that fail to load are logged and left out.
    pub fn start(host: PluginHost, state_dir: &Path) -> Self {
        let registry = Self {
            installed_dir: state_dir.join("plugins"),
            records_dir: state_dir.join("class-vms"),
            plugins: RwLock::new(BTreeMap::new()),
            host,
        };
        for (dir, from_hub) in [
            (registry.host.settings().dir.clone(), false),
            (registry.installed_dir.clone(), true),
        ] {
            let (plugins, errors) = files::load_dir(&registry.host, &dir);
            for err in errors {
                tracing::error!(%err, dir = %dir.display(), "plugin not loaded");
            }
            for mut plugin in plugins {
                let id = plugin.manifest.id.clone();
                if from_hub && registry.get(&id).is_some() {
                    tracing::error!(plugin = %id, "the hub's plugin of this id is ignored: the operator has a local one");
                    continue;
                }
                plugin.from_hub = from_hub;
                tracing::info!(plugin = %id, version = %plugin.manifest.version, sha256 = %plugin.sha256, "plugin loaded");
                registry.insert(plugin);
            }
        }
        registry
    }

    fn insert(&self, plugin: Plugin) {
        self.plugins
            .write()
            .expect("not poisoned")
            .insert(plugin.manifest.id.clone(), Arc::new(plugin));
    }

    pub fn host(&self) -> &PluginHost {
        &self.host
    }

    pub fn get(&self, id: &str) -> Option<Arc<Plugin>> {
        self.plugins.read().expect("not poisoned").get(id).cloned()
    }

    /// Ids and versions of the loaded plugins.
    pub fn loaded(&self) -> Vec<(String, String)> {
        self.plugins
            .read()
            .expect("not poisoned")
            .values()
            .map(|p| (p.manifest.id.clone(), p.manifest.version.clone()))
            .collect()
    }

    /// Installs a plugin from the hub: the hash must match, and the plugin must load, before
    /// it is kept (on disk, for restarts) and used.
    pub fn install(
        &self,
        manifest: &str,
        wasm: &[u8],
        sha256: &str,
    ) -> Result<Arc<Plugin>, PluginError> {
        let parsed = Manifest::parse(manifest).map_err(|message| PluginError {
            plugin: "(upload)".into(),
            message,
        })?;
        let actual = sha256_hex(wasm);
        if !actual.eq_ignore_ascii_case(sha256) {
            return Err(PluginError {
                plugin: parsed.id,
                message: format!("the component's sha256 is {actual}, not {sha256}"),
            });
        }
        if self
            .get(&parsed.id)
            .is_some_and(|existing| !existing.from_hub)
        {
            return Err(PluginError {
                plugin: parsed.id,
                message: "this node's operator has a local plugin with this id; it is not \
                          replaced"
                    .into(),
            });
        }
        let mut plugin = self.host.load_hashed(parsed, wasm, actual)?;
        plugin.from_hub = true;
        let dir = self.installed_dir.join(&plugin.manifest.id);
        let keep = || -> std::io::Result<()> {
            std::fs::create_dir_all(&dir)?;
            proxlab_link::files::write_atomic(&dir.join("plugin.wasm"), wasm, false)?;
            proxlab_link::files::write_atomic(&dir.join("plugin.toml"), manifest.as_bytes(), false)
        };
        keep().map_err(|err| PluginError {
            plugin: plugin.manifest.id.clone(),
            message: format!("cannot be stored in {}: {err}", dir.display()),
        })?;
        let id = plugin.manifest.id.clone();
        self.insert(plugin);
        Ok(self.get(&id).expect("just inserted"))
    }

    /// Removes a plugin the hub installed.
    pub fn remove(&self, id: &str) -> std::io::Result<bool> {
        let dir = self.installed_dir.join(id);
        if id.is_empty() || id.contains(['/', '.']) || !dir.exists() {
            return Ok(false);
        }
        std::fs::remove_dir_all(&dir)?;
        let mut plugins = self.plugins.write().expect("not poisoned");
        if plugins.get(id).is_some_and(|plugin| plugin.from_hub) {
            plugins.remove(id);
        }
        Ok(true)
    }

    /// The plugins of these ids, in order; all must be here.
    fn plugins_named(&self, ids: &[String]) -> Result<Vec<Arc<Plugin>>, String> {
        ids.iter()
            .map(|id| {
                self.get(id)
                    .ok_or_else(|| format!("plugin {id} is not installed on this node"))
            })
            .collect()
    }

    /// Runs the clone-time hooks on a new VM's config, in the class's order: `validate`
    /// (an error finding fails the VM), `name`, then `configure`; returns the other findings.
    /// Blocking: call it off the async threads.
    pub fn prepare(
        &self,
        steps: &PluginSteps,
        vmid: u32,
        config: &mut VmConfig,
        limits: &NodeLimits,
    ) -> Result<Vec<PluginFinding>, String> {
        let plugins = self.plugins_named(&steps.plugins)?;
        let vm = steps.vms.get(&vmid).cloned().unwrap_or_default();
        let mut report = StepReport::default();
        let mut step = Step::default();
        for plugin in &plugins {
            let id = &plugin.manifest.id;
            let name = config.main().get("name").unwrap_or_default().to_owned();
            let call = CallFacts {
                class: &steps.class,
                vm: &vm,
                vmid,
                name: &name,
                cluster: &steps.cluster,
                site: &steps.site,
                settings: &steps.settings,
            };
            let hooks = &plugin.manifest.hooks;
            if hooks.contains(&Hook::Validate) {
                let facts = call.for_plugin(id, config);
                let HookOutput::Findings(findings) = self.call(plugin, Hook::Validate, &facts)?
                else {
                    unreachable!("validate gives findings");
                };
                if let Some(error) = findings
                    .iter()
                    .find(|finding| matches!(finding.severity, Severity::Error))
                {
                    return Err(format!("plugin {id}: {}", error.message));
                }
                for finding in &findings {
                    tracing::warn!(plugin = %id, vmid, "{}", finding.message);
                }
                report.found(id, findings);
            }
            if hooks.contains(&Hook::Name) {
                let facts = call.for_plugin(id, config);
                let HookOutput::Naming(naming) = self.call(plugin, Hook::Name, &facts)? else {
                    unreachable!("name gives a naming");
                };
                *config = step
                    .apply(config, id, &[Edit::Set("name".into(), naming.name)], limits)
                    .map_err(|reason| format!("plugin {id}: {reason}"))?;
            }
            if hooks.contains(&Hook::Configure) {
                let name = config.main().get("name").unwrap_or_default().to_owned();
                let call = CallFacts {
                    name: &name,
                    ..call
                };
                let facts = call.for_plugin(id, config);
                *config = self.edit(&mut step, plugin, Hook::Configure, &facts, config, limits)?;
            }
        }
        Ok(report.findings)
    }

    /// Runs one hook that gives edits, and applies them within `step`.
    fn edit(
        &self,
        step: &mut Step,
        plugin: &Plugin,
        hook: Hook,
        facts: &HookFacts,
        config: &VmConfig,
        limits: &NodeLimits,
    ) -> Result<VmConfig, String> {
        let id = &plugin.manifest.id;
        let HookOutput::Edits(asked) = self.call(plugin, hook, facts)? else {
            unreachable!("{} gives edits", hook.as_str());
        };
        step.apply(config, id, &asked, limits).map_err(|reason| {
            let reason = bounds::printable(&reason, bounds::MAX_MESSAGE_BYTES);
            format!("plugin {id}: {reason}")
        })
    }

    fn call(&self, plugin: &Plugin, hook: Hook, facts: &HookFacts) -> Result<HookOutput, String> {
        self.host
            .call(plugin, hook, facts)
            .map_err(|err| err.to_string())
    }

    fn record_path(&self, vmid: u32) -> PathBuf {
        self.records_dir.join(format!("{vmid}.json"))
    }

    fn read_record(&self, vmid: u32) -> Option<ClassVmRecord> {
        let text = std::fs::read(self.record_path(vmid)).ok()?;
        match serde_json::from_slice(&text) {
            Ok(record) => Some(record),
            Err(err) => {
                tracing::error!(vmid, %err, "unreadable class VM record");
                None
            }
        }
    }

    fn write_record(&self, vmid: u32, record: &ClassVmRecord) -> Result<(), String> {
        let write = || -> std::io::Result<()> {
            std::fs::create_dir_all(&self.records_dir)?;
            let text = serde_json::to_vec(record).map_err(std::io::Error::other)?;
            proxlab_link::files::write_atomic(&self.record_path(vmid), &text, false)
        };
        write().map_err(|err| format!("cannot record VM {vmid}: {err}"))
    }

    /// Remembers a new VM's plugins and facts for the hooks that run later.
    pub fn remember(&self, steps: &PluginSteps, vmid: u32, name: &str) -> Result<(), String> {
        let record = ClassVmRecord {
            plugins: steps.plugins.clone(),
            class: steps.class.clone(),
            vm: steps.vms.get(&vmid).cloned().unwrap_or_default(),
            name: name.to_owned(),
            started: false,
            cluster: steps.cluster.clone(),
            site: steps.site.clone(),
            settings: steps.settings.clone(),
        };
        self.write_record(vmid, &record)
    }

    /// Whether a VM's plugins have a `hook` (that has not run yet, for `after-start`).
    pub fn has_hook(&self, vmid: u32, hook: Hook) -> bool {
        self.read_record(vmid).is_some_and(|record| {
            !(hook == Hook::AfterStart && record.started)
                && record.plugins.iter().any(|id| {
                    self.get(id)
                        .is_some_and(|p| p.manifest.hooks.contains(&hook))
                })
        })
    }

    /// Forgets a VM (it was destroyed).
    pub fn forget(&self, vmid: u32) {
        let _ = std::fs::remove_file(self.record_path(vmid));
    }

    /// A student got the VM (`student` set) or was taken off it (`None`): its `name` hooks
    /// rename it and its `assigned` or `unassigned` hooks edit its config. Returns the
    /// config to write, when the hooks changed it. Blocking.
    pub fn assignment(
        &self,
        vmid: u32,
        student: Option<&PluginStudent>,
        config: &VmConfig,
        limits: &NodeLimits,
    ) -> Result<Option<VmConfig>, String> {
        let Some(mut record) = self.read_record(vmid) else {
            return Ok(None);
        };
        let hook = match student {
            Some(_) => Hook::Assigned,
            None => Hook::Unassigned,
        };
        let plugins = self.plugins_named(&record.plugins)?;
        // `unassigned` hooks are told who the student was.
        if let Some(student) = student {
            record.vm.student = Some(student.username.clone());
            record.vm.student_facts = Some(student.clone());
        }
        let mut step = Step::default();
        let mut edited = config.clone();
        for plugin in &plugins {
            let id = &plugin.manifest.id;
            let hooks = &plugin.manifest.hooks;
            if hooks.contains(&Hook::Name) && student.is_some() {
                let facts = record.call_facts(vmid).for_plugin(id, &edited);
                let HookOutput::Naming(naming) = self.call(plugin, Hook::Name, &facts)? else {
                    unreachable!("name gives a naming");
                };
                edited = step
                    .apply(
                        &edited,
                        id,
                        &[Edit::Set("name".into(), naming.name.clone())],
                        limits,
                    )
                    .map_err(|reason| format!("plugin {id}: {reason}"))?;
                record.name = naming.name;
            }
            if hooks.contains(&hook) {
                let facts = record.call_facts(vmid).for_plugin(id, &edited);
                edited = self.edit(&mut step, plugin, hook, &facts, &edited, limits)?;
            }
        }
        if student.is_none() {
            record.vm.student = None;
            record.vm.student_facts = None;
        }
        self.write_record(vmid, &record)?;
        Ok((edited != *config).then_some(edited))
    }

    /// Runs `hook` (`after-start`, `after-reset` or `before-delete`) of a VM's plugins: all
    /// of them, even when one fails (the first failure is reported). `after-start` runs
    /// once: the record says so before it runs. Blocking.
    pub fn run_hook(&self, vmid: u32, hook: Hook, config: &VmConfig) -> StepReport {
        let mut report = StepReport::default();
        let Some(mut record) = self.read_record(vmid) else {
            return report;
        };
        if hook == Hook::AfterStart {
            if record.started {
                return report;
            }
            record.started = true;
            if let Err(err) = self.write_record(vmid, &record) {
                report.error = Some(err);
                return report;
            }
        }
        for id in &record.plugins {
            let Some(plugin) = self.get(id) else {
                report
                    .error
                    .get_or_insert_with(|| format!("plugin {id} is not installed on this node"));
                continue;
            };
            if !plugin.manifest.hooks.contains(&hook) {
                continue;
            }
            let facts = record.call_facts(vmid).for_plugin(id, config);
            match self.call(&plugin, hook, &facts) {
                Ok(HookOutput::Notice(Some(notice))) => report.notices.push(PluginNotice {
                    plugin: id.clone(),
                    message: notice.message,
                    secret: notice.secret,
                }),
                Ok(_) => {}
                Err(err) => {
                    report.error.get_or_insert(err);
                }
            }
        }
        report
    }
}
