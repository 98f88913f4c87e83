//! One router per area, merged in [`crate::web::router`].

pub(super) mod admin;
pub(super) mod adopt;
pub(super) mod api;
pub(super) mod assets;
pub(super) mod auth;
pub(super) mod builds;
pub(super) mod classes;
pub(super) mod classes_api;
pub(super) mod consoles;
pub(super) mod events;
pub(super) mod hardware;
pub(super) mod idle;
pub(super) mod metrics;
pub(super) mod plugin_settings;
pub(super) mod plugins;
pub(super) mod portal;
pub(super) mod profile;
pub(super) mod quota;
pub(super) mod remote;
pub(super) mod rosters;
pub(super) mod schedules;
pub(super) mod sign_in;
pub(super) mod usage;
pub(super) mod versions;
