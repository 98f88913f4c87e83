//! Write proxlab plugins: the bindings of the contract `proxlab:plugin@0.2.0`, one module per
//! hook, with the WIT files inside the crate (`wit/v0.2/plugin.wit`).
//!
//! A plugin implements a hook module's `Guest` trait and exports it with that module's
//! `export!` macro. A plugin with several hooks does that once per hook, in one crate; the
//! types ([`Facts`], [`ConfigEdit`], ...) are the same in every module.
//!
//! ```ignore
//! use proxlab_plugin_sdk::{ConfigEdit, Facts, Naming, assigned, name};
//!
//! struct Plugin;
//!
//! impl name::Guest for Plugin {
//!     fn name(facts: Facts) -> Result<Naming, String> {
//!         let name = format!("{}-{}", facts.class.slug, facts.vm.index);
//!         Ok(Naming { hostname: name.clone(), name })
//!     }
//! }
//!
//! impl assigned::Guest for Plugin {
//!     fn assigned(facts: Facts) -> Result<Vec<ConfigEdit>, String> {
//!         let who = facts.student.map(|s| s.display_name).unwrap_or_default();
//!         Ok(vec![ConfigEdit::Describe(format!("Student: {who}"))])
//!     }
//! }
//!
//! name::export!(Plugin);
//! assigned::export!(Plugin);
//! ```
//!
//! What the agent offers: [`log`], and where the node's operator granted them, [`guest`]
//! (commands and files in the hook's VM), [`http`] (requests to listed hosts) and [`store`]
//! (a key-value store of the plugin's own). Plugins built against 0.1.0 use [`v0_1`].

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "imports",
        path: "wit/v0.2",
    });
}

pub use bindings::proxlab::plugin::host::{Level, log};
pub use bindings::proxlab::plugin::types::*;
pub use bindings::proxlab::plugin::{guest, http, store};

impl Facts {
    /// A setting's value, if it has one.
    pub fn setting(&self, name: &str) -> Option<&SettingValue> {
        self.settings
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value)
    }

    /// A `string` setting.
    pub fn text(&self, name: &str) -> Option<&str> {
        match self.setting(name)? {
            SettingValue::Text(text) => Some(text),
            _ => None,
        }
    }

    /// An `integer` setting.
    pub fn integer(&self, name: &str) -> Option<i64> {
        match self.setting(name)? {
            SettingValue::Integer(number) => Some(*number),
            _ => None,
        }
    }

    /// A `boolean` setting.
    pub fn boolean(&self, name: &str) -> Option<bool> {
        match self.setting(name)? {
            SettingValue::Boolean(flag) => Some(*flag),
            _ => None,
        }
    }

    /// A key of the VM's config.
    pub fn config(&self, key: &str) -> Option<&str> {
        self.vm
            .config
            .iter()
            .find(|(name, _)| name == key)
            .map(|(_, value)| value.as_str())
    }
}

/// Generates one 0.2 hook's bindings, sharing the types and imports above.
macro_rules! hook {
    ($module:ident, $world:literal, $macro:literal, $macro_ident:ident, $bindings:literal, $iface:ident) => {
        pub mod $module {
            #[doc(hidden)]
            pub mod bindings {
                wit_bindgen::generate!({
                    world: $world,
                    path: "wit/v0.2",
                    with: {
                        "proxlab:plugin/types@0.2.0": crate::bindings::proxlab::plugin::types,
                        "proxlab:plugin/host@0.2.0": crate::bindings::proxlab::plugin::host,
                        "proxlab:plugin/guest@0.2.0": crate::bindings::proxlab::plugin::guest,
                        "proxlab:plugin/http@0.2.0": crate::bindings::proxlab::plugin::http,
                        "proxlab:plugin/store@0.2.0": crate::bindings::proxlab::plugin::store,
                    },
                    pub_export_macro: true,
                    export_macro_name: $macro,
                    default_bindings_module: $bindings,
                });
            }
            pub use bindings::exports::proxlab::plugin::$iface::Guest;
            /// Exports a type implementing [`Guest`] as this hook of the plugin.
            pub use bindings::$macro_ident as export;
        }
    };
}

hook!(
    name,
    "name-hook",
    "export_name",
    export_name,
    "proxlab_plugin_sdk::name::bindings",
    name
);
hook!(
    configure,
    "configure-hook",
    "export_configure",
    export_configure,
    "proxlab_plugin_sdk::configure::bindings",
    configure
);
hook!(
    validate,
    "validate-hook",
    "export_validate",
    export_validate,
    "proxlab_plugin_sdk::validate::bindings",
    validate
);
hook!(
    assigned,
    "assigned-hook",
    "export_assigned",
    export_assigned,
    "proxlab_plugin_sdk::assigned::bindings",
    assigned
);
hook!(
    unassigned,
    "unassigned-hook",
    "export_unassigned",
    export_unassigned,
    "proxlab_plugin_sdk::unassigned::bindings",
    unassigned
);
hook!(
    before_delete,
    "before-delete-hook",
    "export_before_delete",
    export_before_delete,
    "proxlab_plugin_sdk::before_delete::bindings",
    before_delete
);
hook!(
    after_start,
    "after-start-hook",
    "export_after_start",
    export_after_start,
    "proxlab_plugin_sdk::after_start::bindings",
    after_start
);
hook!(
    after_reset,
    "after-reset-hook",
    "export_after_reset",
    export_after_reset,
    "proxlab_plugin_sdk::after_reset::bindings",
    after_reset
);

/// The 0.1.0 contract, for plugins written against it (the agent keeps running them).
pub mod v0_1 {
    /// Generates one 0.1 hook's bindings and gives them short names.
    macro_rules! hook_module {
        ($module:ident, $world:literal, $macro:literal, $macro_ident:ident, $bindings:literal, $iface:ident) => {
            pub mod $module {
                #[doc(hidden)]
                pub mod bindings {
                    wit_bindgen::generate!({
                        world: $world,
                        path: "wit/v0.1",
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
        "proxlab_plugin_sdk::v0_1::name::bindings",
        name
    );
    hook_module!(
        configure,
        "configure-plugin",
        "export_configure",
        export_configure,
        "proxlab_plugin_sdk::v0_1::configure::bindings",
        configure
    );
    hook_module!(
        after_start,
        "after-start-plugin",
        "export_after_start",
        export_after_start,
        "proxlab_plugin_sdk::v0_1::after_start::bindings",
        after_start
    );
    hook_module!(
        validate,
        "validate-plugin",
        "export_validate",
        export_validate,
        "proxlab_plugin_sdk::v0_1::validate::bindings",
        validate
    );
}
