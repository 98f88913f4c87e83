//! The typed call helper: the only code that opens request streams to agents.

use std::time::Duration;

use proxlab_link::{read_frame_or_end, write_frame};
use proxlab_protocol::limits::{DEFAULT_CALL_TIMEOUT, FRAME_READ_TIMEOUT, MAX_FRAME_LEN};
use proxlab_protocol::{RemoteError, Request, RequestFrame, ResponseFrame};

use super::registry::AgentRegistry;

/// Why a call to an agent failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("node {0} is offline")]
    Offline(String),
    #[error("the agent on node {node} (version {agent_version}) does not support {kind:?}")]
    Unsupported {
        node: String,
        kind: &'static str,
        agent_version: String,
    },
    #[error("no answer from node {node} within {after:?}")]
    Timeout { node: String, after: Duration },
    #[error("{0}")]
    Remote(RemoteError),
    #[error("link to node {node} failed: {detail}")]
    Link { node: String, detail: String },
    #[error("node {node} answered out of protocol: {detail}")]
    Protocol { node: String, detail: String },
}

fn link_error(node: &str, detail: &dyn std::fmt::Display) -> CallError {
    CallError::Link {
        node: node.to_owned(),
        detail: detail.to_string(),
    }
}

fn protocol_error(node: &str, detail: String) -> CallError {
    CallError::Protocol {
        node: node.to_owned(),
        detail,
    }
}

/// `work`, failing with [`CallError::Timeout`] after `timeout`.
async fn within<T>(
    node: &str,
    timeout: Duration,
    work: impl Future<Output = Result<T, CallError>>,
) -> Result<T, CallError> {
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| CallError::Timeout {
            node: node.to_owned(),
            after: timeout,
        })?
}

/// A new random operation id.
pub fn new_op_id() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

impl AgentRegistry {
    /// Opens a request stream to `node` and sends `request` on it, if its agent is online and
    /// serves request kind `R`.
    async fn send_request<R: Request>(
        &self,
        node: &str,
        request: &R,
        op_id: &str,
    ) -> Result<(quinn::SendStream, quinn::RecvStream), CallError> {
        let (connection, info) = self
            .connection(node)
            .ok_or_else(|| CallError::Offline(node.to_owned()))?;
        if !info.capabilities.contains(R::KIND) {
            return Err(CallError::Unsupported {
                node: node.to_owned(),
                kind: R::KIND,
                agent_version: info.agent_version,
            });
        }
        let frame = RequestFrame::new(op_id, request)
            .map_err(|err| protocol_error(node, format!("encoding the request: {err}")))?;
        let (mut send, recv) = connection
            .open_bi()
            .await
            .map_err(|err| link_error(node, &err))?;
        write_frame(&mut send, &frame, MAX_FRAME_LEN)
            .await
            .map_err(|err| link_error(node, &err))?;
        Ok((send, recv))
    }

    /// Opens a stream that goes on as raw bytes after its one answer (a console, see
    /// `proxlab_protocol::console`): sends `request`, waits up to `timeout` for the answer,
    /// and hands back both halves of the stream.
    pub async fn open_stream<R: Request>(
        &self,
        node: &str,
        request: &R,
        timeout: Duration,
    ) -> Result<(R::Response, quinn::SendStream, quinn::RecvStream), CallError> {
        within(node, timeout, async {
            let (send, mut recv) = self.send_request(node, request, &new_op_id()).await?;
            let answer: Option<ResponseFrame> =
                read_frame_or_end(&mut recv, MAX_FRAME_LEN, timeout.max(FRAME_READ_TIMEOUT))
                    .await
                    .map_err(|err| link_error(node, &err))?;
            match answer {
                Some(ResponseFrame::Ok { body }) => {
                    let response = serde_json::from_value(body).map_err(|err| {
                        protocol_error(node, format!("decoding the answer: {err}"))
                    })?;
                    Ok((response, send, recv))
                }
                Some(ResponseFrame::Err { error }) => Err(CallError::Remote(error)),
                Some(ResponseFrame::Progress { .. }) => {
                    Err(protocol_error(node, "progress on a stream request".into()))
                }
                None => Err(protocol_error(
                    node,
                    "stream ended without an answer".into(),
                )),
            }
        })
        .await
    }

    /// Sends `request` to the agent on `node` and waits for its answer, with the default
    /// timeout. Fails at once if the node is offline.
    pub async fn call<R: Request>(
        &self,
        node: &str,
        request: &R,
    ) -> Result<R::Response, CallError> {
        self.call_with(node, request, &new_op_id(), DEFAULT_CALL_TIMEOUT, |_| {})
            .await
    }

    /// Like [`AgentRegistry::call`], with a caller-chosen operation id (reuse it to retry the
    /// same operation), a timeout, and a callback for progress frames.
    pub async fn call_with<R: Request>(
        &self,
        node: &str,
        request: &R,
        op_id: &str,
        timeout: Duration,
        mut on_progress: impl FnMut(R::Progress) + Send,
    ) -> Result<R::Response, CallError> {
        let started = std::time::Instant::now();
        let answer = within(node, timeout, async {
            let (mut send, mut recv) = self.send_request(node, request, op_id).await?;
            let _ = send.finish();
            loop {
                // Long operations send progress; the overall timeout bounds the wait.
                let answer: Option<ResponseFrame> =
                    read_frame_or_end(&mut recv, MAX_FRAME_LEN, timeout.max(FRAME_READ_TIMEOUT))
                        .await
                        .map_err(|err| link_error(node, &err))?;
                match answer {
                    None => {
                        return Err(protocol_error(
                            node,
                            "stream ended without an answer".into(),
                        ));
                    }
                    Some(ResponseFrame::Progress { body }) => match serde_json::from_value(body) {
                        Ok(progress) => on_progress(progress),
                        Err(err) => tracing::warn!(node, %err, "ignoring undecodable progress"),
                    },
                    Some(ResponseFrame::Ok { body }) => {
                        return serde_json::from_value(body).map_err(|err| {
                            protocol_error(node, format!("decoding the answer: {err}"))
                        });
                    }
                    Some(ResponseFrame::Err { error }) => return Err(CallError::Remote(error)),
                }
            }
        })
        .await;
        crate::metrics::metrics().agent_call(R::KIND, outcome(&answer), started.elapsed());
        answer
    }
}

/// How a call ended, for the metrics.
fn outcome<T>(answer: &Result<T, CallError>) -> &'static str {
    match answer {
        Ok(_) => "ok",
        Err(CallError::Remote(_)) => "remote-error",
        Err(CallError::Offline(_) | CallError::Unsupported { .. }) => "offline",
        Err(CallError::Timeout { .. }) => "timeout",
        Err(CallError::Link { .. } | CallError::Protocol { .. }) => "link",
    }
}
