//! The jobs that deploy and delete classes. A job is a row in the database and its progress
//! is the state of each class VM, so a job survives a hub restart: unfinished jobs resume at
//! start, and every step is safe to repeat (VMIDs are reserved before anything is created,
//! and agents recognise a clone they already made). A node that is offline is waited for.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use proxlab_protocol::ErrorKind;
use proxlab_protocol::clones::{CloneMany, CloneOutcome, CloneTarget, Hardware, MakeBase};
use proxlab_protocol::plugins::{PluginSite, PluginSteps, PluginVm};
use proxlab_protocol::vm_ops::{VmCreate, VmDestroy, VmReset};
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;

use super::{copy, name_stem, publish};
use crate::HubState;
use crate::agents::CallError;
use crate::db::classes::{ClassRow, ClassVmRow};
use crate::db::now_unix;
use crate::db::states::{ClassState, ClassVmKind, ClassVmState, JobKind, JobState};
use crate::domain::plugin_settings;
use crate::vm_key::VmKey;

use super::steps::{BASE_TIMEOUT, StepResult, is_link_failure, mark};
pub use crate::db::classes::MAX_ATTEMPTS;
/// The pause before trying to remove a VM again, times the attempts so far.
const RETRY_PAUSE: Duration = Duration::from_secs(1);
/// The longest one node's batch of clones may take.
const CLONE_TIMEOUT: Duration = Duration::from_secs(1800);

/// Wakes the runner for new jobs and announces class changes to live pages.
#[derive(Debug, Clone)]
pub struct JobQueue {
    wake: mpsc::UnboundedSender<i64>,
    changes: broadcast::Sender<i64>,
}

impl JobQueue {
    pub fn new() -> (Self, mpsc::UnboundedReceiver<i64>) {
        let (wake, woken) = mpsc::unbounded_channel();
        (
            Self {
                wake,
                changes: broadcast::channel(256).0,
            },
            woken,
        )
    }

    /// Runs a job that was just stored.
    pub fn wake(&self, job: i64) {
        let _ = self.wake.send(job);
    }

    /// Something about a class changed (a VM deployed, a student joined).
    pub fn announce(&self, class_id: i64) {
        let _ = self.changes.send(class_id);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<i64> {
        self.changes.subscribe()
    }
}

/// Jobs started and not yet ended, and one turn per class: a class runs one job at a time,
/// and the others wait for their turn in the order they were started.
#[derive(Default)]
struct Running {
    jobs: Mutex<HashSet<i64>>,
    turns: Mutex<HashMap<i64, Arc<tokio::sync::Mutex<()>>>>,
}

impl Running {
    fn turn_of(&self, class_id: i64) -> Arc<tokio::sync::Mutex<()>> {
        self.turns
            .lock()
            .expect("not poisoned")
            .entry(class_id)
            .or_default()
            .clone()
    }
}

/// Starts the runner: resumes unfinished jobs, then runs each new one.
pub fn start_runner(
    state: Arc<HubState>,
    mut woken: mpsc::UnboundedReceiver<i64>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let running: Arc<Running> = Arc::default();
        match state.db.unfinished_jobs().await {
            Ok(jobs) => {
                for job in jobs {
                    tracing::info!(job = job.id, kind = %job.kind, "resuming a job");
                    spawn_job(&state, &running, job.id);
                }
            }
            Err(err) => tracing::error!(%err, "cannot read unfinished jobs"),
        }
        while let Some(job) = woken.recv().await {
            spawn_job(&state, &running, job);
        }
    })
}

fn spawn_job(state: &Arc<HubState>, running: &Arc<Running>, job: i64) {
    if !running.jobs.lock().expect("not poisoned").insert(job) {
        return;
    }
    let (state, running) = (state.clone(), running.clone());
    tokio::spawn(async move {
        let class_id = state
            .db
            .job(job)
            .await
            .ok()
            .flatten()
            .and_then(|job| job.class_id);
        match class_id {
            Some(class_id) => {
                let turn = running.turn_of(class_id);
                let _turn = turn.lock().await;
                run_job(&state, job).await;
            }
            None => run_job(&state, job).await,
        }
        running.jobs.lock().expect("not poisoned").remove(&job);
    });
}

async fn run_job(state: &HubState, id: i64) {
    let Ok(Some(job)) = state.db.job(id).await else {
        return;
    };
    let Some(class_id) = job.class_id else {
        let _ = state
            .db
            .set_job_state(id, JobState::Failed, "the class is gone", now_unix())
            .await;
        return;
    };
    let _ = state
        .db
        .set_job_state(id, JobState::Running, "", now_unix())
        .await;
    state.jobs.announce(class_id);
    let started = std::time::Instant::now();
    let result = match job.kind {
        JobKind::Deploy => deploy(state, id, class_id).await,
        JobKind::Delete => delete(state, class_id).await,
        JobKind::Shrink => shrink(state, class_id).await,
        JobKind::Recycle => recycle(state, id, class_id).await,
        JobKind::Publish => match class_row(state, class_id).await {
            Ok(class) => publish::publish(state, &job, &class).await,
            Err(err) => Err(err),
        },
        JobKind::Rollout => match class_row(state, class_id).await {
            Ok(class) => publish::rollout(state, &job, &class).await,
            Err(err) => Err(err),
        },
        JobKind::Hardware => match class_row(state, class_id).await {
            Ok(class) => super::hardware::run(state, &job, &class).await,
            Err(err) => Err(err),
        },
    };
    let (job_state, message) = match result {
        Ok(message) => (JobState::Done, message),
        Err(message) => (JobState::Failed, message),
    };
    tracing::info!(job = id, class = class_id, state = %job_state, %message, "job ended");
    crate::metrics::metrics().job_ended(
        job.kind.as_str(),
        job_state == JobState::Done,
        started.elapsed(),
    );
    if let Err(err) = state
        .db
        .set_job_state(id, job_state, &message, now_unix())
        .await
    {
        tracing::error!(%err, job = id, "cannot record the end of a job");
    }
    state.jobs.announce(class_id);
}

/// "1 VM", "31 VMs".
pub(super) fn count_vms(n: usize) -> String {
    if n == 1 {
        "1 VM".to_owned()
    } else {
        format!("{n} VMs")
    }
}

fn vm_names(class: &ClassRow, vms: &[ClassVmRow]) -> BTreeMap<VmKey, String> {
    let stem = name_stem(&class.name, class.id);
    let mut students = 0;
    let primary_base = vms
        .iter()
        .filter(|vm| vm.kind == ClassVmKind::Base)
        .map(|vm| (vm.vmid, vm.key))
        .min()
        .map(|(_, key)| key);
    vms.iter()
        .map(|vm| {
            let name = match vm.kind {
                ClassVmKind::Base if Some(vm.key) == primary_base => format!("{stem}-base"),
                ClassVmKind::Base => format!("{stem}-base-{}", vm.node),
                ClassVmKind::Teacher => format!("{stem}-teacher"),
                _ => {
                    students += 1;
                    format!("{stem}-s{students:02}")
                }
            };
            (vm.key, name)
        })
        .collect()
}

pub(super) async fn class_row(state: &HubState, class_id: i64) -> StepResult<ClassRow> {
    Ok(state
        .db
        .class(class_id)
        .await
        .map_err(|err| err.to_string())?
        .ok_or("the class is gone")?)
}

async fn deploy(state: &HubState, job: i64, class_id: i64) -> StepResult<String> {
    loop {
        let class = class_row(state, class_id).await?;
        if class.state != ClassState::Active {
            return Ok("stopped: the class is being deleted".into());
        }
        let vms = state
            .db
            .class_vms(class_id)
            .await
            .map_err(|err| err.to_string())?;
        let names = vm_names(&class, &vms);
        // The current version's bases. Version 1's first base is made from the template on
        // its node (a later version's by its publish); nodes that cannot reach its disks get
        // copies of their own.
        let bases: Vec<&ClassVmRow> = vms
            .iter()
            .filter(|vm| vm.kind == ClassVmKind::Base && vm.version == class.current_version)
            .collect();
        let ready = bases
            .iter()
            .find(|vm| vm.state == ClassVmState::Ready)
            .copied();
        let primary = ready.or_else(|| bases.iter().min_by_key(|vm| vm.vmid).copied());
        if let Some(template) = class.template {
            let primary = primary.ok_or("the class has no base")?;
            if ready.is_none() {
                if class.current_version.is_some_and(|number| number > 1) {
                    return Err("the current version has no base left".into());
                }
                make_base(
                    state,
                    job,
                    class.id,
                    template,
                    primary,
                    &names[&primary.key],
                )
                .await?;
                continue;
            }
            if let Some(copy) = bases.iter().find(|vm| vm.state != ClassVmState::Ready) {
                // Version 1's bases are on the template's storage, a later one's on the
                // storage of the teacher VM it was made from.
                let source = match class.current_version {
                    Some(number) if number > 1 => vms
                        .iter()
                        .find(|vm| vm.kind == ClassVmKind::Teacher)
                        .map_or(template, |teacher| teacher.key),
                    _ => template,
                };
                let storage = first_disk_storage(state, source).await?;
                let name = match class.current_version {
                    Some(number) if number > 1 => publish::base_name(&class, number, &copy.node),
                    _ => names[&copy.key].clone(),
                };
                copy::copy_base(state, &class, primary, copy, &name, &storage, None).await?;
                continue;
            }
        }
        let todo: Vec<&ClassVmRow> = vms
            .iter()
            .filter(|vm| vm.kind != ClassVmKind::Base)
            .filter(|vm| {
                vm.state == ClassVmState::Planned
                    || (vm.state == ClassVmState::Failed && vm.attempts < MAX_ATTEMPTS)
            })
            .collect();
        if todo.is_empty() {
            return finish_deploy(state, class_id, &vms).await;
        }
        let mut by_node: BTreeMap<&str, (i64, Vec<CloneTarget>)> = BTreeMap::new();
        for vm in todo {
            let (_, targets) = by_node
                .entry(&vm.node)
                .or_insert_with(|| (vm.key.cluster, Vec::new()));
            targets.push(CloneTarget {
                vmid: vm.vmid,
                name: names[&vm.key].clone(),
            });
        }
        let steps = plugin_steps(state, &class, &vms).await?;
        let (class, bases, steps) = (&class, &bases, &steps);
        let batches = by_node
            .into_iter()
            .map(|(node, (cluster, targets))| async move {
                let base = bases.iter().find(|vm| vm.node == node).copied().or(primary);
                let on_node = OnNode { node, cluster };
                match base {
                    Some(base) => {
                        clone_batch(state, class, base.vmid, on_node, targets, steps).await
                    }
                    None => create_batch(state, class, job, on_node, targets).await,
                }
            });
        futures_util::future::join_all(batches).await;
    }
}

/// The plugin steps of a class's clones: the plugins that run for it, in order, with what
/// they are told about the class and each VM. `None` when no plugin runs.
async fn plugin_steps(
    state: &HubState,
    class: &ClassRow,
    vms: &[ClassVmRow],
) -> StepResult<Option<PluginSteps>> {
    let plugins = state
        .db
        .class_plugins(class.id)
        .await
        .map_err(|err| err.to_string())?;
    if plugins.is_empty() {
        return Ok(None);
    }
    let facts_failed = |err: crate::domain::plugins::PluginFault| err.to_string();
    let mut students = 0;
    let mut facts = BTreeMap::new();
    for vm in vms.iter().filter(|vm| vm.kind != ClassVmKind::Base) {
        let index = if vm.kind == ClassVmKind::Teacher {
            0
        } else {
            students += 1;
            students
        };
        let student_facts = match &vm.assignee {
            Some(username) => plugin_settings::student_facts(state, username)
                .await
                .map_err(facts_failed)?,
            None => None,
        };
        let vm_facts = PluginVm {
            kind: vm.kind.to_string(),
            index,
            student: vm.assignee.clone(),
            student_facts,
        };
        facts.insert(vm.vmid, vm_facts);
    }
    let cluster = match vms.first() {
        Some(vm) => plugin_settings::cluster_name(state, vm.key.cluster)
            .await
            .map_err(facts_failed)?,
        None => String::new(),
    };
    Ok(Some(PluginSteps {
        settings: plugin_settings::resolved(state, class.id, &plugins)
            .await
            .map_err(facts_failed)?,
        plugins,
        class: plugin_settings::class_facts(state, class)
            .await
            .map_err(facts_failed)?,
        vms: facts,
        cluster,
        site: PluginSite {
            hub_url: state.config.site_url().unwrap_or_default(),
        },
    }))
}

/// Where a copied base's images go: the storage of the first disk of the VM it is copied
/// from (a base, or the teacher VM a version is made from).
pub(super) async fn first_disk_storage(state: &HubState, key: VmKey) -> StepResult<String> {
    let vmid = key.vmid;
    let vm = state
        .db
        .vm(key)
        .await
        .map_err(|err| err.to_string())?
        .ok_or_else(|| format!("VM {vmid} is gone"))?;
    vm.disks
        .iter()
        .find_map(|disk| {
            disk.volid
                .split_once(':')
                .map(|(storage, _)| storage.to_owned())
        })
        .ok_or_else(|| format!("VM {vmid} has no disk"))
}

/// A node that VMs are made on, and its cluster.
#[derive(Debug, Clone, Copy)]
struct OnNode<'a> {
    node: &'a str,
    cluster: i64,
}

impl OnNode<'_> {
    fn key(self, vmid: u32) -> VmKey {
        VmKey::new(self.cluster, vmid)
    }
}

/// Creates the empty VMs of a class without a template on one node.
async fn create_batch(
    state: &HubState,
    class: &ClassRow,
    job: i64,
    on_node: OnNode<'_>,
    targets: Vec<CloneTarget>,
) {
    let node = on_node.node;
    for target in targets {
        state.registry.wait_for(node, true).await;
        let request = VmCreate {
            vmid: target.vmid,
            name: target.name,
            cores: class.cores.unwrap_or(super::EMPTY_VM_CORES),
            memory_mib: class.memory_mib.unwrap_or(super::EMPTY_VM_MEMORY_MIB),
            disk_gib: class.disk_gib.unwrap_or(20),
            storage: class.storage.clone().unwrap_or_else(|| "local".into()),
            bridge: class.bridge.clone().unwrap_or_else(|| "vmbr0".into()),
        };
        let op_id = format!("job{job}-create{}", target.vmid);
        match state
            .registry
            .call_with(node, &request, &op_id, CLONE_TIMEOUT, |_| {})
            .await
        {
            Ok(_) => {
                let key = on_node.key(target.vmid);
                mark(state, class.id, key, ClassVmState::Ready, "", true).await
            }
            // The VM stays planned; the next round, with the node back, tries again.
            Err(err) if is_link_failure(&err) => return,
            Err(err) => {
                mark(
                    state,
                    class.id,
                    on_node.key(target.vmid),
                    ClassVmState::Failed,
                    &err.to_string(),
                    true,
                )
                .await;
            }
        }
    }
}

/// Makes a class base (a version's first) as a full copy of `source`'s disks: the template
/// for version 1, the stopped teacher VM for later ones.
pub(super) async fn make_base(
    state: &HubState,
    job: i64,
    class_id: i64,
    source: VmKey,
    base: &ClassVmRow,
    name: &str,
) -> StepResult<()> {
    if base.attempts >= MAX_ATTEMPTS {
        return Err(format!("the class base could not be made: {}", base.error));
    }
    // Made before a restart, but not yet recorded.
    if let Ok(Some(vm)) = state.db.vm(base.key).await
        && vm.template
    {
        mark(state, class_id, base.key, ClassVmState::Ready, "", false).await;
        return Ok(());
    }
    state.registry.wait_for(&base.node, true).await;
    let request = MakeBase {
        source_vmid: source.vmid,
        base_vmid: base.vmid,
        name: name.to_owned(),
        storage: None,
    };
    let op_id = format!("job{job}-base{}", base.vmid);
    match state
        .registry
        .call_with(&base.node, &request, &op_id, BASE_TIMEOUT, |_| {})
        .await
    {
        Ok(_) => mark(state, class_id, base.key, ClassVmState::Ready, "", true).await,
        Err(err) if is_link_failure(&err) => {}
        Err(err) => {
            let error = err.to_string();
            mark(
                state,
                class_id,
                base.key,
                ClassVmState::Failed,
                &error,
                true,
            )
            .await
        }
    }
    Ok(())
}

/// Clones a batch on one node, recording each VM as the agent reports it.
async fn clone_batch(
    state: &HubState,
    class: &ClassRow,
    base_vmid: u32,
    on_node: OnNode<'_>,
    targets: Vec<CloneTarget>,
    steps: &Option<PluginSteps>,
) {
    let (class_id, node) = (class.id, on_node.node);
    state.registry.wait_for(node, true).await;
    let request = CloneMany {
        base_vmid,
        vms: targets,
        concurrency: 0,
        steps: steps.clone(),
        hardware: Hardware {
            cores: class.cores,
            memory_mib: class.memory_mib,
        },
    };
    let (outcomes, mut reported) = mpsc::unbounded_channel::<CloneOutcome>();
    let op_id = crate::agents::new_op_id();
    let call = state
        .registry
        .call_with(node, &request, &op_id, CLONE_TIMEOUT, move |outcome| {
            let _ = outcomes.send(outcome);
        });
    let record = async {
        while let Some(outcome) = reported.recv().await {
            let failed = u64::from(outcome.error.is_some());
            crate::metrics::metrics().clones_made(1 - failed, failed);
            match outcome.error {
                None => {
                    let key = on_node.key(outcome.vmid);
                    mark(state, class_id, key, ClassVmState::Ready, "", true).await
                }
                Some(error) => {
                    mark(
                        state,
                        class_id,
                        on_node.key(outcome.vmid),
                        ClassVmState::Failed,
                        &error,
                        true,
                    )
                    .await
                }
            }
        }
    };
    let (result, ()) = tokio::join!(call, record);
    match result {
        Ok(reply) => {
            // Outcomes the progress stream may not have carried.
            for vmid in reply.created {
                let key = on_node.key(vmid);
                mark(state, class_id, key, ClassVmState::Ready, "", false).await;
            }
            for failed in reply.failed {
                let error = failed.error.unwrap_or_default();
                mark(
                    state,
                    class_id,
                    on_node.key(failed.vmid),
                    ClassVmState::Failed,
                    &error,
                    false,
                )
                .await;
            }
        }
        Err(err) if is_link_failure(&err) => {
            tracing::warn!(%node, %err, "clones interrupted; they resume when the node is back");
        }
        Err(err) => {
            for vmid in request.vms.iter().map(|target| target.vmid) {
                mark(
                    state,
                    class_id,
                    on_node.key(vmid),
                    ClassVmState::Failed,
                    &err.to_string(),
                    true,
                )
                .await;
            }
        }
    }
}

/// Gives waitlisted students the VMs that are free now and sums up.
async fn finish_deploy(state: &HubState, class_id: i64, vms: &[ClassVmRow]) -> StepResult<String> {
    // A student given a VM that then failed for good goes back to the waitlist, to get a
    // working one now or when capacity is added.
    for vm in vms
        .iter()
        .filter(|vm| vm.state == ClassVmState::Failed && vm.assignee.is_some())
    {
        state
            .db
            .unassign_vm(vm.key)
            .await
            .map_err(|err| err.to_string())?;
    }
    super::serve_waitlist(state, class_id)
        .await
        .map_err(|err| err.to_string())?;
    let wanted: Vec<&ClassVmRow> = vms
        .iter()
        .filter(|vm| vm.kind != ClassVmKind::Base)
        .collect();
    let failed: Vec<String> = wanted
        .iter()
        .filter(|vm| vm.state == ClassVmState::Failed)
        .map(|vm| format!("VM {}: {}", vm.vmid, vm.error))
        .collect();
    let ready = wanted.len() - failed.len();
    if failed.is_empty() {
        Ok(format!("{} ready", count_vms(ready)))
    } else {
        Ok(format!(
            "{ready} of {} VMs ready; failed after {MAX_ATTEMPTS} tries: {}",
            wanted.len(),
            failed.join("; ")
        ))
    }
}

async fn delete(state: &HubState, class_id: i64) -> StepResult<String> {
    let vms = state
        .db
        .class_vms(class_id)
        .await
        .map_err(|err| err.to_string())?;
    let (bases, clones): (Vec<&ClassVmRow>, Vec<&ClassVmRow>) =
        vms.iter().partition(|vm| vm.kind == ClassVmKind::Base);
    let mut by_node: BTreeMap<&str, Vec<&ClassVmRow>> = BTreeMap::new();
    for vm in &clones {
        by_node.entry(&vm.node).or_default().push(vm);
    }
    let batches = by_node.into_values().map(|vms| async move {
        for vm in vms {
            destroy(state, class_id, vm).await?;
        }
        Ok::<(), String>(())
    });
    for result in futures_util::future::join_all(batches).await {
        result?;
    }
    for base in bases {
        destroy(state, class_id, base).await?;
    }
    state
        .db
        .delete_class(class_id)
        .await
        .map_err(|err| err.to_string())?;
    Ok(format!("{} removed", count_vms(vms.len())))
}

/// Removes the class VMs marked `removing` (capacity taken away), with their disks.
async fn shrink(state: &HubState, class_id: i64) -> StepResult<String> {
    let vms = state
        .db
        .class_vms(class_id)
        .await
        .map_err(|err| err.to_string())?;
    let doomed: Vec<&ClassVmRow> = vms
        .iter()
        .filter(|vm| vm.state == ClassVmState::Removing)
        .collect();
    for vm in &doomed {
        destroy(state, class_id, vm).await?;
    }
    Ok(format!("{} removed", count_vms(doomed.len())))
}

/// Makes the VMs students left fresh (see [`super::start_recycling`]), then serves the
/// waitlist. A VM that cannot be made fresh stays `recycling` with the reason, out of
/// everyone's reach, and the next recycle job tries again.
async fn recycle(state: &HubState, job: i64, class_id: i64) -> StepResult<String> {
    let class = class_row(state, class_id).await?;
    let vms = state
        .db
        .class_vms(class_id)
        .await
        .map_err(|err| err.to_string())?;
    let used: Vec<&ClassVmRow> = vms
        .iter()
        .filter(|vm| vm.state == ClassVmState::Recycling)
        .collect();
    let mut remade = 0;
    for vm in &used {
        // Whoever had it left: its plugins hear so before it is made fresh.
        crate::domain::plugins::tell_unassignment(state, &vm.node, vm.key).await;
        // The next student gets the current version: a VM on an older one is re-made.
        let newer = class
            .current_version
            .filter(|number| vm.version != Some(*number))
            .and_then(|number| Some((publish::base_for(&vms, number, &vm.node)?, number)));
        let fresh = if let Some((base, number)) = newer {
            publish::remake(state, vm, base, number).await
        } else if class.template.is_some() {
            let reset = VmReset {
                vmid: vm.vmid,
                stopped: true,
                identity: vm.identity.clone(),
            };
            call_when_online(state, &vm.node, &reset).await.map(drop)
        } else {
            let destroy = VmDestroy {
                vmid: vm.vmid,
                allow_template: false,
                identity: vm.identity.clone(),
            };
            let destroyed = match call_when_online(state, &vm.node, &destroy).await {
                Err(CallError::Remote(remote)) if remote.kind == ErrorKind::NotFound => Ok(()),
                other => other.map(drop),
            };
            if destroyed.is_ok() {
                state
                    .db
                    .forget_class_vm_identity(vm.key)
                    .await
                    .map_err(|err| err.to_string())?;
            }
            destroyed
        };
        match (fresh, class.template) {
            (Ok(()), Some(_)) => {
                mark(state, class_id, vm.key, ClassVmState::Ready, "", false).await
            }
            (Ok(()), None) => {
                mark(state, class_id, vm.key, ClassVmState::Planned, "", false).await;
                remade += 1;
            }
            (Err(err), _) => {
                let error = format!("not reset for its next student: {err}");
                mark(
                    state,
                    class_id,
                    vm.key,
                    ClassVmState::Recycling,
                    &error,
                    false,
                )
                .await;
                return Err(format!("VM {} {error}", vm.vmid));
            }
        }
    }
    if remade > 0 {
        // New empty VMs are made the way the class's VMs were first made.
        return deploy(state, job, class_id).await;
    }
    super::serve_waitlist(state, class_id)
        .await
        .map_err(|err| err.to_string())?;
    Ok(format!("{} made fresh", count_vms(used.len())))
}

/// Calls an agent, waiting for its node to come back when the link drops.
pub(super) async fn call_when_online<R: proxlab_protocol::Request>(
    state: &HubState,
    node: &str,
    request: &R,
) -> Result<R::Response, CallError> {
    loop {
        state.registry.wait_for(node, true).await;
        match state.registry.call(node, request).await {
            Err(err) if is_link_failure(&err) => continue,
            other => return other,
        }
    }
}

/// Destroys a class VM with its disks, or releases it when it was adopted: proxlab never
/// destroys a VM it did not make, so an adopted one stays on its node, out of the class and
/// unassigned.
pub(super) async fn destroy(state: &HubState, class_id: i64, vm: &ClassVmRow) -> StepResult<()> {
    if vm.adopted.is_none() {
        destroy_on_node(state, class_id, vm).await?;
    }
    state
        .db
        .remove_class_vm(vm.key)
        .await
        .map_err(|err| err.to_string())?;
    state.jobs.announce(class_id);
    Ok(())
}

/// Powers a class VM off and destroys it with its disks on its node (gone already is done).
async fn destroy_on_node(state: &HubState, class_id: i64, vm: &ClassVmRow) -> StepResult<()> {
    mark(state, class_id, vm.key, ClassVmState::Removing, "", false).await;
    let request = VmDestroy {
        vmid: vm.vmid,
        allow_template: vm.kind == ClassVmKind::Base,
        identity: vm.identity.clone(),
    };
    let mut attempts = 0;
    loop {
        match call_when_online(state, &vm.node, &request).await {
            Ok(_) => break,
            Err(CallError::Remote(remote)) if remote.kind == ErrorKind::NotFound => break,
            Err(err) => {
                attempts += 1;
                if attempts >= MAX_ATTEMPTS {
                    return Err(format!("VM {} could not be removed: {err}", vm.vmid));
                }
                // A VM busy with something else (a lock, a shutdown) gets a moment.
                tokio::time::sleep(RETRY_PAUSE * attempts).await;
            }
        }
    }
    Ok(())
}
