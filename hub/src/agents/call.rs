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

/// A connection to `node` whose agent serves request kind `R`.
fn connection_serving_impl(
    registry: &AgentRegistry,
    node: &str,
    kind: &'static str,
) -> Result<quinn::Connection, CallError> {
    let (connection, info) = registry
        .connection(node)
        .ok_or_else(|| CallError::Offline(node.to_owned()))?;
    if !info.capabilities.contains(kind) {
        return Err(CallError::Unsupported {
            node: node.to_owned(),
            kind,
            agent_version: info.agent_version,
        });
    }
    Ok(connection)
}

/// A new random operation id.
pub fn new_op_id() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

impl AgentRegistry {
    fn connection_serving<R: Request>(&self, node: &str) -> Result<quinn::Connection, CallError> {
        connection_serving_impl(self, node, R::KIND)
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
        let connection = self.connection_serving::<R>(node)?;
        let link_error = |detail: String| CallError::Link {
            node: node.to_owned(),
            detail,
        };
        let protocol_error = |detail: String| CallError::Protocol {
            node: node.to_owned(),
            detail,
        };
        let exchange = async {
            let frame = RequestFrame::new(new_op_id(), request)
                .map_err(|err| protocol_error(format!("encoding the request: {err}")))?;
            let (mut send, mut recv) = connection
                .open_bi()
                .await
                .map_err(|err| link_error(err.to_string()))?;
            write_frame(&mut send, &frame, MAX_FRAME_LEN)
                .await
                .map_err(|err| link_error(err.to_string()))?;
            let answer: Option<ResponseFrame> =
                read_frame_or_end(&mut recv, MAX_FRAME_LEN, timeout.max(FRAME_READ_TIMEOUT))
                    .await
                    .map_err(|err| link_error(err.to_string()))?;
            match answer {
                Some(ResponseFrame::Ok { body }) => {
                    let response = serde_json::from_value(body)
                        .map_err(|err| protocol_error(format!("decoding the answer: {err}")))?;
                    Ok((response, send, recv))
                }
                Some(ResponseFrame::Err { error }) => Err(CallError::Remote(error)),
                Some(ResponseFrame::Progress { .. }) => {
                    Err(protocol_error("progress on a stream request".into()))
                }
                None => Err(protocol_error("stream ended without an answer".into())),
            }
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| CallError::Timeout {
                node: node.to_owned(),
                after: timeout,
            })?
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
        let connection = self.connection_serving::<R>(node)?;
        let link_error = |detail: String| CallError::Link {
            node: node.to_owned(),
            detail,
        };
        let protocol_error = |detail: String| CallError::Protocol {
            node: node.to_owned(),
            detail,
        };
        let exchange = async {
            let frame = RequestFrame::new(op_id, request)
                .map_err(|err| protocol_error(format!("encoding the request: {err}")))?;
            let (mut send, mut recv) = connection
                .open_bi()
                .await
                .map_err(|err| link_error(err.to_string()))?;
            write_frame(&mut send, &frame, MAX_FRAME_LEN)
                .await
                .map_err(|err| link_error(err.to_string()))?;
            let _ = send.finish();
            loop {
                // Long operations send progress; the overall timeout bounds the wait.
                let answer: Option<ResponseFrame> =
                    read_frame_or_end(&mut recv, MAX_FRAME_LEN, timeout.max(FRAME_READ_TIMEOUT))
                        .await
                        .map_err(|err| link_error(err.to_string()))?;
                match answer {
                    None => return Err(protocol_error("stream ended without an answer".into())),
                    Some(ResponseFrame::Progress { body }) => match serde_json::from_value(body) {
                        Ok(progress) => on_progress(progress),
                        Err(err) => tracing::warn!(node, %err, "ignoring undecodable progress"),
                    },
                    Some(ResponseFrame::Ok { body }) => {
                        return serde_json::from_value(body)
                            .map_err(|err| protocol_error(format!("decoding the answer: {err}")));
                    }
                    Some(ResponseFrame::Err { error }) => return Err(CallError::Remote(error)),
                }
            }
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| CallError::Timeout {
                node: node.to_owned(),
                after: timeout,
            })?
    }
}
