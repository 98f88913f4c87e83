//! WASM plugins: custom steps at named hooks, run in a sandbox (see `plugins/README.md`).

mod bindings;
mod bindings_v2;
pub mod bounds;
pub mod cases;
pub mod clone_steps;
mod compile_cache;
pub mod edits;
pub mod facts;
pub mod files;
pub mod first_start;
pub mod grants;
pub mod guest_exec;
pub mod host;
pub mod host_v2;
pub mod http;
pub mod invoke;
mod memory;
pub use proxlab_protocol::plugin_manifest as manifest;
pub mod plugin_ops;
pub mod registry;
pub mod scaffold;
pub mod store;

pub use bindings::{
    ClassInfo, ConfigEdit, ExecResult, Finding, Naming, NodeFacts, Severity, VmInfo,
};
pub use facts::{HookFacts, VmFacts};
pub use host::{GuestExec, Plugin, PluginError, PluginHost, PluginSettings};
pub use host_v2::{HookOutput, Notice};
pub use manifest::{Capability, Hook, Manifest};
pub use registry::PluginRegistry;
