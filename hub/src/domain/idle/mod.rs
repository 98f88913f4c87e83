//! Idle shutdown: each class's three policies (no connection after start, disconnected, idle
//! guest), as Azure Lab Services has them. Teachers set them here; [`sync`] hands them to the
//! agents, which enforce them on their nodes (so they hold while the hub is away), and
//! records what the agents report: warnings become notices to the VM's user with an "I'm
//! still here" button, shutdowns become audit entries and the reason on the VM's tile.

pub mod sync;

use proxlab_protocol::idle::{IdleGuest, IdlePolicy, IdleReason, IdleStillHere};
use serde::{Deserialize, Serialize};

use crate::HubState;
use crate::db::idle::{IdlePolicyRow, IdleStopRow};
use crate::db::now_unix;
use crate::domain::audit::{self, Outcome};
use crate::domain::classes::{ClassError, check_class_change, owned_class};
use crate::domain::viewer::Viewer;
use crate::domain::vms::{VmOpError, visible_vm};
use crate::vm_key::VmKey;

/// The longest a policy's time may be, in minutes (a day).
pub const MAX_POLICY_MINUTES: u32 = 1440;

/// How many past idle shutdowns a class's page shows.
const STOPS_SHOWN: i64 = 20;

/// A class's idle settings as teachers write them (the API's body, the page's form) and as
/// pages show them. A policy whose minutes are `None` is off.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdleSettings {
    /// Shut down a VM nobody connected to within this many minutes of its start.
    #[serde(default)]
    pub no_connection_minutes: Option<u32>,
    /// Shut down a VM this many minutes after its last session ended.
    #[serde(default)]
    pub disconnected_minutes: Option<u32>,
    /// Shut down a VM whose guest was idle (little CPU, no input) this many minutes.
    #[serde(default)]
    pub idle_guest_minutes: Option<u32>,
    /// Below this CPU use (percent of the VM's vCPUs) the guest counts as idle.
    #[serde(default = "default_cpu_percent")]
    pub idle_cpu_percent: u32,
    /// How long before a shutdown its user is warned.
    #[serde(default = "default_warn_minutes")]
    pub warn_minutes: u32,
    /// How long the guest has to shut down when asked.
    #[serde(default = "default_shutdown_minutes")]
    pub shutdown_minutes: u32,
    /// Whether a guest that ignores the request is powered off.
    #[serde(default = "default_hard_stop")]
    pub hard_stop: bool,
    /// Whether the warning is also shown inside the guest, where it has a guest agent.
    #[serde(default)]
    pub guest_message: bool,
}

fn default_cpu_percent() -> u32 {
    5
}
fn default_warn_minutes() -> u32 {
    5
}
fn default_shutdown_minutes() -> u32 {
    5
}
fn default_hard_stop() -> bool {
    true
}

impl Default for IdleSettings {
    /// Every policy off, the rest at its default.
    fn default() -> Self {
        Self {
            no_connection_minutes: None,
            disconnected_minutes: None,
            idle_guest_minutes: None,
            idle_cpu_percent: default_cpu_percent(),
            warn_minutes: default_warn_minutes(),
            shutdown_minutes: default_shutdown_minutes(),
            hard_stop: default_hard_stop(),
            guest_message: false,
        }
    }
}

impl IdleSettings {
    /// Whether any policy is on.
    pub fn any_on(&self) -> bool {
        self.no_connection_minutes.is_some()
            || self.disconnected_minutes.is_some()
            || self.idle_guest_minutes.is_some()
    }

    /// Checks every value; says what is wrong in words for the teacher.
    pub fn validate(&self) -> Result<(), String> {
        let policies = [
            ("no connection after start", self.no_connection_minutes),
            ("disconnected", self.disconnected_minutes),
            ("idle guest", self.idle_guest_minutes),
        ];
        for (name, minutes) in policies {
            if minutes.is_some_and(|m| m == 0 || m > MAX_POLICY_MINUTES) {
                return Err(format!(
                    "the {name} time must be 1 to {MAX_POLICY_MINUTES} minutes"
                ));
            }
        }
        if !(1..=100).contains(&self.idle_cpu_percent) {
            return Err("the idle CPU threshold must be 1 to 100 percent".into());
        }
        if self.warn_minutes > 60 {
            return Err("the warning may come at most 60 minutes ahead".into());
        }
        if !(1..=30).contains(&self.shutdown_minutes) {
            return Err("the guest must get 1 to 30 minutes to shut down".into());
        }
        let shortest = policies.iter().filter_map(|(_, minutes)| *minutes).min();
        if shortest.is_some_and(|shortest| self.warn_minutes >= shortest) {
            return Err("the warning must come sooner than the shortest policy's time".into());
        }
        Ok(())
    }

    /// What the agents enforce; `None` when every policy is off.
    pub fn policy(&self) -> Option<IdlePolicy> {
        let secs = |minutes: u32| minutes.saturating_mul(60);
        self.any_on().then(|| IdlePolicy {
            no_connection_secs: self.no_connection_minutes.map(secs),
            disconnected_secs: self.disconnected_minutes.map(secs),
            idle_guest: self.idle_guest_minutes.map(|minutes| IdleGuest {
                secs: secs(minutes),
                cpu_percent: self.idle_cpu_percent.min(100) as u8,
            }),
            warn_secs: secs(self.warn_minutes),
            shutdown_timeout_secs: secs(self.shutdown_minutes),
            hard_stop: self.hard_stop,
            guest_message: self.guest_message,
        })
    }

    fn from_row(row: &IdlePolicyRow) -> Self {
        let minutes = |value: Option<i64>| value.and_then(|m| u32::try_from(m).ok());
        Self {
            no_connection_minutes: minutes(row.no_connection_minutes),
            disconnected_minutes: minutes(row.disconnected_minutes),
            idle_guest_minutes: minutes(row.idle_guest_minutes),
            idle_cpu_percent: u32::try_from(row.idle_cpu_percent).unwrap_or(5),
            warn_minutes: u32::try_from(row.warn_minutes).unwrap_or(5),
            shutdown_minutes: u32::try_from(row.shutdown_minutes).unwrap_or(5),
            hard_stop: row.hard_stop,
            guest_message: row.guest_message,
        }
    }

    fn row(&self, class_id: i64, updated_by: &str) -> IdlePolicyRow {
        IdlePolicyRow {
            class_id,
            no_connection_minutes: self.no_connection_minutes.map(i64::from),
            disconnected_minutes: self.disconnected_minutes.map(i64::from),
            idle_guest_minutes: self.idle_guest_minutes.map(i64::from),
            idle_cpu_percent: i64::from(self.idle_cpu_percent),
            warn_minutes: i64::from(self.warn_minutes),
            shutdown_minutes: i64::from(self.shutdown_minutes),
            hard_stop: self.hard_stop,
            guest_message: self.guest_message,
            updated_by: updated_by.to_owned(),
            updated_at: now_unix(),
        }
    }

    /// One line for the audit log and the class page: which policies are on.
    pub fn summary(&self) -> String {
        let mut on = Vec::new();
        if let Some(m) = self.no_connection_minutes {
            on.push(format!("no connection {m} min"));
        }
        if let Some(m) = self.disconnected_minutes {
            on.push(format!("disconnected {m} min"));
        }
        if let Some(m) = self.idle_guest_minutes {
            on.push(format!(
                "idle guest {m} min (CPU < {} %)",
                self.idle_cpu_percent
            ));
        }
        if on.is_empty() {
            return "off".into();
        }
        let stop = if self.hard_stop {
            "then power off"
        } else {
            "no power off"
        };
        let inside = if self.guest_message {
            " (in the guest too)"
        } else {
            ""
        };
        format!(
            "{}; warn {} min ahead{inside}; {} min to shut down, {stop}",
            on.join(", "),
            self.warn_minutes,
            self.shutdown_minutes
        )
    }
}

/// A class's idle settings and its latest idle shutdowns, for its page and the API.
#[derive(Debug, Clone, Serialize)]
pub struct ClassIdle {
    pub settings: IdleSettings,
    pub summary: String,
    pub stops: Vec<StopView>,
}

/// One idle shutdown, as the class page lists it.
#[derive(Debug, Clone, Serialize)]
pub struct StopView {
    pub vmid: u32,
    pub at: i64,
    /// What the tile said: "Stopped after 30 min idle".
    pub reason: String,
    /// `shut-down`, `powered-off` or `failed`.
    pub outcome: String,
    pub message: String,
}

/// A class's idle settings (every policy off if never set) and latest shutdowns.
pub async fn class_idle(
    state: &HubState,
    viewer: &Viewer,
    class_id: i64,
) -> Result<ClassIdle, ClassError> {
    owned_class(state, viewer, class_id).await?;
    let settings = state
        .db
        .class_idle_policy(class_id)
        .await?
        .map(|row| IdleSettings::from_row(&row))
        .unwrap_or_default();
    let stops = state
        .db
        .class_idle_stops(class_id, STOPS_SHOWN)
        .await?
        .iter()
        .map(stop_view)
        .collect();
    Ok(ClassIdle {
        summary: settings.summary(),
        settings,
        stops,
    })
}

/// Sets a class's idle settings; the agents get them within moments.
pub async fn set_class_idle(
    state: &HubState,
    viewer: &Viewer,
    class_id: i64,
    settings: &IdleSettings,
) -> Result<ClassIdle, ClassError> {
    let target = check_class_change(
        state,
        viewer,
        class_id,
        "class.idle.set",
        settings.validate(),
    )
    .await?;
    state
        .db
        .set_class_idle_policy(&settings.row(class_id, &viewer.username))
        .await?;
    audit::record(
        &state.db,
        viewer,
        "class.idle.set",
        &target,
        Outcome::Ok,
        &settings.summary(),
    )
    .await;
    sync::push_now(state).await;
    state.jobs.announce(class_id);
    class_idle(state, viewer, class_id).await
}

/// "I'm still here" from a user of the VM: its idle timers start again. Says whether a
/// warning was in force.
pub async fn still_here(state: &HubState, viewer: &Viewer, key: VmKey) -> Result<bool, VmOpError> {
    let vm = visible_vm(state, viewer, key).await?;
    let reply = state
        .registry
        .call(&vm.node, &IdleStillHere { vmid: vm.vmid })
        .await
        .map_err(|source| VmOpError::Node {
            action: "reach",
            source,
        })?;
    state.notices.withdraw(&notice_key(key));
    audit::record(
        &state.db,
        viewer,
        "vm.idle.still-here",
        &key.audit_target(),
        Outcome::Ok,
        if reply.was_warned {
            "a warning was in force"
        } else {
            ""
        },
    )
    .await;
    Ok(reply.was_warned)
}

/// The key of a VM's idle warning among the notices.
pub fn notice_key(vm: VmKey) -> String {
    format!("idle:{vm}")
}

/// Why a policy stops a VM, as its tile says it afterwards.
pub fn stopped_because(reason: IdleReason, idle_secs: i64) -> String {
    let minutes = (idle_secs + 59) / 60;
    match reason {
        IdleReason::NoConnection => {
            format!("Stopped: nobody connected within {minutes} min of its start")
        }
        IdleReason::Disconnected => {
            format!("Stopped {minutes} min after its last session ended")
        }
        IdleReason::IdleGuest => format!("Stopped after {minutes} min idle"),
        IdleReason::Unknown => "Stopped by an idle policy".into(),
    }
}

/// Why a policy is about to stop a VM, for the warning.
fn idle_because(reason: IdleReason) -> &'static str {
    match reason {
        IdleReason::NoConnection => "nobody has connected to it since it started",
        IdleReason::Disconnected => "nobody is connected to it",
        IdleReason::IdleGuest => "it has been idle",
        IdleReason::Unknown => "it counts as idle",
    }
}

fn stop_view(row: &IdleStopRow) -> StopView {
    let reason = serde_json::from_value(serde_json::Value::String(row.reason.clone()))
        .unwrap_or(IdleReason::Unknown);
    StopView {
        vmid: row.vmid,
        at: row.at,
        reason: stopped_because(reason, row.idle_secs),
        outcome: row.outcome.clone(),
        message: row.message.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_checked_and_turned_into_a_policy() {
        let off = IdleSettings::default();
        assert!(off.validate().is_ok());
        assert_eq!(off.policy(), None, "all off: no policy");
        assert_eq!(off.summary(), "off");

        let on = IdleSettings {
            disconnected_minutes: Some(15),
            idle_guest_minutes: Some(30),
            ..IdleSettings::default()
        };
        on.validate().unwrap();
        let policy = on.policy().unwrap();
        assert_eq!(policy.disconnected_secs, Some(900));
        assert_eq!(policy.no_connection_secs, None);
        assert_eq!(
            policy.idle_guest,
            Some(IdleGuest {
                secs: 1800,
                cpu_percent: 5
            })
        );
        assert_eq!((policy.warn_secs, policy.shutdown_timeout_secs), (300, 300));

        let bad = [
            IdleSettings {
                no_connection_minutes: Some(0),
                ..IdleSettings::default()
            },
            IdleSettings {
                idle_guest_minutes: Some(MAX_POLICY_MINUTES + 1),
                ..IdleSettings::default()
            },
            IdleSettings {
                idle_cpu_percent: 0,
                ..IdleSettings::default()
            },
            IdleSettings {
                shutdown_minutes: 31,
                ..IdleSettings::default()
            },
            IdleSettings {
                disconnected_minutes: Some(5),
                warn_minutes: 5,
                ..IdleSettings::default()
            },
        ];
        for settings in bad {
            assert!(settings.validate().is_err(), "{settings:?}");
        }
    }

    #[test]
    fn an_api_body_leaves_out_what_keeps_its_default_and_refuses_unknown_fields() {
        let settings: IdleSettings =
            serde_json::from_str(r#"{"idle_guest_minutes": 20, "hard_stop": false}"#).unwrap();
        assert_eq!(settings.idle_guest_minutes, Some(20));
        assert_eq!(settings.warn_minutes, 5);
        assert!(!settings.hard_stop);
        assert!(serde_json::from_str::<IdleSettings>(r#"{"idle_minutes": 20}"#).is_err());
    }

    #[test]
    fn a_tile_says_why_in_the_policys_words() {
        assert_eq!(
            stopped_because(IdleReason::IdleGuest, 1800),
            "Stopped after 30 min idle"
        );
        assert_eq!(
            stopped_because(IdleReason::Disconnected, 900),
            "Stopped 15 min after its last session ended"
        );
    }
}
