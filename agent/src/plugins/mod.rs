//! WASM plugins: custom steps at named hooks, run in a sandbox (see `plugins/README.md`).

mod bindings;
pub mod bounds;
pub mod cases;
pub mod clone_steps;
mod compile_cache;
pub mod edits;
pub mod files;
pub mod first_start;
pub mod grants;
pub mod guest_exec;
pub mod host;
pub mod invoke;
mod memory;
pub use proxlab_protocol::plugin_manifest as manifest;
pub mod plugin_ops;
pub mod registry;

pub use bindings::{
    ClassInfo, ConfigEdit, ExecResult, Finding, Naming, NodeFacts, Severity, VmInfo,
};
pub use host::{GuestExec, Plugin, PluginError, PluginHost, PluginSettings};
pub use manifest::{Capability, Hook, Manifest};
pub use registry::PluginRegistry;
