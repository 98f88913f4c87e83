//! Who may see and do what. Every handler asks here; nothing else decides.
//!
//! - An admin sees and operates every VM, node, user, class and token.
//! - A teacher sees and operates the VMs assigned to them and every VM of the classes they
//!   own (or co-own), sees templates, and creates classes.
//! - A class's assistant (any account) sees and operates every VM of the class (start,
//!   stop, reset, consoles) and sees the class, but changes nothing about the class.
//! - A student sees and operates only the VMs assigned to them.
//!
//! A VM someone may not see is reported as not found, so its existence does not leak.

use proxlab_protocol::inventory::PowerState;

use crate::db::inventory::{VmFilter, VmRow};
use crate::domain::viewer::Viewer;

/// An action a user may ask for on a VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum VmAction {
    Start,
    Shutdown,
    Stop,
    /// Back to the class template: the VM's changes are lost.
    Reset,
}

impl VmAction {
    pub const ALL: [VmAction; 4] = [
        VmAction::Start,
        VmAction::Shutdown,
        VmAction::Stop,
        VmAction::Reset,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            VmAction::Start => "start",
            VmAction::Shutdown => "shutdown",
            VmAction::Stop => "stop",
            VmAction::Reset => "reset",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|action| action.as_str() == text)
    }
}

/// Narrows a listing to what the viewer may see.
pub fn restrict_to_viewer(viewer: &Viewer, mut filter: VmFilter) -> VmFilter {
    if !viewer.is_admin() {
        filter.visible_to = Some(viewer.id);
    }
    filter
}

/// Whether the viewer may see (and so operate) a VM; `staffs_class` says whether they own
/// or assist in the VM's class.
pub fn can_see_vm(viewer: &Viewer, vm: &VmRow, staffs_class: bool) -> bool {
    viewer.is_admin() || staffs_class || vm.assignee.as_deref() == Some(viewer.username.as_str())
}

/// The actions that make sense for a VM in its state, for someone who may see it. Only VMs
/// of a class made from a template can be reset: they have a base to go back to.
pub fn allowed_actions(vm: &VmRow) -> Vec<VmAction> {
    if vm.template || vm.lock.is_some() {
        return Vec::new();
    }
    let mut actions = match vm.status {
        PowerState::Stopped => vec![VmAction::Start],
        PowerState::Running | PowerState::Paused => vec![VmAction::Shutdown, VmAction::Stop],
        PowerState::Unknown => Vec::new(),
    };
    if vm.class_has_template && !actions.is_empty() {
        actions.push(VmAction::Reset);
    }
    actions
}

/// Whether an action can be asked of a VM at all, whatever its power state: templates and
/// locked VMs take none, and only class VMs (which have a base) can be reset.
pub fn may_request(vm: &VmRow, action: VmAction) -> Result<(), String> {
    if vm.template {
        return Err(format!("{} is a template: it cannot be run", vm.name));
    }
    if let Some(lock) = &vm.lock {
        return Err(format!(
            "{} is locked ({lock}); try again when that ends",
            vm.name
        ));
    }
    if action == VmAction::Reset && !vm.class_has_template {
        return Err(format!("{} has no class template to be reset to", vm.name));
    }
    Ok(())
}

/// Templates (with their specs) are for the people who build classes.
pub fn can_see_templates(viewer: &Viewer) -> bool {
    viewer.is_staff()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::users::Role;

    fn viewer(id: i64, name: &str, role: Role) -> Viewer {
        Viewer {
            id,
            username: name.into(),
            role,
        }
    }

    fn vm(status: &str, assignee: Option<&str>) -> VmRow {
        VmRow {
            vmid: 100,
            status: serde_json::from_value(serde_json::json!(status)).unwrap(),
            assignee: assignee.map(str::to_owned),
            ..VmRow::sample(100)
        }
    }

    #[test]
    fn students_see_only_their_own_vms() {
        let alice = viewer(1, "alice", Role::Student);
        assert!(can_see_vm(&alice, &vm("stopped", Some("alice")), false));
        assert!(!can_see_vm(&alice, &vm("stopped", Some("bob")), false));
        assert!(!can_see_vm(&alice, &vm("stopped", None), false));
        let tina = viewer(2, "tina", Role::Teacher);
        assert!(can_see_vm(&tina, &vm("stopped", Some("bob")), true));
        assert!(!can_see_vm(&tina, &vm("stopped", Some("bob")), false));
        let filter = restrict_to_viewer(&alice, VmFilter::default());
        assert_eq!(filter.visible_to, Some(1));
    }

    #[test]
    fn admins_see_everything() {
        let root = viewer(9, "root", Role::Admin);
        assert!(can_see_vm(&root, &vm("running", None), false));
        assert_eq!(
            restrict_to_viewer(&root, VmFilter::default()).visible_to,
            None
        );
    }

    #[test]
    fn actions_follow_the_power_state() {
        assert_eq!(allowed_actions(&vm("stopped", None)), [VmAction::Start]);
        assert_eq!(
            allowed_actions(&vm("running", None)),
            [VmAction::Shutdown, VmAction::Stop]
        );
        let mut class_vm = vm("stopped", None);
        class_vm.class_id = Some(7);
        class_vm.class_has_template = true;
        assert_eq!(
            allowed_actions(&class_vm),
            [VmAction::Start, VmAction::Reset]
        );
        let mut locked = vm("stopped", None);
        locked.lock = Some("clone".into());
        assert!(allowed_actions(&locked).is_empty());
        let mut template = vm("stopped", None);
        template.template = true;
        assert!(allowed_actions(&template).is_empty());
    }

    #[test]
    fn templates_are_for_staff() {
        assert!(!can_see_templates(&viewer(1, "s", Role::Student)));
        assert!(can_see_templates(&viewer(2, "t", Role::Teacher)));
        assert!(can_see_templates(&viewer(3, "a", Role::Admin)));
    }
}
