//! Running plugins: one engine per agent, one compiled component per plugin (cached by
//! content hash), and for every hook call a fresh store with a memory cap, a fuel budget
//! and a wall-clock deadline. Plugins get WASI with nothing in it (no files, network or
//! environment); what they print goes to the agent's log.
//!
//! The deadline holds in host calls too: a WASI sleep ends at the call's deadline (and the
//! next instruction is interrupted), and `guest-exec` waits no longer than the time left.
//! `guest-exec` reaches only the VM the hook was called for, runs only the guest commands
//! the operator granted, and only for the build the grant covers (see [`super::grants`]).
//! Everything a plugin hands back is bounded (see [`super::bounds`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Deserialize;
use sha2::{Digest, Sha256};
use wasmtime::component::{
    Component, HasSelf, Instance, InstancePre, Linker, Resource, ResourceTable,
};
use wasmtime::{Config, Engine, ResourceLimiter, Store, StoreContextMut, Trap};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::p2::{DynPollable, Pollable};
use wasmtime_wasi::{HostMonotonicClock, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::bindings::{self, ClassInfo, ExecResult, NodeFacts, VmInfo};
use super::bindings::{after_start, configure, name, validate};
use super::bindings_v2;
use super::bounds::{self, printable};
use super::edits::Edit;
use super::grants::{self, Grant};
use super::host_v2::{bounded_edits, bounded_findings, unrequested_import};
use super::manifest::{Capability, Hook, Manifest};
use super::store::PluginStores;

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
    /// Wall-clock limit of an `after-start` call, which runs after a VM's first start and
    /// may wait on guest commands, in milliseconds.
    pub after_start_deadline_ms: u64,
    /// Wall-clock limit for all the plugin steps of one new VM together, in milliseconds.
    pub steps_deadline_ms: u64,
    /// Grants by plugin id (see [`super::grants`]).
    pub grants: BTreeMap<String, Grant>,
}

impl Default for PluginSettings {
    fn default() -> Self {
        Self {
            dir: "/etc/proxlab/plugins".into(),
            memory_mib: 64,
            fuel: 2_000_000_000,
            deadline_ms: 5_000,
            after_start_deadline_ms: 60_000,
            steps_deadline_ms: 30_000,
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

/// A plugin's failure, its message bounded and printable whoever wrote it.
pub(super) fn failure(plugin: &str, message: impl Into<String>) -> PluginError {
    PluginError {
        plugin: plugin.to_owned(),
        message: printable(&message.into(), bounds::MAX_MESSAGE_BYTES),
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

    /// Writes `content` to the file `path` in a VM's guest.
    fn write_file(
        &self,
        vmid: u32,
        path: &str,
        content: &[u8],
        timeout: Duration,
    ) -> Result<(), String> {
        let _ = (vmid, path, content, timeout);
        Err("this node cannot write guest files".into())
    }
}

/// A loaded plugin, ready to call.
pub struct Plugin {
    pub manifest: Manifest,
    /// Hex SHA-256 of the component.
    pub sha256: String,
    /// Installed by the hub, rather than dropped in by the node's operator.
    pub from_hub: bool,
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
pub(super) struct PluginState {
    pub(super) plugin: String,
    pub(super) wasi: WasiCtx,
    pub(super) table: ResourceTable,
    pub(super) limits: MemoryCap,
    pub(super) facts: NodeFacts,
    /// When the call started, and its wall-clock deadline, which host calls keep too.
    pub(super) started: Instant,
    pub(super) deadline: Instant,
    /// The VM the hook was called for: the only one `guest-exec` reaches.
    pub(super) vmid: u32,
    /// `guest-exec`, if granted, and the guest commands it may run.
    pub(super) guest: Option<(Arc<dyn GuestExec>, Vec<String>)>,
    /// `guest-files`, if granted, and the guest paths it may write.
    pub(super) guest_files: Option<(Arc<dyn GuestExec>, Vec<String>)>,
    /// `http`, if granted: the hosts it may reach.
    pub(super) http_hosts: Option<Vec<String>>,
    /// `store`, if granted.
    pub(super) store: Option<Arc<PluginStores>>,
    /// Why each capability that is not granted is not, for the failure message.
    pub(super) not_granted: HashMap<Capability, String>,
    /// Log bytes written in this call.
    pub(super) logged: usize,
    /// Set when the plugin used a capability it was not granted, or beyond its grant.
    pub(super) denied: Option<String>,
}

impl PluginState {
    /// WASI's monotonic clock, as the plugin sees it (see [`CallClock`]).
    fn wasi_clock_now(&self) -> u64 {
        CallClock(self.started).now()
    }

    pub(super) fn deny(&mut self, message: &str) -> String {
        let message = printable(message, bounds::MAX_MESSAGE_BYTES);
        self.denied = Some(message.clone());
        message
    }

    /// The failure of a call to `capability`, which is not granted.
    pub(super) fn refuse_ungranted(&mut self, capability: Capability) -> String {
        let reason = self
            .not_granted
            .get(&capability)
            .cloned()
            .unwrap_or_else(|| "this host does not offer it".into());
        let message = format!(
            "called {}, which the operator has not granted it: {reason} (grants in the agent \
             config's [plugins] section)",
            capability.as_str()
        );
        self.deny(&message)
    }

    /// The time left before the call's deadline, if any.
    pub(super) fn time_left(&self) -> Result<Duration, String> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err("the call's deadline has passed".into());
        }
        Ok(left)
    }

    /// Runs a guest command for the hook's VM, as the grant allows.
    pub(super) fn guest_exec(
        &mut self,
        vmid: u32,
        command: &str,
        args: &[String],
        stdin: Option<&str>,
        timeout_ms: u32,
    ) -> Result<ExecResult, String> {
        let Some((guest, commands)) = self.guest.clone() else {
            return Err(self.refuse_ungranted(Capability::GuestExec));
        };
        if vmid != self.vmid {
            let message = format!(
                "guest-exec reaches only the VM its hook runs for (VM {}), not VM {vmid}",
                self.vmid
            );
            return Err(self.deny(&message));
        }
        if !grants::command_allowed(&commands, command, args) {
            let asked = std::iter::once(command)
                .chain(args.iter().map(String::as_str))
                .collect::<Vec<_>>()
                .join(" ");
            let message = format!(
                "the operator has not granted the guest command `{asked}` (guest_commands \
                 in its grant)"
            );
            return Err(self.deny(&message));
        }
        // The call's deadline holds here too.
        let left = self.time_left()?;
        let timeout = Duration::from_millis(u64::from(timeout_ms.clamp(100, 60_000))).min(left);
        guest
            .exec(vmid, command, args, stdin, timeout)
            .map_err(|err| printable(&err, bounds::MAX_MESSAGE_BYTES))
    }
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
pub(super) struct MemoryCap {
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
        if self.logged >= bounds::MAX_LOG_BYTES_PER_CALL {
            return;
        }
        let message = printable(&message, bounds::MAX_LOG_LINE_BYTES);
        self.logged += message.len();
        if self.logged >= bounds::MAX_LOG_BYTES_PER_CALL {
            tracing::warn!(
                %plugin,
                "logged {} KiB in one call; further messages of this call are dropped",
                bounds::MAX_LOG_BYTES_PER_CALL / 1024
            );
        }
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
        self.guest_exec(vmid, &command, &args, stdin.as_deref(), timeout_ms)
    }
}

/// Stops the deadline clock when the host goes.
struct Ticker(Arc<AtomicBool>);

impl Drop for Ticker {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

use super::compile_cache::CompileCache;

/// Loads and runs plugins.
pub struct PluginHost {
    engine: Engine,
    linker: Linker<PluginState>,
    settings: PluginSettings,
    facts: NodeFacts,
    guest: Option<Arc<dyn GuestExec>>,
    compiled: Mutex<HashMap<String, Component>>,
    on_disk: Option<CompileCache>,
    stores: Option<Arc<PluginStores>>,
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
        sleep_within_deadline(&mut linker).map_err(setup)?;
        bindings::Agent::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state)
            .map_err(setup)?;
        bindings_v2::Agent::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state)
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
            on_disk: None,
            stores: None,
            _ticker: Ticker(stop),
        })
    }

    /// The same host, keeping compiled plugins in `dir` across restarts.
    pub fn with_compile_cache(mut self, dir: &std::path::Path) -> anyhow::Result<Self> {
        let cache = CompileCache::open(dir, &self.engine)
            .map_err(|err| anyhow::anyhow!("plugin cache {}: {err}", dir.display()))?;
        self.on_disk = Some(cache);
        Ok(self)
    }

    /// The same host, keeping the `store` capability's data in `dir`.
    pub fn with_store_dir(mut self, dir: &std::path::Path) -> Self {
        self.stores = Some(Arc::new(PluginStores::new(dir.to_owned())));
        self
    }

    /// The node's facts.
    pub fn node_facts(&self) -> &NodeFacts {
        &self.facts
    }

    pub fn settings(&self) -> &PluginSettings {
        &self.settings
    }

    /// Compiles a component, or finds it compiled already.
    fn compile(&self, id: &str, wasm: &[u8], sha256: &str) -> Result<Component, PluginError> {
        if let Some(component) = self.compiled.lock().expect("not poisoned").get(sha256) {
            return Ok(component.clone());
        }
        let cached = self
            .on_disk
            .as_ref()
            .and_then(|cache| cache.load(&self.engine, sha256));
        let component = match cached {
            Some(component) => component,
            None => {
                let component = Component::new(&self.engine, wasm)
                    .map_err(|err| failure(id, format!("not a valid component: {err:#}")))?;
                if let Some(cache) = &self.on_disk {
                    cache.store(sha256, &component);
                }
                component
            }
        };
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
        let starts_with = super::memory::largest_initial_memory(wasm)
            .map_err(|err| failure(&id, format!("is not a readable component: {err}")))?;
        if starts_with > self.settings.memory_mib << 20 {
            return Err(failure(
                &id,
                format!(
                    "starts with {} MiB of memory, more than this node's limit of {} MiB \
                     ([plugins] memory_mib): it could never run",
                    starts_with.div_ceil(1 << 20),
                    self.settings.memory_mib
                ),
            ));
        }
        let ty = component.component_type();
        let exports: Vec<String> = ty
            .exports(&self.engine)
            .map(|(name, _)| name.to_owned())
            .collect();
        for hook in Hook::ALL
            .into_iter()
            .filter(|hook| hook.in_api(&manifest.api))
        {
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
        let imports: Vec<String> = ty
            .imports(&self.engine)
            .map(|(name, _)| name.to_owned())
            .collect();
        if let Some(reason) = unrequested_import(&manifest, &imports) {
            return Err(failure(&id, reason));
        }
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|err| failure(&id, format!("cannot be linked: {err:#}")))?;
        Ok(Plugin {
            manifest,
            sha256,
            from_hub: false,
            pre,
        })
    }

    /// The operator's grant of `capability` to this build of `plugin`, if the plugin asked
    /// for it; otherwise why not.
    fn grant(&self, plugin: &Plugin, capability: Capability) -> Result<&Grant, String> {
        if !plugin.manifest.capabilities.contains(&capability) {
            return Err("its manifest does not ask for it".into());
        }
        let grant = self
            .settings
            .grants
            .get(&plugin.manifest.id)
            .filter(|grant| grant.capabilities.contains(&capability))
            .ok_or_else(|| format!("there is no grant of {} to it", capability.as_str()))?;
        grants::coverage(grant, &plugin.sha256, plugin.from_hub).inspect_err(|reason| {
            tracing::warn!(plugin = %plugin.manifest.id, "{} is withheld: {reason}", capability.as_str());
        })?;
        Ok(grant)
    }

    /// The capabilities `plugin` asks for that this node does not grant this build, with why.
    pub fn withheld(&self, plugin: &Plugin) -> Vec<String> {
        plugin
            .manifest
            .capabilities
            .iter()
            .filter_map(|capability| {
                let reason = self.grant(plugin, *capability).err()?;
                Some(format!("{}: {reason}", capability.as_str()))
            })
            .collect()
    }

    /// What `plugin` may use of `capability` on this node, or why not.
    fn granted(&self, plugin: &Plugin, capability: Capability) -> Result<Grant, String> {
        self.grant(plugin, capability).cloned()
    }

    /// Runs `call` on a fresh instance of `plugin` within its limits.
    pub(super) fn run<R>(
        &self,
        plugin: &Plugin,
        hook: Hook,
        vmid: u32,
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
        let started = Instant::now();
        let stdout = MemoryOutputPipe::new(OUTPUT_CAPACITY);
        let stderr = MemoryOutputPipe::new(OUTPUT_CAPACITY);
        let wasi = WasiCtxBuilder::new()
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .monotonic_clock(CallClock(started))
            .build();
        let mut not_granted = HashMap::new();
        let mut grant_of = |capability| {
            self.granted(plugin, capability)
                .inspect_err(|reason| {
                    not_granted.insert(capability, reason.clone());
                })
                .ok()
        };
        let guest = grant_of(Capability::GuestExec)
            .and_then(|grant| Some((self.guest.clone()?, grant.guest_commands)));
        let guest_files = grant_of(Capability::GuestFiles)
            .and_then(|grant| Some((self.guest.clone()?, grant.guest_paths)));
        let http_hosts = grant_of(Capability::Http).map(|grant| grant.http_hosts);
        let store = grant_of(Capability::Store).and_then(|_| self.stores.clone());
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
            started,
            deadline: started + Duration::from_millis(self.deadline_ms(hook)),
            vmid,
            guest,
            guest_files,
            http_hosts,
            store,
            not_granted,
            logged: 0,
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
            .deadline_ms(hook)
            .div_ceil(EPOCH_TICK.as_millis() as u64)
            + 1;
        store.set_epoch_deadline(ticks);
        let outcome = plugin
            .pre
            .instantiate(&mut store)
            .and_then(|instance| call(&mut store, &plugin.pre, &instance));
        log_output(id, "stdout", &stdout);
        log_output(id, "stderr", &stderr);
        let stderr = String::from_utf8_lossy(&stderr.contents()).into_owned();
        let state = store.data();
        if let Some(denied) = &state.denied {
            return Err(failure(id, denied.clone()));
        }
        // A call that outlived its deadline in a host call (a sleep cut short) fails even if
        // it finished before the clock interrupted it.
        if outcome.is_ok() && Instant::now() > state.deadline {
            return Err(failure(id, self.deadline_passed(hook)));
        }
        outcome.map_err(|err| failure(id, self.explain(&err, state.limits.hit, hook, &stderr)))
    }

    /// A hook's wall-clock limit.
    fn deadline_ms(&self, hook: Hook) -> u64 {
        match hook {
            Hook::AfterStart | Hook::AfterReset => self.settings.after_start_deadline_ms,
            _ => self.settings.deadline_ms,
        }
    }

    fn deadline_passed(&self, hook: Hook) -> String {
        format!(
            "did not finish within its deadline of {} ms",
            self.deadline_ms(hook)
        )
    }

    /// Says why a call trapped, in words a teacher can pass on: the plugin's own where it
    /// left some on stderr (a Rust panic's message, what it wrote before exiting).
    fn explain(
        &self,
        err: &wasmtime::Error,
        memory_cap_hit: bool,
        hook: Hook,
        stderr: &str,
    ) -> String {
        if memory_cap_hit {
            return format!("ran out of memory (limit {} MiB)", self.settings.memory_mib);
        }
        // WASI 0.2 passes on only whether an exit was a failure, not its status.
        if let Some(wasmtime_wasi::I32Exit(status)) = err.downcast_ref() {
            let how = match status {
                0 => "exited before answering",
                _ => "exited with an error",
            };
            return match last_line(stderr) {
                Some(said) => format!("{how}: {said}"),
                None => how.to_owned(),
            };
        }
        match err.downcast_ref::<Trap>() {
            Some(Trap::OutOfFuel) => format!(
                "used up its fuel ({} units) before finishing",
                self.settings.fuel
            ),
            Some(Trap::Interrupt) => self.deadline_passed(hook),
            Some(trap) => match panic_message(stderr) {
                Some(message) => format!("panicked: {message}"),
                None => format!("crashed: {trap}"),
            },
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
            .run(plugin, Hook::Name, vm.vmid, |store, pre, instance| {
                name::GuestIndices::new(pre)?
                    .load(&mut *store, instance)?
                    .call_name(store, class, vm)
            })?
            .map_err(|message| failure(&plugin.manifest.id, message))?;
        self.check_naming(&plugin.manifest.id, &naming)?;
        Ok(naming)
    }

    /// A name and hostname must be DNS names.
    pub(super) fn check_naming(
        &self,
        plugin: &str,
        naming: &bindings::Naming,
    ) -> Result<(), PluginError> {
        for (what, value) in [("name", &naming.name), ("hostname", &naming.hostname)] {
            proxlab_pve::ident::validate_vm_name(value)
                .map_err(|err| failure(plugin, format!("gave the {what} {value:?}: {err}")))?;
        }
        Ok(())
    }

    /// Hook `configure`: the edits the plugin asks for, not yet checked (see
    /// [`super::edits::apply`]).
    pub fn configure(
        &self,
        plugin: &Plugin,
        class: &ClassInfo,
        vm: &VmInfo,
        config: &[(String, String)],
    ) -> Result<Vec<Edit>, PluginError> {
        let config = config.to_vec();
        let edits = self
            .run(plugin, Hook::Configure, vm.vmid, |store, pre, instance| {
                configure::GuestIndices::new(pre)?
                    .load(&mut *store, instance)?
                    .call_configure(store, class, vm, &config)
            })?
            .map_err(|message| failure(&plugin.manifest.id, message))?;
        bounded_edits(
            &plugin.manifest.id,
            edits
                .into_iter()
                .map(|edit| match edit {
                    bindings::ConfigEdit::Set((key, value)) => Edit::Set(key, value),
                    bindings::ConfigEdit::Delete(key) => Edit::Delete(key),
                })
                .collect(),
        )
    }

    /// Hook `after-start`.
    pub fn after_start(
        &self,
        plugin: &Plugin,
        class: &ClassInfo,
        vm: &VmInfo,
    ) -> Result<(), PluginError> {
        self.run(plugin, Hook::AfterStart, vm.vmid, |store, pre, instance| {
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
        let findings = self.run(plugin, Hook::Validate, vm.vmid, |store, pre, instance| {
            validate::GuestIndices::new(pre)?
                .load(&mut *store, instance)?
                .call_validate(store, class, vm, &config)
        })?;
        bounded_findings(&plugin.manifest.id, findings)
    }
}

/// A WASI sleep that ends at the call's deadline at the latest. Sleeping is a host call,
/// where the epoch deadline cannot interrupt a plugin; capped here, the sleep returns in
/// time and the plugin's next instruction is interrupted. Replaces the two functions of
/// `wasi:clocks/monotonic-clock` that make sleeps.
fn sleep_within_deadline(linker: &mut Linker<PluginState>) -> wasmtime::Result<()> {
    fn capped(
        mut store: StoreContextMut<'_, PluginState>,
        wanted: Duration,
    ) -> wasmtime::Result<Resource<DynPollable>> {
        let state = store.data_mut();
        let left = state.deadline.saturating_duration_since(Instant::now());
        let until = tokio::time::Instant::now() + wanted.min(left);
        let sleep = state.table.push(CappedSleep(until))?;
        wasmtime_wasi::p2::subscribe(&mut state.table, sleep)
    }
    linker.allow_shadowing(true);
    let mut clock = linker.instance(MONOTONIC_CLOCK)?;
    clock.func_wrap(
        "subscribe-duration",
        |store: StoreContextMut<'_, PluginState>, (nanos,): (u64,)| {
            Ok((capped(store, Duration::from_nanos(nanos))?,))
        },
    )?;
    clock.func_wrap(
        "subscribe-instant",
        |store: StoreContextMut<'_, PluginState>, (when,): (u64,)| {
            let now = store.data().wasi_clock_now();
            Ok((capped(
                store,
                Duration::from_nanos(when.saturating_sub(now)),
            )?,))
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

/// The interface the linker registers WASI's monotonic clock under (this wasmtime-wasi's
/// version; components built for older 0.2 releases resolve to it).
const MONOTONIC_CLOCK: &str = "wasi:clocks/monotonic-clock@0.2.12";

/// WASI's monotonic clock for one call: nanoseconds since the call started.
struct CallClock(Instant);

impl HostMonotonicClock for CallClock {
    fn resolution(&self) -> u64 {
        1
    }

    fn now(&self) -> u64 {
        u64::try_from(self.0.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

/// A sleep until a fixed instant.
struct CappedSleep(tokio::time::Instant);

impl Pollable for CappedSleep {
    fn ready<'a, 'b>(&'a mut self) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send + 'b>>
    where
        'a: 'b,
        Self: 'b,
    {
        Box::pin(tokio::time::sleep_until(self.0))
    }
}

fn log_output(plugin: &str, stream: &str, pipe: &MemoryOutputPipe) {
    let bytes = pipe.contents();
    for line in String::from_utf8_lossy(&bytes)
        .lines()
        .filter(|l| !l.is_empty())
    {
        let line = printable(line, bounds::MAX_LOG_LINE_BYTES);
        tracing::info!(%plugin, stream, "{line}");
    }
}

/// The message of the last Rust panic a plugin reported on stderr, and where it happened:
/// `the plugin gave up (at src/lib.rs:31:21)`. The standard library writes
/// `thread '…' (ID) panicked at FILE:LINE:COL:` (older releases without the ID), the message
/// on the lines after, then a `note:`.
fn panic_message(stderr: &str) -> Option<String> {
    let lines: Vec<&str> = stderr.lines().collect();
    let start = lines
        .iter()
        .rposition(|line| line.starts_with("thread '") && line.contains(" panicked at "))?;
    let (_, location) = lines[start].split_once(" panicked at ")?;
    let location = location.trim_end_matches(':');
    let message: Vec<&str> = lines[start + 1..]
        .iter()
        .take_while(|line| !line.starts_with("note: "))
        .map(|line| line.trim())
        .filter(|line| !line.is_empty())
        .collect();
    let message = printable(&message.join(" "), bounds::MAX_LOG_LINE_BYTES);
    Some(if message.is_empty() {
        format!("at {location}")
    } else {
        format!("{message} (at {location})")
    })
}

/// The last line a plugin wrote that says something.
fn last_line(stderr: &str) -> Option<String> {
    let line = stderr
        .lines()
        .map(str::trim)
        .rfind(|line| !line.is_empty())?;
    Some(printable(line, bounds::MAX_LOG_LINE_BYTES))
}

/// Hex SHA-256: what names a component, in the compile cache and on the wire.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_is_told_in_the_plugins_own_words() {
        let stderr = "starting\nthread '<unnamed>' panicked at src/lib.rs:31:21:\n\
                      the plugin gave up\n  on two lines\nnote: run with `RUST_BACKTRACE=1` \
                      environment variable to display a backtrace\n";
        assert_eq!(
            panic_message(stderr).as_deref(),
            Some("the plugin gave up on two lines (at src/lib.rs:31:21)")
        );
        assert_eq!(
            panic_message("thread '<unnamed>' (1) panicked at src/lib.rs:3:5:\n").as_deref(),
            Some("at src/lib.rs:3:5")
        );
        assert_eq!(panic_message("just a log line\n"), None);
        let escaped = panic_message("thread 'x' panicked at a.rs:1:1:\nbell\u{7}\n").unwrap();
        assert!(!escaped.contains('\u{7}'), "{escaped}");
    }

    #[test]
    fn the_last_line_written_is_what_an_exit_says() {
        assert_eq!(
            last_line("first\nno network configured\n\n").as_deref(),
            Some("no network configured")
        );
        assert_eq!(last_line(" \n"), None);
    }
}
