//! quinn endpoint settings shared by both sides.

use std::sync::Arc;
use std::time::Duration;

/// How long a silent connection lives. Keep-alives and heartbeats keep a healthy one busy.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// How often the agent sends QUIC keep-alive packets.
pub const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(5);

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
}

/// The transport configuration both sides use.
pub fn transport_config() -> Arc<quinn::TransportConfig> {
    let mut config = quinn::TransportConfig::default();
    config
        .max_idle_timeout(Some(
            quinn::IdleTimeout::try_from(IDLE_TIMEOUT).expect("idle timeout fits a VarInt"),
        ))
        .keep_alive_interval(Some(KEEP_ALIVE_INTERVAL))
        .max_concurrent_bidi_streams(MAX_CONCURRENT_STREAMS.into())
        .max_concurrent_uni_streams(0u32.into());
    Arc::new(config)
}
