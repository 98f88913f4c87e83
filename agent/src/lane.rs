//! Lanes to the hub: TCP + TLS connections that carry the bytes of one base copy image (see
//! `proxlab_protocol::base_copy::lane`). The agent opens one when a `base-send` or
//! `base-receive` request names it, to the address its QUIC link uses, with its node
//! certificate.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use proxlab_protocol::base_copy::lane::is_lane_name;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// A lane as the agent holds it.
pub type Lane = tokio_rustls::client::TlsStream<TcpStream>;

/// How long opening a lane may take; the hub waits a little longer before it gives up on it.
const DIAL_TIMEOUT: Duration = Duration::from_secs(5);

/// Where lanes go: the hub the link is connected to, and the TLS settings.
#[derive(Clone)]
pub struct LaneDialer {
    hub: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
}

impl LaneDialer {
    pub fn new(hub: SocketAddr, tls: Arc<rustls::ClientConfig>) -> Self {
        Self { hub, tls }
    }

    /// Opens the lane `name`.
    pub async fn open(&self, name: &str) -> Result<Lane, String> {
        if !is_lane_name(name) {
            return Err(format!("{name:?} is not a lane name"));
        }
        let opening = async {
            let tcp = TcpStream::connect(self.hub).await?;
            let server_name =
                rustls::pki_types::ServerName::try_from(proxlab_protocol::HUB_SERVER_NAME)
                    .map_err(std::io::Error::other)?
                    .to_owned();
            let mut lane = tokio_rustls::TlsConnector::from(self.tls.clone())
                .connect(server_name, tcp)
                .await?;
            lane.write_all(name.as_bytes()).await?;
            Ok::<_, std::io::Error>(lane)
        };
        match tokio::time::timeout(DIAL_TIMEOUT, opening).await {
            Ok(Ok(lane)) => Ok(lane),
            Ok(Err(err)) => Err(format!("opening a lane to the hub at {}: {err}", self.hub)),
            Err(_) => Err(format!(
                "opening a lane to the hub at {} took over {DIAL_TIMEOUT:?} (is TCP to the \
                 hub's link port blocked?)",
                self.hub
            )),
        }
    }
}

/// The dialer of the current link session, if any (set when the link connects).
#[derive(Clone, Default)]
pub struct LaneSlot(Arc<RwLock<Option<LaneDialer>>>);

impl LaneSlot {
    pub fn set(&self, dialer: LaneDialer) {
        *self
            .0
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(dialer);
    }

    pub fn get(&self) -> Option<LaneDialer> {
        self.0
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }
}
