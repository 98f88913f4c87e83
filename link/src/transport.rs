//! quinn endpoint settings shared by both sides.

use std::sync::Arc;
use std::time::Duration;

/// How long a silent connection lives. Keep-alives and heartbeats keep a healthy one busy.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// How often the agent sends QUIC keep-alive packets.
pub const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(5);

/// The largest UDP payload either side accepts and that path MTU discovery may try: a
/// path that carries larger datagrams than Ethernet's (loopback, jumbo frames) is used with
/// fewer, larger packets, which is what bounds a bulk copy's speed; other paths settle at
/// what they carry (discovery probes, and falls back on loss).
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

/// The transport configuration both sides use.
pub fn transport_config() -> Arc<quinn::TransportConfig> {
    let mut config = quinn::TransportConfig::default();
    let mut mtu = quinn::MtuDiscoveryConfig::default();
    mtu.upper_bound(MAX_UDP_PAYLOAD);
    config
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
