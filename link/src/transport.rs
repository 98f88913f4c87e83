//! quinn endpoint settings shared by both sides.

use std::sync::Arc;
use std::time::Duration;

/// How long a silent connection lives. Keep-alives and heartbeats keep a healthy one busy.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// How often the agent sends QUIC keep-alive packets.
pub const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(5);

/// Concurrent request streams the hub may have open to one agent.
pub const MAX_CONCURRENT_STREAMS: u32 = 256;

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
