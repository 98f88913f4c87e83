//! Lanes: TCP + TLS connections from agents that carry the bytes of a base copy (see
//! `proxlab_protocol::base_copy::lane`). The hub listens on its link port's number over TCP,
//! gives out single-use lane names with the copy requests, and hands each lane that arrives
//! to the copy waiting for it, once it has checked that the lane came from the node the
//! name was given to.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use proxlab_link::pki::{self, Fingerprint};
use proxlab_protocol::base_copy::LANE_NAME_LEN;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A lane as the hub holds it.
pub type Lane = tokio_rustls::server::TlsStream<TcpStream>;

/// How long the listener pauses after a failed accept.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// How long a connection may take to finish its handshake and name its lane.
const ADMIT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a copy waits for a node's lane after the node answered its request: the agent
/// gives up dialling after 5 s and says so.
pub const ARRIVAL_TIMEOUT: Duration = Duration::from_secs(10);

/// After a node's lane did not arrive (a firewall that lets QUIC through but not TCP, say),
/// its copies use the request streams for this long before lanes are tried again.
const FALLBACK_FOR: Duration = Duration::from_secs(600);

/// Why a lane is not there.
#[derive(Debug, thiserror::Error)]
pub enum LaneError {
    #[error("no lane arrived from {node} within {ARRIVAL_TIMEOUT:?}")]
    NotArrived { node: String },
}

struct Waiting {
    node: String,
    fingerprint: String,
    arrive: oneshot::Sender<Lane>,
}

/// The hub's lanes: the listener, and the lanes copies wait for.
pub struct Lanes {
    waiting: Mutex<HashMap<String, Waiting>>,
    fallen_back: Mutex<HashMap<String, Instant>>,
    accept_task: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Lanes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lanes").finish_non_exhaustive()
    }
}

fn locked<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Each critical section is one map operation: a panic cannot leave one half done.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Lanes {
    /// Accepts lanes on `listener` with `tls` (client certificates of the hub's CA required).
    pub fn start(listener: TcpListener, tls: Arc<rustls::ServerConfig>) -> Arc<Self> {
        let lanes = Arc::new(Self {
            waiting: Mutex::default(),
            fallen_back: Mutex::default(),
            accept_task: Mutex::default(),
        });
        let acceptor = tokio_rustls::TlsAcceptor::from(tls);
        let weak = Arc::downgrade(&lanes);
        let task = tokio::spawn(async move {
            loop {
                let (stream, remote) = match listener.accept().await {
                    Ok(accepted) => accepted,
                    Err(err) => {
                        // Out of file descriptors, say: wait instead of spinning.
                        tracing::warn!(%err, "accepting a lane");
                        tokio::time::sleep(ACCEPT_RETRY).await;
                        continue;
                    }
                };
                let Some(lanes) = weak.upgrade() else { return };
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    if let Err(reason) = lanes.admit(&acceptor, stream).await {
                        tracing::info!(%remote, %reason, "lane refused");
                    }
                });
            }
        });
        *locked(&lanes.accept_task) = Some(task);
        lanes
    }

    /// Stops accepting lanes.
    pub fn stop(&self) {
        if let Some(task) = locked(&self.accept_task).take() {
            task.abort();
        }
    }

    /// Whether copies from and to `node` try lanes (they do unless its last lane did not
    /// arrive, not long ago).
    pub fn usable_for(&self, node: &str) -> bool {
        let mut fallen_back = locked(&self.fallen_back);
        match fallen_back.get(node) {
            Some(since) if since.elapsed() < FALLBACK_FOR => false,
            Some(_) => {
                fallen_back.remove(node);
                true
            }
            None => true,
        }
    }

    /// Copies from and to `node` use the request streams for a while.
    pub fn fall_back(&self, node: &str) {
        locked(&self.fallen_back).insert(node.to_owned(), Instant::now());
    }

    /// A new lane name for `node`, connected with the certificate `fingerprint`.
    pub fn expect(self: &Arc<Self>, node: &str, fingerprint: &str) -> ExpectedLane {
        let name = hex::encode(rand::random::<[u8; LANE_NAME_LEN / 2]>());
        let (arrive, arrival) = oneshot::channel();
        locked(&self.waiting).insert(
            name.clone(),
            Waiting {
                node: node.to_owned(),
                fingerprint: fingerprint.to_owned(),
                arrive,
            },
        );
        ExpectedLane {
            name,
            node: node.to_owned(),
            lanes: self.clone(),
            arrival: Some(arrival),
        }
    }

    /// Checks a new connection: a handshake with a node certificate, then a lane name given
    /// to that node (and certificate) and not used yet.
    async fn admit(
        &self,
        acceptor: &tokio_rustls::TlsAcceptor,
        stream: TcpStream,
    ) -> Result<(), String> {
        let admitted = tokio::time::timeout(ADMIT_TIMEOUT, async {
            let mut lane = acceptor
                .accept(stream)
                .await
                .map_err(|err| format!("handshake: {err}"))?;
            let mut name = [0u8; LANE_NAME_LEN];
            lane.read_exact(&mut name)
                .await
                .map_err(|err| format!("reading the lane's name: {err}"))?;
            Ok::<_, String>((lane, name))
        })
        .await
        .map_err(|_| "too slow to name its lane".to_owned())?;
        let (lane, name) = admitted?;
        let (node, fingerprint) = {
            let Some(chain) = lane.get_ref().1.peer_certificates() else {
                return Err("no certificate".into());
            };
            let first = chain.first().ok_or("no certificate")?;
            let node = pki::common_name(first).map_err(|err| err.to_string())?;
            (node, Fingerprint::of_der(first).to_string())
        };
        let name = String::from_utf8_lossy(&name).into_owned();
        let waiting = {
            let mut waiting = locked(&self.waiting);
            match waiting.get(&name) {
                Some(given) if given.node == node && given.fingerprint == fingerprint => {
                    waiting.remove(&name)
                }
                // Left waiting: the node it was given to may still come.
                Some(given) => {
                    return Err(format!(
                        "{node} named a lane given to another certificate of {}",
                        given.node
                    ));
                }
                None => None,
            }
        };
        let Some(waiting) = waiting else {
            return Err(format!("{node} named a lane that is not expected"));
        };
        waiting
            .arrive
            .send(lane)
            .map_err(|_| format!("the copy waiting for {node}'s lane had ended"))
    }
}

/// A lane a copy waits for; its name is forgotten when this is dropped.
pub struct ExpectedLane {
    name: String,
    node: String,
    lanes: Arc<Lanes>,
    arrival: Option<oneshot::Receiver<Lane>>,
}

impl ExpectedLane {
    /// The name to send the node.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Waits for the lane, [`ARRIVAL_TIMEOUT`] at most.
    pub async fn arrival(self) -> Result<Lane, LaneError> {
        self.arrival_within(ARRIVAL_TIMEOUT).await
    }

    async fn arrival_within(mut self, timeout: Duration) -> Result<Lane, LaneError> {
        let not_arrived = || LaneError::NotArrived {
            node: self.node.clone(),
        };
        let arrival = self.arrival.take().ok_or_else(not_arrived)?;
        match tokio::time::timeout(timeout, arrival).await {
            Ok(Ok(lane)) => Ok(lane),
            _ => Err(not_arrived()),
        }
    }
}

impl Drop for ExpectedLane {
    fn drop(&mut self) {
        locked(&self.lanes.waiting).remove(&self.name);
    }
}

#[cfg(test)]
mod tests {
    use proxlab_link::pki::{CertAndKey, CertificateAuthority, generate_node_key_and_csr};
    use tokio::io::AsyncWriteExt;

    use super::*;

    struct Site {
        ca: CertificateAuthority,
        lanes: Arc<Lanes>,
        addr: std::net::SocketAddr,
    }

    impl Site {
        async fn start() -> Self {
            let (ca, _) = CertificateAuthority::generate("test hub").unwrap();
            let server = ca.issue_server_cert().unwrap();
            let tls = proxlab_link::tls::hub_lane_config(ca.cert_pem(), &server).unwrap();
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let lanes = Lanes::start(listener, tls);
            Self { ca, lanes, addr }
        }

        fn node(&self, name: &str) -> (CertAndKey, String) {
            let request = generate_node_key_and_csr(name).unwrap();
            let cert_pem = self.ca.sign_node_csr(&request.cert_pem, name).unwrap();
            let fingerprint = Fingerprint::of_pem(&cert_pem).unwrap().to_string();
            let identity = CertAndKey {
                cert_pem,
                key_pem: request.key_pem,
            };
            (identity, fingerprint)
        }

        /// Dials a lane as `identity` and names `lane`; the task ends when the hub closes it.
        async fn dial(&self, identity: &CertAndKey, lane: &str) -> JoinHandle<()> {
            let tls = proxlab_link::tls::agent_lane_config(self.ca.cert_pem(), identity).unwrap();
            let tcp = TcpStream::connect(self.addr).await.unwrap();
            let name = rustls::pki_types::ServerName::try_from(proxlab_protocol::HUB_SERVER_NAME)
                .unwrap()
                .to_owned();
            let mut lane_stream = tokio_rustls::TlsConnector::from(tls)
                .connect(name, tcp)
                .await
                .unwrap();
            lane_stream.write_all(lane.as_bytes()).await.unwrap();
            lane_stream.flush().await.unwrap();
            tokio::spawn(async move {
                let mut rest = Vec::new();
                let _ = lane_stream.read_to_end(&mut rest).await;
            })
        }
    }

    #[tokio::test]
    async fn a_lane_reaches_its_copy_only_from_the_node_and_certificate_it_was_given_to() {
        let site = Site::start().await;
        let (pve1, pve1_print) = site.node("pve1");
        let (pve1_again, _) = site.node("pve1");
        let (pve2, _) = site.node("pve2");

        let expected = site.lanes.expect("pve1", &pve1_print);
        let name = expected.name().to_owned();
        assert!(
            proxlab_protocol::base_copy::lane::is_lane_name(&name),
            "{name}"
        );
        // Another node, or the same node's name with another certificate, cannot take it;
        // a name never given is refused too. Each is closed by the hub.
        site.dial(&pve2, &name).await.await.unwrap();
        site.dial(&pve1_again, &name).await.await.unwrap();
        let unknown = "0".repeat(LANE_NAME_LEN);
        site.dial(&pve1, &unknown).await.await.unwrap();
        let _open = site.dial(&pve1, &name).await;
        let lane = expected.arrival().await.expect("pve1's lane arrives");
        let chain = lane.get_ref().1.peer_certificates().unwrap();
        assert_eq!(pki::common_name(&chain[0]).unwrap(), "pve1");
        assert_eq!(Fingerprint::of_der(&chain[0]).to_string(), pve1_print);
        // Used once: the name is forgotten.
        assert!(locked(&site.lanes.waiting).is_empty());
    }

    #[tokio::test]
    async fn a_lane_that_does_not_come_ends_the_wait_and_its_node_falls_back() {
        let site = Site::start().await;
        let (_, print) = site.node("pve1");
        let expected = site.lanes.expect("pve1", &print);
        let waited = expected.arrival_within(Duration::from_millis(50)).await;
        let Err(LaneError::NotArrived { node }) = waited else {
            panic!("a lane arrived");
        };
        assert_eq!(node, "pve1");
        assert!(locked(&site.lanes.waiting).is_empty());
        assert!(site.lanes.usable_for("pve1"));
        site.lanes.fall_back("pve1");
        assert!(!site.lanes.usable_for("pve1"));
        assert!(site.lanes.usable_for("pve2"));
    }
}
