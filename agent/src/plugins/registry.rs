//! The plugins an agent has: dropped in by the operator or installed by the hub, and how
//! the clone path and a VM's first start run them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use proxlab_protocol::plugins::{PluginClass, PluginSteps, PluginVm};
use proxlab_pve::config::VmConfig;
use proxlab_pve::policy::NodeLimits;
use serde::{Deserialize, Serialize};

use super::bounds;
use super::edits::{self, Edit};
use super::host::{Plugin, PluginError, PluginHost, sha256_hex};
use super::manifest::{Hook, Manifest};
use super::{ClassInfo, Severity, VmInfo, files};

/// A config's own section as key and value pairs.
fn entries(config: &VmConfig) -> Vec<(String, String)> {
    config
        .main()
        .entries()
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
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
/// run later (a rename when a student gets it, the steps after its first start).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ClassVmRecord {
    plugins: Vec<String>,
    class: PluginClass,
    vm: PluginVm,
    name: String,
    /// Whether the after-start steps ran.
    started: bool,
}

fn class_info(class: &PluginClass) -> ClassInfo {
    ClassInfo {
        id: class.id,
        name: class.name.clone(),
        slug: class.slug.clone(),
    }
}

fn vm_info(vmid: u32, vm: &PluginVm, name: &str) -> VmInfo {
    VmInfo {
        vmid,
        kind: vm.kind.clone(),
        index: vm.index,
        student: vm.student.clone(),
        name: name.to_owned(),
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

    /// The plugins of `steps`, in order; all must be here.
    fn lookup(&self, steps: &PluginSteps) -> Result<Vec<Arc<Plugin>>, String> {
        steps
            .plugins
            .iter()
            .map(|id| {
                self.get(id)
                    .ok_or_else(|| format!("plugin {id} is not installed on this node"))
            })
            .collect()
    }

    /// Runs the clone-time hooks on a new VM's config, in the class's order: `validate`
    /// (an error finding fails the VM), `name`, then `configure`. Blocking: call it off the
    /// async threads.
    pub fn prepare(
        &self,
        steps: &PluginSteps,
        vmid: u32,
        config: &mut VmConfig,
        limits: &NodeLimits,
    ) -> Result<(), String> {
        let plugins = self.lookup(steps)?;
        let class = class_info(&steps.class);
        let facts = steps.vms.get(&vmid).cloned().unwrap_or_default();
        for plugin in &plugins {
            let name = config.main().get("name").unwrap_or_default().to_owned();
            let vm = vm_info(vmid, &facts, &name);
            let hooks = &plugin.manifest.hooks;
            if hooks.contains(&Hook::Validate) {
                let findings = self
                    .host
                    .validate(plugin, &class, &vm, &entries(config))
                    .map_err(|err| err.to_string())?;
                for finding in findings {
                    match finding.severity {
                        Severity::Error => {
                            return Err(format!(
                                "plugin {}: {}",
                                plugin.manifest.id, finding.message
                            ));
                        }
                        Severity::Warning => {
                            tracing::warn!(plugin = %plugin.manifest.id, vmid, "{}", finding.message);
                        }
                        Severity::Ok => {}
                    }
                }
            }
            if hooks.contains(&Hook::Name) {
                let naming = self
                    .host
                    .name(plugin, &class, &vm)
                    .map_err(|err| err.to_string())?;
                *config = edits::apply(config, &[Edit::Set("name".into(), naming.name)], limits)
                    .map_err(|reason| format!("plugin {}: {reason}", plugin.manifest.id))?;
            }
            if hooks.contains(&Hook::Configure) {
                let vm = vm_info(vmid, &facts, config.main().get("name").unwrap_or_default());
                let asked = self
                    .host
                    .configure(plugin, &class, &vm, &entries(config))
                    .map_err(|err| err.to_string())?;
                *config = edits::apply(config, &asked, limits).map_err(|reason| {
                    let reason = bounds::printable(&reason, bounds::MAX_MESSAGE_BYTES);
                    format!("plugin {}: {reason}", plugin.manifest.id)
                })?;
            }
        }
        Ok(())
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

    fn write_record(&self, vmid: u32, record: &ClassVmRecord) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.records_dir)?;
        let text = serde_json::to_vec(record).map_err(std::io::Error::other)?;
        proxlab_link::files::write_atomic(&self.record_path(vmid), &text, false)
    }

    /// Remembers a new VM's plugins and facts for the hooks that run later.
    pub fn remember(&self, steps: &PluginSteps, vmid: u32, name: &str) -> std::io::Result<()> {
        let record = ClassVmRecord {
            plugins: steps.plugins.clone(),
            class: steps.class.clone(),
            vm: steps.vms.get(&vmid).cloned().unwrap_or_default(),
            name: name.to_owned(),
            started: false,
        };
        self.write_record(vmid, &record)
    }

    /// Whether a VM has after-start steps that have not run yet.
    pub fn has_first_start(&self, vmid: u32) -> bool {
        self.read_record(vmid).is_some_and(|record| {
            !record.started
                && record.plugins.iter().any(|id| {
                    self.get(id)
                        .is_some_and(|p| p.manifest.hooks.contains(&Hook::AfterStart))
                })
        })
    }

    /// Forgets a VM (it was destroyed).
    pub fn forget(&self, vmid: u32) {
        let _ = std::fs::remove_file(self.record_path(vmid));
    }

    /// A student got the VM: remembers them for its first start, and returns the name the
    /// `name` hooks give it now (`None` when no plugin names VMs). Blocking.
    pub fn assigned(&self, vmid: u32, student: &str) -> Result<Option<String>, String> {
        let Some(mut record) = self.read_record(vmid) else {
            return Ok(None);
        };
        record.vm.student = Some(student.to_owned());
        let class = class_info(&record.class);
        let mut renamed = None;
        for id in &record.plugins {
            let plugin = self
                .get(id)
                .ok_or_else(|| format!("plugin {id} is not installed on this node"))?;
            if plugin.manifest.hooks.contains(&Hook::Name) {
                let vm = vm_info(vmid, &record.vm, &record.name);
                let naming = self
                    .host
                    .name(&plugin, &class, &vm)
                    .map_err(|err| err.to_string())?;
                proxlab_pve::ident::validate_vm_name(&naming.name)
                    .map_err(|reason| format!("plugin {id}: {reason}"))?;
                record.name = naming.name.clone();
                renamed = Some(naming.name);
            }
        }
        self.write_record(vmid, &record)
            .map_err(|err| format!("cannot record VM {vmid}: {err}"))?;
        Ok(renamed)
    }

    /// Runs a VM's after-start steps if they have not run, once: the record says so before
    /// they run. Blocking.
    pub fn first_start(&self, vmid: u32) -> Result<(), String> {
        let Some(mut record) = self.read_record(vmid).filter(|record| !record.started) else {
            return Ok(());
        };
        record.started = true;
        self.write_record(vmid, &record)
            .map_err(|err| format!("cannot record VM {vmid}: {err}"))?;
        let class = class_info(&record.class);
        let vm = vm_info(vmid, &record.vm, &record.name);
        for id in &record.plugins {
            let plugin = self
                .get(id)
                .ok_or_else(|| format!("plugin {id} is not installed on this node"))?;
            if plugin.manifest.hooks.contains(&Hook::AfterStart) {
                self.host
                    .after_start(&plugin, &class, &vm)
                    .map_err(|err| err.to_string())?;
            }
        }
        Ok(())
    }
}
