//! Who may see and do what. Every handler asks here; nothing else decides.
//!
//! - An admin sees and operates every VM, node, user and token.
//! - A teacher sees and operates the VMs assigned to them (classes add their class VMs), and
//!   sees templates.
//! - A student sees and operates only the VMs assigned to them.
//!
//! A VM someone may not see is reported as not found, so its existence does not leak.

use crate::auth::Viewer;
use crate::db::inventory::{VmFilter, VmRow};

/// A power action a user may ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum VmAction {
    Start,
    Shutdown,
    Stop,
}

impl VmAction {
    pub const ALL: [VmAction; 3] = [VmAction::Start, VmAction::Shutdown, VmAction::Stop];

    pub fn as_str(self) -> &'static str {
        match self {
            VmAction::Start => "start",
            VmAction::Shutdown => "shutdown",
            VmAction::Stop => "stop",
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

pub fn can_see_vm(viewer: &Viewer, vm: &VmRow) -> bool {
    viewer.is_admin() || vm.assignee.as_deref() == Some(viewer.username.as_str())
}

/// The actions that make sense for the VM's state, if the viewer may operate it at all.
pub fn allowed_actions(viewer: &Viewer, vm: &VmRow) -> Vec<VmAction> {
    if !can_see_vm(viewer, vm) || vm.template || vm.lock.is_some() {
        return Vec::new();
    }
    match vm.status.as_str() {
        "stopped" => vec![VmAction::Start],
        "running" | "paused" => vec![VmAction::Shutdown, VmAction::Stop],
        _ => Vec::new(),
    }
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
            node: "pve1".into(),
            name: "vm".into(),
            status: status.into(),
            template: false,
            cores: 1,
            sockets: 1,
            memory_mib: 512,
            tags: vec![],
            lock: None,
            uptime_secs: 0,
            cpu: 0.0,
            mem_bytes: 0,
            disks: vec![],
            nics: vec![],
            ips: vec![],
            status_changed_at: 0,
            updated_at: 0,
            assignee: assignee.map(str::to_owned),
        }
    }

    #[test]
    fn students_see_only_their_own_vms() {
        let alice = viewer(1, "alice", Role::Student);
        assert!(can_see_vm(&alice, &vm("stopped", Some("alice"))));
        assert!(!can_see_vm(&alice, &vm("stopped", Some("bob"))));
        assert!(!can_see_vm(&alice, &vm("stopped", None)));
        assert!(allowed_actions(&alice, &vm("running", Some("bob"))).is_empty());
        let filter = restrict_to_viewer(&alice, VmFilter::default());
        assert_eq!(filter.visible_to, Some(1));
    }

    #[test]
    fn admins_see_everything() {
        let root = viewer(9, "root", Role::Admin);
        assert!(can_see_vm(&root, &vm("running", None)));
        assert_eq!(
            restrict_to_viewer(&root, VmFilter::default()).visible_to,
            None
        );
    }

    #[test]
    fn actions_follow_the_power_state() {
        let alice = viewer(1, "alice", Role::Student);
        assert_eq!(
            allowed_actions(&alice, &vm("stopped", Some("alice"))),
            [VmAction::Start]
        );
        assert_eq!(
            allowed_actions(&alice, &vm("running", Some("alice"))),
            [VmAction::Shutdown, VmAction::Stop]
        );
        let mut locked = vm("stopped", Some("alice"));
        locked.lock = Some("clone".into());
        assert!(allowed_actions(&alice, &locked).is_empty());
        let mut template = vm("stopped", Some("alice"));
        template.template = true;
        assert!(allowed_actions(&alice, &template).is_empty());
    }

    #[test]
    fn templates_are_for_staff() {
        assert!(!can_see_templates(&viewer(1, "s", Role::Student)));
        assert!(can_see_templates(&viewer(2, "t", Role::Teacher)));
        assert!(can_see_templates(&viewer(3, "a", Role::Admin)));
    }
}
