//! VM operations through `qm`: power, destroy, snapshots.

use proxlab_protocol::inventory::PowerState;
use proxlab_protocol::vm_ops::{PowerAction, SnapshotOp};
use proxlab_pve::policy;

use std::time::Duration;

use super::command::{Failure, PveError};
use super::node::Node;

/// How much longer than a shutdown's own timeout `qm shutdown` may take (its hard stop).
const SHUTDOWN_SLACK_SECS: u64 = 30;

/// The VM's power state from `qm status`.
pub async fn status(node: &Node, vmid: u32) -> Result<PowerState, PveError> {
    let out = node.qm(["status", &vmid.to_string()]).await?;
    Ok(super::qemu_socket::power_state(
        out.trim().strip_prefix("status: ").unwrap_or_default(),
    ))
}

/// Whether a VM in `state` is where `action` takes it.
fn reached(action: PowerAction, state: PowerState) -> bool {
    match action {
        PowerAction::Start => state == PowerState::Running,
        PowerAction::Stop | PowerAction::Shutdown { .. } => state == PowerState::Stopped,
        PowerAction::Reboot | PowerAction::Reset => false,
    }
}

/// Runs a power action. Asking for the state a VM is in already (start a running VM, stop
/// or shut down a stopped one) succeeds without doing anything, and so does one that loses
/// a race to the same action from elsewhere (`qm` says "already running" because another
/// start got there first).
pub async fn power(node: &Node, vmid: u32, action: PowerAction) -> Result<PowerState, PveError> {
    let now = status(node, vmid).await?;
    if reached(action, now) {
        return Ok(now);
    }
    match run_power(node, vmid, action).await {
        Ok(()) => status(node, vmid).await,
        Err(err) if is_conflict(&err) => {
            let now = status(node, vmid).await?;
            if reached(action, now) {
                Ok(now)
            } else {
                Err(err)
            }
        }
        Err(err) => Err(err),
    }
}

fn is_conflict(err: &PveError) -> bool {
    matches!(
        err,
        PveError::Conflict(_)
            | PveError::CommandFailed {
                failure: Failure::Conflict,
                ..
            }
    )
}

async fn run_power(node: &Node, vmid: u32, action: PowerAction) -> Result<(), PveError> {
    let id = vmid.to_string();
    match action {
        PowerAction::Start => node.qm(["start", &id]).await?,
        PowerAction::Stop => node.qm(["stop", &id]).await?,
        PowerAction::Reboot => node.qm(["reboot", &id]).await?,
        PowerAction::Reset => node.qm(["reset", &id]).await?,
        PowerAction::Shutdown {
            timeout_secs,
            force_stop,
        } => {
            let timeout = timeout_secs.to_string();
            let force = if force_stop { "1" } else { "0" };
            // `qm` waits out the guest's time, then may still stop it: give it that long.
            let waits = Duration::from_secs(u64::from(timeout_secs) + SHUTDOWN_SLACK_SECS);
            node.qm_within(
                ["shutdown", &id, "--timeout", &timeout, "--forceStop", force],
                waits,
            )
            .await?
        }
    };
    Ok(())
}

/// Refuses to act on a VM that is not the one the hub means: its identity changed since the
/// hub learnt it (destroyed and re-created outside proxlab under the same VMID).
pub fn check_identity(
    config: &proxlab_pve::config::VmConfig,
    vmid: u32,
    expected: Option<&str>,
) -> Result<(), PveError> {
    match expected {
        Some(expected)
            if proxlab_pve::ident::smbios_uuid(config).as_deref()
                != Some(expected.to_ascii_lowercase().as_str()) =>
        {
            Err(PveError::NotFound(format!(
                "VM {vmid} is not the VM it was: it was replaced outside proxlab"
            )))
        }
        _ => Ok(()),
    }
}

/// Destroys a VM and its disks, powering it off first if it runs; templates only when asked,
/// and only the VM with `identity` when given.
pub async fn destroy(
    node: &Node,
    vmid: u32,
    allow_template: bool,
    identity: Option<&str>,
) -> Result<(), PveError> {
    let config = match node.require_config(vmid) {
        Ok(config) => config,
        Err(missing) => {
            if allow_template {
                // A class base whose copy to this node never finished.
                super::base_copy::discard_received(node, vmid).await?;
            }
            return Err(missing);
        }
    };
    check_identity(&config, vmid, identity)?;
    if config.main().get("template") == Some("1") && !allow_template {
        return Err(PveError::Invalid(format!(
            "VM {vmid} is a template; destroying it needs allow_template"
        )));
    }
    // Proxmox refuses to destroy a running VM; whoever destroys it wants it gone, so it is
    // powered off first (as the GUI's "destroy" of a running VM asks to).
    if status(node, vmid).await? != PowerState::Stopped {
        node.qm(["stop", &vmid.to_string()]).await?;
    }
    node.qm([
        "destroy",
        &vmid.to_string(),
        "--purge",
        "1",
        "--destroy-unreferenced-disks",
        "1",
    ])
    .await
    .map(drop)
}

/// Creates an empty VM (see [`proxlab_protocol::vm_ops::VmCreate`]).
pub async fn create(
    node: &Node,
    spec: &proxlab_protocol::vm_ops::VmCreate,
) -> Result<(), PveError> {
    check_new_vm(node, spec)?;
    if already_created(node, spec)? {
        return Ok(());
    }
    let mut args = create_args(spec);
    args.extend(
        [
            ("net0", format!("virtio,bridge={}", spec.bridge)),
            ("scsihw", "virtio-scsi-single".into()),
            ("scsi0", format!("{}:{}", spec.storage, spec.disk_gib)),
            ("ostype", "l26".into()),
        ]
        .map(|(key, value)| [format!("--{key}"), value])
        .into_iter()
        .flatten(),
    );
    node.qm(args).await.map(drop)
}

/// Checks what a new VM is made of, before anything is made.
pub(super) fn check_new_vm(
    node: &Node,
    spec: &proxlab_protocol::vm_ops::VmCreate,
) -> Result<(), PveError> {
    proxlab_pve::volid::validate_vmid(spec.vmid).map_err(PveError::Invalid)?;
    proxlab_pve::ident::validate_vm_name(&spec.name).map_err(PveError::Invalid)?;
    let simple = |text: &str| {
        !text.is_empty()
            && text.len() <= 64
            && text
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    if !simple(&spec.bridge) || !simple(&spec.storage) {
        return Err(PveError::Invalid(format!(
            "invalid bridge {:?} or storage {:?}",
            spec.bridge, spec.storage
        )));
    }
    policy::check_entry("cores", &spec.cores.to_string(), &node.limits)?;
    policy::check_entry("memory", &spec.memory_mib.to_string(), &node.limits)?;
    if !(1..=65_536).contains(&spec.disk_gib) {
        return Err(PveError::Invalid(format!(
            "a disk of {} GiB is outside 1..=65536",
            spec.disk_gib
        )));
    }
    Ok(())
}

/// Whether a retried create went through before: the same VM is there already.
pub(super) fn already_created(
    node: &Node,
    spec: &proxlab_protocol::vm_ops::VmCreate,
) -> Result<bool, PveError> {
    Ok(node
        .read_config(spec.vmid)?
        .is_some_and(|(config, _)| config.main().get("name") == Some(spec.name.as_str())))
}

/// `qm create VMID` with the name, cores and memory every new VM has.
pub(super) fn create_args(spec: &proxlab_protocol::vm_ops::VmCreate) -> Vec<String> {
    vec![
        "create".to_owned(),
        spec.vmid.to_string(),
        "--name".into(),
        spec.name.clone(),
        "--cores".into(),
        spec.cores.to_string(),
        "--memory".into(),
        spec.memory_mib.to_string(),
    ]
}

pub async fn snapshot(node: &Node, vmid: u32, name: &str, op: &SnapshotOp) -> Result<(), PveError> {
    let id = vmid.to_string();
    match op {
        SnapshotOp::Create { description } => {
            let mut args = vec!["snapshot".to_owned(), id, name.to_owned()];
            if let Some(text) = description {
                args.extend(["--description".to_owned(), text.clone()]);
            }
            node.qm(args).await?
        }
        SnapshotOp::Rollback => node.qm(["rollback", &id, name]).await?,
        SnapshotOp::Delete => node.qm(["delsnapshot", &id, name]).await?,
    };
    Ok(())
}
