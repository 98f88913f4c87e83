//! One connection to the hub, from dial to close.

use std::time::Duration;

use proxlab_protocol::limits::HEARTBEAT_INTERVAL;
use proxlab_protocol::{CloseCode, Hello, PROTOCOL_VERSION};

use super::connect::{DialError, client_endpoint, dial, resolve};
use std::sync::Arc;

use crate::context::Context;
use crate::handlers;

/// How a session ended.
pub(super) enum SessionEnd {
    /// Try again after a backoff.
    Retry { reason: String },
    /// The hub refused this node for good.
    Refused { code: CloseCode, reason: String },
}

/// Interprets a connection error: a close by the hub with a code that forbids retrying
/// means stop.
fn classify(err: &quinn::ConnectionError) -> SessionEnd {
    if let quinn::ConnectionError::ApplicationClosed(close) = err {
        let reason = String::from_utf8_lossy(&close.reason).into_owned();
        if let Some(code) = CloseCode::from_code(close.error_code.into_inner()) {
            if !code.agent_should_retry() {
                return SessionEnd::Refused { code, reason };
            }
            return SessionEnd::Retry {
                reason: format!("the hub closed the connection: {code} ({reason})"),
            };
        }
    }
    SessionEnd::Retry {
        reason: err.to_string(),
    }
}

/// Why the connection ended, once it has.
fn ended(connection: &quinn::Connection, fallback: String) -> SessionEnd {
    match connection.close_reason() {
        Some(err) => classify(&err),
        None => SessionEnd::Retry { reason: fallback },
    }
}

/// What a session connects to, and with which TLS settings.
pub(super) struct LinkSettings<'a> {
    pub hub: &'a str,
    pub node: &'a str,
    pub config: quinn::ClientConfig,
    pub lane_tls: Arc<rustls::ClientConfig>,
}

/// Connects, says hello, then serves requests until the connection ends.
pub(super) async fn run_once(
    endpoint: &mut Option<quinn::Endpoint>,
    link: LinkSettings<'_>,
    context: &Arc<Context>,
) -> SessionEnd {
    let LinkSettings {
        hub,
        node,
        config,
        lane_tls,
    } = link;
    let addr = match resolve(hub).await {
        Ok(addr) => addr,
        Err(err) => {
            return SessionEnd::Retry {
                reason: format!("{err:#}"),
            };
        }
    };
    context
        .lanes
        .set(crate::lane::LaneDialer::new(addr, lane_tls));
    if endpoint.is_none() {
        match client_endpoint(addr) {
            Ok(new) => *endpoint = Some(new),
            Err(err) => {
                return SessionEnd::Retry {
                    reason: format!("{err:#}"),
                };
            }
        }
    }
    let Some(endpoint) = endpoint.as_ref() else {
        return SessionEnd::Retry {
            reason: "no endpoint".into(),
        };
    };
    let connection = match dial(endpoint, addr, config).await {
        Ok(connection) => connection,
        Err(DialError::Connection(err)) => return classify(&err),
        Err(err) => {
            return SessionEnd::Retry {
                reason: err.to_string(),
            };
        }
    };
    let hello = Hello {
        protocol: PROTOCOL_VERSION,
        agent_version: env!("CARGO_PKG_VERSION").to_owned(),
        node_name: node.to_owned(),
        capabilities: handlers::capabilities().map(str::to_owned).collect(),
        cluster: Some(context.node.cluster()),
    };
    let (send, _recv, welcome) = match super::control::say_hello(&connection, &hello).await {
        Ok(parts) => parts,
        Err(reason) => return ended(&connection, reason),
    };
    tracing::info!(hub = %hub, hub_version = %welcome.hub_version, "connected to the hub");
    crate::metrics::metrics().hub_link(true);
    let interval = match welcome.heartbeat_secs {
        0 => HEARTBEAT_INTERVAL,
        secs => Duration::from_secs(secs.into()),
    };
    let collector = context.collector.clone();
    let replay = context.idle.replay();
    let heartbeat =
        tokio::spawn(async move { super::events::pump(send, interval, &collector, replay).await });
    let reason = loop {
        match connection.accept_bi().await {
            Ok((send, recv)) => {
                tokio::spawn(handlers::serve_stream(context.clone(), send, recv));
            }
            Err(err) => break err.to_string(),
        }
    };
    heartbeat.abort();
    crate::metrics::metrics().hub_link(false);
    ended(&connection, reason)
}
