//! Dialling the hub.

use std::net::SocketAddr;

use anyhow::{Context, Result, anyhow};

/// Resolves `HOST:PORT`.
pub async fn resolve(hub: &str) -> Result<SocketAddr> {
    tokio::net::lookup_host(hub)
        .await
        .with_context(|| format!("resolving the hub address {hub:?} (expected HOST:PORT)"))?
        .next()
        .ok_or_else(|| anyhow!("the hub address {hub:?} resolves to nothing"))
}

/// A client endpoint able to reach `addr`.
pub fn client_endpoint(addr: SocketAddr) -> Result<quinn::Endpoint> {
    let bind: SocketAddr = if addr.is_ipv6() {
        "[::]:0".parse()?
    } else {
        "0.0.0.0:0".parse()?
    };
    let socket = std::net::UdpSocket::bind(bind).context("opening a UDP socket")?;
    proxlab_link::transport::size_socket_buffers(&socket);
    quinn::Endpoint::new(
        proxlab_link::transport::agent_endpoint_config(),
        None,
        socket,
        std::sync::Arc::new(quinn::TokioRuntime),
    )
    .context("opening the QUIC endpoint")
}

/// Why dialling failed.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    #[error("cannot start a connection: {0}")]
    Start(#[from] quinn::ConnectError),
    #[error("{0}")]
    Connection(#[from] quinn::ConnectionError),
}

/// Dials the hub with `config`, checking the hub's certificate for the fixed hub name.
pub async fn dial(
    endpoint: &quinn::Endpoint,
    addr: SocketAddr,
    mut config: quinn::ClientConfig,
) -> Result<quinn::Connection, DialError> {
    config.transport_config(proxlab_link::transport::transport_config());
    Ok(endpoint
        .connect_with(config, addr, proxlab_protocol::HUB_SERVER_NAME)?
        .await?)
}
