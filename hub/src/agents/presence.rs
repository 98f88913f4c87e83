//! Heartbeats, kept cheap at a thousand nodes. Each heartbeat is only noted in memory; once
//! per heartbeat interval one transaction records when every node was last seen, and one
//! query checks that each connected node's certificate still stands. A node revoked or
//! enrolled again from the command line (another process, which changes only the database)
//! is closed within that interval, as it was when every heartbeat asked the database.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use proxlab_protocol::CloseCode;
use proxlab_protocol::limits::HEARTBEAT_INTERVAL;

use super::context::LinkContext;
use crate::db::nodes::NodeRow;

/// When each node's last heartbeat arrived since the last sweep.
#[derive(Debug, Default)]
pub struct Presence {
    seen: Mutex<HashMap<String, i64>>,
}

impl Presence {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, i64>> {
        self.seen
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Notes a heartbeat from `node` at `now` (Unix seconds).
    pub(super) fn heartbeat(&self, node: &str, now: i64) {
        self.lock().insert(node.to_owned(), now);
    }

    fn take(&self) -> HashMap<String, i64> {
        std::mem::take(&mut *self.lock())
    }
}

/// Whether a certificate with `fingerprint`, naming `node`, still identifies an active node,
/// given the node's stored record. `Err` carries the close code and the reason.
pub(super) fn certificate_verdict(
    record: Option<&NodeRow>,
    node: &str,
    fingerprint: &str,
) -> Result<(), (CloseCode, String)> {
    match record {
        Some(row) if row.revoked_at.is_some() => {
            Err((CloseCode::Revoked, format!("node {node} has been revoked")))
        }
        Some(row) if row.cert_fingerprint != fingerprint => Err((
            CloseCode::Revoked,
            format!("this certificate for node {node} has been superseded by a newer enrollment"),
        )),
        Some(_) => Ok(()),
        None => Err((
            CloseCode::UnknownNode,
            format!("no node named {node} is enrolled"),
        )),
    }
}

/// Records heartbeats and checks certificates every heartbeat interval, until the hub stops.
pub(super) async fn keep(context: Arc<LinkContext>) {
    let mut ticker = tokio::time::interval(HEARTBEAT_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        sweep(&context).await;
    }
}

async fn sweep(context: &LinkContext) {
    let seen = context.presence.take();
    if !seen.is_empty()
        && let Err(err) = context.db.touch_nodes(&seen).await
    {
        tracing::warn!(%err, nodes = seen.len(), "cannot record the heartbeats");
    }
    let sessions = context.registry.sessions();
    if sessions.is_empty() {
        return;
    }
    let records = match context.db.list_nodes().await {
        Ok(records) => records,
        Err(err) => {
            tracing::warn!(%err, "cannot check the connected nodes' certificates");
            return;
        }
    };
    let by_name: HashMap<&str, &NodeRow> = records
        .iter()
        .map(|record| (record.name.as_str(), record))
        .collect();
    for session in sessions {
        let record = by_name.get(session.node.as_str()).copied();
        if let Err((code, reason)) =
            certificate_verdict(record, &session.node, &session.fingerprint)
        {
            tracing::info!(node = %session.node, %code, %reason, "closing agent connection");
            context
                .registry
                .close_session(&session.node, &session.fingerprint, code, &reason);
        }
    }
}
