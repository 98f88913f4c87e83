//! What owners do with a class's template versions: publish the teacher VM as a new
//! version, roll back to a kept one, choose how many are kept, and see which VM is on which.
//! The jobs themselves are in [`super::publish`].

use serde::Serialize;

use super::{ClassError, VMID_RANGE, owned_class};
use crate::HubState;
use crate::db::DbError;
use crate::db::classes::ClassRow;
use crate::db::now_unix;
use crate::db::states::{ClassState, ClassVmKind, ClassVmState, Rollout, VersionState};
use crate::db::versions::{NewRollout, VersionRow};
use crate::domain::audit::{self, Outcome};
use crate::domain::viewer::Viewer;

/// The longest a publish note may be, in characters.
pub const MAX_NOTE_CHARS: usize = 500;
/// The longest warning running VMs get before a re-image shuts them down.
pub const MAX_WARN_MINUTES: u32 = 240;
/// How many versions a class may keep.
pub const MAX_KEPT_VERSIONS: u32 = 20;

/// How a publish or rollback moves the class's VMs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RolloutChoice {
    pub rollout: Rollout,
    /// How long running VMs are warned before they are shut down ([`Rollout::Now`]).
    pub warn_minutes: u32,
}

/// A version as the class page shows it.
#[derive(Debug, Clone, Serialize)]
pub struct VersionView {
    pub number: i64,
    pub note: String,
    pub state: VersionState,
    pub rollout: Rollout,
    pub created_by: String,
    pub created_at: i64,
    /// The same moment in RFC 3339.
    pub created: String,
    pub error: String,
    pub current: bool,
    /// Teacher and student VMs made from it.
    pub vms: usize,
    /// The nodes its bases are ready on.
    pub nodes: Vec<String>,
}

/// The class's versions with the VMs on each, newest first.
pub async fn versions(
    state: &HubState,
    viewer: &Viewer,
    class_id: i64,
) -> Result<Vec<VersionView>, ClassError> {
    let class = owned_class(state, viewer, class_id).await?;
    let rows = state.db.class_vms(class_id).await?;
    Ok(state
        .db
        .class_versions(class_id)
        .await?
        .into_iter()
        .map(|version| view(&class, &rows, version))
        .collect())
}

fn view(
    class: &ClassRow,
    rows: &[crate::db::classes::ClassVmRow],
    version: VersionRow,
) -> VersionView {
    let on_it = |kind_is_base: bool| {
        rows.iter()
            .filter(move |vm| (vm.kind == ClassVmKind::Base) == kind_is_base)
            .filter(move |vm| vm.version == Some(version.number))
    };
    VersionView {
        current: class.current_version == Some(version.number),
        vms: on_it(false).count(),
        nodes: on_it(true)
            .filter(|base| base.state == ClassVmState::Ready)
            .map(|base| base.node.clone())
            .collect(),
        number: version.number,
        note: version.note,
        state: version.state,
        rollout: version.rollout,
        created_by: version.created_by,
        created: crate::domain::tokens::format_time(version.created_at),
        created_at: version.created_at,
        error: version.error,
    }
}

fn check_choice(choice: RolloutChoice) -> Result<(), ClassError> {
    if choice.warn_minutes > MAX_WARN_MINUTES {
        return Err(ClassError::Invalid(format!(
            "warn running VMs for 0 to {MAX_WARN_MINUTES} minutes"
        )));
    }
    Ok(())
}

/// A class that can have versions: active, made from a template.
async fn versioned_class(
    state: &HubState,
    viewer: &Viewer,
    class_id: i64,
) -> Result<ClassRow, ClassError> {
    let class = owned_class(state, viewer, class_id).await?;
    if class.state != ClassState::Active {
        return Err(ClassError::Conflict("the class is being deleted".into()));
    }
    if class.template.is_none() || class.current_version.is_none() {
        return Err(ClassError::Invalid(
            "a class of empty VMs has no template to publish".into(),
        ));
    }
    Ok(class)
}

/// Publishes the teacher VM as the class's next version. Returns its number and the job.
pub async fn publish(
    state: &HubState,
    viewer: &Viewer,
    class_id: i64,
    note: &str,
    choice: RolloutChoice,
) -> Result<(i64, i64), ClassError> {
    let class = versioned_class(state, viewer, class_id).await?;
    let note = note.trim();
    if note.chars().count() > MAX_NOTE_CHARS || note.chars().any(char::is_control) {
        return Err(ClassError::Invalid(format!(
            "the note is one line of at most {MAX_NOTE_CHARS} characters"
        )));
    }
    check_choice(choice)?;
    let rows = state.db.class_vms(class_id).await?;
    let teacher = rows
        .iter()
        .find(|vm| vm.kind == ClassVmKind::Teacher && vm.state == ClassVmState::Ready)
        .ok_or_else(|| {
            ClassError::Conflict(
                "the class's teacher VM is not ready; publish from it once it is".into(),
            )
        })?;
    // A base on the teacher VM's node first, then one on every node the class has one on.
    let mut nodes = vec![teacher.node.clone()];
    for base in rows.iter().filter(|vm| {
        vm.kind == ClassVmKind::Base
            && vm.version == class.current_version
            && vm.state == ClassVmState::Ready
    }) {
        if !nodes.contains(&base.node) {
            nodes.push(base.node.clone());
        }
    }
    let publish = new_rollout(viewer, class_id, choice);
    let (number, job) = state
        .db
        .start_publish(&publish, note, &nodes, VMID_RANGE)
        .await
        .map_err(conflict)?;
    audit::record(
        &state.db,
        viewer,
        "class.publish",
        &format!("class:{class_id}"),
        Outcome::Ok,
        &format!("version {number} ({}): {note}", choice.rollout),
    )
    .await;
    state.jobs.wake(job);
    Ok((number, job))
}

/// Makes a kept version current again, moving VMs as `choice` says. Returns the job.
pub async fn roll_back(
    state: &HubState,
    viewer: &Viewer,
    class_id: i64,
    number: i64,
    choice: RolloutChoice,
) -> Result<i64, ClassError> {
    versioned_class(state, viewer, class_id).await?;
    check_choice(choice)?;
    if state.db.class_version(class_id, number).await?.is_none() {
        return Err(ClassError::Invalid(format!(
            "the class has no version {number}"
        )));
    }
    let rollout = new_rollout(viewer, class_id, choice);
    let job = state
        .db
        .start_rollout(&rollout, number)
        .await
        .map_err(conflict)?;
    audit::record(
        &state.db,
        viewer,
        "class.rollback",
        &format!("class:{class_id}"),
        Outcome::Ok,
        &format!("to version {number} ({})", choice.rollout),
    )
    .await;
    state.jobs.wake(job);
    Ok(job)
}

/// Sets how many versions the class keeps; older ones go at the next publish or rollback.
pub async fn set_kept_versions(
    state: &HubState,
    viewer: &Viewer,
    class_id: i64,
    keep: u32,
) -> Result<(), ClassError> {
    versioned_class(state, viewer, class_id).await?;
    if !(1..=MAX_KEPT_VERSIONS).contains(&keep) {
        return Err(ClassError::Invalid(format!(
            "keep 1 to {MAX_KEPT_VERSIONS} versions"
        )));
    }
    state.db.set_keep_versions(class_id, keep).await?;
    audit::record(
        &state.db,
        viewer,
        "class.keep_versions",
        &format!("class:{class_id}"),
        Outcome::Ok,
        &keep.to_string(),
    )
    .await;
    Ok(())
}

fn new_rollout(viewer: &Viewer, class_id: i64, choice: RolloutChoice) -> NewRollout<'_> {
    NewRollout {
        class_id,
        rollout: choice.rollout,
        warn_minutes: choice.warn_minutes,
        user_id: viewer.id,
        username: &viewer.username,
        now: now_unix(),
    }
}

fn conflict(err: DbError) -> ClassError {
    match err {
        DbError::Conflict(message) => ClassError::Conflict(message),
        other => other.into(),
    }
}
