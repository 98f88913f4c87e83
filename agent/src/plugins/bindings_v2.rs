//! The host side of contract 0.2.0, generated from `plugins/sdk/wit/v0.2` (world `agent`:
//! every hook).

wasmtime::component::bindgen!({
    path: "../plugins/sdk/wit/v0.2",
    world: "proxlab:plugin/agent",
});

pub(super) use exports::proxlab::plugin::{
    after_reset, after_start, assigned, before_delete, configure, name, unassigned, validate,
};
pub(super) use proxlab::plugin::{guest, host, http, store, types};
