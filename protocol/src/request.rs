//! Typed requests: each request type names its response and progress types, so a caller
//! cannot mix them up, and one envelope carries them all.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::RemoteError;

/// A hub-to-agent request, tied at compile time to what it answers.
pub trait Request: Serialize + DeserializeOwned + Send + 'static {
    /// The wire name of this request kind, also the capability an agent advertises.
    const KIND: &'static str;
    /// The final answer.
    type Response: Serialize + DeserializeOwned + Send + 'static;
    /// Intermediate updates; [`NoProgress`] for requests that send none.
    type Progress: Serialize + DeserializeOwned + Send + 'static;
}

/// The progress type of requests that report no progress. It has no values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum NoProgress {}

/// The first frame of a request stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestFrame {
    /// A caller-chosen id; retrying the same operation reuses it, so the agent can answer a
    /// retry without doing the work twice.
    pub op_id: String,
    /// [`Request::KIND`] of the body.
    pub kind: String,
    pub body: serde_json::Value,
}

impl RequestFrame {
    /// Wraps a typed request.
    pub fn new<R: Request>(
        op_id: impl Into<String>,
        request: &R,
    ) -> Result<Self, serde_json::Error> {
        Ok(Self {
            op_id: op_id.into(),
            kind: R::KIND.to_owned(),
            body: serde_json::to_value(request)?,
        })
    }
}

/// A frame the agent sends back on a request stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum ResponseFrame {
    /// An intermediate update: the request's `Progress` type.
    Progress { body: serde_json::Value },
    /// The final, successful answer: the request's `Response` type.
    Ok { body: serde_json::Value },
    /// The final failure.
    Err { error: RemoteError },
}

impl ResponseFrame {
    /// Wraps a final outcome, turning an encoding failure into an error frame.
    pub fn from_result<T: Serialize>(result: Result<T, RemoteError>) -> Self {
        match result.and_then(|value| {
            serde_json::to_value(value).map_err(|err| {
                RemoteError::new(
                    crate::ErrorKind::Internal,
                    format!("encoding the answer: {err}"),
                )
            })
        }) {
            Ok(body) => ResponseFrame::Ok { body },
            Err(error) => ResponseFrame::Err { error },
        }
    }
}
