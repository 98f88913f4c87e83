//! The host side of the contract, generated from `plugins/wit` (world `agent`: every hook).

wasmtime::component::bindgen!({
    path: "../plugins/sdk/wit/v0.1",
    world: "proxlab:plugin/agent",
    additional_derives: [serde::Serialize, serde::Deserialize],
});

pub(super) use exports::proxlab::plugin::{after_start, configure, name, validate};
pub use proxlab::plugin::types::{
    ClassInfo, ConfigEdit, ExecResult, Finding, Naming, NodeFacts, Severity, VmInfo,
};
pub(super) use proxlab::plugin::{guest, host, types};
