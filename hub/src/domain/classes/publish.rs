//! The jobs of a class's template versions. A *publish* makes version N from the teacher VM:
//! the teacher VM is shut down, its disks (with the chain under them) copied into a new base
//! on its node, that base copied to every other node the class has a base on, the teacher VM
//! moved onto the new base and its power restored. A *rollout* then moves the class's VMs to
//! the version as its `rollout` says (a rollback is a rollout of an older version). VMs move
//! only by being re-made on the new base (see the agent's `vm-reimage`); no overlay is ever
//! rebased. Each step is recorded as it ends (a base's state, a VM's version), so a job that
//! a hub or agent restart cut short resumes where it was. The garbage collection at the end
//! removes the bases no VM and no kept version needs.

use std::collections::HashSet;
use std::time::Duration;

use proxlab_protocol::inventory::PowerState;
use proxlab_protocol::vm_ops::{PowerAction, VmPower, VmReimage};

use super::steps::{StepResult, is_link_failure};
use super::{copy, name_stem};
use crate::HubState;
use crate::agents::CallError;
use crate::db::classes::{ClassRow, ClassVmRow, JobRow};
use crate::db::now_unix;
use crate::db::states::{ClassVmKind, ClassVmState, Rollout, VersionState};
use crate::db::tasks::TaskResultRow;
use crate::domain::notices::Notice;
use crate::vm_key::VmKey;

/// How long the teacher VM's guest gets to shut down before it is powered off.
const TEACHER_SHUTDOWN_SECS: u32 = 120;
/// How many VMs of a class are re-made at once.
const REIMAGE_CONCURRENCY: usize = 8;
/// How long a re-image (a stop and fresh overlays) may take.
const REIMAGE_TIMEOUT: Duration = Duration::from_secs(600);

/// The name of version `number`'s base on `node`.
pub(super) fn base_name(class: &ClassRow, number: i64, node: &str) -> String {
    format!("{}-v{number}-base-{node}", name_stem(&class.name, class.id))
}

/// Runs a publish job: makes the version (if not made yet), then rolls it out.
pub(super) async fn publish(
    state: &HubState,
    job: &JobRow,
    class: &ClassRow,
) -> StepResult<String> {
    let number = job.version.ok_or("the job names no version")?;
    let version = state
        .db
        .class_version(class.id, number)
        .await
        .map_err(|err| err.to_string())?
        .ok_or_else(|| format!("version {number} is gone"))?;
    let mut copies = Vec::new();
    match version.state {
        VersionState::Building => match build(state, job, class, number).await {
            Ok(made) => copies = made,
            Err(err) => {
                let error = format!("version {number} could not be made: {err}");
                let _ = state
                    .db
                    .set_version_state(class.id, number, VersionState::Failed, &error)
                    .await;
                if let Err(power) = restore_teacher(state, class, number).await {
                    tracing::warn!(class = class.id, %power, "teacher VM not started again");
                }
                let freed = collect_garbage(state, class.id).await;
                return Err(format!("{error}{}", sentence(&freed)));
            }
        },
        VersionState::Ready => {}
        VersionState::Failed | VersionState::Removed => {
            return Err(format!(
                "version {number} {}: {}",
                version.state, version.error
            ));
        }
    }
    let report = roll_out(state, job, class.id, number).await?;
    let copies: String = copies.iter().map(|copy| format!("{copy} ")).collect();
    Ok(format!("Version {number} published. {copies}{report}"))
}

/// Runs a rollout job (a rollback): moves the class to a version that exists.
pub(super) async fn rollout(
    state: &HubState,
    job: &JobRow,
    class: &ClassRow,
) -> StepResult<String> {
    let number = job.version.ok_or("the job names no version")?;
    let report = roll_out(state, job, class.id, number).await?;
    Ok(format!("Version {number} is current. {report}"))
}

/// Makes version `number`'s bases from the teacher VM, moves the teacher VM onto it and
/// restores its power. Every step is skipped when it was done before a restart.
async fn build(
    state: &HubState,
    job: &JobRow,
    class: &ClassRow,
    number: i64,
) -> StepResult<Vec<String>> {
    let mut copies = Vec::new();
    loop {
        let vms = class_vms(state, class.id).await?;
        let teacher = vms
            .iter()
            .find(|vm| vm.kind == ClassVmKind::Teacher && vm.state == ClassVmState::Ready)
            .ok_or("the class has no teacher VM to publish from")?;
        let bases: Vec<&ClassVmRow> = vms
            .iter()
            .filter(|vm| vm.kind == ClassVmKind::Base && vm.version == Some(number))
            .collect();
        let primary = bases
            .iter()
            .find(|base| base.node == teacher.node)
            .copied()
            .ok_or("no base was reserved on the teacher VM's node")?;
        if primary.state != ClassVmState::Ready {
            let power = state
                .db
                .vm(teacher.key)
                .await
                .map_err(|err| err.to_string())?
                .map_or(PowerState::Stopped, |vm| vm.status);
            state
                .db
                .keep_teacher_power(class.id, number, power_word(power))
                .await
                .map_err(|err| err.to_string())?;
            stop_gracefully(state, teacher).await?;
            let name = base_name(class, number, &primary.node);
            let making =
                super::jobs::make_base(state, job.id, class.id, teacher.key, primary, &name);
            // While its node makes the new base, the other nodes get the teacher VM's
            // overlays on the base both have; what fails here is copied the usual way after.
            // (Not before the teacher VM is in the inventory again after a hub restart.)
            let storage = super::jobs::first_disk_storage(state, teacher.key)
                .await
                .ok();
            let early = bases
                .iter()
                .filter(|base| base.state != ClassVmState::Ready && base.node != primary.node)
                .filter_map(|copy| {
                    let storage = storage.as_deref()?;
                    let previous = teacher.version?;
                    let reference = copy::Reference {
                        on_source: base_on(&vms, previous, &teacher.node)?,
                        on_target: base_on(&vms, previous, &copy.node)?,
                    };
                    Some(async move {
                        let name = base_name(class, number, &copy.node);
                        let sent = copy::copy_from_teacher(
                            state, class, teacher, copy, &name, storage, reference,
                        )
                        .await;
                        (copy.node.clone(), sent)
                    })
                });
            let (made, sent) = tokio::join!(making, futures_util::future::join_all(early));
            made?;
            for (node, sent) in sent {
                match sent {
                    Ok(0) => {}
                    Ok(bytes) => copies.push(copied_sentence(&node, bytes, true)),
                    Err(err) => {
                        tracing::warn!(class = class.id, %node, %err, "copying the teacher VM's changes failed; the new base is copied instead");
                    }
                }
            }
            continue;
        }
        if let Some(copy) = bases.iter().find(|base| base.state != ClassVmState::Ready) {
            let storage = super::jobs::first_disk_storage(state, teacher.key).await?;
            let name = base_name(class, number, &copy.node);
            // The new base is the teacher VM's base and its changes: where both nodes have
            // that base, only what differs from it travels.
            let reference = teacher.version.and_then(|previous| {
                Some(copy::Reference {
                    on_source: base_on(&vms, previous, &primary.node)?,
                    on_target: base_on(&vms, previous, &copy.node)?,
                })
            });
            let sent =
                copy::copy_base(state, class, primary, copy, &name, &storage, reference).await?;
            if let Some(bytes) = sent {
                copies.push(copied_sentence(&copy.node, bytes, reference.is_some()));
            }
            continue;
        }
        if teacher.version != Some(number) {
            stop_gracefully(state, teacher).await?;
            remake(state, teacher, primary.vmid, number)
                .await
                .map_err(|err| format!("the teacher VM could not be moved to it: {err}"))?;
        }
        restore_teacher(state, class, number).await?;
        state
            .db
            .set_version_state(class.id, number, VersionState::Ready, "")
            .await
            .map_err(|err| err.to_string())?;
        state.jobs.announce(class.id);
        return Ok(copies);
    }
}

/// "Its base went to pve2 as 64 MiB of changes."
fn copied_sentence(node: &str, bytes: u64, changes: bool) -> String {
    format!(
        "Its base went to {node} as {} of {}.",
        crate::text::human_bytes(bytes),
        if changes { "changes" } else { "images" }
    )
}

/// The ready base of version `number` on exactly `node`.
fn base_on(vms: &[ClassVmRow], number: i64, node: &str) -> Option<u32> {
    vms.iter()
        .find(|vm| {
            vm.kind == ClassVmKind::Base
                && vm.version == Some(number)
                && vm.state == ClassVmState::Ready
                && vm.node == node
        })
        .map(|vm| vm.vmid)
}

fn power_word(power: PowerState) -> &'static str {
    match power {
        PowerState::Running | PowerState::Paused => "running",
        _ => "stopped",
    }
}

/// Starts the teacher VM again if it ran before the publish stopped it.
async fn restore_teacher(state: &HubState, class: &ClassRow, number: i64) -> StepResult<()> {
    let version = state
        .db
        .class_version(class.id, number)
        .await
        .map_err(|err| err.to_string())?;
    if version.and_then(|version| version.teacher_power).as_deref() != Some("running") {
        return Ok(());
    }
    let vms = class_vms(state, class.id).await?;
    let Some(teacher) = vms.iter().find(|vm| vm.kind == ClassVmKind::Teacher) else {
        return Ok(());
    };
    let start = VmPower {
        vmid: teacher.vmid,
        action: PowerAction::Start,
    };
    super::jobs::call_when_online(state, &teacher.node, &start)
        .await
        .map(drop)
        .map_err(|err| format!("the teacher VM could not be started again: {err}"))
}

/// Shuts a VM down, powering it off when its guest does not stop in time.
async fn stop_gracefully(state: &HubState, vm: &ClassVmRow) -> StepResult<()> {
    let shutdown = VmPower {
        vmid: vm.vmid,
        action: PowerAction::Shutdown {
            timeout_secs: TEACHER_SHUTDOWN_SECS,
            force_stop: true,
        },
    };
    let timeout = Duration::from_secs(u64::from(TEACHER_SHUTDOWN_SECS) + 60);
    loop {
        state.registry.wait_for(&vm.node, true).await;
        let op_id = crate::agents::new_op_id();
        match state
            .registry
            .call_with(&vm.node, &shutdown, &op_id, timeout, |_| {})
            .await
        {
            Ok(_) => return Ok(()),
            Err(err) if is_link_failure(&err) => continue,
            Err(err) => return Err(format!("VM {} could not be shut down: {err}", vm.vmid)),
        }
    }
}

/// Re-makes a class VM on `base` (its node's base of version `number`): powers it off,
/// re-images it and records its version. The VM is left stopped.
pub(crate) async fn remake(
    state: &HubState,
    vm: &ClassVmRow,
    base: u32,
    number: i64,
) -> Result<(), CallError> {
    let stop = VmPower {
        vmid: vm.vmid,
        action: PowerAction::Stop,
    };
    super::jobs::call_when_online(state, &vm.node, &stop).await?;
    let reimage = VmReimage {
        vmid: vm.vmid,
        base_vmid: base,
        identity: vm.identity.clone(),
    };
    loop {
        state.registry.wait_for(&vm.node, true).await;
        let op_id = crate::agents::new_op_id();
        match state
            .registry
            .call_with(&vm.node, &reimage, &op_id, REIMAGE_TIMEOUT, |_| {})
            .await
        {
            Err(err) if is_link_failure(&err) => continue,
            Err(err) => return Err(err),
            Ok(_) => break,
        }
    }
    if let Err(err) = state.db.set_class_vm_version(vm.key, number).await {
        tracing::error!(%err, vmid = vm.vmid, "cannot record a VM's version");
    }
    state.jobs.announce(vm.class_id);
    Ok(())
}

/// Resets a class VM that a newer version waits for (see `VmRow::newer_version`) by
/// re-making it on that version, restoring its power unless `stopped`. `None` when the
/// version has no base on the VM's node, so a plain reset is all there is.
pub(crate) async fn reset_to_version(
    state: &HubState,
    vm: &crate::db::inventory::VmRow,
    class_id: i64,
    number: i64,
    stopped: bool,
) -> Result<Option<PowerState>, CallError> {
    let Ok(vms) = class_vms(state, class_id).await else {
        return Ok(None);
    };
    let (Some(row), Some(base)) = (
        vms.iter().find(|row| row.vmid == vm.vmid),
        base_for(&vms, number, &vm.node),
    ) else {
        return Ok(None);
    };
    remake(state, row, base, number).await?;
    if stopped || vm.status != PowerState::Running {
        return Ok(Some(PowerState::Stopped));
    }
    let start = VmPower {
        vmid: vm.vmid,
        action: PowerAction::Start,
    };
    let reply = state.registry.call(&vm.node, &start).await?;
    Ok(Some(reply.status))
}

/// The base of version `number` a VM on `node` is re-made on: the node's own, or else one
/// on shared storage elsewhere (the agent refuses one it cannot reach).
pub(crate) fn base_for(vms: &[ClassVmRow], number: i64, node: &str) -> Option<u32> {
    base_on(vms, number, node).or_else(|| {
        vms.iter()
            .filter(|vm| {
                vm.kind == ClassVmKind::Base
                    && vm.version == Some(number)
                    && vm.state == ClassVmState::Ready
            })
            .map(|vm| vm.vmid)
            .min()
    })
}

/// Moves the class to version `number` and its VMs as the version's rollout says: VMs no
/// student has, at once; the others only with [`Rollout::Now`], the stopped ones at once and
/// the running ones after a warning of the job's length and a shutdown. Then collects the
/// garbage. Returns what happened, in sentences.
async fn roll_out(
    state: &HubState,
    job: &JobRow,
    class_id: i64,
    number: i64,
) -> StepResult<String> {
    let version = state
        .db
        .class_version(class_id, number)
        .await
        .map_err(|err| err.to_string())?
        .filter(|version| version.state == VersionState::Ready)
        .ok_or_else(|| format!("version {number} is not ready"))?;
    state
        .db
        .make_version_current(class_id, number)
        .await
        .map_err(|err| err.to_string())?;
    state.jobs.announce(class_id);
    let vms = class_vms(state, class_id).await?;
    let outdated: Vec<&ClassVmRow> = vms
        .iter()
        .filter(|vm| vm.kind != ClassVmKind::Base && vm.state == ClassVmState::Ready)
        .filter(|vm| vm.version != Some(number))
        .filter(|vm| version.rollout == Rollout::Now || is_free(vm))
        .collect();
    let mut running = Vec::new();
    let mut stopped = Vec::new();
    for vm in outdated {
        let power = state.db.vm(vm.key).await.map_err(|err| err.to_string())?;
        match power.map(|vm| vm.status) {
            Some(PowerState::Running | PowerState::Paused) => running.push(vm),
            _ => stopped.push(vm),
        }
    }
    // The re-images are a task of the class: its log has the outcome for every VM. One a
    // hub crash cut short ends with what it did; this one does the rest.
    let action = format!("re-make from version {number}");
    state
        .db
        .end_cut_short_tasks(class_id, &action, now_unix())
        .await
        .map_err(|err| err.to_string())?;
    let task = match stopped.len() + running.len() {
        0 => None,
        total => Some(
            state
                .db
                .insert_task(class_id, &action, "a class publish", total, now_unix())
                .await
                .map_err(|err| err.to_string())?,
        ),
    };
    state.jobs.announce(class_id);
    let mut failures = remake_all(state, &vms, &stopped, number, task).await;
    if !running.is_empty() {
        warn_and_wait(state, job, class_id, number, &running).await?;
        let reason = format!("Stopped to be re-made from version {number} of the class");
        let stops: Vec<(VmKey, String)> =
            running.iter().map(|vm| (vm.key, reason.clone())).collect();
        super::tasks::stop_with_reasons(state, class_id, &stops, "a class publish", now_unix())
            .await
            .map_err(|err| err.to_string())?;
        failures.extend(remake_all(state, &vms, &running, number, task).await);
    }
    if let Some(task) = task {
        state
            .db
            .finish_task(task, now_unix())
            .await
            .map_err(|err| err.to_string())?;
    }
    state.notices.withdraw(&notice_key(class_id, number));
    let moved = stopped.len() + running.len() - failures.len();
    let mut report = format!("{} re-made from it.", super::jobs::count_vms(moved));
    let later = class_vms(state, class_id)
        .await?
        .iter()
        .filter(|vm| vm.kind != ClassVmKind::Base && vm.state == ClassVmState::Ready)
        .filter(|vm| vm.version != Some(number))
        .count()
        .saturating_sub(failures.len());
    if later > 0 {
        report.push_str(&match version.rollout {
            Rollout::NextReset => format!(" {later} more move when they are reset."),
            _ => format!(" {later} stay on their version; new students get this one."),
        });
    }
    if !failures.is_empty() {
        report.push_str(&format!(" Not re-made: {}.", failures.join("; ")));
    }
    let freed = collect_garbage(state, class_id).await;
    report.push_str(&sentence(&freed));
    Ok(report)
}

/// A VM no student has: it moves at once whatever the rollout.
fn is_free(vm: &ClassVmRow) -> bool {
    vm.kind == ClassVmKind::Student && vm.assignee.is_none()
}

fn notice_key(class_id: i64, number: i64) -> String {
    format!("publish:{class_id}:{number}")
}

/// Tells the users of the running VMs when they will be shut down and re-made, and waits
/// until then (a resumed job keeps its first deadline).
async fn warn_and_wait(
    state: &HubState,
    job: &JobRow,
    class_id: i64,
    number: i64,
    running: &[&ClassVmRow],
) -> StepResult<()> {
    let now = now_unix();
    let until = state
        .db
        .job_warn_until(job.id, now + i64::from(job.warn_minutes) * 60)
        .await
        .map_err(|err| err.to_string())?;
    if until <= now {
        return Ok(());
    }
    let vmids: Vec<VmKey> = running.iter().map(|vm| vm.key).collect();
    let user_ids: Vec<i64> = state
        .db
        .class_assignees(class_id)
        .await
        .map_err(|err| err.to_string())?
        .into_iter()
        .filter(|(vmid, _)| vmids.contains(vmid))
        .map(|(_, user)| user)
        .collect();
    let minutes = (until - now + 59) / 60;
    state.notices.publish(
        Notice {
            key: notice_key(class_id, number),
            user_ids,
            class_id,
            vmids,
            message: format!(
                "Version {number} of this class's VM was published. This VM is shut down and \
                 re-made from it in {minutes} min: whatever you changed on it is lost. Save \
                 your work somewhere else now."
            ),
            at: until,
            still_here: None,
            withdrawn: false,
        },
        now,
    );
    tokio::time::sleep(Duration::from_secs((until - now) as u64)).await;
    Ok(())
}

/// Re-makes `targets` on their nodes' bases of version `number`, a few at a time. Returns
/// a line per VM that failed.
async fn remake_all(
    state: &HubState,
    vms: &[ClassVmRow],
    targets: &[&ClassVmRow],
    number: i64,
    task: Option<i64>,
) -> Vec<String> {
    let permits = tokio::sync::Semaphore::new(REIMAGE_CONCURRENCY);
    let permits = &permits;
    let runs = targets.iter().map(|vm| async move {
        let _permit = permits.acquire().await;
        let outcome = match base_for(vms, number, &vm.node) {
            None => Err(format!("version {number} has no base")),
            Some(base) => remake(state, vm, base, number)
                .await
                .map_err(|err| err.to_string()),
        };
        if let Some(task) = task {
            let result = TaskResultRow {
                key: vm.key,
                vmid: vm.vmid,
                ok: outcome.is_ok(),
                message: match &outcome {
                    Ok(()) => format!("Re-made from version {number}; it is stopped."),
                    Err(err) => crate::text::sentence(&format!("not re-made: {err}")),
                },
                detail: String::new(),
            };
            if let Err(err) = state.db.insert_task_result(task, &result).await {
                tracing::error!(%err, vmid = vm.vmid, "cannot record a re-image");
            }
        }
        outcome.err().map(|err| format!("VM {}: {err}", vm.vmid))
    });
    futures_util::future::join_all(runs)
        .await
        .into_iter()
        .flatten()
        .collect()
}

/// What the garbage collection freed, as a sentence for a job's message.
fn sentence(freed: &Freed) -> String {
    if freed.bases.is_empty() && freed.kept_in_use.is_empty() {
        return String::new();
    }
    let mut text = String::new();
    if !freed.bases.is_empty() {
        text.push_str(&format!(
            " Removed {} of versions no VM uses ({}), {} freed.",
            if freed.bases.len() == 1 {
                "1 base".to_owned()
            } else {
                format!("{} bases", freed.bases.len())
            },
            freed
                .versions
                .iter()
                .map(|number| format!("v{number}"))
                .collect::<Vec<_>>()
                .join(", "),
            crate::text::human_bytes(freed.bytes)
        ));
    }
    if !freed.kept_in_use.is_empty() {
        text.push_str(&format!(
            " Kept in use by other VMs: base {}.",
            freed
                .kept_in_use
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    text
}

/// What a garbage collection removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Freed {
    /// The bases removed.
    pub bases: Vec<u32>,
    /// The versions they held.
    pub versions: Vec<i64>,
    /// Their images' size.
    pub bytes: u64,
    /// Bases the class no longer needs that a VM outside it still builds on.
    pub kept_in_use: Vec<u32>,
}

/// Removes the class's bases that nothing needs: a base goes when its version is not among
/// the `keep_versions` newest ready ones (the current one always counts), no VM of the class
/// is on it, and no other VM in the inventory has a disk on it. Versions whose bases are all gone
/// are marked removed.
pub async fn collect_garbage(state: &HubState, class_id: i64) -> Freed {
    match try_collect(state, class_id).await {
        Ok(freed) => freed,
        Err(err) => {
            tracing::warn!(class = class_id, %err, "class garbage collection stopped");
            Freed::default()
        }
    }
}

async fn try_collect(state: &HubState, class_id: i64) -> StepResult<Freed> {
    let class = super::jobs::class_row(state, class_id).await?;
    let versions = state
        .db
        .class_versions(class_id)
        .await
        .map_err(|err| err.to_string())?;
    let vms = class_vms(state, class_id).await?;
    let mut kept: HashSet<i64> = versions
        .iter()
        .filter(|version| version.state == VersionState::Ready)
        .take(class.keep_versions.max(1) as usize)
        .map(|version| version.number)
        .collect();
    kept.extend(class.current_version);
    kept.extend(
        vms.iter()
            .filter(|vm| vm.kind != ClassVmKind::Base)
            .filter_map(|vm| vm.version),
    );
    kept.extend(
        versions
            .iter()
            .filter(|version| version.state == VersionState::Building)
            .map(|version| version.number),
    );
    let inventory = state.db.list_vms().await.map_err(|err| err.to_string())?;
    let mut freed = Freed::default();
    for base in vms.iter().filter(|vm| vm.kind == ClassVmKind::Base) {
        let Some(number) = base.version else {
            continue;
        };
        if kept.contains(&number) {
            continue;
        }
        // The class's own VMs are where the hub recorded them (their re-images were
        // confirmed, and the inventory may not show them yet); any other VM on the base,
        // as the inventory has it, keeps the base.
        let users = inventory
            .iter()
            .filter(|vm| !vms.iter().any(|own| own.vmid == vm.vmid))
            .filter(|vm| {
                vm.disks
                    .iter()
                    .any(|disk| builds_on(&disk.volid, base.vmid))
            })
            .count();
        if users > 0 {
            freed.kept_in_use.push(base.vmid);
            continue;
        }
        let bytes: u64 = inventory
            .iter()
            .find(|vm| vm.vmid == base.vmid)
            .map_or(0, |vm| vm.disks.iter().map(|disk| disk.size_bytes).sum());
        super::jobs::destroy(state, class_id, base).await?;
        freed.bases.push(base.vmid);
        freed.bytes += bytes;
        if !freed.versions.contains(&number) {
            freed.versions.push(number);
        }
    }
    let remaining = class_vms(state, class_id).await?;
    for version in &versions {
        let has_bases = remaining
            .iter()
            .any(|vm| vm.kind == ClassVmKind::Base && vm.version == Some(version.number));
        if !has_bases && !kept.contains(&version.number) && version.state != VersionState::Removed {
            state
                .db
                .set_version_state(class_id, version.number, VersionState::Removed, "")
                .await
                .map_err(|err| err.to_string())?;
        }
    }
    freed.versions.sort_unstable();
    if !freed.bases.is_empty() {
        tracing::info!(class = class_id, bases = ?freed.bases, bytes = freed.bytes, "removed unused class bases");
    }
    Ok(freed)
}

/// Whether a volume id is a linked clone on base `base` (file or block storage layouts).
fn builds_on(volid: &str, base: u32) -> bool {
    let Some((_, volname)) = volid.split_once(':') else {
        return false;
    };
    let prefix = format!("base-{base}-");
    let parts: Vec<&str> = volname.split('/').collect();
    match parts.as_slice() {
        [owner, base_name, _, _] => *owner == base.to_string() && base_name.starts_with(&prefix),
        [base_name, _] => base_name.starts_with(&prefix),
        _ => false,
    }
}

async fn class_vms(state: &HubState, class_id: i64) -> StepResult<Vec<ClassVmRow>> {
    state
        .db
        .class_vms(class_id)
        .await
        .map_err(|err| err.to_string())
}

#[cfg(test)]
mod tests {
    use super::builds_on;

    #[test]
    fn linked_clone_volumes_name_their_base() {
        assert!(builds_on(
            "local:9001/base-9001-disk-0.qcow2/101/vm-101-disk-0.qcow2",
            9001
        ));
        assert!(builds_on("local-lvm:base-9001-disk-0/vm-101-disk-0", 9001));
        assert!(!builds_on("local:9001/base-9001-disk-0.qcow2", 9001));
        assert!(!builds_on(
            "local:90011/base-90011-disk-0.qcow2/101/vm-101-disk-0.qcow2",
            9001
        ));
        assert!(!builds_on("local:101/vm-101-disk-0.qcow2", 9001));
    }
}
