//! The guest side of proxlab's plugin contract (`proxlab:plugin@0.1.0`).
//!
//! A plugin implements one hook's `Guest` trait and exports it with that hook's macro:
//!
//! ```ignore
//! use proxlab_plugin_sdk::name::{ClassInfo, Guest, Naming, VmInfo};
//!
//! struct Plugin;
//!
//! impl Guest for Plugin {
//!     fn name(class: ClassInfo, vm: VmInfo) -> Result<Naming, String> {
//!         let name = format!("{}-{}", class.slug, vm.index);
//!         Ok(Naming { hostname: name.clone(), name })
//!     }
//! }
//!
//! proxlab_plugin_sdk::name::export!(Plugin);
//! ```
//!
//! Every hook module also offers the host functions: [`name::log`], [`name::facts`] and
//! [`name::guest_exec`] (the same in each module).

/// Generates one hook's bindings and gives them short names.
macro_rules! hook_module {
    ($module:ident, $world:literal, $macro:literal, $macro_ident:ident, $bindings:literal, $iface:ident) => {
        pub mod $module {
            #[doc(hidden)]
            pub mod bindings {
                wit_bindgen::generate!({
                    world: $world,
                    path: "wit",
                    pub_export_macro: true,
                    export_macro_name: $macro,
                    default_bindings_module: $bindings,
                });
            }
            pub use bindings::exports::proxlab::plugin::$iface::Guest;
            /// Exports a type implementing [`Guest`] as the plugin.
            pub use bindings::$macro_ident as export;
            pub use bindings::proxlab::plugin::guest::exec as guest_exec;
            pub use bindings::proxlab::plugin::host::{Level, facts, log};
            pub use bindings::proxlab::plugin::types::*;
        }
    };
}

hook_module!(
    name,
    "name-plugin",
    "export_name",
    export_name,
    "proxlab_plugin_sdk::name::bindings",
    name
);
hook_module!(
    configure,
    "configure-plugin",
    "export_configure",
    export_configure,
    "proxlab_plugin_sdk::configure::bindings",
    configure
);
hook_module!(
    after_start,
    "after-start-plugin",
    "export_after_start",
    export_after_start,
    "proxlab_plugin_sdk::after_start::bindings",
    after_start
);
hook_module!(
    validate,
    "validate-plugin",
    "export_validate",
    export_validate,
    "proxlab_plugin_sdk::validate::bindings",
    validate
);
