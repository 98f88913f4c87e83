//! The hub's domain: what teachers, students, admins and the operator can do, each operation
//! checking who acts and recording it in the audit log. Every write of the portal pages, the
//! JSON API and the command line goes through here; the web layer parses and renders, the
//! database layer stores.
//!
//! Below everything else here: [`viewer`] (who acts), [`access`] (what a viewer may see and
//! do to a VM) and [`audit`] (what happened).

pub mod access;
pub mod accounts;
pub mod admin;
pub mod audit;
pub mod auth;
pub mod builds;
pub mod classes;
pub mod consoles;
pub mod idle;
pub mod notices;
pub mod plugin_settings;
pub mod plugins;
pub mod quota;
pub mod remote;
pub mod schedules;
pub mod sign_in;
pub mod tokens;
pub mod usage;
pub mod viewer;
pub mod vms;
