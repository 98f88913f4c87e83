//! One enrolled agent's connection: authentication, the hello, and the event stream.

use std::collections::HashSet;
use std::time::Instant;

use proxlab_link::pki::{self, Fingerprint};
use proxlab_link::{FrameIoError, read_frame, read_frame_or_end, write_frame};
use proxlab_protocol::limits::{
    FRAME_READ_TIMEOUT, HEARTBEAT_INTERVAL, HEARTBEAT_MISSES_ALLOWED, MAX_FRAME_LEN,
};
use proxlab_protocol::{CloseCode, Event, EventFrame, Hello, PROTOCOL_VERSION, Welcome};
use tracing::Instrument;

use super::context::LinkContext;
use super::presence::certificate_verdict;
use super::registry::SessionInfo;
use crate::db::nodes::ConnectedAgent;
use crate::db::now_unix;

fn close(connection: &quinn::Connection, code: CloseCode, reason: &str) {
    tracing::info!(%code, reason, "closing agent connection");
    connection.close(code.code().into(), reason.as_bytes());
}

/// Whether this certificate still identifies an active node. `Err` carries the close code.
async fn check_identity(
    context: &LinkContext,
    node: &str,
    fingerprint: &str,
) -> Result<(), (CloseCode, String)> {
    match context.db.node_by_name(node).await {
        Ok(record) => certificate_verdict(record.as_ref(), node, fingerprint),
        Err(err) => {
            tracing::error!(%err, "cannot check the node's identity");
            Err((
                CloseCode::HubShutdown,
                "the hub cannot reach its database".into(),
            ))
        }
    }
}

/// Serves an enrolled agent until its connection ends.
pub(super) async fn serve(context: &LinkContext, connection: quinn::Connection) {
    let Some(chain) = proxlab_link::tls::peer_certificates(&connection) else {
        return close(
            &connection,
            CloseCode::UnknownNode,
            "a client certificate is required",
        );
    };
    let node = match pki::common_name(&chain[0]) {
        Ok(name) => name,
        Err(err) => return close(&connection, CloseCode::UnknownNode, &err.to_string()),
    };
    let fingerprint = Fingerprint::of_der(&chain[0]).to_string();
    let span = tracing::info_span!("session", node = %node);
    serve_node(context, connection, node, fingerprint)
        .instrument(span)
        .await;
}

async fn serve_node(
    context: &LinkContext,
    connection: quinn::Connection,
    node: String,
    fingerprint: String,
) {
    if let Err((code, reason)) = check_identity(context, &node, &fingerprint).await {
        return close(&connection, code, &reason);
    }
    let Ok(Ok((mut send, mut recv))) =
        tokio::time::timeout(FRAME_READ_TIMEOUT, connection.accept_bi()).await
    else {
        return close(&connection, CloseCode::ProtocolError, "no control stream");
    };
    let hello: Hello = match read_frame(&mut recv, MAX_FRAME_LEN, FRAME_READ_TIMEOUT).await {
        Ok(hello) => hello,
        Err(err) => return refuse_frame(&connection, &mut recv, &err),
    };
    if !PROTOCOL_VERSION.is_compatible_with(hello.protocol) {
        let reason = format!(
            "the agent speaks protocol {}, the hub speaks {PROTOCOL_VERSION}: upgrade the older side",
            hello.protocol
        );
        return close(&connection, CloseCode::VersionMismatch, &reason);
    }
    if hello.node_name != node {
        let reason = format!(
            "the agent calls itself {:?} but its certificate names {node:?}",
            hello.node_name
        );
        return close(&connection, CloseCode::ProtocolError, &reason);
    }
    let welcome = Welcome {
        protocol: PROTOCOL_VERSION,
        hub_version: context.hub_version.clone(),
        heartbeat_secs: HEARTBEAT_INTERVAL.as_secs() as u32,
    };
    if let Err(err) = write_frame(&mut send, &welcome, MAX_FRAME_LEN).await {
        tracing::info!(%err, "agent left during the hello");
        return;
    }
    let remote = connection.remote_address();
    let info = SessionInfo {
        node: node.clone(),
        agent_version: hello.agent_version.clone(),
        remote,
        connected_at: Instant::now(),
        capabilities: hello.capabilities.iter().cloned().collect::<HashSet<_>>(),
        fingerprint: fingerprint.clone(),
    };
    let cluster = hello
        .cluster
        .as_ref()
        .filter(|cluster| match cluster.validate() {
            Ok(()) => true,
            Err(err) => {
                tracing::warn!(%err, "ignoring the cluster the agent reported");
                false
            }
        });
    let remote_addr = remote.to_string();
    let connected = ConnectedAgent {
        agent_version: &hello.agent_version,
        remote_addr: &remote_addr,
        cluster,
    };
    let cluster_id = match context
        .db
        .set_node_online(&node, true, now_unix(), "connected", Some(&connected))
        .await
    {
        Ok(Some(cluster_id)) => cluster_id,
        outcome => {
            // Its reports could not be kept: the agent comes back after its backoff.
            tracing::error!(?outcome, "cannot record the node as online");
            let reason = "the hub cannot record this node now; try again later";
            return close(&connection, CloseCode::HubShutdown, reason);
        }
    };
    // Registered after the database write, so whoever the registry wakes sees it recorded.
    let session_id = context.registry.register(connection.clone(), info);
    tracing::info!(agent_version = %hello.agent_version, %remote, "agent online");

    let reason = read_events(context, &connection, &mut recv, &node, cluster_id).await;

    if context.registry.unregister(&node, session_id) {
        tracing::info!(reason, "agent offline");
        if let Err(err) = context
            .db
            .set_node_online(&node, false, now_unix(), reason, None)
            .await
        {
            tracing::error!(%err, "cannot record the node as offline");
        }
    }
}

/// Reads the event stream until it ends. Returns why it ended, for the transition log.
async fn read_events(
    context: &LinkContext,
    connection: &quinn::Connection,
    recv: &mut quinn::RecvStream,
    node: &str,
    cluster_id: i64,
) -> &'static str {
    let deadline = HEARTBEAT_INTERVAL * HEARTBEAT_MISSES_ALLOWED;
    let mut expected_seq = 1;
    loop {
        let frame: EventFrame = match read_frame_or_end(recv, MAX_FRAME_LEN, deadline).await {
            Ok(Some(frame)) => frame,
            Ok(None) => {
                close(connection, CloseCode::Normal, "control stream finished");
                return "agent disconnected";
            }
            Err(FrameIoError::Timeout) => {
                close(connection, CloseCode::HeartbeatTimeout, "no heartbeat");
                return "heartbeat timeout";
            }
            Err(err) if err.is_bad_frame() => {
                refuse_frame(connection, recv, &err);
                return "protocol error";
            }
            // The sweep of certificates closed it (see `presence`).
            Err(_)
                if matches!(
                    connection.close_reason(),
                    Some(quinn::ConnectionError::LocallyClosed)
                ) =>
            {
                return "closed by the hub";
            }
            Err(_) => return "connection lost",
        };
        if frame.seq != expected_seq {
            tracing::warn!(
                expected = expected_seq,
                got = frame.seq,
                "event sequence gap"
            );
        }
        expected_seq = frame.seq + 1;
        match frame.event {
            Event::Heartbeat { .. } => context.presence.heartbeat(node, now_unix()),
            Event::Unknown => tracing::debug!("ignoring an event kind from a newer agent"),
            event => context.registry.publish(node, cluster_id, event),
        }
    }
}

/// A frame we cannot accept: stop that stream with an error and close the connection, since
/// the control stream is what keeps the session in step.
fn refuse_frame(connection: &quinn::Connection, recv: &mut quinn::RecvStream, err: &FrameIoError) {
    let _ = recv.stop(CloseCode::ProtocolError.code().into());
    close(
        connection,
        CloseCode::ProtocolError,
        &format!("bad frame on the control stream: {err}"),
    );
}
