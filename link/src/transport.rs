//! quinn endpoint settings shared by both sides.

use std::sync::Arc;
use std::time::Duration;

/// How long a silent connection lives. Keep-alives and heartbeats keep a healthy one busy.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// How often the agent sends QUIC keep-alive packets.
pub const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(5);

/// The largest UDP payload either side accepts. Path MTU discovery tries up to
/// [`MTU_DISCOVERY_LIMIT`]: a path that carries larger datagrams than Ethernet's (jumbo
/// frames) is used with fewer, larger packets, which is what bounds a bulk copy's speed;
/// other paths settle at what they carry (discovery probes, and falls back on loss).
pub const MAX_UDP_PAYLOAD: u16 = 65_527;

/// The socket buffers asked for: a burst of large datagrams (a base copy) must fit while the
/// process is busy elsewhere, or it is dropped, and losses shrink the path's packets back to
/// the minimum. The kernel caps it at `net.core.rmem_max` / `wmem_max` (raise them on a hub
/// or node that copies a lot: `sysctl net.core.rmem_max=8388608`).
pub const SOCKET_BUFFER: usize = 8 << 20;

/// Gives a QUIC socket the buffers [`SOCKET_BUFFER`] asks for (forced where the process may,
/// as root may; else up to the kernel's cap). A refusal only costs speed.
pub fn size_socket_buffers(socket: &std::net::UdpSocket) {
    let receive = rustix::net::sockopt::set_socket_recv_buffer_size_force(socket, SOCKET_BUFFER)
        .or_else(|_| rustix::net::sockopt::set_socket_recv_buffer_size(socket, SOCKET_BUFFER));
    let send = rustix::net::sockopt::set_socket_send_buffer_size_force(socket, SOCKET_BUFFER)
        .or_else(|_| rustix::net::sockopt::set_socket_send_buffer_size(socket, SOCKET_BUFFER));
    if let Err(err) = receive.and(send) {
        tracing::debug!("cannot size the QUIC socket's buffers: {err}");
    }
}

/// How much of one stream a side may have in flight: enough for a base copy to keep a
/// fast path full.
pub const STREAM_WINDOW: u32 = 8 << 20;

/// Concurrent request streams the hub may have open to one agent.
pub const MAX_CONCURRENT_STREAMS: u32 = 256;

/// The hub's endpoint settings. `reset_key` (kept across restarts) lets a restarted hub
/// recognise the connection ids it issued before the restart and answer their packets with
/// a QUIC stateless reset, so agents learn at once that the hub they knew is gone, instead
/// of after the idle timeout.
pub fn hub_endpoint_config(reset_key: &[u8]) -> quinn::EndpointConfig {
    let hmac = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, reset_key);
    // The connection-id key is derived from the same secret, for a different purpose.
    let tag = ring::hmac::sign(&hmac, b"proxlab connection ids");
    let mut cid_key = [0u8; 8];
    cid_key.copy_from_slice(&tag.as_ref()[..8]);
    let cid_key = u64::from_le_bytes(cid_key);
    let mut config = quinn::EndpointConfig::new(Arc::new(hmac));
    config.cid_generator(move || {
        Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key))
    });
    config
        .max_udp_payload_size(MAX_UDP_PAYLOAD)
        .expect("within QUIC's bounds");
    config
}

/// The agent's endpoint settings.
pub fn agent_endpoint_config() -> quinn::EndpointConfig {
    let mut config = quinn::EndpointConfig::default();
    config
        .max_udp_payload_size(MAX_UDP_PAYLOAD)
        .expect("within QUIC's bounds");
    config
}

/// Where path MTU discovery stops: a 9,000-byte jumbo frame less its IPv4 and UDP headers,
/// the largest MTU a real network between nodes has. Probing further only happens on
/// loopback (64 KiB), where a thousand agents connecting at once filled the hub's socket
/// with probe datagrams: handshakes were dropped and waited out QUIC's retransmission
/// backoff (enrollment of 1,000 agents took 30 s with timeouts; 6 s without).
pub const MTU_DISCOVERY_LIMIT: u16 = 8_972;

/// The congestion window a connection starts with: ten of the largest datagrams path MTU
/// discovery may settle on. quinn's default (14,720 bytes, ten 1,472-byte packets) is less
/// than two jumbo-sized MTU probes, and a probe in flight then held up everything else,
/// even the CONNECTION_CLOSE that tells an agent why the hub refused it (the agent saw a
/// stateless reset instead, without the code that tells it to stop retrying).
pub const INITIAL_WINDOW: u64 = 10 * MTU_DISCOVERY_LIMIT as u64;

/// The transport configuration both sides use.
pub fn transport_config() -> Arc<quinn::TransportConfig> {
    let mut config = quinn::TransportConfig::default();
    let mut mtu = quinn::MtuDiscoveryConfig::default();
    mtu.upper_bound(MTU_DISCOVERY_LIMIT);
    let mut congestion = quinn::congestion::CubicConfig::default();
    congestion.initial_window(INITIAL_WINDOW);
    config
        .congestion_controller_factory(Arc::new(congestion))
        .mtu_discovery_config(Some(mtu))
        .stream_receive_window(STREAM_WINDOW.into())
        .send_window(4 * u64::from(STREAM_WINDOW));
    config
        .max_idle_timeout(Some(
            quinn::IdleTimeout::try_from(IDLE_TIMEOUT).expect("idle timeout fits a VarInt"),
        ))
        .keep_alive_interval(Some(KEEP_ALIVE_INTERVAL))
        .max_concurrent_bidi_streams(MAX_CONCURRENT_STREAMS.into())
        .max_concurrent_uni_streams(0u32.into());
    Arc::new(config)
}
