//! The QUIC endpoint agents dial, and the dispatch of each connection by ALPN.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::context::LinkContext;
use anyhow::{Context, Result};
use proxlab_protocol::{ALPN_ENROLL, ALPN_LINK, CloseCode};
use tokio::task::JoinHandle;
use tracing::Instrument;

use super::registry::AgentRegistry;
use super::{enroll, presence, session};

/// How long a new connection may take to finish its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The running QUIC server.
pub struct AgentServer {
    endpoint: quinn::Endpoint,
    accept_task: JoinHandle<()>,
    presence_task: JoinHandle<()>,
    registry: AgentRegistry,
}

impl AgentServer {
    /// Binds the endpoint and starts accepting agents.
    pub fn start(
        context: Arc<LinkContext>,
        addr: SocketAddr,
        lanes: bool,
        server_cert: &proxlab_link::pki::CertAndKey,
        reset_key: &[u8],
    ) -> Result<Self> {
        let mut config = proxlab_link::tls::hub_server_config(context.ca.cert_pem(), server_cert)
            .context("building the QUIC server configuration")?;
        config.transport_config(proxlab_link::transport::transport_config());
        let socket = std::net::UdpSocket::bind(addr)
            .with_context(|| format!("binding the QUIC endpoint on {addr} (UDP)"))?;
        proxlab_link::transport::size_socket_buffers(&socket);
        let endpoint = quinn::Endpoint::new(
            proxlab_link::transport::hub_endpoint_config(reset_key),
            Some(config),
            socket,
            Arc::new(quinn::TokioRuntime),
        )
        .with_context(|| format!("starting the QUIC endpoint on {addr}"))?;
        let registry = context.registry.clone();
        if lanes {
            let bound = endpoint.local_addr()?;
            match listen_for_lanes(context.ca.cert_pem(), server_cert, bound) {
                Ok(lanes) => registry.set_lanes(lanes),
                Err(err) => {
                    tracing::warn!("base copies use QUIC only: no lanes on TCP {bound}: {err:#}")
                }
            }
        }
        let presence_task = tokio::spawn(presence::keep(context.clone()));
        let accepting = endpoint.clone();
        let accept_task = tokio::spawn(async move {
            while let Some(incoming) = accepting.accept().await {
                let context = context.clone();
                let remote = incoming.remote_address();
                tokio::spawn(
                    async move { handle(context, incoming).await }
                        .instrument(tracing::info_span!("agent", %remote)),
                );
            }
        });
        Ok(Self {
            endpoint,
            accept_task,
            presence_task,
            registry,
        })
    }

    pub fn local_addr(&self) -> Result<SocketAddr> {
        Ok(self.endpoint.local_addr()?)
    }

    /// Closes every connection with [`CloseCode::HubShutdown`] and stops the endpoint.
    pub async fn shutdown(self) {
        self.registry.disconnect_all(CloseCode::HubShutdown);
        self.endpoint
            .close(CloseCode::HubShutdown.code().into(), b"hub shutting down");
        self.accept_task.abort();
        self.presence_task.abort();
        if let Some(lanes) = self.registry.lanes() {
            lanes.stop();
        }
        let _ = tokio::time::timeout(Duration::from_secs(3), self.endpoint.wait_idle()).await;
    }
}

/// Listens for lanes on TCP at the QUIC endpoint's address.
fn listen_for_lanes(
    ca_pem: &str,
    server_cert: &proxlab_link::pki::CertAndKey,
    addr: SocketAddr,
) -> Result<Arc<super::lanes::Lanes>> {
    let tls = proxlab_link::tls::hub_lane_config(ca_pem, server_cert)?;
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    let listener = socket.listen(1024)?;
    Ok(super::lanes::Lanes::start(listener, tls))
}

async fn handle(context: Arc<LinkContext>, incoming: quinn::Incoming) {
    let connection =
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, async { incoming.accept()?.await }).await {
            Ok(Ok(connection)) => connection,
            Ok(Err(err)) => {
                tracing::info!(%err, "handshake refused");
                return;
            }
            Err(_) => {
                tracing::info!("handshake timed out");
                return;
            }
        };
    match proxlab_link::tls::negotiated_alpn(&connection).as_deref() {
        Some(ALPN_LINK) => session::serve(&context, connection).await,
        Some(ALPN_ENROLL) => enroll::serve(&context, connection).await,
        _ => connection.close(CloseCode::ProtocolError.code().into(), b"unknown ALPN"),
    }
}
