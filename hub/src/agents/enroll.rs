//! One-shot enrollment: a join token and a CSR in, a node certificate out.

use std::time::Duration;

use proxlab_link::pki::Fingerprint;
use proxlab_link::{read_frame, write_frame};
use proxlab_protocol::limits::{FRAME_READ_TIMEOUT, MAX_ENROLL_FRAME_LEN, MAX_FRAME_LEN};
use proxlab_protocol::names::{MAX_NODE_NAME_LEN, validate_node_name};
use proxlab_protocol::{
    ClusterIdentity, EnrollRequest, EnrollResponse, ErrorKind, RemoteError, ResponseFrame,
};

use super::context::LinkContext;
use crate::db::nodes::EnrollOutcome;
use crate::db::now_unix;
use crate::db::tokens::SpendRefusal;
use crate::secrets::hash_secret;

/// Serves one enrollment connection: one request stream, one answer.
pub(super) async fn serve(context: &LinkContext, connection: quinn::Connection) {
    let Ok(Ok((mut send, mut recv))) =
        tokio::time::timeout(FRAME_READ_TIMEOUT, connection.accept_bi()).await
    else {
        connection.close(0u32.into(), b"no enrollment request");
        return;
    };
    let answer = match read_frame::<EnrollRequest>(
        &mut recv,
        MAX_ENROLL_FRAME_LEN,
        FRAME_READ_TIMEOUT,
    )
    .await
    {
        Ok(request) => enroll(context, &request).await,
        Err(err) => Err(RemoteError::new(
            ErrorKind::BadFrame,
            format!("unreadable enrollment request: {err}"),
        )),
    };
    if let Err(error) = &answer {
        tracing::info!(kind = ?error.kind, message = %error.message, "enrollment refused");
    }
    if write_frame(
        &mut send,
        &ResponseFrame::from_result(answer),
        MAX_FRAME_LEN,
    )
    .await
    .is_ok()
    {
        let _ = send.finish();
        // Let the agent read the answer and close the connection itself.
        let _ = tokio::time::timeout(Duration::from_secs(5), connection.closed()).await;
    }
}

fn token_refusal_message(refusal: SpendRefusal) -> &'static str {
    match refusal {
        SpendRefusal::Unknown => "the join token is not valid",
        SpendRefusal::Expired => "the join token has expired; create a new one",
        SpendRefusal::Spent => "the join token has already been used; create a new one",
        SpendRefusal::Revoked => "the join token has been revoked",
        SpendRefusal::WrongNode => "the join token was created for another node name",
    }
}

/// Why a name is taken, and what to do: another cluster's node of the same name (two
/// clusters both have a `pve1`) needs a name of its own on the hub.
async fn name_taken_message(
    context: &LinkContext,
    name: &str,
    cluster: Option<&ClusterIdentity>,
) -> String {
    let holder = context.db.node_by_name(name).await.ok().flatten();
    let holder_cluster = holder.and_then(|node| node.cluster);
    match (cluster, holder_cluster) {
        (Some(ours), Some(theirs))
            if ours.name != theirs.name || ours.ca_fingerprint != theirs.ca_fingerprint =>
        {
            let suggestion = free_name(context, name, ours).await;
            format!(
                "a node named {name} of cluster {} is already enrolled; this node is in \
                 cluster {ours}: enroll it under a name of its own, for example \
                 --node-name {suggestion}",
                theirs.name
            )
        }
        _ => format!(
            "a node named {name} is already enrolled; revoke it first \
             (proxlab-hub nodes revoke {name}) or choose another --node-name"
        ),
    }
}

/// A hub name for a node called `name` in Proxmox that is free on the hub: see
/// [`suggested_name`].
async fn free_name(context: &LinkContext, name: &str, cluster: &ClusterIdentity) -> String {
    for number in 1..10 {
        let candidate = suggested_name(name, cluster, number);
        let taken = context
            .db
            .node_by_name(&candidate)
            .await
            .ok()
            .flatten()
            .is_some();
        if !taken {
            return candidate;
        }
    }
    suggested_name(name, cluster, 10)
}

/// The `number`th valid hub name for a node called `name` in Proxmox: the name with its
/// cluster's (`pve1-lab-b`, then `pve1-lab-b-2`), or for a standalone node with the start of
/// its CA fingerprint (`pve1-3fa2c1`), the name shortened to fit.
fn suggested_name(name: &str, cluster: &ClusterIdentity, number: u32) -> String {
    let hex = cluster.ca_fingerprint.trim_start_matches("sha256:");
    let mut suffix = match (cluster.is_standalone(), hex.get(..6)) {
        (false, _) => cluster.name.clone(),
        (true, Some(start)) => start.to_owned(),
        (true, None) => "other".to_owned(),
    };
    suffix.truncate(MAX_NODE_NAME_LEN / 2);
    let suffix = suffix.trim_end_matches('-');
    let tail = match number {
        1 => format!("-{suffix}"),
        n => format!("-{suffix}-{n}"),
    };
    let room = MAX_NODE_NAME_LEN - tail.len();
    let head = name.get(..room).unwrap_or(name).trim_end_matches('-');
    format!("{head}{tail}")
}

async fn enroll(
    context: &LinkContext,
    request: &EnrollRequest,
) -> Result<EnrollResponse, RemoteError> {
    let name = request.node_name.as_str();
    validate_node_name(name).map_err(|msg| RemoteError::new(ErrorKind::BadRequest, msg))?;
    if let Some(cluster) = &request.cluster {
        cluster
            .validate()
            .map_err(|msg| RemoteError::new(ErrorKind::BadRequest, msg))?;
    }
    // Signing is pure: if the token turns out to be bad, the certificate is simply dropped.
    let certificate_pem = context
        .ca
        .sign_node_csr(&request.csr_pem, name)
        .map_err(|err| RemoteError::new(ErrorKind::BadRequest, err.to_string()))?;
    let fingerprint = Fingerprint::of_pem(&certificate_pem)
        .map_err(|err| RemoteError::new(ErrorKind::Internal, err.to_string()))?;
    let outcome = context
        .db
        .enroll_node(
            &hash_secret(&request.token),
            name,
            &fingerprint.to_string(),
            now_unix(),
        )
        .await
        .map_err(|err| {
            tracing::error!(%err, "enrollment failed in the database");
            RemoteError::new(
                ErrorKind::Internal,
                "the hub could not record the enrollment",
            )
        })?;
    match outcome {
        EnrollOutcome::Enrolled => {
            if let Some(cluster) = &request.cluster
                && let Err(err) = context
                    .db
                    .note_node_cluster(name, cluster, now_unix())
                    .await
            {
                tracing::error!(%err, %cluster, "cannot record the node's cluster");
            }
            tracing::info!(node = name, agent_version = %request.agent_version, "node enrolled");
            Ok(EnrollResponse {
                node_name: name.to_owned(),
                certificate_pem,
                ca_pem: context.ca.cert_pem().to_owned(),
            })
        }
        EnrollOutcome::TokenRefused(refusal) => Err(RemoteError::new(
            ErrorKind::Unauthorized,
            token_refusal_message(refusal),
        )),
        EnrollOutcome::NameTaken => Err(RemoteError::new(
            ErrorKind::Conflict,
            name_taken_message(context, name, request.cluster.as_ref()).await,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clustered(name: &str) -> ClusterIdentity {
        ClusterIdentity {
            name: name.into(),
            ca_fingerprint: format!("sha256:{}", "ab".repeat(32)),
        }
    }

    #[test]
    fn suggested_names_are_valid_and_tell_clusters_apart() {
        assert_eq!(suggested_name("pve1", &clustered("lab-b"), 1), "pve1-lab-b");
        assert_eq!(
            suggested_name("pve1", &clustered("lab-b"), 3),
            "pve1-lab-b-3"
        );
        let standalone = ClusterIdentity {
            ca_fingerprint: format!("sha256:{}", "3f".repeat(32)),
            ..ClusterIdentity::standalone("pve1")
        };
        assert_eq!(suggested_name("pve1", &standalone, 1), "pve1-3f3f3f");
        assert_eq!(
            suggested_name("pve1", &ClusterIdentity::standalone("pve1"), 2),
            "pve1-other-2"
        );
        let long = "n".repeat(63);
        let cut_at_hyphen = format!("{}-{}", "c".repeat(30), "d".repeat(32));
        for cluster in [clustered(&cut_at_hyphen), clustered("lab"), standalone] {
            for number in [1, 9, 10] {
                let name = suggested_name(&long, &cluster, number);
                assert!(validate_node_name(&name).is_ok(), "{name}");
                assert_ne!(name, long);
            }
        }
    }
}
