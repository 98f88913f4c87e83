//! Running plugins: one engine per agent, one compiled component per plugin (cached by
//! content hash), and for every hook call a fresh store with a memory cap, a fuel budget
//! and a wall-clock deadline. Plugins get WASI with nothing in it (no files, network or
//! environment); what they print goes to the agent's log.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;
use sha2::{Digest, Sha256};
use wasmtime::component::{Component, HasSelf, Instance, InstancePre, Linker, ResourceTable};
use wasmtime::{Config, Engine, ResourceLimiter, Store, Trap};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::bindings::{self, ClassInfo, ExecResult, NodeFacts, VmInfo};
use super::bindings::{after_start, configure, name, validate};
use super::manifest::{Capability, Hook, Manifest};

/// How often the deadline clock ticks.
const EPOCH_TICK: Duration = Duration::from_millis(5);
/// The most a plugin may print per call before the rest is dropped.
const OUTPUT_CAPACITY: usize = 64 * 1024;

/// Limits and grants, from the `[plugins]` section of the agent config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PluginSettings {
    /// Where the operator drops plugins (one directory per plugin).
    pub dir: std::path::PathBuf,
    /// Linear memory a plugin may use, in MiB.
    pub memory_mib: u64,
    /// Fuel per call (roughly, WebAssembly instructions); 0 for unlimited.
    pub fuel: u64,
    /// Wall-clock limit per call, in milliseconds.
    pub deadline_ms: u64,
    /// Capabilities granted, by plugin id: `grants = { set-guest-password = ["guest-exec"] }`.
    pub grants: BTreeMap<String, Vec<Capability>>,
}

impl Default for PluginSettings {
    fn default() -> Self {
        Self {
            dir: "/etc/proxlab/plugins".into(),
            memory_mib: 64,
            fuel: 2_000_000_000,
            deadline_ms: 5_000,
            grants: BTreeMap::new(),
        }
    }
}

/// Why a plugin could not be loaded or its step failed; the message is for people.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("plugin {plugin}: {message}")]
pub struct PluginError {
    pub plugin: String,
    pub message: String,
}

fn failure(plugin: &str, message: impl Into<String>) -> PluginError {
    PluginError {
        plugin: plugin.to_owned(),
        message: message.into(),
    }
}

/// Runs a command in a VM's guest (the node's `qm guest exec`, or a stand-in for tests).
pub trait GuestExec: Send + Sync {
    fn exec(
        &self,
        vmid: u32,
        command: &str,
        args: &[String],
        stdin: Option<&str>,
        timeout: Duration,
    ) -> Result<ExecResult, String>;
}

/// A loaded plugin, ready to call.
pub struct Plugin {
    pub manifest: Manifest,
    /// Hex SHA-256 of the component.
    pub sha256: String,
    pre: InstancePre<PluginState>,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("manifest", &self.manifest)
            .field("sha256", &self.sha256)
            .finish_non_exhaustive()
    }
}

/// What a store holds during one call.
struct PluginState {
    plugin: String,
    wasi: WasiCtx,
    table: ResourceTable,
    limits: MemoryCap,
    facts: NodeFacts,
    guest: Option<Arc<dyn GuestExec>>,
    /// Set when the plugin used a capability it was not granted.
    denied: Option<String>,
}

impl WasiView for PluginState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// Refuses memory growth past the cap, remembering that it did.
struct MemoryCap {
    max_bytes: usize,
    hit: bool,
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = desired <= self.max_bytes;
        self.hit |= !allowed;
        Ok(allowed)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

impl bindings::types::Host for PluginState {}

impl bindings::host::Host for PluginState {
    fn log(&mut self, level: bindings::host::Level, message: String) {
        let plugin = &self.plugin;
        let message: String = message.chars().take(4096).collect();
        match level {
            bindings::host::Level::Debug => tracing::debug!(%plugin, "{message}"),
            bindings::host::Level::Info => tracing::info!(%plugin, "{message}"),
            bindings::host::Level::Warn => tracing::warn!(%plugin, "{message}"),
            bindings::host::Level::Error => tracing::error!(%plugin, "{message}"),
        }
    }

    fn facts(&mut self) -> NodeFacts {
        self.facts.clone()
    }
}

impl bindings::guest::Host for PluginState {
    fn exec(
        &mut self,
        vmid: u32,
        command: String,
        args: Vec<String>,
        stdin: Option<String>,
        timeout_ms: u32,
    ) -> Result<ExecResult, String> {
        let Some(guest) = self.guest.clone() else {
            let message = "called guest-exec, which the operator has not granted it \
                 (grants in the agent config's [plugins] section)"
                .to_owned();
            self.denied = Some(message.clone());
            return Err(message);
        };
        let timeout = Duration::from_millis(u64::from(timeout_ms.clamp(100, 60_000)));
        guest.exec(vmid, &command, &args, stdin.as_deref(), timeout)
    }
}

/// Stops the deadline clock when the host goes.
struct Ticker(Arc<AtomicBool>);

impl Drop for Ticker {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Loads and runs plugins.
pub struct PluginHost {
    engine: Engine,
    linker: Linker<PluginState>,
    settings: PluginSettings,
    facts: NodeFacts,
    guest: Option<Arc<dyn GuestExec>>,
    compiled: Mutex<HashMap<String, Component>>,
    _ticker: Ticker,
}

impl PluginHost {
    /// A host for this node; `guest` runs guest commands for plugins granted `guest-exec`.
    pub fn new(
        settings: PluginSettings,
        facts: NodeFacts,
        guest: Option<Arc<dyn GuestExec>>,
    ) -> anyhow::Result<Self> {
        let mut config = Config::new();
        config.consume_fuel(true).epoch_interruption(true);
        let setup = |err: wasmtime::Error| anyhow::anyhow!("setting up plugins: {err:#}");
        let engine = Engine::new(&config).map_err(setup)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(setup)?;
        bindings::Agent::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state)
            .map_err(setup)?;
        let stop = Arc::new(AtomicBool::new(false));
        let ticking = engine.clone();
        let stopped = stop.clone();
        std::thread::Builder::new()
            .name("plugin-clock".into())
            .spawn(move || {
                while !stopped.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    ticking.increment_epoch();
                }
            })?;
        Ok(Self {
            engine,
            linker,
            settings,
            facts,
            guest,
            compiled: Mutex::new(HashMap::new()),
            _ticker: Ticker(stop),
        })
    }

    pub fn settings(&self) -> &PluginSettings {
        &self.settings
    }

    /// Compiles a component, or finds it compiled already.
    fn compile(&self, id: &str, wasm: &[u8], sha256: &str) -> Result<Component, PluginError> {
        if let Some(component) = self.compiled.lock().expect("not poisoned").get(sha256) {
            return Ok(component.clone());
        }
        let component = Component::new(&self.engine, wasm)
            .map_err(|err| failure(id, format!("not a valid component: {err:#}")))?;
        self.compiled
            .lock()
            .expect("not poisoned")
            .insert(sha256.to_owned(), component.clone());
        Ok(component)
    }

    /// Loads a plugin: checks the manifest against what the component really exports and
    /// imports, and prepares it for calls.
    pub fn load(&self, manifest: Manifest, wasm: &[u8]) -> Result<Plugin, PluginError> {
        self.load_hashed(manifest, wasm, sha256_hex(wasm))
    }

    /// [`PluginHost::load`] for a component whose hash the caller computed already.
    pub fn load_hashed(
        &self,
        manifest: Manifest,
        wasm: &[u8],
        sha256: String,
    ) -> Result<Plugin, PluginError> {
        let id = manifest.id.clone();
        let component = self.compile(&id, wasm, &sha256)?;
        let ty = component.component_type();
        let exports: Vec<String> = ty
            .exports(&self.engine)
            .map(|(name, _)| name.to_owned())
            .collect();
        for hook in Hook::ALL {
            let wanted = hook.interface(&manifest.api);
            let exported = exports.contains(&wanted);
            let declared = manifest.hooks.contains(&hook);
            if declared && !exported {
                let other = exports
                    .iter()
                    .find(|name| name.starts_with(&format!("proxlab:plugin/{}@", hook.as_str())));
                return Err(failure(
                    &id,
                    match other {
                        Some(other) => format!(
                            "the manifest says API {} but the component exports {other}",
                            manifest.api
                        ),
                        None => format!(
                            "the manifest lists hook {} but the component does not export {wanted}",
                            hook.as_str()
                        ),
                    },
                ));
            }
            if exported && !declared {
                return Err(failure(
                    &id,
                    format!(
                        "the component exports hook {} but the manifest does not list it",
                        hook.as_str()
                    ),
                ));
            }
        }
        let guest_import = format!("proxlab:plugin/guest@{}", manifest.api);
        let imports_guest = ty
            .imports(&self.engine)
            .any(|(name, _)| name == guest_import);
        if imports_guest && !manifest.capabilities.contains(&Capability::GuestExec) {
            return Err(failure(
                &id,
                "the component imports guest-exec but the manifest does not request the \
                 guest-exec capability",
            ));
        }
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|err| failure(&id, format!("cannot be linked: {err:#}")))?;
        Ok(Plugin {
            manifest,
            sha256,
            pre,
        })
    }

    /// Whether the operator granted `capability` to `plugin`, and the plugin asked for it.
    fn granted(&self, plugin: &Plugin, capability: Capability) -> bool {
        plugin.manifest.capabilities.contains(&capability)
            && self
                .settings
                .grants
                .get(&plugin.manifest.id)
                .is_some_and(|granted| granted.contains(&capability))
    }

    /// Runs `call` on a fresh instance of `plugin` within its limits.
    fn run<R>(
        &self,
        plugin: &Plugin,
        hook: Hook,
        call: impl FnOnce(
            &mut Store<PluginState>,
            &InstancePre<PluginState>,
            &Instance,
        ) -> wasmtime::Result<R>,
    ) -> Result<R, PluginError> {
        let id = &plugin.manifest.id;
        if !plugin.manifest.hooks.contains(&hook) {
            return Err(failure(
                id,
                format!("does not implement hook {}", hook.as_str()),
            ));
        }
        let stdout = MemoryOutputPipe::new(OUTPUT_CAPACITY);
        let stderr = MemoryOutputPipe::new(OUTPUT_CAPACITY);
        let wasi = WasiCtxBuilder::new()
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .build();
        let guest = self
            .granted(plugin, Capability::GuestExec)
            .then(|| self.guest.clone())
            .flatten();
        let max_bytes = usize::try_from(self.settings.memory_mib << 20).unwrap_or(usize::MAX);
        let state = PluginState {
            plugin: id.clone(),
            wasi,
            table: ResourceTable::new(),
            limits: MemoryCap {
                max_bytes,
                hit: false,
            },
            facts: self.facts.clone(),
            guest,
            denied: None,
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| &mut state.limits);
        let fuel = match self.settings.fuel {
            0 => u64::MAX,
            fuel => fuel,
        };
        store
            .set_fuel(fuel)
            .map_err(|err| failure(id, err.to_string()))?;
        let ticks = self
            .settings
            .deadline_ms
            .div_ceil(EPOCH_TICK.as_millis() as u64)
            + 1;
        store.set_epoch_deadline(ticks);
        let outcome = plugin
            .pre
            .instantiate(&mut store)
            .and_then(|instance| call(&mut store, &plugin.pre, &instance));
        log_output(id, "stdout", &stdout);
        log_output(id, "stderr", &stderr);
        let state = store.data();
        if let Some(denied) = &state.denied {
            return Err(failure(id, denied.clone()));
        }
        outcome.map_err(|err| failure(id, self.explain(&err, state.limits.hit)))
    }

    /// Says why a call trapped, in words a teacher can pass on.
    fn explain(&self, err: &wasmtime::Error, memory_cap_hit: bool) -> String {
        if memory_cap_hit {
            return format!("ran out of memory (limit {} MiB)", self.settings.memory_mib);
        }
        match err.downcast_ref::<Trap>() {
            Some(Trap::OutOfFuel) => format!(
                "used up its fuel ({} units) before finishing",
                self.settings.fuel
            ),
            Some(Trap::Interrupt) => format!(
                "did not finish within its deadline of {} ms",
                self.settings.deadline_ms
            ),
            Some(trap) => format!("crashed: {trap}"),
            None => format!("failed: {err:#}"),
        }
    }

    /// Hook `name`.
    pub fn name(
        &self,
        plugin: &Plugin,
        class: &ClassInfo,
        vm: &VmInfo,
    ) -> Result<bindings::Naming, PluginError> {
        let naming = self
            .run(plugin, Hook::Name, |store, pre, instance| {
                name::GuestIndices::new(pre)?
                    .load(&mut *store, instance)?
                    .call_name(store, class, vm)
            })?
            .map_err(|message| failure(&plugin.manifest.id, message))?;
        proxlab_pve::ident::validate_vm_name(&naming.name).map_err(|err| {
            failure(
                &plugin.manifest.id,
                format!("gave the name {:?}: {err}", naming.name),
            )
        })?;
        proxlab_pve::ident::validate_vm_name(&naming.hostname).map_err(|err| {
            failure(
                &plugin.manifest.id,
                format!("gave the hostname {:?}: {err}", naming.hostname),
            )
        })?;
        Ok(naming)
    }

    /// Hook `configure`: the edits the plugin asks for, not yet checked (see
    /// [`super::edits::apply`]).
    pub fn configure(
        &self,
        plugin: &Plugin,
        class: &ClassInfo,
        vm: &VmInfo,
        config: &[(String, String)],
    ) -> Result<Vec<super::edits::Edit>, PluginError> {
        let config = config.to_vec();
        let edits = self
            .run(plugin, Hook::Configure, |store, pre, instance| {
                configure::GuestIndices::new(pre)?
                    .load(&mut *store, instance)?
                    .call_configure(store, class, vm, &config)
            })?
            .map_err(|message| failure(&plugin.manifest.id, message))?;
        Ok(edits
            .into_iter()
            .map(|edit| match edit {
                bindings::ConfigEdit::Set((key, value)) => super::edits::Edit::Set(key, value),
                bindings::ConfigEdit::Delete(key) => super::edits::Edit::Delete(key),
            })
            .collect())
    }

    /// Hook `after-start`.
    pub fn after_start(
        &self,
        plugin: &Plugin,
        class: &ClassInfo,
        vm: &VmInfo,
    ) -> Result<(), PluginError> {
        self.run(plugin, Hook::AfterStart, |store, pre, instance| {
            after_start::GuestIndices::new(pre)?
                .load(&mut *store, instance)?
                .call_after_start(store, class, vm)
        })?
        .map_err(|message| failure(&plugin.manifest.id, message))
    }

    /// Hook `validate`.
    pub fn validate(
        &self,
        plugin: &Plugin,
        class: &ClassInfo,
        vm: &VmInfo,
        config: &[(String, String)],
    ) -> Result<Vec<bindings::Finding>, PluginError> {
        let config = config.to_vec();
        self.run(plugin, Hook::Validate, |store, pre, instance| {
            validate::GuestIndices::new(pre)?
                .load(&mut *store, instance)?
                .call_validate(store, class, vm, &config)
        })
    }
}

fn log_output(plugin: &str, stream: &str, pipe: &MemoryOutputPipe) {
    let bytes = pipe.contents();
    for line in String::from_utf8_lossy(&bytes)
        .lines()
        .filter(|l| !l.is_empty())
    {
        tracing::info!(%plugin, stream, "{line}");
    }
}

/// Hex SHA-256: what names a component, in the compile cache and on the wire.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}
