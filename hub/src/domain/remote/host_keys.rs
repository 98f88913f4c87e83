//! SSH host keys, trusted on first use: the key a VM shows first is remembered, a later
//! connection that shows another is stopped until the user accepts the new one.

use crate::HubState;
use crate::db::audit::AuditFilter;
use crate::db::remote_access::KnownHostKey;
use crate::db::{DbError, now_unix};
use crate::domain::audit::{self, Outcome};
use crate::domain::viewer::Viewer;

/// A host key as the VM showed it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PresentedKey {
    pub algorithm: String,
    pub fingerprint: String,
}

/// How a presented key compares with what the hub remembers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The first key this VM showed: remembered now.
    New,
    Known,
    /// Another key than the one remembered.
    Changed {
        known: KnownHostKey,
        /// When the VM was last reset after the key was remembered (a reset makes the VM
        /// from its template again, with the template's host key).
        reset_since: Option<i64>,
    },
}

/// The VM a key belongs to: its VMID, and its identity (SMBIOS UUID) when it has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyOwner {
    pub vm: crate::vm_key::VmKey,
    pub identity: Option<String>,
}

/// Compares `presented` with the VM's remembered key; remembers it if there is none, or if
/// the one remembered was another VM's under the same VMID.
pub async fn check(
    state: &HubState,
    viewer: &Viewer,
    owner: &KeyOwner,
    presented: &PresentedKey,
) -> Result<Verdict, DbError> {
    let known = state.db.ssh_host_key(owner.vm).await?;
    let another_vms = known.as_ref().is_some_and(
        |known| matches!((&known.vm_identity, &owner.identity), (Some(was), Some(is)) if was != is),
    );
    let Some(known) = known.filter(|_| !another_vms) else {
        remember(state, viewer, owner, presented).await?;
        return Ok(Verdict::New);
    };
    if known.fingerprint == presented.fingerprint {
        return Ok(Verdict::Known);
    }
    let filter = AuditFilter {
        action: Some("vm.reset".into()),
        target: Some(owner.vm.audit_target()),
        limit: 1,
        ..AuditFilter::default()
    };
    let reset_since = state
        .db
        .find_audit(&filter)
        .await?
        .into_iter()
        .find(|entry| entry.result == "ok" && entry.at >= known.first_seen)
        .map(|entry| entry.at);
    Ok(Verdict::Changed { known, reset_since })
}

/// Remembers `presented` as the VM's host key, as `viewer` accepted it. A replaced key is
/// audited.
pub async fn remember(
    state: &HubState,
    viewer: &Viewer,
    owner: &KeyOwner,
    presented: &PresentedKey,
) -> Result<(), DbError> {
    let replaced = state.db.ssh_host_key(owner.vm).await?;
    let key = KnownHostKey {
        vm_identity: owner.identity.clone(),
        algorithm: presented.algorithm.clone(),
        fingerprint: presented.fingerprint.clone(),
        first_seen: now_unix(),
        accepted_by: viewer.username.clone(),
    };
    state.db.set_ssh_host_key(owner.vm, &key).await?;
    if let Some(old) = replaced {
        let detail = format!("{} replaces {}", key.fingerprint, old.fingerprint);
        let target = owner.vm.audit_target();
        audit::record(
            &state.db,
            viewer,
            "vm.host-key",
            &target,
            Outcome::Ok,
            &detail,
        )
        .await;
    }
    Ok(())
}
